"""The run decider: ``decide(state, input, ctx) -> Decision``.

Pure: no I/O, no clock, no randomness — time and new ids come in through ``Context``. It never
raises for bad runtime data; a problem becomes a failure event. After handling its input, the
decider *advances* the run as far as the state allows (next step, compensation, completion), so
any redelivered or duplicated input simply finds nothing left to do.

Inputs:  Start | Cancel | LockGranted | LockBusy | TimerFired | FactAppended | Recover
Outputs: events to append (in order) and effects for the shell (dispatch, timers, locks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from infraflow.common.catalog import Catalog, StepSpec, WorkflowType
from infraflow.common.contracts import (
    CancelRun,
    CompensationStarted,
    ErrorInfo,
    ExecuteStep,
    Phase,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    RunTimer,
    StartRun,
    StepScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StepTimedOut,
)
from infraflow.common.contracts.commands import TimerKind
from infraflow.orchestrator.core.effects import (
    AcquireLock,
    ArmTimer,
    CancelTimer,
    Dispatch,
    Effect,
    NotifyCancel,
    ReleaseLock,
)
from infraflow.orchestrator.core.state import (
    WAITING_FOR_LOCK,
    Attempt,
    AttemptStatus,
    RunState,
    RunStatus,
    compensation_plan,
    evolve,
    failed_compensations,
)

DEFAULT_SITE = "default"

# ---- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """A start command; for a retry, ``original`` is the folded state of the run retried."""

    command: StartRun
    original: RunState | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    command: CancelRun


@dataclass(frozen=True, slots=True)
class LockGranted:
    pass


@dataclass(frozen=True, slots=True)
class LockBusy:
    holder: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: RunTimer


@dataclass(frozen=True, slots=True)
class FactAppended:
    """An agent appended ``event`` to the log; the state passed to ``decide`` already has it."""

    event: RunEvent


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent reported progress on an attempt: push its heartbeat deadline out."""

    index: int
    attempt: int
    phase: Phase = "forward"


@dataclass(frozen=True, slots=True)
class Recover:
    """Nothing new: re-derive every effect the current state still needs (after a crash)."""


Input = Start | Cancel | LockGranted | LockBusy | TimerFired | FactAppended | Heartbeat | Recover


@dataclass(frozen=True, slots=True)
class Context:
    now: datetime
    new_id: Callable[[], str]
    catalog: Catalog


@dataclass(frozen=True, slots=True)
class Decision:
    events: tuple[RunEvent, ...]
    effects: tuple[Effect, ...]
    state: RunState
    retry_later: bool = False
    """The input arrived too early (e.g. a cancel before its run exists): redeliver it later."""


# ---- the decider --------------------------------------------------------------------------


def decide(state: RunState, inp: Input, ctx: Context) -> Decision:
    """Handle ``inp`` for the run in ``state`` and advance the run as far as possible."""
    b = _Builder(state, ctx, cause=_cause_of(inp))
    match inp:
        case Start():
            b.start(inp.command, inp.original)
        case Cancel():
            if state.status is RunStatus.NEW:
                return Decision((), (), state, retry_later=True)
            b.cancel(inp.command)
        case LockGranted():
            if state.status in WAITING_FOR_LOCK:
                b.emit(RunStarted, {})
            elif state.terminal and _mutating(state):
                b.effects.append(ReleaseLock(state.resource_type, state.resource_id, state.run_id))
        case LockBusy():
            b.busy(inp.holder)
        case TimerFired():
            b.timer(inp.timer)
        case FactAppended():
            b.fact(inp.event)
        case Heartbeat():
            b.heartbeat(inp)
        case Recover():
            b.effects.extend(outstanding(state, ctx))
        case _:
            assert_never(inp)
    b.advance()
    return b.decision()


def _cause_of(inp: Input) -> str | None:
    match inp:
        case Start() | Cancel():
            return f"cmd:{inp.command.run_id}:{type(inp.command).__name__}"
        case FactAppended():
            return inp.event.event_id
        case TimerFired():
            t = inp.timer
            return f"timer:{t.run_id}:{timer_name(t.kind, t.phase, t.index, t.attempt)}"
        case _:
            return None


