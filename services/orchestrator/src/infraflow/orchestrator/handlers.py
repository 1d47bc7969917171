"""NATS handlers: commands, agent facts, fired timers and heartbeats become decider inputs.

For each input the shell loads the run (only events it has not seen), decides, appends the
decision with optimistic concurrency (re-loading and re-deciding on conflict), then carries out
the effects. Inputs of one resource are handled one at a time, in arrival order (FIFO locks).
A redelivered message also re-derives every effect the run still needs, which is how a crash
between "appended" and "dispatched" heals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import msgspec
from nats.aio.msg import Msg
from nats.js.api import Header

from infraflow.common import subjects
from infraflow.common.catalog import Catalog
from infraflow.common.contracts import (
    CancelRun,
    ErrorInfo,
    ResumeRun,
    RunEvent,
    RunFailed,
    StartRun,
    StepHeartbeat,
    StepStarted,
    decode_command,
    decode_event,
)
from infraflow.common.contracts.commands import RunTimer
from infraflow.common.errors import AppendConflictError
from infraflow.common.ids import new_id
from infraflow.common.jetstream import EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT
from infraflow.common.logs import adopt_trace, run_id_var
from infraflow.orchestrator.adapters.effects import EffectRunner
from infraflow.orchestrator.adapters.eventlog import RunLog
from infraflow.orchestrator.adapters.locks import ResourceLocks
from infraflow.orchestrator.core import (
    Cancel,
    Context,
    Decision,
    Dispatch,
    Effect,
    FactAppended,
    Heartbeat,
    Input,
    Recover,
    RunState,
    Start,
    TimerFired,
    decide,
    evolve,
)
from infraflow.orchestrator.errors import DecisionConflictError

log = logging.getLogger(__name__)

_MAX_CONFLICTS = 10
_MAX_EARLY_DELIVERIES = 60
_timer_decoder = msgspec.json.Decoder(RunTimer)
_heartbeat_decoder = msgspec.json.Decoder(StepHeartbeat)


def _dispatched_after(effects: tuple[Effect, ...], seq: int) -> tuple[Effect, ...]:
    """Step commands carry the run's sequence after the decision that chose them: an agent
    that finds the run unchanged since then knows the attempt is current (``after_seq``)."""
    if not any(isinstance(e, Dispatch) for e in effects):
        return effects
    return tuple(
        Dispatch(msgspec.structs.replace(e.command, after_seq=seq))
        if isinstance(e, Dispatch)
        else e
        for e in effects
    )


class Orchestrator:
    def __init__(
        self,
        log_: RunLog,
        effects: EffectRunner,
        locks: ResourceLocks,
        catalog: Catalog,
        *,
        heartbeat_min_interval_s: float = 2.0,
    ) -> None:
        self.log = log_
        self.effects = effects
        self.locks = locks
        self.catalog = catalog
        self._serial: dict[str, tuple[asyncio.Lock, int]] = {}
        self._hb_seen: dict[str, float] = {}
        self._hb_min = heartbeat_min_interval_s
        self.processed = 0
        self.failures = 0

    # ---- message handlers ---------------------------------------------------------------

    async def handle_command(self, msg: Msg) -> None:
        adopt_trace(msg.headers)  # each message has its own task, so its own trace context
        try:
            cmd = decode_command(msg.data)
        except msgspec.ValidationError:
            log.error("undecodable command on %s; dropped", msg.subject)
            await msg.term()
            return
        redelivered = msg.metadata.num_delivered > 1
        inp: Input
        through = None
        match cmd:
            case StartRun():
                original = None
                if cmd.retry_of:
                    original, _ = await self.log.current(
                        cmd.resource_type, cmd.resource_id, cmd.retry_of
                    )
                inp = Start(cmd, original)
                if not redelivered:
                    through = 0  # the first delivery of a start: the run has no events yet
            case CancelRun():
                inp = Cancel(cmd)
            case ResumeRun():
                inp = Recover()
        done = await self.process(
            cmd.resource_type,
            cmd.resource_id,
            cmd.run_id,
            inp,
            recover=redelivered,
            through=through,
        )
        if done:
            await msg.ack()
        elif msg.metadata.num_delivered >= _MAX_EARLY_DELIVERIES:
            log.warning("command %s for unknown run %s dropped", msg.subject, cmd.run_id)
            await msg.term()
        else:
            await msg.nak(delay=1.0)

    async def handle_fact(self, msg: Msg) -> None:
        adopt_trace(msg.headers)
        try:
            rtype, rid, run_id, _ = subjects.parse_event(msg.subject)
            event = decode_event(msg.data)
        except (ValueError, msgspec.ValidationError):
            log.error("undecodable fact on %s; skipped", msg.subject)
            await msg.ack()
            return
        redelivered = msg.metadata.num_delivered > 1
        through = None if redelivered else self._follow(msg, rtype, rid, run_id, event)
        if isinstance(event, StepStarted) and not redelivered and self._nothing_to_decide(event):
            await msg.ack()
            return
        await self.process(
            rtype, rid, run_id, FactAppended(event), recover=redelivered, through=through
        )
        await msg.ack()

    def _follow(self, msg: Msg, rtype: str, rid: str, run_id: str, event: RunEvent) -> int | None:
        """Agents append a fact expecting the run's previous event (the stored message keeps
        that expectation). When it is the cached sequence, the fact is folded onto the cache
        and the run need not be read back: the sequence the cache then reflects, else None.
        Called before the handler's first await, so facts of a run are followed in order."""
        headers = msg.headers or {}
        prev = headers.get(Header.EXPECTED_LAST_SUBJECT_SEQUENCE)
        scope = headers.get(EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT)
        if prev is None or scope != subjects.run_events(rtype, rid, run_id):
            return None
        seq = int(msg.metadata.sequence.stream)
        return seq if self.log.follow(run_id, event, seq, int(prev)) else None

    async def handle_timer(self, msg: Msg) -> None:
        adopt_trace(msg.headers)
        try:
            timer = _timer_decoder.decode(msg.data)
        except msgspec.ValidationError:
            log.error("undecodable timer on %s; dropped", msg.subject)
            await msg.ack()
            return
        await self.process(timer.resource_type, timer.resource_id, timer.run_id, TimerFired(timer))
        await msg.ack()

    async def handle_heartbeat(self, msg: Msg) -> None:
        try:
            hb = _heartbeat_decoder.decode(msg.data)
        except msgspec.ValidationError:
            return
        key = f"{hb.run_id}:{hb.phase}:{hb.index}:{hb.attempt}"
        now = time.monotonic()
        if now - self._hb_seen.get(key, 0.0) < self._hb_min:
            return
        self._hb_seen[key] = now
        if len(self._hb_seen) > 50_000:
            self._hb_seen.clear()
        try:
            await self.process(
                hb.resource_type,
                hb.resource_id,
                hb.run_id,
                Heartbeat(hb.index, hb.attempt, hb.phase),
            )
        except Exception:  # heartbeats are best effort; the deadline timer is the safety net
            log.exception("heartbeat for %s not processed", hb.run_id)

    # ---- the core loop ------------------------------------------------------------------

    async def process(
        self,
        resource_type: str,
        resource_id: str,
        run_id: str,
        inp: Input,
        *,
        recover: bool = False,
        through: int | None = None,
    ) -> bool:
        """Handle one input (and its follow-ups). False: the run does not exist yet.
        ``through``: the cache is known to reflect the run up to this sequence (a followed
        fact), so the first decision needs no read."""
        token = run_id_var.set(run_id)
        # Inputs of one run are handled one at a time, in arrival order. Starts of mutating runs
        # are also ordered per resource, so the lock queue is FIFO in arrival order.
        serial_keys = [run_id]
        if isinstance(inp, Start) and self._mutating(inp.command.workflow_type):
            serial_keys.insert(0, f"{resource_type}.{resource_id}")
        try:
            async with self._one_at_a_time(*serial_keys):
                inputs: list[Input] = [inp, Recover()] if recover else [inp]
                while inputs:
                    decided = await self._decide_and_append(
                        resource_type, resource_id, run_id, inputs.pop(0), through
                    )
                    if decided is None:
                        return False
                    decision, seq = decided
                    through = seq  # follow-ups (lock answers) decide on what was just seen
                    inputs.extend(await self.effects.run(_dispatched_after(decision.effects, seq)))
                    self.processed += 1
            return True
        finally:
            run_id_var.reset(token)

    async def _decide_and_append(
        self, rtype: str, rid: str, run_id: str, inp: Input, through: int | None = None
    ) -> tuple[Decision, int] | None:
        """Decide on the current state and append the decision; the decision and the run's
        last sequence after it (None: the input came too early)."""
        for _ in range(_MAX_CONFLICTS):
            state, seq = await self.log.current(rtype, rid, run_id, through=through)
            through = None  # after a conflict, always read
            decision = self._safe_decide(state, inp)
            if decision.retry_later:
                return None
            if not decision.events:
                return decision, seq
            try:
                return decision, await self.log.append(state, seq, decision.events)
            except AppendConflictError:
                continue  # someone else wrote first: reload and decide again
        raise DecisionConflictError(f"run {run_id}: too many concurrent writers")

    def _context(self) -> Context:
        return Context(now=datetime.now(UTC), new_id=lambda: new_id("evt"), catalog=self.catalog)

    def _safe_decide(self, state: RunState, inp: Input) -> Decision:
        """An unexpected error becomes a failure event, never a dead consumer."""
        ctx = self._context()
        try:
            return decide(state, inp, ctx)
        except Exception as exc:
            self.failures += 1
            log.exception("decider failed for run %s on %s", state.run_id, type(inp).__name__)
            if state.created is None or state.terminal:
                return Decision((), (), state)
            event = RunFailed(
                event_id=ctx.new_id(),
                run_id=state.run_id,
                resource_type=state.resource_type,
                resource_id=state.resource_id,
                time=ctx.now,
                error=ErrorInfo(
                    code="INTERNAL_ERROR", message=f"orchestrator error: {type(exc).__name__}"
                ),
            )
            return Decision((event,), (), evolve(state, event))

    def _nothing_to_decide(self, event: StepStarted) -> bool:
        """A started attempt only matters to the decider when its step has a heartbeat
        deadline to arm; skip loading the run otherwise (the next input loads the fact)."""
        state = self.log.cached(event.run_id)
        if state is None or state.created is None:
            return False
        wf = self.catalog.get(state.created.workflow_type)
        if wf is None or event.index >= len(wf.steps):
            return False
        spec = wf.steps[event.index]
        if event.phase == "compensation":
            spec = spec.compensation or spec
        return spec.heartbeat_timeout_s is None

    def _mutating(self, workflow_type: str) -> bool:
        wf = self.catalog.get(workflow_type)
        return wf is None or wf.mutating

    @asynccontextmanager
    async def _one_at_a_time(self, *keys: str) -> AsyncIterator[None]:
        """Hold the in-process locks of ``keys`` (always taken in the same order)."""
        if len(keys) == 1:  # the common case: one run's inputs
            async with self._serialized(keys[0]):
                yield
            return
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                await stack.enter_async_context(self._serialized(key))
            yield

    @asynccontextmanager
    async def _serialized(self, key: str) -> AsyncIterator[None]:
        held = self._serial.get(key)
        lock, users = held if held is not None else (asyncio.Lock(), 0)
        self._serial[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._serial[key]
            if users <= 1:
                del self._serial[key]
            else:
                self._serial[key] = (lock, users - 1)

    # ---- lock hygiene -------------------------------------------------------------------

    async def sweep_locks(self) -> int:
        """Re-drive every lock holder: a finished holder releases (waking the next run), a
        holder still waiting for its turn starts. Returns how many locks were looked at."""
        held = await self.locks.held()
        for rtype, rid, entry in held:
            try:
                await self.process(rtype, rid, entry.holder, Recover())
            except Exception:
                log.exception("lock sweep failed for %s.%s", rtype, rid)
        return len(held)
