"""Everything one emulator instance holds: config, store, controllers, request log."""

from __future__ import annotations

from collections import deque
from typing import Any

from aiohttp import web

from .config import EmulatorConfig
from .controllers import ClusterDeploymentController, VirtualMachineController
from .resources import ResourceRegistry
from .store import ObjectStore


class EmulatorState:
    """The shared state behind one emulator's HTTP app.

    Attributes:
        config: timing settings.
        registry: known kinds (discovery).
        store: the objects and the watch history.
        requests: recent API requests, newest last (see ``GET /_emulator/requests``).
        url: the base URL once the server listens (used in generated kubeconfigs).
        clusters: the ClusterDeployment controller simulation.
        vms: the VirtualMachine controller simulation.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.registry = ResourceRegistry()
        self.store = ObjectStore(self.registry, self.config.history_window)
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.config.request_log_size)
        self.url: str | None = None
        self.clusters = ClusterDeploymentController(self)
        self.vms = VirtualMachineController(self)

    def start_controllers(self) -> None:
        """Start the controller simulations (call from the running event loop)."""
        self.clusters.start()
        self.vms.start()

    def stop_controllers(self) -> None:
        """Stop the controller simulations and cancel their timers."""
        self.clusters.stop()
        self.vms.stop()

    def reset(self) -> None:
        """Forget all objects, history, watches, controller memory and the request log."""
        self.clusters.reset()
        self.vms.reset()
        self.store.reset()
        self.requests.clear()


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("kube_emulator_state", EmulatorState)
"""Where :func:`~infraflow.devtools.kube_emulator.server.create_app` keeps the state."""
