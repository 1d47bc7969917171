"""Runs: what a run-starting request turns into, the accepted summary, list filters (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from infraflow.common.catalog import Catalog, WorkflowType
from infraflow.common.contracts import (
    CancelRun,
    GetMetrics,
    ListRuns,
    Progress,
    RunSummary,
    StartRun,
)
from infraflow.common.contracts.base import OnBusy
from infraflow.common.errors import InvalidStateTransitionError, ValidationError
from infraflow.common.ids import is_id
from infraflow.common.vault import redact
from infraflow.gateway.core.servers import POWER_ACTIONS
from infraflow.gateway.core.validation import (
    FieldErrors,
    parse_instant,
    parse_multi,
    parse_page_size,
)
from infraflow.gateway.schemas import RunCreate

RUN_STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
CANCELLABLE_STATUSES: Final = frozenset({"pending", "running"})
RESOURCE_TYPES: Final = ("server", "cluster", "vm")
ID_PREFIX_BY_RESOURCE_TYPE: Final = {"server": "srv", "cluster": "cls", "vm": "vm"}
_IDENTIFIER: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_USER_ID: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


@dataclass(frozen=True, slots=True)
class RunIds:
    """Ids chosen for a new run (and the resource it creates, if any) before anything else."""

    run_id: str
    resource_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything needed to start one run, decided before any I/O happens."""

    workflow: WorkflowType
    run_id: str
    resource_type: str
    resource_id: str
    input: dict[str, Any] = field(default_factory=dict)
    site: str | None = None
    project_id: str | None = None
    credentials: dict[str, Any] | None = field(default=None, repr=False)
    """Sealed into ``bmc-credentials`` under ``resource_id`` before the command is published."""
    retry_of: str | None = None
    from_step: str | None = None
    on_busy: OnBusy = "queue"

    @property
    def creates_resource(self) -> bool:
        return self.workflow.creates_resource


def start_command(
    plan: RunPlan,
    *,
    triggered_by: str,
    request_id: str,
    estimate_ms: int,
    now: datetime,
) -> StartRun:
    """The ``StartRun`` command for ``plan``; the input is redacted once more on the way out."""
    return StartRun(
        run_id=plan.run_id,
        resource_type=plan.resource_type,
        resource_id=plan.resource_id,
        workflow_type=plan.workflow.name,
        input=redact(plan.input),
        triggered_by=triggered_by,
        project_id=plan.project_id,
        site=plan.site,
        request_id=request_id,
        estimated_duration_ms=estimate_ms,
        requested_at=now,
        retry_of=plan.retry_of,
        from_step=plan.from_step,
        on_busy=plan.on_busy,
    )


def accepted_summary(command: StartRun, workflow: WorkflowType) -> RunSummary:
    """The run summary returned with the 202: the run exists and is ``pending``."""
    assert command.requested_at is not None
    return RunSummary(
        id=command.run_id,
        type=command.workflow_type,
        status="pending",
        resource_type=command.resource_type,
        resource_id=command.resource_id,
        project_id=command.project_id,
        triggered_by=command.triggered_by,
        created_at=command.requested_at,
        estimated_duration=command.estimated_duration_ms,
        progress=Progress(completed_steps=0, total_steps=len(workflow.steps)),
        retry_of=command.retry_of,
        from_step=command.from_step,
    )


RETRYABLE_STATUSES: Final = frozenset({"failed", "cancelled"})
_DONE_STEP_STATUSES: Final = frozenset({"succeeded", "skipped"})


def check_retry(run: dict[str, Any], workflow: WorkflowType, from_step: str | None) -> None:
    """A retry needs a failed or cancelled run and, with ``from_step``, a known step whose
    predecessors all completed in that run."""
    status = run.get("status")
    if status not in RETRYABLE_STATUSES:
        raise InvalidStateTransitionError(
            f"only failed or cancelled runs can be retried; this run is {status}",
            details={"currentStatus": status},
        )
    if from_step is None:
        return
    names = [s.name for s in workflow.steps]
    if from_step not in names:
        raise ValidationError(
            f"{workflow.name} has no step {from_step!r}",
            details={"fields": {"fromStep": f"must be one of {', '.join(names)}"}},
        )
    done = {
        str(s.get("name"))
        for s in run.get("steps") or []
        if isinstance(s, dict) and s.get("status") in _DONE_STEP_STATUSES
    }
    undone = {
        int(c["index"])
        for c in run.get("compensation") or []
        if isinstance(c, dict) and c.get("status") == "succeeded" and "index" in c
    }
    missing = [
        n for i, n in enumerate(names[: names.index(from_step)]) if n not in done or i in undone
    ]
    if missing:
        raise InvalidStateTransitionError(
            f"steps before {from_step} did not complete (or were compensated) in run "
            f"{run.get('id')}: " + ", ".join(missing),
            details={"incompleteSteps": missing},
        )


