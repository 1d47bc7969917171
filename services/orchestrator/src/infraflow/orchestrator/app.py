"""Orchestrator composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from infraflow.common import streams, subjects
from infraflow.common.catalog import load_catalog
from infraflow.common.jetstream import PullConsumer
from infraflow.common.metrics import start_consumer_watch
from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.orchestrator.adapters.effects import EffectRunner
from infraflow.orchestrator.adapters.eventlog import RunLog
from infraflow.orchestrator.adapters.locks import ResourceLocks
from infraflow.orchestrator.handlers import Orchestrator
from infraflow.orchestrator.settings import OrchestratorSettings

log = logging.getLogger("infraflow.orchestrator")


async def serve(rt: ServiceRuntime, settings: OrchestratorSettings) -> None:
    nc, js = await rt.connect()
    catalog = load_catalog(settings.catalog_extra_file)
    locks = await ResourceLocks.open(js)
    orch = Orchestrator(
        RunLog(nc, js, cache_size=settings.cache_size),
        EffectRunner(nc, js, locks),
        locks,
        catalog,
        heartbeat_min_interval_s=settings.heartbeat_min_interval_s,
    )
    consumers = [
        PullConsumer(
            nc,
            streams.COMMANDS,
            streams.ORCHESTRATOR_COMMANDS.durable,
            orch.handle_command,
            max_inflight=settings.max_inflight,
        ),
        PullConsumer(
            nc,
            streams.EVENTS,
            streams.ORCHESTRATOR_FACTS.durable,
            orch.handle_fact,
            max_inflight=settings.max_inflight,
        ),
        PullConsumer(
            nc,
            streams.TIMERS,
            streams.ORCHESTRATOR_TIMERS.durable,
            orch.handle_timer,
            max_inflight=settings.max_inflight,
        ),
    ]
    hb_sub = await nc.subscribe(
        subjects.HEARTBEATS_ALL, queue="orchestrator", cb=orch.handle_heartbeat
    )
    rt.metrics.append(lambda: _metrics(orch))

    async def sweeper() -> None:
        while not rt.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.stop.wait(), settings.lock_sweep_interval_s)
            if rt.stop.is_set():
                return
            try:
                await orch.sweep_locks()
            except Exception:
                log.exception("lock sweep failed")

    log.info("orchestrator ready (%d workflow types)", len(catalog.names()))
    tasks = [asyncio.create_task(c.run(rt.stop)) for c in consumers]
    tasks.append(asyncio.create_task(sweeper()))
    tasks.append(start_consumer_watch(js, streams.CORE_CONSUMERS, rt.stop))
    await rt.stop.wait()
    await hb_sub.unsubscribe()
    await asyncio.gather(*tasks, return_exceptions=True)


def _metrics(orch: Orchestrator) -> str:
    return (
        f"infraflow_orchestrator_inputs_total {orch.processed}\n"
        f"infraflow_orchestrator_appends_total {orch.log.appends}\n"
        f"infraflow_orchestrator_append_conflicts_total {orch.log.conflicts}\n"
        f"infraflow_orchestrator_steps_dispatched_total {orch.effects.dispatched}\n"
        f"infraflow_orchestrator_decider_failures_total {orch.failures}\n"
    )


def main() -> None:
    settings = OrchestratorSettings()
    run_service("orchestrator", settings, lambda rt: serve(rt, settings))


if __name__ == "__main__":
    main()
