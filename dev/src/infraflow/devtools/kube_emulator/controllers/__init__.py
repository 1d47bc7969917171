"""Controller simulations that run inside the emulator."""

from .base import Controller, set_condition
from .clusterdeployment import ClusterDeploymentController
from .virtualmachine import VirtualMachineController

__all__ = [
    "ClusterDeploymentController",
    "Controller",
    "VirtualMachineController",
    "set_condition",
]
