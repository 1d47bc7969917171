"""An in-process engine for tests: the real orchestrator shell and the real agent protocol
(``StepWorker``) against a real nats-server, with test workflow types and test actions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Header

from infraflow.common import streams, subjects
from infraflow.common.agent import StepContext, StepWorker
from infraflow.common.catalog import DEFAULT_CATALOG, Catalog, RetryPolicy, StepSpec, WorkflowType
from infraflow.common.contracts import CancelRun, RunEvent, StartRun, decode_event, encode
from infraflow.common.ids import new_id
from infraflow.common.jetstream import PullConsumer, read_subject
from infraflow.common.streams import agent_consumer, ensure_topology
from infraflow.orchestrator.adapters.effects import EffectRunner
from infraflow.orchestrator.adapters.eventlog import RunLog
from infraflow.orchestrator.adapters.locks import ResourceLocks
from infraflow.orchestrator.handlers import Orchestrator

Action = Callable[[StepContext], Coroutine[Any, Any, dict[str, Any]]]

FAST = RetryPolicy(
    initial_interval_s=0.05, backoff_coefficient=2.0, max_interval_s=0.2, max_attempts=3, jitter=0.0
)


def step(
    name: str,
    *,
    action: str | None = None,
    compensation: StepSpec | None = None,
    timeout_s: float = 10.0,
    heartbeat_timeout_s: float | None = None,
    retry: RetryPolicy = FAST,
) -> StepSpec:
    return StepSpec(
        name=name,
        executor="test",
        action=action or name,
        timeout_s=timeout_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        retry=retry,
        estimate_ms=10,
        compensation=compensation,
    )


def catalog_with(*types: WorkflowType) -> Catalog:
    return DEFAULT_CATALOG.with_types(types)


class Engine:
    def __init__(
        self, nc: Client, js: JetStreamContext, catalog: Catalog, actions: dict[str, Action]
    ) -> None:
        self.nc, self.js, self.catalog, self.actions = nc, js, catalog, actions
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.orch: Orchestrator | None = None

    async def start(self) -> None:
        await ensure_topology(
            self.js, consumers=(*streams.CORE_CONSUMERS, agent_consumer("test", "default"))
        )
        locks = await ResourceLocks.open(self.js)
        self.orch = Orchestrator(
            RunLog(self.nc, self.js),
            EffectRunner(self.nc, self.js, locks),
            locks,
            self.catalog,
            heartbeat_min_interval_s=0.0,
        )
        o = self.orch
        for stream, durable, handler in (
            (streams.COMMANDS, streams.ORCHESTRATOR_COMMANDS.durable, o.handle_command),
            (streams.EVENTS, streams.ORCHESTRATOR_FACTS.durable, o.handle_fact),
            (streams.TIMERS, streams.ORCHESTRATOR_TIMERS.durable, o.handle_timer),
        ):
            self.tasks.append(
                asyncio.create_task(
                    PullConsumer(self.nc, stream, durable, handler, max_inflight=64).run(self.stop)
                )
            )
        self.hb = await self.nc.subscribe(subjects.HEARTBEATS_ALL, cb=o.handle_heartbeat)
        worker = StepWorker(
            self.nc, self.js, "test", ["default"], self.actions, default_heartbeat_s=0.2
        )
        self.worker = worker
        self.tasks.append(asyncio.create_task(worker.run(self.stop)))

    async def close(self) -> None:
        self.stop.set()
        await self.hb.unsubscribe()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def start_run(
        self,
        workflow_type: str,
        resource_id: str = "srv_1",
        *,
        on_busy: str = "queue",
        retry_of: str | None = None,
        from_step: str | None = None,
        input: dict[str, Any] | None = None,
    ) -> str:
        run_id = new_id("run")
        cmd = StartRun(
            run_id=run_id,
            resource_type="server",
            resource_id=resource_id,
            workflow_type=workflow_type,
            triggered_by="tester",
            input=input or {},
            on_busy=on_busy,  # type: ignore[arg-type]
            retry_of=retry_of,
            from_step=from_step,
            requested_at=datetime.now(UTC),
        )
        await self.js.publish(
            subjects.command("start", run_id), encode(cmd), headers={Header.MSG_ID: run_id}
        )
        return run_id

    async def cancel(
        self, run_id: str, resource_id: str = "srv_1", *, terminate: bool = False
    ) -> None:
        cmd = CancelRun(
            run_id=run_id,
            resource_type="server",
            resource_id=resource_id,
            requested_by="tester",
            terminate=terminate,
        )
        await self.js.publish(
            subjects.command("cancel", run_id), encode(cmd), headers={Header.MSG_ID: new_id("req")}
        )

    async def events(self, run_id: str, resource_id: str = "srv_1") -> list[RunEvent]:
        msgs = await read_subject(
            self.nc, streams.EVENTS, subjects.run_events("server", resource_id, run_id)
        )
        return [decode_event(m.data) for m in msgs]

    async def wait_terminal(
        self, run_id: str, resource_id: str = "srv_1", timeout: float = 15.0
    ) -> list[RunEvent]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            evs = await self.events(run_id, resource_id)
            if any(e.name in ("run_completed", "run_failed", "run_cancelled") for e in evs):
                await asyncio.sleep(0.05)  # let late facts land too
                return await self.events(run_id, resource_id)
            if asyncio.get_running_loop().time() > deadline:
                names = [e.name for e in evs]
                raise TimeoutError(f"run {run_id} not terminal: {names}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def engine(
    nc: Client, js: JetStreamContext, catalog: Catalog, actions: dict[str, Action]
) -> AsyncIterator[Engine]:
    e = Engine(nc, js, catalog, actions)
    await e.start()
    try:
        yield e
    finally:
        await e.close()