def _mutating(s: RunState) -> bool:
    return bool(s.created and s.created.mutating)


class _Builder:
    def __init__(self, state: RunState, ctx: Context, cause: str | None) -> None:
        self.state = state
        self.ctx = ctx
        self.cause = cause
        self.events: list[RunEvent] = []
        self.effects: list[Effect] = []

    # -- emitting -------------------------------------------------------------------------

    def emit(self, kind: type[RunEvent], fields: dict[str, Any]) -> RunEvent:
        s = self.state
        event = kind(
            event_id=self.ctx.new_id(),
            run_id=s.run_id,
            resource_type=s.resource_type,
            resource_id=s.resource_id,
            time=self.ctx.now,
            causation_id=self.cause,
            **fields,
        )
        before = s
        self.state = evolve(s, event)
        self.events.append(event)
        self.effects.extend(_effects_of(event, before, self.state, self.ctx))
        return event

    def decision(self) -> Decision:
        effects = self.effects
        if self.state.terminal:
            # a run that ended within this decision no longer wants its lock or its timers
            effects = [e for e in effects if not isinstance(e, (AcquireLock, Dispatch, ArmTimer))]
        return Decision(tuple(self.events), tuple(_dedupe(effects)), self.state)

    # -- inputs ---------------------------------------------------------------------------

    def start(self, cmd: StartRun, original: RunState | None) -> None:
        if self.state.status is not RunStatus.NEW:
            return  # duplicate start: the run exists; advance() below finds what is left
        wf = self.ctx.catalog.get(cmd.workflow_type)
        prior: dict[str, Any] = {}
        problem: ErrorInfo | None = None
        if wf is None:
            problem = _error("VALIDATION_ERROR", f"unknown workflow type {cmd.workflow_type!r}")
        elif not wf.executable:
            problem = _error("VALIDATION_ERROR", f"workflow type {wf.name} is not available yet")
        elif cmd.retry_of:
            prior, problem = _retry_plan(wf, cmd, original)
        self.emit(
            RunCreated,
            {
                "workflow_type": cmd.workflow_type,
                "input": cmd.input,
                "triggered_by": cmd.triggered_by,
                "steps": [s.name for s in wf.steps] if wf else [],
                "project_id": cmd.project_id,
                "site": cmd.site,
                "mutating": wf.mutating if wf else False,
                "on_busy": cmd.on_busy,
                "retry_of": cmd.retry_of,
                "from_step": cmd.from_step,
                "prior_outputs": prior,
                "request_id": cmd.request_id,
                "estimated_duration_ms": cmd.estimated_duration_ms,
            },
        )
        if problem is not None:
            self.emit(RunFailed, {"error": problem})

    def cancel(self, cmd: CancelRun) -> None:
        s = self.state
        if s.terminal:
            return
        if s.cancel is not None and (s.cancel.terminate or not cmd.terminate):
            return
        self.emit(
            RunCancelRequested,
            {"requested_by": cmd.requested_by, "reason": cmd.reason, "terminate": cmd.terminate},
        )

    def busy(self, holder: str) -> None:
        s = self.state
        if s.status is not RunStatus.PENDING or s.created is None:
            return
        if s.created.on_busy == "fail":
            err = _error(
                "RESOURCE_BUSY",
                f"{s.resource_type} {s.resource_id} is busy with run {holder}",
                details={"runId": holder},
            )
            self.emit(RunFailed, {"error": err})
        else:
            self.emit(RunQueued, {"waiting_for": holder})

    def timer(self, t: RunTimer) -> None:
        s = self.state
        cur = s.current
        if s.terminal or cur is None or not cur.same(t.phase, t.index, t.attempt):
            return  # stale: that attempt is long gone
        if t.kind == "timeout" and cur.in_flight:
            self.emit(StepTimedOut, _attempt_fields(cur) | {"timeout": "start_to_close"})
        elif t.kind == "heartbeat" and cur.status is AttemptStatus.STARTED:
            self.emit(StepTimedOut, _attempt_fields(cur) | {"timeout": "heartbeat"})
        elif t.kind == "retry" and not cur.in_flight and retry_due(s, self.ctx.catalog) is not None:
            self._schedule(cur.phase, cur.index, cur.attempt + 1)

    def heartbeat(self, hb: Heartbeat) -> None:
        s = self.state
        cur = s.current
        if s.terminal or cur is None or not cur.same(hb.phase, hb.index, hb.attempt):
            return
        spec = step_spec(s, cur, self.ctx.catalog)
        if cur.status is AttemptStatus.STARTED and spec is not None and spec.heartbeat_timeout_s:
            due = self.ctx.now + timedelta(seconds=spec.heartbeat_timeout_s)
            self.effects.append(_timer(s, cur, "heartbeat", due))

    def fact(self, event: RunEvent) -> None:
        s = self.state
        cur = s.current
        if s.terminal or cur is None:
            return
        if not isinstance(event, (StepStarted, StepSucceeded)) and event.name != "step_failed":
            return
        phase: Phase = getattr(event, "phase", "forward")
        index: int = getattr(event, "index", -1)
        attempt: int = getattr(event, "attempt", -1)
        if not cur.same(phase, index, attempt):
            return  # a late or duplicate fact: recorded in the log, changes nothing
        if cur.status is AttemptStatus.STARTED:
            # the timeout timer is armed already; only the heartbeat deadline starts now
            spec = step_spec(s, cur, self.ctx.catalog)
            if spec is not None and spec.heartbeat_timeout_s and cur.started_at is not None:
                since = max(cur.started_at, self.ctx.now)
                due = since + timedelta(seconds=spec.heartbeat_timeout_s)
                self.effects.append(_timer(s, cur, "heartbeat", due))
            return
        self.effects.extend(_attempt_effects(s, cur, self.ctx))

    # -- advancing ------------------------------------------------------------------------

    def advance(self) -> None:
        for _ in range(10_000):  # bounded: every step below moves the run forward
            if not self._step_once():
                return
        raise AssertionError("decider did not converge")  # pragma: no cover

    def _step_once(self) -> bool:
        s = self.state
        if s.status is RunStatus.NEW or s.terminal or s.created is None:
            return False
        if s.status in WAITING_FOR_LOCK:
            if s.cancel is not None:
                self.emit(RunCancelled, _cancelled(s, compensated=False))
                return True
            if not s.created.mutating:
                self.emit(RunStarted, {})
                return True
            return False
        wf = self.ctx.catalog.get(s.created.workflow_type)
        if wf is None:
            err = _error("VALIDATION_ERROR", f"unknown workflow type {s.created.workflow_type!r}")
            self.emit(RunFailed, {"error": err})
            return True
        cur = s.current
        if s.cancel is not None and s.cancel.terminate:
            self.emit(RunCancelled, _cancelled(s, compensated=False))
            return True
        if cur is not None and cur.in_flight:
            return False
        if s.compensation is None:
            return self._forward(s, wf, cur)
        return self._compensate(s, wf, cur)

    def _forward(self, s: RunState, wf: WorkflowType, cur: Attempt | None) -> bool:
        assert s.created is not None
        if s.cancel is not None:
            return self._begin_compensation(s, wf, "cancel", None)
        if cur is not None and cur.status in (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT):
            if retry_due(s, self.ctx.catalog) is not None:
                return False  # the retry timer will schedule the next attempt
            if cur.index >= s.next_index:  # the failure is the latest word on this step
                return self._begin_compensation(s, wf, "failure", cur.error)
        if s.next_index < len(wf.steps):
            step = wf.steps[s.next_index]
            if s.created.from_step and s.next_index < _index_of(wf, s.created.from_step):
                self.emit(
                    StepSkipped,
                    {
                        "step": step.name,
                        "index": s.next_index,
                        "output": s.created.prior_outputs.get(step.name, {}),
                        "from_run": s.created.retry_of or "",
                    },
                )
                return True
            self._schedule("forward", s.next_index, 1)
            return True
        self.emit(RunCompleted, {"output": dict(s.outputs)})
        return True

    def _begin_compensation(
        self, s: RunState, wf: WorkflowType, cause: str, error: ErrorInfo | None
    ) -> bool:
        plan = [i for i in compensation_plan(s) if wf.steps[i].compensation is not None]
        if plan:
            names = [_comp_spec(wf, i).name for i in plan]
            self.emit(
                CompensationStarted,
                {"cause": cause, "error": error, "steps": names, "indices": plan},
            )
        elif cause == "cancel":
            self.emit(RunCancelled, _cancelled(s, compensated=False))
        else:
            self.emit(RunFailed, {"error": error or _error("STEP_FAILED", "step failed")})
        return True

    def _compensate(self, s: RunState, wf: WorkflowType, cur: Attempt | None) -> bool:
        comp = s.compensation
        assert comp is not None
        if (
            cur is not None
            and cur.phase == "compensation"
            and cur.status in (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT)
            and retry_due(s, self.ctx.catalog) is not None
        ):
            return False
        if comp.pending:
            self._schedule("compensation", comp.pending[0], 1)
            return True
        failed = failed_compensations(s)
        if comp.cause == "cancel":
            fields = _cancelled(s, compensated=not failed)
            self.emit(RunCancelled, fields)
            return True
        err = s.failure or _error("STEP_FAILED", "step failed")
        if failed:
            details = dict(err.details or {})
            details["failedCompensations"] = list(failed)
            err = ErrorInfo(
                code=err.code,
                message=err.message,
                retryable=err.retryable,
                step=err.step,
                details=details,
            )
        self.emit(RunFailed, {"error": err, "compensated": not failed})
        return True

    def _schedule(self, phase: Phase, index: int, attempt: int) -> None:
        s = self.state
        assert s.created is not None
        wf = self.ctx.catalog[s.created.workflow_type]
        spec = wf.steps[index] if phase == "forward" else _comp_spec(wf, index)
        self.emit(
            StepScheduled,
            {
                "step": spec.name,
                "index": index,
                "attempt": attempt,
                "phase": phase,
                "executor": spec.executor,
                "action": spec.action,
                "site": s.created.site or DEFAULT_SITE,
                "timeout_s": spec.timeout_s,
                "heartbeat_timeout_s": spec.heartbeat_timeout_s,
            },
        )


