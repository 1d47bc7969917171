"""Turning folded state into the views the queries answer (``contracts.queries``)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from infraflow.common.catalog import WorkflowType
from infraflow.common.contracts import (
    AttemptView,
    Progress,
    ResourceView,
    RunDetail,
    RunSummary,
    StartRun,
    StepView,
)
from infraflow.common.subjects import NO_RESOURCE
from infraflow.projector.core.resources import redact
from infraflow.projector.core.state import (
    COMPLETED,
    PENDING,
    RESOLVED_ATTEMPT_STATUSES,
    SUCCEEDED,
    ResourceState,
    RunState,
    StepState,
    from_micros,
    latest_attempt,
    step_status,
)


def _resource_id(value: str) -> str | None:
    return None if not value or value == NO_RESOURCE else value


def _progress(state: RunState) -> Progress:
    return Progress(
        completed_steps=state.completed_steps,
        total_steps=len(state.planned_steps),
        current_step=None if state.status == COMPLETED else state.current_step,
    )


def run_summary(state: RunState) -> RunSummary:
    """The list item of a run."""
    return RunSummary(
        id=state.id,
        type=state.type,
        status=state.status,
        resource_type=state.resource_type,
        resource_id=_resource_id(state.resource_id),
        project_id=state.project_id,
        triggered_by=state.triggered_by,
        created_at=_dt(state.created_at),
        started_at=from_micros(state.started_at),
        completed_at=from_micros(state.completed_at),
        duration_ms=state.duration_ms,
        estimated_duration=state.estimated_duration_ms,
        progress=_progress(state),
        retry_of=state.retry_of,
        from_step=state.from_step,
        waiting_for=state.waiting_for,
        error=state.error,
    )


def run_detail(state: RunState, retries: list[str]) -> RunDetail:
    """The full run: summary, input, output, step timelines and the runs that retried it."""
    return RunDetail(
        **msgspec.structs.asdict(run_summary(state)),
        input=state.input,
        output=state.output,
        steps=[step_view(s) for s in state.steps],
        compensation=[step_view(s) for s in state.compensation],
        retries=retries,
        site=state.site,
        cancel_requested=state.cancel_requested,
    )


def step_view(step: StepState) -> StepView:
    """A step with its attempts; times span from its first start to its last resolution."""
    status = step_status(step)
    attempts = [
        AttemptView(
            attempt=a.attempt,
            status=a.status,
            scheduled_at=from_micros(a.scheduled_at),
            started_at=from_micros(a.started_at),
            completed_at=from_micros(a.completed_at),
            error=a.error,
            worker=a.worker,
        )
        for a in step.attempts
    ]
    if step.skipped or not step.attempts:
        return StepView(
            name=step.name,
            index=step.index,
            status=status,
            output=step.output,
            completed_at=from_micros(step.skipped_at),
        )
    last = latest_attempt(step)
    starts = [a.started_at or a.scheduled_at for a in step.attempts]
    started = min((s for s in starts if s is not None), default=None)
    if status == SUCCEEDED:
        completed = next(a.completed_at for a in step.attempts if a.status == SUCCEEDED)
    elif last.status in RESOLVED_ATTEMPT_STATUSES:
        completed = last.completed_at
    else:
        completed = None
    duration = (
        max(0, (completed - started) // 1000)
        if completed is not None and started is not None
        else None
    )
    return StepView(
        name=step.name,
        index=step.index,
        status=status,
        attempts=attempts,
        output=step.output,
        error=None if status == SUCCEEDED else last.error,
        started_at=from_micros(started),
        completed_at=from_micros(completed),
        duration_ms=duration,
    )


def resource_view(resource: ResourceState) -> ResourceView:
    return ResourceView(
        id=resource.id,
        type=resource.type,
        name=resource.name,
        state=resource.state,
        project_id=resource.project_id,
        site=resource.site,
        attributes=resource.attributes,
        last_run_id=resource.last_run_id,
        active_run_id=resource.active_run_id,
        observed_at=from_micros(resource.observed_at),
        created_at=from_micros(resource.created_at),
        updated_at=from_micros(resource.updated_at),
    )


def pending_run_detail(
    command: StartRun, workflow: WorkflowType | None, accepted_at: datetime
) -> RunDetail:
    """A run the gateway accepted but the orchestrator has not picked up yet (its ``StartRun``
    is still in ``WF_COMMANDS``): status ``pending``, built from the command."""
    steps = [s.name for s in workflow.steps] if workflow is not None else []
    estimate = command.estimated_duration_ms or (workflow.estimate_ms if workflow else 0)
    return RunDetail(
        id=command.run_id,
        type=command.workflow_type,
        status=PENDING,
        resource_type=command.resource_type,
        resource_id=_resource_id(command.resource_id),
        project_id=command.project_id,
        triggered_by=command.triggered_by,
        created_at=command.requested_at or accepted_at,
        estimated_duration=estimate,
        progress=Progress(completed_steps=0, total_steps=len(steps)),
        retry_of=command.retry_of,
        from_step=command.from_step,
        input=redact(command.input),
        steps=[StepView(name=n, index=i, status="pending") for i, n in enumerate(steps)],
        site=command.site,
    )


def _dt(value: int) -> datetime:
    out = from_micros(value)
    assert out is not None
    return out
