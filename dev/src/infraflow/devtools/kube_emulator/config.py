"""Tunable settings of the Kubernetes API emulator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Timing and capacity settings.

    Attributes:
        cluster_ready_delay: seconds a ClusterDeployment stays ``Progressing`` before it
            turns ``Ready`` (or ``Failed`` in failure mode).
        cluster_delete_delay: seconds between a ClusterDeployment's deletion request and
            the removal of its finalizer.
        vm_ready_delay: seconds a VirtualMachine needs from ``Provisioning`` to
            ``Running``; stopping, restarting and terminating take half of it per phase.
        history_window: number of watch events kept; watches from an older
            resourceVersion get ``410 Expired``.
        bookmark_interval: seconds between ``BOOKMARK`` events on watches that ask for them.
        request_log_size: number of HTTP requests kept for ``GET /_emulator/requests``.
    """

    cluster_ready_delay: float = 2.0
    cluster_delete_delay: float = 1.0
    vm_ready_delay: float = 1.0
    history_window: int = 1000
    bookmark_interval: float = 1.0
    request_log_size: int = 2000

    def __post_init__(self) -> None:
        for name in ("cluster_ready_delay", "cluster_delete_delay", "vm_ready_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.history_window < 1:
            raise ValueError("history_window must be >= 1")
        if self.bookmark_interval <= 0:
            raise ValueError("bookmark_interval must be > 0")
        if self.request_log_size < 1:
            raise ValueError("request_log_size must be >= 1")
