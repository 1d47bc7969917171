"""Kubernetes API emulator for development and tests (never for production).

kubernetes-asyncio talks to it over HTTP as to a real kube-apiserver: generic namespaced
CRUD for any group/version/plural, resourceVersion conflicts, merge and JSON patches, the
status subresource, label/field selectors, watches with bookmarks and ``410 Expired``,
finalizers, plus simulated ClusterDeployment and VirtualMachine controllers.

Known differences from a real cluster: namespaces need not exist, every non-core resource
has a status subresource, versions of one group are separate stores (no conversion), no
admission beyond a few VirtualMachine rules, no RBAC (any token is accepted), ``dryRun``
is rejected, and continue tokens page over the current state (not a snapshot).
"""

from .config import EmulatorConfig
from .kubeconfig import kubeconfig_dict, write_kubeconfig
from .server import KubeEmulator, create_app
from .state import EmulatorState

__all__ = [
    "EmulatorConfig",
    "EmulatorState",
    "KubeEmulator",
    "create_app",
    "kubeconfig_dict",
    "write_kubeconfig",
]
