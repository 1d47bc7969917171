"""k8s-agent composition root: one Kubernetes client, the step worker for the ``k8s`` executor
of the configured sites, and the informers that publish observed clusters and VMs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from infraflow.common.agent import StepWorker
from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.common.streams import agent_consumer
from infraflow.k8s_agent.adapters.kube import KubeApi, KubeConfigError
from infraflow.k8s_agent.handlers import K8sActions
from infraflow.k8s_agent.informers import KINDS, Informer, JetStreamPublisher
from infraflow.k8s_agent.settings import K8sAgentSettings

log = logging.getLogger("infraflow.k8s_agent")


async def serve(rt: ServiceRuntime, settings: K8sAgentSettings) -> None:
    """Run the steps and the informers until the runtime is told to stop."""
    sites = settings.site_list
    nc, js = await rt.connect(consumers=tuple(agent_consumer("k8s", s) for s in sites))
    configured: list[KubeApi] = []
    rt.ready_checks.append(lambda: bool(configured))
    kube = await _configure(settings, rt.stop)
    if kube is None:
        return  # stopped before a Kubernetes API was configured
    configured.append(kube)
    async with kube:
        actions = K8sActions(
            kube,
            namespace_prefix=settings.namespace_prefix,
            watch_timeout_s=settings.wait_watch_timeout_s,
        )
        worker = StepWorker(
            nc,
            js,
            "k8s",
            sites,
            actions.table(),
            max_inflight=settings.max_inflight,
            shutdown_grace_s=settings.shutdown_grace_s,
        )
        publish = JetStreamPublisher(js)
        informers = (
            [
                Informer(
                    kube,
                    kind,
                    publish,
                    site=sites[0] if sites else None,
                    watch_timeout_s=settings.informer_watch_timeout_s,
                )
                for kind in KINDS
            ]
            if settings.informers
            else []
        )
        rt.metrics.append(lambda: _metrics(worker, informers))
        log.info(
            "k8s-agent serving sites %s against %s (%d informers)",
            ",".join(sites),
            kube.host,
            len(informers),
        )
        await asyncio.gather(worker.run(rt.stop), *(i.run(rt.stop) for i in informers))


async def _configure(settings: K8sAgentSettings, stop: asyncio.Event) -> KubeApi | None:
    """The Kubernetes client; without a usable kubeconfig or service account the agent waits
    (reporting not ready, retrying) instead of crash-looping."""
    delay = 1.0
    while not stop.is_set():
        try:
            return await KubeApi.connect(
                settings.kubeconfig,
                context=settings.kube_context,
                request_timeout_s=settings.request_timeout_s,
            )
        except KubeConfigError as exc:
            log.error("%s; retrying in %.0fs", exc.message, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 30.0)
    return None


def _metrics(worker: StepWorker, informers: list[Informer]) -> str:
    lines = [
        f'infraflow_agent_steps_completed_total{{executor="k8s"}} {worker.completed}',
        f'infraflow_agent_steps_failed_total{{executor="k8s"}} {worker.failed}',
    ]
    for i in informers:
        kind = i.kind.resource_type
        lines += [
            f'infraflow_informer_lists_total{{kind="{kind}"}} {i.stats.lists}',
            f'infraflow_informer_expired_total{{kind="{kind}"}} {i.stats.expired}',
            f'infraflow_informer_published_total{{kind="{kind}"}} {i.stats.published}',
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    settings = K8sAgentSettings()
    run_service("k8s-agent", settings, lambda rt: serve(rt, settings))


if __name__ == "__main__":
    main()
