"""DTOs of the bulk run actions (``POST /v1/workflows/runs:retry`` and ``runs:cancel``).

The ``filter`` object has the list's filters (``GET /v1/workflows/runs``) under the same names;
each value is a comma-separated string, as in the query string, or a list of strings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from infraflow.gateway.schemas import Dto, ErrorBody

FilterValue = str | list[str] | None


class RunFilter(Dto, kw_only=True, forbid_unknown_fields=True):
    """Which runs: the filters of ``GET /v1/workflows/runs``. Without ``status``, the runs the
    action applies to (retry: failed, cancelled; cancel: pending, running)."""

    type: FilterValue = None
    status: FilterValue = None
    resource_type: FilterValue = None
    resource_id: FilterValue = None
    triggered_by: FilterValue = None
    project_id: FilterValue = None
    since: Annotated[str | None, msgspec.Meta(description="ISO 8601 (start time)")] = None
    until: Annotated[str | None, msgspec.Meta(description="ISO 8601 (start time)")] = None


class BulkRetry(Dto, kw_only=True, forbid_unknown_fields=True):
    """Retry every run the filter selects (newest first, at most ``limit``), each as a new run
    linked by ``retryOf``. A run already retried is refused (409 ``CONFLICT``), so repeating a
    bulk retry never retries a run twice."""

    filter: RunFilter = msgspec.field(default_factory=RunFilter)
    dry_run: Annotated[
        bool, msgspec.Meta(description="only count and list the runs it would act on")
    ] = False
    limit: Annotated[
        int | None,
        msgspec.Meta(description="at most this many runs (default and maximum: the cap)"),
    ] = None
    from_step: Annotated[
        str | None, msgspec.Meta(description="as for a single retry; every run must have it")
    ] = None


class BulkCancel(Dto, kw_only=True, forbid_unknown_fields=True):
    """Cancel every run the filter selects (newest first, at most ``limit``)."""

    filter: RunFilter = msgspec.field(default_factory=RunFilter)
    dry_run: Annotated[
        bool, msgspec.Meta(description="only count and list the runs it would act on")
    ] = False
    limit: Annotated[
        int | None,
        msgspec.Meta(description="at most this many runs (default and maximum: the cap)"),
    ] = None
    reason: str | None = None
    terminate: Annotated[
        bool, msgspec.Meta(description="no compensation (super_admin, provider_admin)")
    ] = False


class BulkPreview(Dto, kw_only=True):
    """A dry run: how many runs match, and the ones a real call would act on."""

    action: Literal["retry", "cancel"]
    dry_run: Literal[True]
    matched: Annotated[int, msgspec.Meta(description="runs the filter selects")]
    matched_exact: Annotated[
        bool, msgspec.Meta(description="false: counting stopped at the counting ceiling")
    ]
    limit: int
    run_ids: Annotated[list[str], msgspec.Meta(description="the first `limit` runs")]
    has_more: Annotated[bool, msgspec.Meta(description="more runs match than `limit`")]


class BulkItemResult(Dto, kw_only=True, omit_defaults=True):
    """One run's outcome: an HTTP-like status with the 202's ``data`` and ``meta``, or the
    ``error`` of a refusal (e.g. 409 ``INVALID_STATE_TRANSITION`` for a run in another state)."""

    run_id: str
    status: int
    success: bool
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    error: ErrorBody | None = None


class BulkResult(Dto, kw_only=True):
    """The 207 body: one result per selected run, in list order (newest first)."""

    action: Literal["retry", "cancel"]
    dry_run: Literal[False]
    limit: int
    matched: Annotated[int, msgspec.Meta(description="runs acted on (at most `limit`)")]
    accepted: int
    failed: int
    has_more: Annotated[bool, msgspec.Meta(description="more runs matched than `limit`")]
    results: list[BulkItemResult]
