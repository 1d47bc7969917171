"""k8s-agent composition root.

It connects, joins the topology and waits; its executors (ClusterDeployments, VirtualMachines)
and informers are the clusters-and-VMs capability, so until then no workflow type routes steps
here (the catalog marks those steps not executable).
"""

from __future__ import annotations

import logging

from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.k8s_agent.settings import K8sAgentSettings

log = logging.getLogger("infraflow.k8s_agent")


async def serve(rt: ServiceRuntime, settings: K8sAgentSettings) -> None:
    await rt.connect()
    log.info("k8s-agent connected; no Kubernetes executors are enabled yet")
    await rt.stop.wait()


def main() -> None:
    settings = K8sAgentSettings()
    run_service("k8s-agent", settings, lambda rt: serve(rt, settings))


if __name__ == "__main__":
    main()