# ---- helpers ------------------------------------------------------------------------------


def _attempt_fields(cur: Attempt) -> dict[str, Any]:
    return {"step": cur.step, "index": cur.index, "attempt": cur.attempt, "phase": cur.phase}


def _error(code: str, message: str, *, details: dict[str, Any] | None = None) -> ErrorInfo:
    return ErrorInfo(code=code, message=message, retryable=False, details=details)


def _cancelled(s: RunState, *, compensated: bool) -> dict[str, Any]:
    req = s.cancel
    return {
        "requested_by": req.requested_by if req else "",
        "terminated": bool(req and req.terminate),
        "compensated": compensated,
    }


def _index_of(wf: WorkflowType, step: str) -> int:
    try:
        return wf.step_index(step)
    except KeyError:
        return 0


def _comp_spec(wf: WorkflowType, index: int) -> StepSpec:
    spec = wf.steps[index].compensation
    assert spec is not None
    return spec


def _retry_plan(
    wf: WorkflowType, cmd: StartRun, original: RunState | None
) -> tuple[dict[str, Any], ErrorInfo | None]:
    """Outputs carried over from the original run, or why the retry cannot proceed."""
    if original is None or original.created is None:
        return {}, _error("NOT_FOUND", f"run {cmd.retry_of} not found")
    if original.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        return {}, _error(
            "INVALID_STATE_TRANSITION", f"run {cmd.retry_of} is {original.status}, not failed"
        )
    if original.created.workflow_type != wf.name:
        return {}, _error("VALIDATION_ERROR", "a retry must use the original run's workflow type")
    if not cmd.from_step:
        return {}, None
    try:
        k = wf.step_index(cmd.from_step)
    except KeyError:
        return {}, _error("VALIDATION_ERROR", f"unknown step {cmd.from_step!r}")
    missing = [
        s.name
        for i, s in enumerate(wf.steps[:k])
        if s.name not in original.outputs or i in original.compensated
    ]
    if missing:
        return {}, _error(
            "INVALID_STATE_TRANSITION",
            f"steps before {cmd.from_step} did not complete (or were compensated) in run "
            f"{cmd.retry_of}: {missing}",
        )
    return {s.name: original.outputs[s.name] for s in wf.steps[:k]}, None


