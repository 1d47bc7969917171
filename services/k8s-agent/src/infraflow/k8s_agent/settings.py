"""k8s-agent settings (``INFRAFLOW_`` environment variables)."""

from __future__ import annotations

from infraflow.common.settings import ServiceSettings


class K8sAgentSettings(ServiceSettings):
    """Where the management cluster is, which sites this agent serves, how it watches."""

    sites: str = "default"
    """Comma-separated sites whose Kubernetes steps this agent runs."""
    kubeconfig: str | None = None
    """Path of a kubeconfig (``INFRAFLOW_KUBECONFIG``); unset: the in-cluster service account."""
    kube_context: str | None = None
    """Context of the kubeconfig to use; unset: its current context."""
    namespace_prefix: str = ""
    """Clusters and VMs of project ``p`` live in namespace ``<prefix>p`` (a DNS-1123 label)."""
    max_inflight: int = 32
    """Steps run concurrently by one agent process."""
    shutdown_grace_s: float = 20.0
    request_timeout_s: float = 30.0
    """Timeout of one Kubernetes API request (watches use their own)."""
    wait_watch_timeout_s: float = 60.0
    """Server-side timeout of one watch inside a waiting step (it re-watches until done)."""
    informers: bool = True
    """Run the ClusterDeployment and VirtualMachine informers (one agent per cluster is
    enough; extra replicas publish the same observations, which is harmless)."""
    informer_watch_timeout_s: float = 300.0
    """Server-side timeout of an informer's watch; it then watches on from its version."""

    @property
    def site_list(self) -> list[str]:
        return [s.strip() for s in self.sites.split(",") if s.strip()]
