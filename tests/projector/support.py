"""Test support for the projector: realistic event histories built from the contract structs,
publishing them to ``WF_EVENTS``, an in-process projector and a query helper."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.catalog import DEFAULT_CATALOG
from infraflow.common.contracts import (
    AnyRunEvent,
    CompensationStarted,
    ErrorInfo,
    Query,
    QueryReply,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    StepFailed,
    StepScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StepTimedOut,
    decode_reply,
    encode,
)
from infraflow.common.contracts.base import Phase
from infraflow.common.ids import new_id
from infraflow.common.settings import NatsSettings
from infraflow.projector.app import Projector, create_projector
from infraflow.projector.settings import ProjectorSettings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = count(1)


def run_id(at: datetime = T0) -> str:
    """A time-sortable run id; later ``at`` sorts after, ties are broken by a counter."""
    return new_id("run", now_ms=int(at.timestamp() * 1000), entropy=next(_ids))


def server_id() -> str:
    return new_id("srv", entropy=next(_ids))


class RunHistory:
    """Builds one run's events in order; every event is one second after the previous one."""

    def __init__(
        self,
        workflow_type: str = "server.register",
        *,
        resource_type: str = "server",
        resource_id: str | None = None,
        run: str | None = None,
        project_id: str | None = "prj_a",
        triggered_by: str = "usr_alice",
        at: datetime = T0,
        input: dict[str, Any] | None = None,
        site: str | None = "dc1",
        retry_of: str | None = None,
        from_step: str | None = None,
        mutating: bool = True,
    ) -> None:
        wf = DEFAULT_CATALOG.get(workflow_type)
        self.workflow_type = workflow_type
        self.steps = [s.name for s in wf.steps] if wf else ["only"]
        self.run_id = run or run_id(at)
        self.resource_type = resource_type
        self.resource_id = resource_id or server_id()
        self.project_id = project_id
        self.triggered_by = triggered_by
        self.site = site
        self.input = input if input is not None else {}
        self.retry_of = retry_of
        self.from_step = from_step
        self.mutating = mutating
        self.time = at
        self.events: list[AnyRunEvent] = []

    def _next(self, cls: type[RunEvent], **fields: Any) -> Any:
        event = cls(
            event_id=new_id("evt", entropy=next(_ids)),
            run_id=self.run_id,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            time=self.time,
            **fields,
        )
        self.time += timedelta(seconds=1)
        self.events.append(event)  # type: ignore[arg-type]
        return event

    def created(self, *, estimated_ms: int = 0) -> RunCreated:
        e: RunCreated = self._next(
            RunCreated,
            workflow_type=self.workflow_type,
            input=self.input,
            triggered_by=self.triggered_by,
            steps=self.steps,
            project_id=self.project_id,
            site=self.site,
            retry_of=self.retry_of,
            from_step=self.from_step,
            mutating=self.mutating,
            estimated_duration_ms=estimated_ms,
        )
        return e

    def queued(self, waiting_for: str) -> RunQueued:
        e: RunQueued = self._next(RunQueued, waiting_for=waiting_for)
        return e

    def started(self) -> RunStarted:
        e: RunStarted = self._next(RunStarted)
        return e

    def scheduled(
        self, index: int, attempt: int = 1, phase: Phase = "forward", step: str = ""
    ) -> Any:
        return self._next(
            StepScheduled,
            step=step or self.steps[index],
            index=index,
            attempt=attempt,
            phase=phase,
            executor="bmc",
            action="act",
            site=self.site or "dc1",
            timeout_s=60.0,
        )

    def step_started(
        self, index: int, attempt: int = 1, phase: Phase = "forward", step: str = ""
    ) -> Any:
        return self._next(
            StepStarted,
            step=step or self.steps[index],
            index=index,
            attempt=attempt,
            phase=phase,
            worker="bmc-agent-1",
        )

    def succeeded(
        self,
        index: int,
        attempt: int = 1,
        output: dict[str, Any] | None = None,
        phase: Phase = "forward",
        step: str = "",
    ) -> Any:
        return self._next(
            StepSucceeded,
            step=step or self.steps[index],
            index=index,
            attempt=attempt,
            phase=phase,
            output=output or {},
        )

    def step_failed(
        self, index: int, attempt: int = 1, code: str = "BMC_UNREACHABLE", retryable: bool = True
    ) -> Any:
        return self._next(
            StepFailed,
            step=self.steps[index],
            index=index,
            attempt=attempt,
            error=ErrorInfo(code=code, message="no route to BMC", retryable=retryable),
        )

    def timed_out(self, index: int, attempt: int = 1) -> Any:
        return self._next(StepTimedOut, step=self.steps[index], index=index, attempt=attempt)

    def skipped(self, index: int, output: dict[str, Any] | None = None) -> Any:
        return self._next(
            StepSkipped,
            step=self.steps[index],
            index=index,
            output=output or {},
            from_run=self.retry_of or "",
        )

    def step_ok(self, index: int, output: dict[str, Any] | None = None, attempt: int = 1) -> None:
        """scheduled, started, succeeded."""
        self.scheduled(index, attempt)
        self.step_started(index, attempt)
        self.succeeded(index, attempt, output)

    def compensation_started(self, steps: list[str], indices: list[int]) -> Any:
        return self._next(
            CompensationStarted,
            cause="failure",
            error=ErrorInfo(code="BMC_UNREACHABLE", message="gave up"),
            steps=steps,
            indices=indices,
        )

    def cancel_requested(self) -> Any:
        return self._next(RunCancelRequested, requested_by="usr_bob")

    def completed(self, output: dict[str, Any] | None = None) -> RunCompleted:
        e: RunCompleted = self._next(RunCompleted, output=output or {})
        return e

    def failed(self, code: str = "BMC_UNREACHABLE", step: str | None = None) -> RunFailed:
        e: RunFailed = self._next(
            RunFailed, error=ErrorInfo(code=code, message="the run failed", step=step)
        )
        return e

    def cancelled(self) -> RunCancelled:
        e: RunCancelled = self._next(RunCancelled, requested_by="usr_bob")
        return e

    def happy(self, outputs: dict[int, dict[str, Any]] | None = None) -> RunHistory:
        """created, started, every step succeeds, completed."""
        self.created()
        self.started()
        for i in range(len(self.steps)):
            self.step_ok(i, (outputs or {}).get(i))
        self.completed()
        return self