def step_spec(s: RunState, cur: Attempt, catalog: Catalog) -> StepSpec | None:
    if s.created is None:
        return None
    wf = catalog.get(s.created.workflow_type)
    if wf is None or cur.index >= len(wf.steps):
        return None
    spec = wf.steps[cur.index]
    return spec if cur.phase == "forward" else spec.compensation


def retry_due(s: RunState, catalog: Catalog) -> datetime | None:
    """When the current failed attempt will be retried, or None if it will not be."""
    cur = s.current
    if cur is None or cur.status not in (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT):
        return None
    if cur.phase == "forward" and (s.cancel is not None or s.compensation is not None):
        return None  # cancelling or compensating: no more forward attempts
    spec = step_spec(s, cur, catalog)
    err = cur.error
    if spec is None or err is None or cur.resolved_at is None:
        return None
    if not spec.retry.allows_retry(cur.attempt, err.code, err.retryable):
        return None
    seed = f"{s.run_id}:{cur.phase}:{cur.index}:{cur.attempt}"
    return cur.resolved_at + timedelta(seconds=spec.retry.delay_s(cur.attempt, seed))


def timer_name(kind: TimerKind, phase: Phase, index: int, attempt: int) -> str:
    return f"{kind}-{'f' if phase == 'forward' else 'c'}{index}-{attempt}"


