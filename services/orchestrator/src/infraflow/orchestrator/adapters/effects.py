"""Carrying out the decider's effects against JetStream and the lock bucket."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Header

from infraflow.common import streams, subjects
from infraflow.common.contracts import CancelNotice, ResumeRun, encode
from infraflow.common.logs import trace_headers
from infraflow.orchestrator.adapters.locks import ResourceLocks
from infraflow.orchestrator.core import (
    AcquireLock,
    ArmTimer,
    CancelTimer,
    Dispatch,
    Effect,
    Input,
    LockBusy,
    LockGranted,
    NotifyCancel,
    ReleaseLock,
)

log = logging.getLogger(__name__)

_purge_request = msgspec.json.Encoder()


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class EffectRunner:
    def __init__(self, nc: Client, js: JetStreamContext, locks: ResourceLocks) -> None:
        self._nc = nc
        self._js = js
        self._locks = locks
        self.dispatched = 0

    async def run(self, effects: tuple[Effect, ...] | list[Effect]) -> list[Input]:
        """Run ``effects``; lock effects may yield follow-up inputs for the same run."""
        follow: list[Input] = []
        independent = [e for e in effects if not isinstance(e, (AcquireLock, ReleaseLock))]
        if independent:
            await asyncio.gather(*(self._one(e) for e in independent))
        for e in effects:
            if isinstance(e, AcquireLock):
                holder = await self._locks.acquire(
                    e.resource_type, e.resource_id, e.run_id, fail_if_busy=e.fail_if_busy
                )
                follow.append(LockGranted() if holder is None else LockBusy(holder))
            elif isinstance(e, ReleaseLock):
                nxt = await self._locks.release(e.resource_type, e.resource_id, e.run_id)
                if nxt is not None:
                    await self.resume(e.resource_type, e.resource_id, nxt, previous=e.run_id)
        return follow

    async def resume(
        self, resource_type: str, resource_id: str, run_id: str, *, previous: str | None
    ) -> None:
        cmd = ResumeRun(
            run_id=run_id,
            resource_type=resource_type,
            resource_id=resource_id,
            previous_holder=previous,
        )
        await self._js.publish(
            subjects.command("resume", run_id),
            encode(cmd),
            headers={Header.MSG_ID: f"resume:{run_id}:{previous}"},
        )

    async def _one(self, e: Effect) -> None:
        match e:
            case Dispatch():
                c = e.command
                await self._js.publish(
                    subjects.step(c.executor, c.site, c.action),
                    encode(c),
                    headers={Header.MSG_ID: c.attempt_id, **trace_headers()},
                )
                self.dispatched += 1
            case ArmTimer():
                t = e.timer
                await self._js.publish(
                    subjects.timer(t.run_id, e.name),
                    encode(t),
                    headers={
                        Header.SCHEDULE: "@at " + rfc3339(t.due),
                        Header.SCHEDULE_TARGET: subjects.timer_fired(t.run_id, e.name),
                        **trace_headers(),
                    },
                )
            case CancelTimer():
                # fire and forget: a purge that is lost only lets the timer fire, and the
                # decider ignores a timer whose attempt has moved on
                await self._nc.publish(
                    f"$JS.API.STREAM.PURGE.{streams.TIMERS}",
                    _purge_request.encode({"filter": subjects.timer(e.run_id, e.name)}),
                )
            case NotifyCancel():
                phase, index, attempt = e.attempt if e.attempt else (None, None, None)
                notice = CancelNotice(
                    run_id=e.run_id,
                    terminate=e.terminate,
                    phase=phase,
                    index=index,
                    attempt=attempt,
                )
                await self._nc.publish(subjects.cancel(e.run_id), encode(notice))
            case _:
                raise AssertionError(f"not an independent effect: {e!r}")