def register_input(name: str = "node-1") -> dict[str, Any]:
    return {
        "name": name,
        "bmc": {
            "address": "https://10.0.0.1",
            "username": "admin",
            "password": "***",
            "verifyTls": False,
        },
        "tags": {"rack": "r1"},
    }


async def publish(js: JetStreamContext, events: list[AnyRunEvent]) -> int:
    """Append events to ``WF_EVENTS`` on their subjects; the last stream sequence."""
    seq = 0
    for e in events:
        subject = subjects.event(e.resource_type, e.resource_id, e.run_id, e.name)
        seq = (await js.publish(subject, encode(e))).seq
    return seq


def settings_for(url: str, db_path: Path, **overrides: Any) -> ProjectorSettings:
    values: dict[str, Any] = {
        "nats": NatsSettings(url=url),
        "db_path": str(db_path),
        "replica_name": "test",
        "heartbeat_s": 0.25,
        "log_json": False,
        **overrides,
    }
    return ProjectorSettings(**values)


@contextlib.asynccontextmanager
async def running(
    settings: ProjectorSettings, nc: Client, js: JetStreamContext, cls: type[Projector] = Projector
) -> AsyncIterator[Projector]:
    """A started in-process projector, stopped (cleanly) on exit."""
    projector = (
        create_projector(settings, nc, js)
        if cls is Projector
        else cls(settings, nc, js, DEFAULT_CATALOG)
    )
    await projector.start()
    try:
        yield projector
    finally:
        await projector.stop()


async def wait_applied(projector: Projector, seq: int, timeout: float = 10.0) -> None:
    assert await projector.position.wait_for(seq, timeout), (
        f"applied {projector.position.seq}, wanted {seq}"
    )


async def ask(nc: Client, query: Query, timeout: float = 5.0) -> QueryReply:
    tag = str(type(query).__struct_config__.tag)
    msg = await nc.request(subjects.query(tag), encode(query), timeout=timeout)
    return decode_reply(msg.data)


async def ok(nc: Client, query: Query) -> Any:
    """The data of a successful reply (fails the test otherwise)."""
    reply = await ask(nc, query)
    assert reply.ok, reply.error
    return reply.data


async def eventually(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval)