def _timer(s: RunState, cur: Attempt, kind: TimerKind, due: datetime) -> ArmTimer:
    t = RunTimer(
        run_id=s.run_id,
        resource_type=s.resource_type,
        resource_id=s.resource_id,
        kind=kind,
        index=cur.index,
        attempt=cur.attempt,
        phase=cur.phase,
        due=due,
    )
    return ArmTimer(name=timer_name(kind, cur.phase, cur.index, cur.attempt), timer=t)


def _cancel_timers(s: RunState, cur: Attempt, *kinds: TimerKind) -> list[Effect]:
    return [CancelTimer(s.run_id, timer_name(k, cur.phase, cur.index, cur.attempt)) for k in kinds]


def step_command(s: RunState, cur: Attempt, catalog: Catalog) -> ExecuteStep | None:
    """The command for the current attempt: the same on every call for the same state."""
    spec = step_spec(s, cur, catalog)
    created = s.created
    if spec is None or created is None:
        return None
    hb = spec.heartbeat_timeout_s
    return ExecuteStep(
        run_id=s.run_id,
        resource_type=s.resource_type,
        resource_id=s.resource_id,
        workflow_type=created.workflow_type,
        step=spec.name,
        index=cur.index,
        attempt=cur.attempt,
        phase=cur.phase,
        executor=spec.executor,
        action=spec.action,
        site=created.site or DEFAULT_SITE,
        params=dict(spec.params),
        input=created.input,
        outputs=dict(s.outputs),
        project_id=created.project_id,
        timeout_s=spec.timeout_s,
        heartbeat_interval_s=hb / 3 if hb else None,
        scheduled_at=cur.scheduled_at,
    )