def cancel_command(
    run: dict[str, Any], *, requested_by: str, reason: str | None, terminate: bool
) -> CancelRun:
    """The ``CancelRun`` for a run view; ``INVALID_STATE_TRANSITION`` unless pending/running."""
    status = run.get("status")
    if status not in CANCELLABLE_STATUSES:
        raise InvalidStateTransitionError(
            f"only pending or running runs can be cancelled; this run is {status}",
            details={"currentState": status, "allowedStates": sorted(CANCELLABLE_STATUSES)},
        )
    return CancelRun(
        run_id=str(run["id"]),
        resource_type=str(run.get("resourceType") or "_"),
        resource_id=str(run.get("resourceId") or "_"),
        requested_by=requested_by,
        reason=reason,
        terminate=terminate,
    )


def estimate_from_reply(data: Any) -> int | None:
    """The projector's estimate in ms: a number, or an object carrying one."""
    if isinstance(data, dict):
        for key in ("estimatedDuration", "estimatedDurationMs", "estimateMs", "ms"):
            if key in data:
                return estimate_from_reply(data[key])
        return None
    if isinstance(data, bool) or not isinstance(data, int | float):
        return None
    return int(data) if data >= 0 else None


@dataclass(frozen=True, slots=True)
class RunFilterParams:
    """The raw query parameters of ``GET /v1/workflows/runs``."""

    type: str | None = None
    status: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    triggered_by: str | None = None
    project_id: str | None = None
    since: str | None = None
    until: str | None = None
    page_size: str | None = None
    page_token: str | None = None


def list_runs_query(
    params: RunFilterParams, catalog: Catalog, scope_projects: list[str] | None
) -> ListRuns:
    """Validate the filters (all problems at once) and build the projector query."""
    errors = FieldErrors()
    types = parse_multi(errors, "type", params.type, allowed=catalog.names())
    statuses = parse_multi(errors, "status", params.status, allowed=RUN_STATUSES)
    resource_types = parse_multi(errors, "resourceType", params.resource_type, RESOURCE_TYPES)
    resource_ids = parse_multi(errors, "resourceId", params.resource_id, pattern=_IDENTIFIER)
    triggered_by = parse_multi(errors, "triggeredBy", params.triggered_by, pattern=_USER_ID)
    project_ids = parse_multi(errors, "projectId", params.project_id, pattern=_IDENTIFIER)
    since = parse_instant(errors, "since", params.since)
    until = parse_instant(errors, "until", params.until, end_of_day=True)
    if since and until and since > until:
        errors.add("until", "must not be before since")
    page_size = parse_page_size(errors, params.page_size)
    if params.page_token is not None and not 0 < len(params.page_token) <= 512:
        errors.add("pageToken", "must be a token returned as meta.pagination.nextCursor")
    errors.raise_if_any("the run filters are not valid")
    return ListRuns(
        types=types,
        statuses=statuses,
        resource_types=resource_types,
        resource_ids=resource_ids,
        triggered_by=triggered_by,
        project_ids=project_ids,
        since=since,
        until=until,
        page_size=page_size,
        cursor=params.page_token or None,
        scope_projects=scope_projects,
    )


METRICS_BUCKETS: Final = ("minute", "hour", "day")
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})
FOLLOW_WAIT_S = 15.0
"""How long one long poll of a followed run waits before the stream sends a keep-alive."""


@dataclass(frozen=True, slots=True)
class MetricsParams:
    """The raw query parameters of ``GET /v1/workflows/metrics``."""

    since: str | None = None
    until: str | None = None
    type: str | None = None
    resource_type: str | None = None
    bucket: str | None = None


