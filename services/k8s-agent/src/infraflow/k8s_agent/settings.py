"""k8s-agent settings (``INFRAFLOW_`` environment variables)."""

from __future__ import annotations

from infraflow.common.settings import ServiceSettings


class K8sAgentSettings(ServiceSettings):
    sites: str = "default"
    """Comma-separated sites whose Kubernetes steps this agent runs."""
    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster config."""
    max_inflight: int = 32
