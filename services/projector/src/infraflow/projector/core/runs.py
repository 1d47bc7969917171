"""Folding run events into a ``RunState``.

``evolve_run(state, event)`` is the whole read-model logic for runs: no I/O, no clock. It is
tolerant of facts that arrive late or twice (agents append their facts independently of the
orchestrator's decisions): a run's status only moves forward, and an attempt's first recorded
resolution (succeeded, failed or timed out) is never flipped by a later one.
"""

from __future__ import annotations

from typing import assert_never

from infraflow.common.contracts import (
    AnyRunEvent,
    CompensationStarted,
    ErrorInfo,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
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
from infraflow.common.subjects import NO_RESOURCE
from infraflow.projector.core.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RESOLVED_ATTEMPT_STATUSES,
    RUNNING,
    SCHEDULED,
    STATUS_RANK,
    STEP_TIMEOUT_CODE,
    SUCCEEDED,
    TERMINAL_STATUSES,
    TIMED_OUT,
    AttemptState,
    RunState,
    StepState,
    to_micros,
)

StepEvent = StepScheduled | StepStarted | StepSucceeded | StepFailed | StepTimedOut


def new_run(event: RunCreated) -> RunState:
    """The state of a run right after ``run_created``: pending, every planned step pending."""
    return RunState(
        id=event.run_id,
        type=event.workflow_type,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        triggered_by=event.triggered_by,
        created_at=to_micros(event.time),
        project_id=event.project_id,
        site=event.site,
        input=dict(event.input),
        planned_steps=list(event.steps),
        mutating=event.mutating,
        retry_of=event.retry_of,
        from_step=event.from_step,
        estimated_duration_ms=event.estimated_duration_ms,
        steps=[StepState(name=name, index=i) for i, name in enumerate(event.steps)],
    )


def evolve_run(state: RunState | None, event: AnyRunEvent) -> RunState | None:
    """Apply one event to a run's state (mutating and returning it).

    Returns None for an event of a run whose ``run_created`` was never seen: there is nothing
    to attach it to (its raw event is still kept by the store).
    """
    if isinstance(event, RunCreated):
        return state if state is not None else new_run(event)
    if state is None:
        return None
    match event:
        case RunCreated():  # handled above; kept so the match stays exhaustive
            pass
        case RunQueued():
            if state.status == PENDING:
                state.waiting_for = event.waiting_for
        case RunStarted():
            if _advance(state, RUNNING):
                state.started_at = to_micros(event.time)
                state.waiting_for = None
        case StepScheduled() | StepStarted() | StepSucceeded() | StepFailed() | StepTimedOut():
            _on_attempt_fact(state, event)
        case StepSkipped():
            step = _step(state.steps, event.index, event.step, forward=True)
            if not step.attempts:
                step.skipped = True
                step.skipped_at = to_micros(event.time)
                step.output = dict(event.output)
        case CompensationStarted():
            if state.error is None and event.error is not None:
                state.error = event.error
            # list the planned compensation (pending) in the order it will run
            for name, index in zip(event.steps, event.indices, strict=False):
                _step(state.compensation, index, name, forward=False)
        case RunCancelRequested():
            if state.status not in TERMINAL_STATUSES:
                state.cancel_requested = True
        case RunCompleted():
            if _finish(state, COMPLETED, event):
                state.output = dict(event.output)
                state.current_step = None
        case RunFailed():
            if _finish(state, FAILED, event):
                state.error = event.error
        case RunCancelled():
            _finish(state, CANCELLED, event)
        case _:
            assert_never(event)
    return state


def _advance(state: RunState, status: str) -> bool:
    if STATUS_RANK[status] <= STATUS_RANK[state.status]:
        return False
    state.status = status
    return True


def _finish(state: RunState, status: str, event: RunCompleted | RunFailed | RunCancelled) -> bool:
    if not _advance(state, status):
        return False
    state.completed_at = to_micros(event.time)
    state.waiting_for = None
    return True


def _on_attempt_fact(state: RunState, event: StepEvent) -> None:
    forward = event.phase == "forward"
    steps = state.steps if forward else state.compensation
    step = _step(steps, event.index, event.step, forward=forward)
    attempt = _attempt(step, event.attempt)
    at = to_micros(event.time)
    if forward and isinstance(event, StepScheduled | StepStarted):
        state.current_step = event.step
    match event:
        case StepScheduled():
            if attempt.scheduled_at is None:
                attempt.scheduled_at = at
        case StepStarted():
            if attempt.started_at is None:
                attempt.started_at = at
            if event.worker and not attempt.worker:
                attempt.worker = event.worker
            if attempt.status == SCHEDULED:
                attempt.status = RUNNING
        case StepSucceeded():
            if _resolve(attempt, SUCCEEDED, at):
                attempt.output = dict(event.output)
                step.output = attempt.output
        case StepFailed():
            if _resolve(attempt, FAILED, at):
                attempt.error = event.error
        case StepTimedOut():
            if _resolve(attempt, TIMED_OUT, at):
                attempt.error = ErrorInfo(
                    code=STEP_TIMEOUT_CODE,
                    message=f"attempt {event.attempt} exceeded its {event.timeout} timeout",
                    retryable=True,
                    step=event.step,
                )
        case _:
            assert_never(event)


def _resolve(attempt: AttemptState, status: str, at: int) -> bool:
    """Record an attempt's resolution unless it already has one (late facts never flip it)."""
    if attempt.status in RESOLVED_ATTEMPT_STATUSES:
        return False
    attempt.status = status
    attempt.completed_at = at
    return True


def _step(steps: list[StepState], index: int, name: str, *, forward: bool) -> StepState:
    for s in steps:
        if s.index == index and s.name == name:
            return s
    step = StepState(name=name, index=index)
    steps.append(step)
    if forward:  # forward steps are listed in plan order; compensation in the order it ran
        steps.sort(key=lambda s: s.index)
    return step


def _attempt(step: StepState, number: int) -> AttemptState:
    for a in step.attempts:
        if a.attempt == number:
            return a
    attempt = AttemptState(attempt=number)
    step.attempts.append(attempt)
    step.attempts.sort(key=lambda a: a.attempt)
    return attempt


def resource_key(state: RunState) -> tuple[str, str] | None:
    """The (type, id) of the resource a run acts on, or None for a run without one."""
    if not state.resource_id or state.resource_id == NO_RESOURCE:
        return None
    return state.resource_type, state.resource_id