def metrics_query(
    params: MetricsParams, catalog: Catalog, scope_projects: list[str] | None, now: datetime
) -> GetMetrics:
    """Validate the metrics parameters (all problems at once) and build the projector query.
    ``bucket=minute`` needs ``since`` and a window of at most one day."""
    errors = FieldErrors()
    types = parse_multi(errors, "type", params.type, allowed=catalog.names())
    resource_types = parse_multi(errors, "resourceType", params.resource_type, RESOURCE_TYPES)
    since = parse_instant(errors, "since", params.since)
    until = parse_instant(errors, "until", params.until, end_of_day=True)
    if since and until and since > until:
        errors.add("until", "must not be before since")
    bucket = params.bucket or None
    if bucket is not None and bucket not in METRICS_BUCKETS:
        errors.add("bucket", "must be one of: " + ", ".join(METRICS_BUCKETS))
    if bucket == "minute" and "since" not in errors and "until" not in errors:
        end = until or now
        if since is None or end - since > timedelta(days=1):
            errors.add("bucket", "minute buckets need since and a window of at most one day")
    errors.raise_if_any("the metrics parameters are not valid")
    return GetMetrics(
        since=since,
        until=until,
        types=types,
        resource_types=resource_types,
        bucket=bucket,
        scope_projects=scope_projects,
    )


def parse_last_event_id(value: str | None) -> int | None:
    """The stream sequence in an SSE ``Last-Event-ID`` header (None when absent or not one)."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 19:
        return None
    return int(value.strip())


PROJECT_SCOPED_TYPES: Final = {
    "cluster.create": "POST /v1/projects/{project}/clusters",
    "cluster.scale": "POST /v1/projects/{project}/clusters/{id}/scale",
    "cluster.upgrade": "POST /v1/projects/{project}/clusters/{id}/upgrade",
    "cluster.delete": "DELETE /v1/projects/{project}/clusters/{id}",
    "vm.create": "POST /v1/projects/{project}/vms",
    "vm.power": "POST /v1/projects/{project}/vms/{id}/power",
    "vm.delete": "DELETE /v1/projects/{project}/vms/{id}",
}
"""Cluster and VM workflows carry project-scoped, validated input: the generic start refuses
them and names the endpoint to use (``sync.cluster-state`` may still be started by hand)."""


def validate_run_create(body: RunCreate, catalog: Catalog) -> WorkflowType:
    """Check a generic start request: a known, executable type, a resource id exactly when the
    type acts on an existing resource, and the input the type needs."""
    errors = FieldErrors()
    workflow = catalog.get(body.type)
    if workflow is None:
        errors.add("type", "unknown workflow type; see GET /v1/workflows/types")
        errors.raise_if_any("unknown workflow type")
    assert workflow is not None
    if not workflow.executable:
        errors.add("type", f"{workflow.name} is not available yet")
        errors.raise_if_any(f"workflow type {workflow.name} is not available yet")
    prefix = ID_PREFIX_BY_RESOURCE_TYPE.get(workflow.resource_type)
    if workflow.name in PROJECT_SCOPED_TYPES:
        errors.add(
            "type", f"{workflow.name} is started per project: {PROJECT_SCOPED_TYPES[workflow.name]}"
        )
        errors.raise_if_any(f"{workflow.name} is started through its project's endpoints")
    if workflow.creates_resource:
        if body.resource_id is not None:
            errors.add("resourceId", f"must not be set: {workflow.name} creates the resource")
    elif body.resource_id is None:
        errors.add("resourceId", f"is required for {workflow.name}")
    elif prefix is None or not is_id(body.resource_id, prefix):
        errors.add("resourceId", f"must be a {workflow.resource_type} id ({prefix}_...)")
    check_input(errors, workflow.name, body.input or {})
    errors.raise_if_any("the run request is not valid")
    return workflow


def check_input(errors: FieldErrors, workflow_type: str, data: dict[str, Any]) -> None:
    """Per-type input rules the gateway can check up front."""
    if workflow_type == "server.lifecycle" and data.get("action") not in POWER_ACTIONS:
        errors.add("input.action", "must be one of: " + ", ".join(POWER_ACTIONS))
