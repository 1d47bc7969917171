"""A run's state, folded from its events: ``evolve(state, event) -> state``.

The fold is total and pure. Facts that no longer matter (a late result for an attempt the
orchestrator already resolved, a duplicate, anything after the terminal event) leave the state
unchanged, so replaying any history, with duplicates, gives the same state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from infraflow.common.contracts import (
    CompensationStarted,
    ErrorInfo,
    Phase,
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
)


class RunStatus(StrEnum):
    NEW = "new"  # no events yet
    PENDING = "pending"  # created, waiting for its resource lock
    QUEUED = "queued"  # another run holds the resource
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
WAITING_FOR_LOCK: Final = frozenset({RunStatus.PENDING, RunStatus.QUEUED})


class AttemptStatus(StrEnum):
    SCHEDULED = "scheduled"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


IN_FLIGHT: Final = frozenset({AttemptStatus.SCHEDULED, AttemptStatus.STARTED})

STEP_TIMEOUT_CODE: Final = "STEP_TIMEOUT"
HEARTBEAT_TIMEOUT_CODE: Final = "HEARTBEAT_TIMEOUT"


@dataclass(frozen=True, slots=True)
class Attempt:
    """The latest attempt of some step, forward or compensating."""

    phase: Phase
    index: int
    attempt: int
    step: str
    status: AttemptStatus
    scheduled_at: datetime
    started_at: datetime | None = None
    resolved_at: datetime | None = None
    error: ErrorInfo | None = None
    output: dict[str, Any] | None = None

    def same(self, phase: Phase, index: int, attempt: int) -> bool:
        return self.phase == phase and self.index == index and self.attempt == attempt

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT


@dataclass(frozen=True, slots=True)
class Compensation:
    """Undoing completed steps: ``pending`` forward indices still to undo, in order."""

    cause: str  # "failure" | "cancel"
    pending: tuple[int, ...]
    failed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunState:
    """Everything the decider needs to know about one run."""

    run_id: str
    resource_type: str
    resource_id: str
    status: RunStatus = RunStatus.NEW
    created: RunCreated | None = None
    next_index: int = 0
    """The next forward step to run (steps before it succeeded or were skipped)."""
    current: Attempt | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: tuple[int, ...] = ()
    """Forward indices whose effects happened (succeeded or skipped), in order."""
    unknown: tuple[int, ...] = ()
    """Forward indices whose last attempt timed out: their effects may have happened."""
    compensated: tuple[int, ...] = ()
    """Forward indices whose compensation succeeded: their effects were undone."""
    cancel: RunCancelRequested | None = None
    failure: ErrorInfo | None = None
    compensation: Compensation | None = None
    waiting_for: str | None = None
    events: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def workflow_type(self) -> str | None:
        return self.created.workflow_type if self.created else None


def initial(run_id: str, resource_type: str, resource_id: str) -> RunState:
    return RunState(run_id=run_id, resource_type=resource_type, resource_id=resource_id)


def fold(state: RunState, events: Iterable[RunEvent]) -> RunState:
    for e in events:
        state = evolve(state, e)
    return state


def evolve(s: RunState, e: RunEvent) -> RunState:
    """Apply one event. Unknown, stale or duplicate events leave the state as it is."""
    if e.run_id != s.run_id:
        return s
    s = replace(s, events=s.events + 1)
    if s.terminal:
        return s  # nothing changes a finished run (late facts are kept in the log only)
    match e:
        case RunCreated():
            if s.created is not None:
                return s
            return replace(s, status=RunStatus.PENDING, created=e)
        case RunQueued():
            if s.status not in WAITING_FOR_LOCK:
                return s
            return replace(s, status=RunStatus.QUEUED, waiting_for=e.waiting_for)
        case RunStarted():
            if s.status not in WAITING_FOR_LOCK:
                return s
            return replace(s, status=RunStatus.RUNNING, waiting_for=None)
        case StepSkipped():
            if s.status is not RunStatus.RUNNING or e.index != s.next_index:
                return s
            return replace(
                s,
                next_index=e.index + 1,
                outputs={**s.outputs, e.step: e.output},
                done=(*s.done, e.index),
            )
        case StepScheduled():
            cur = s.current
            if cur is not None and cur.in_flight:
                return s  # one attempt at a time; a second schedule is a duplicate
            if e.phase == "compensation":
                s = _enter_compensation_step(s, e.index)
            attempt = Attempt(
                phase=e.phase,
                index=e.index,
                attempt=e.attempt,
                step=e.step,
                status=AttemptStatus.SCHEDULED,
                scheduled_at=e.time,
            )
            return replace(s, current=attempt)
        case StepStarted():
            cur = s.current
            if cur is None or not cur.same(e.phase, e.index, e.attempt):
                return s
            if cur.status is not AttemptStatus.SCHEDULED:
                return s
            return replace(s, current=replace(cur, status=AttemptStatus.STARTED, started_at=e.time))
        case StepSucceeded():
            cur = s.current
            if cur is None or not cur.same(e.phase, e.index, e.attempt) or not cur.in_flight:
                return s
            resolved = replace(
                cur, status=AttemptStatus.SUCCEEDED, resolved_at=e.time, output=e.output
            )
            if e.phase == "forward":
                return replace(
                    s,
                    current=resolved,
                    next_index=e.index + 1,
                    outputs={**s.outputs, e.step: e.output},
                    done=(*s.done, e.index),
                    unknown=tuple(i for i in s.unknown if i != e.index),
                )
            return replace(s, current=resolved, compensated=(*s.compensated, e.index))
        case StepFailed():
            cur = s.current
            if cur is None or not cur.same(e.phase, e.index, e.attempt) or not cur.in_flight:
                return s
            err = replace_step(e.error, cur.step)
            return replace(
                s, current=replace(cur, status=AttemptStatus.FAILED, resolved_at=e.time, error=err)
            )
        case StepTimedOut():
            cur = s.current
            if cur is None or not cur.same(e.phase, e.index, e.attempt) or not cur.in_flight:
                return s
            code = HEARTBEAT_TIMEOUT_CODE if e.timeout == "heartbeat" else STEP_TIMEOUT_CODE
            err = ErrorInfo(
                code=code,
                message=f"step {cur.step} attempt {cur.attempt} timed out ({e.timeout})",
                retryable=True,
                step=cur.step,
            )
            resolved = replace(cur, status=AttemptStatus.TIMED_OUT, resolved_at=e.time, error=err)
            unknown = s.unknown
            if e.phase == "forward" and e.index not in unknown:
                unknown = (*unknown, e.index)
            return replace(s, current=resolved, unknown=unknown)
        case CompensationStarted():
            if s.compensation is not None:
                return s
            comp = Compensation(cause=e.cause, pending=tuple(e.indices))
            return replace(s, compensation=comp, failure=e.error or s.failure)
        case RunCancelRequested():
            if s.cancel is not None and (s.cancel.terminate or not e.terminate):
                return s
            return replace(s, cancel=e)
        case RunCompleted():
            return replace(s, status=RunStatus.COMPLETED)
        case RunFailed():
            return replace(s, status=RunStatus.FAILED, failure=e.error)
        case RunCancelled():
            return replace(s, status=RunStatus.CANCELLED)
        case _:
            return s


def _enter_compensation_step(s: RunState, index: int) -> RunState:
    """Scheduling compensation ``index`` moves past every earlier one; an earlier one that did not
    succeed was given up (its attempts ran out) and is recorded as failed."""
    comp = s.compensation
    if comp is None or index not in comp.pending:
        return s
    failed = comp.failed
    cur = s.current
    if (
        cur is not None
        and cur.phase == "compensation"
        and cur.index != index
        and cur.status is not AttemptStatus.SUCCEEDED
    ):
        failed = (*failed, cur.step)
    pending = comp.pending[comp.pending.index(index) + 1 :]
    return replace(s, compensation=replace(comp, pending=pending, failed=failed))


def failed_compensations(s: RunState) -> tuple[str, ...]:
    """Compensation steps that did not succeed, including the current one if it ended badly."""
    comp = s.compensation
    if comp is None:
        return ()
    cur = s.current
    if (
        cur is not None
        and cur.phase == "compensation"
        and not cur.in_flight
        and cur.status is not AttemptStatus.SUCCEEDED
    ):
        return (*comp.failed, cur.step)
    return comp.failed


def compensation_plan(s: RunState) -> tuple[int, ...]:
    """Forward steps to undo, most recent first: those whose effects happened or may have."""
    touched = sorted(set(s.done) | set(s.unknown), reverse=True)
    return tuple(touched)


def replace_step(err: ErrorInfo, step: str) -> ErrorInfo:
    if err.step == step:
        return err
    return ErrorInfo(
        code=err.code, message=err.message, retryable=err.retryable, step=step, details=err.details
    )
