"""Read-model queries (gateway → projector over NATS request/reply) and the views they return.

Subject ``wf.query.<tag>`` (e.g. ``wf.query.get_run``), queue group ``projector``. Every reply is a
``QueryReply``; ``data`` holds the view(s) as plain JSON. ``scope_projects`` carries the caller's
tenancy: ``None`` means unrestricted (Atlas roles), a list restricts to those projects (Arc users),
and anything outside it is reported as not found, never leaked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from infraflow.common.contracts.base import Contract, ErrorInfo


class Query(Contract, frozen=True, kw_only=True, tag_field="query"):
    """Base of every read-model query."""

    scope_projects: list[str] | None = None


class GetRun(Query, frozen=True, kw_only=True, tag="get_run"):
    run_id: str


class ListRuns(Query, frozen=True, kw_only=True, tag="list_runs"):
    types: list[str] | None = None
    statuses: list[str] | None = None
    resource_types: list[str] | None = None
    resource_ids: list[str] | None = None
    triggered_by: list[str] | None = None
    project_ids: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    page_size: int = 50
    cursor: str | None = None


class GetRunEvents(Query, frozen=True, kw_only=True, tag="get_run_events"):
    run_id: str
    after_seq: int = 0
    limit: int = 1000
    wait_ms: int = 0
    """Long poll: with no event after ``after_seq`` yet, wait up to this long for one."""


class GetMetrics(Query, frozen=True, kw_only=True, tag="get_metrics"):
    since: datetime | None = None
    until: datetime | None = None
    types: list[str] | None = None
    resource_types: list[str] | None = None
    bucket: str | None = None


class GetResource(Query, frozen=True, kw_only=True, tag="get_resource"):
    resource_type: str
    resource_id: str


class ListResources(Query, frozen=True, kw_only=True, tag="list_resources"):
    resource_type: str
    project_ids: list[str] | None = None
    states: list[str] | None = None
    sites: list[str] | None = None
    page_size: int = 50
    cursor: str | None = None


class EstimateDuration(Query, frozen=True, kw_only=True, tag="estimate_duration"):
    workflow_type: str
    resource_type: str | None = None


AnyQuery = (
    GetRun | ListRuns | GetRunEvents | GetMetrics | GetResource | ListResources | EstimateDuration
)


class QueryReply(Contract, frozen=True, kw_only=True):
    """The answer to any query: ``data`` on success, ``error`` otherwise."""

    ok: bool = True
    data: Any = None
    error: ErrorInfo | None = None
    has_more: bool = False
    next_cursor: str | None = None
    applied_seq: int = 0


# ---- views (the JSON shapes the REST API returns) ----------------------------------------


class Progress(Contract, frozen=True, kw_only=True):
    completed_steps: int = 0
    total_steps: int = 0
    current_step: str | None = None


class AttemptView(Contract, frozen=True, kw_only=True):
    attempt: int
    status: str
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: ErrorInfo | None = None
    worker: str | None = None


class StepView(Contract, frozen=True, kw_only=True):
    name: str
    index: int
    status: str
    attempts: list[AttemptView] = msgspec.field(default_factory=list)
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None


class RunSummary(Contract, frozen=True, kw_only=True):
    id: str
    type: str
    status: str
    resource_type: str
    resource_id: str | None
    project_id: str | None = None
    triggered_by: str
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    estimated_duration: int = 0
    progress: Progress = msgspec.field(default_factory=Progress)
    retry_of: str | None = None
    from_step: str | None = None
    waiting_for: str | None = None
    error: ErrorInfo | None = None


class RunDetail(RunSummary, frozen=True, kw_only=True):
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    output: dict[str, Any] | None = None
    steps: list[StepView] = msgspec.field(default_factory=list)
    compensation: list[StepView] = msgspec.field(default_factory=list)
    retries: list[str] = msgspec.field(default_factory=list)
    site: str | None = None
    cancel_requested: bool = False


class ResourceView(Contract, frozen=True, kw_only=True):
    """A server, cluster or VM as the cache knows it; ``attributes`` holds type-specific fields."""

    id: str
    type: str
    name: str | None = None
    state: str | None = None
    project_id: str | None = None
    site: str | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
    last_run_id: str | None = None
    active_run_id: str | None = None
    observed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ResourceEntry(Contract, frozen=True, kw_only=True):
    """What starting a run needs to know of a resource: its project, site and state. The
    projector writes one per resource to KV ``wf-resources`` (key: ``resource_key``) when they
    change; gateways mirror the bucket, so the tenancy and state checks of a 202 need no query.
    An entry may lag the read model by a moment: a refusal is confirmed by a query first."""

    type: str
    id: str
    project_id: str | None = None
    site: str | None = None
    state: str | None = None
    seq: int = 0
    """The event-stream sequence the projector had applied when it wrote the entry."""


def resource_key(resource_type: str, resource_id: str) -> str:
    """The ``wf-resources`` key of a resource."""
    return f"{resource_type}.{resource_id}"