def _attempt_effects(s: RunState, cur: Attempt, ctx: Context) -> list[Effect]:
    """Effects the current attempt needs in its current status."""
    spec = step_spec(s, cur, ctx.catalog)
    if spec is None:
        return []
    out: list[Effect] = []
    if cur.status is AttemptStatus.SCHEDULED:
        cmd = step_command(s, cur, ctx.catalog)
        if cmd is not None:
            out.append(Dispatch(cmd))
        out.append(_timer(s, cur, "timeout", cur.scheduled_at + timedelta(seconds=spec.timeout_s)))
    elif cur.status is AttemptStatus.STARTED:
        out.append(_timer(s, cur, "timeout", cur.scheduled_at + timedelta(seconds=spec.timeout_s)))
        if spec.heartbeat_timeout_s and cur.started_at is not None:
            # never earlier than a deadline heartbeats may have pushed out meanwhile
            since = max(cur.started_at, ctx.now)
            hb_due = since + timedelta(seconds=spec.heartbeat_timeout_s)
            out.append(_timer(s, cur, "heartbeat", hb_due))
    else:
        kinds: list[TimerKind] = (
            ["timeout", "heartbeat"] if spec.heartbeat_timeout_s else ["timeout"]
        )
        out.extend(_cancel_timers(s, cur, *kinds))
        if cur.status is AttemptStatus.TIMED_OUT:
            # the agent may still be working on it: ask it to stop that attempt only
            out.append(NotifyCancel(s.run_id, attempt=(cur.phase, cur.index, cur.attempt)))
        due = retry_due(s, ctx.catalog)
        if due is not None:
            out.append(_timer(s, cur, "retry", due))
    if s.cancel is not None and cur.in_flight and (cur.phase == "forward" or s.cancel.terminate):
        # a cancel stops forward work; the compensation it triggers must run to the end
        out.append(NotifyCancel(s.run_id, s.cancel.terminate))
    return out


def _effects_of(event: RunEvent, before: RunState, after: RunState, ctx: Context) -> list[Effect]:
    match event:
        case RunCreated():
            if event.mutating:
                return [
                    AcquireLock(
                        after.resource_type,
                        after.resource_id,
                        after.run_id,
                        fail_if_busy=event.on_busy == "fail",
                    )
                ]
            return []
        case StepScheduled() | StepTimedOut():
            cur = after.current
            # (a fired retry timer is consumed, so there is nothing to cancel for it)
            return _attempt_effects(after, cur, ctx) if cur is not None else []
        case RunCancelRequested():
            cur = after.current
            if (
                cur is not None
                and cur.in_flight
                and after.status is RunStatus.RUNNING
                and (cur.phase == "forward" or event.terminate)
            ):
                return [NotifyCancel(after.run_id, event.terminate)]
            return []
        case RunCompleted() | RunFailed() | RunCancelled():
            return _terminal_effects(before, after, ctx)
        case _:
            return []


def _terminal_effects(before: RunState, after: RunState, ctx: Context) -> list[Effect]:
    out: list[Effect] = []
    cur = before.current
    if cur is not None:
        if cur.in_flight:
            spec = step_spec(before, cur, ctx.catalog)
            hb = spec is not None and spec.heartbeat_timeout_s
            out.extend(
                _cancel_timers(after, cur, "timeout", "heartbeat")
                if hb
                else _cancel_timers(after, cur, "timeout")
            )
            out.append(NotifyCancel(after.run_id, terminate=True))
        elif cur.status in (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT):
            # a retry backoff may be armed (a cancel may have just pre-empted it): drop it
            out.extend(_cancel_timers(after, cur, "retry"))
    if _mutating(after):
        out.append(ReleaseLock(after.resource_type, after.resource_id, after.run_id))
    return out


def outstanding(s: RunState, ctx: Context) -> list[Effect]:
    """Every effect the run still needs, derived from its state alone (idempotent)."""
    if s.status is RunStatus.NEW or s.created is None:
        return []
    if s.terminal:
        return _terminal_effects(s, s, ctx)
    if s.status in WAITING_FOR_LOCK:
        if s.created.mutating:
            return [
                AcquireLock(
                    s.resource_type,
                    s.resource_id,
                    s.run_id,
                    fail_if_busy=s.created.on_busy == "fail",
                )
            ]
        return []
    cur = s.current
    return _attempt_effects(s, cur, ctx) if cur is not None else []


def _dedupe(effects: list[Effect]) -> list[Effect]:
    seen: set[Effect] = set()
    out: list[Effect] = []
    for e in effects:
        key = e if not isinstance(e, Dispatch) else Dispatch(e.command)
        try:
            if key in seen:
                continue
            seen.add(key)
        except TypeError:  # unhashable payloads (dicts inside commands): keep them
            pass
        out.append(e)
    return out
