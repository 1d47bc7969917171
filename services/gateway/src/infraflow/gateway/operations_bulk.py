"""Bulk run actions: retry or cancel every run a list filter selects, one result per run.

    filter (as GET /v1/workflows/runs) -> the caller's visible runs, newest first, <= limit
        dry run: count them (up to a ceiling) and list the ones a real call would act on
        else:    Operations.retry_run / cancel_run for each, a few at a time -> 207 results

Each run is handled exactly as by its single endpoint (permissions, state checks, tenancy),
so a run in another state is a 409 in its own result, never a failure of the whole call. The
per-call cap bounds the work of one request; ``hasMore`` tells the caller to call again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from infraflow.common.errors import ConflictError, InfraflowError, ValidationError
from infraflow.gateway.core import runs
from infraflow.gateway.core.access import PROJECT_ACTING_ROLES, Principal
from infraflow.gateway.core.errors import INTERNAL_ERROR, ForbiddenError, status_for
from infraflow.gateway.core.runs import RunFilterParams
from infraflow.gateway.core.validation import FieldErrors
from infraflow.gateway.operations import Caller, Operations
from infraflow.gateway.schemas import ErrorBody, RunCancel, RunRetry
from infraflow.gateway.schemas_bulk import (
    BulkCancel,
    BulkItemResult,
    BulkPreview,
    BulkResult,
    BulkRetry,
    FilterValue,
    RunFilter,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RUNS: Final = 200
COUNT_CEILING: Final = 10_000
"""A dry run counts matching runs up to this many (then ``matchedExact`` is false)."""
CONCURRENCY: Final = 8
"""Runs of one bulk call handled at a time (each waits for its command's acknowledgement)."""
_PAGE: Final = 500

Action = Literal["retry", "cancel"]
ELIGIBLE: Final[dict[Action, str]] = {
    "retry": ",".join(sorted(runs.RETRYABLE_STATUSES)),
    "cancel": ",".join(sorted(runs.CANCELLABLE_STATUSES)),
}


@dataclass(frozen=True, slots=True)
class Selection:
    """The runs a bulk call acts on."""

    items: list[dict[str, Any]]
    has_more: bool


class BulkOperations:
    """Bulk retry and cancel on top of the single-run use cases."""

    def __init__(self, operations: Operations, *, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        self._ops = operations
        self.max_runs = max_runs

    async def retry(self, caller: Caller, body: BulkRetry) -> BulkPreview | BulkResult:
        """Retry the selected runs (refusing runs that were already retried)."""
        _require_actor(caller.principal)
        retry = RunRetry(from_step=body.from_step)

        async def one(run: dict[str, Any]) -> BulkItemResult:
            run_id = str(run["id"])
            detail = await self._ops.get_run(caller.principal, run_id)
            retried = detail.get("retries") or []
            if retried:
                raise ConflictError(
                    f"run {run_id} was already retried as {retried[-1]}",
                    details={"retries": retried},
                )
            accepted = await self._ops.retry_run(caller, run_id, retry)
            return BulkItemResult(
                run_id=run_id,
                status=accepted.status,
                success=True,
                data=accepted.data,
                meta={
                    "workflowId": accepted.run_id,
                    "location": accepted.location,
                    "estimatedDuration": accepted.estimated_duration_ms,
                },
            )

        return await self._bulk(
            "retry", caller.principal, body.filter, body.limit, body.dry_run, one
        )

    async def cancel(self, principal: Principal, body: BulkCancel) -> BulkPreview | BulkResult:
        """Ask the orchestrator to cancel (or terminate) each selected run."""
        _require_actor(principal)
        if body.terminate and not principal.can_terminate:
            raise ForbiddenError("terminate needs the super_admin or provider_admin role")
        request = RunCancel(reason=body.reason, terminate=body.terminate)

        async def one(run: dict[str, Any]) -> BulkItemResult:
            run_id = str(run["id"])
            cancelled = await self._ops.cancel_run(principal, run_id, request)
            return BulkItemResult(
                run_id=run_id,
                status=202,
                success=True,
                data={
                    "id": run_id,
                    "type": cancelled.get("type"),
                    "status": cancelled.get("status"),
                    "cancelRequested": True,
                },
                meta={"workflowId": run_id, "location": f"/v1/workflows/runs/{run_id}"},
            )

        return await self._bulk("cancel", principal, body.filter, body.limit, body.dry_run, one)

    # ---- the shared shape --------------------------------------------------------------------

    async def _bulk(
        self,
        action: Action,
        principal: Principal,
        selector: RunFilter,
        limit: int | None,
        dry_run: bool,
        one: Callable[[dict[str, Any]], Awaitable[BulkItemResult]],
    ) -> BulkPreview | BulkResult:
        cap = self._limit(limit)
        params = filter_params(selector, default_status=ELIGIBLE[action])
        try:  # the list's own rules, reported under the body's names
            runs.list_runs_query(params, self._ops.catalog, principal.scope_projects)
        except ValidationError as exc:
            fields = (exc.details or {}).get("fields") or {}
            raise ValidationError(
                "the run filter is not valid",
                details={"fields": {f"filter.{k}": v for k, v in fields.items()}},
            ) from exc
        self._ops.broker.require_available()
        if dry_run:
            return await self._preview(action, principal, params, cap)
        selection = await self._select(principal, params, cap)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def guarded(run: dict[str, Any]) -> BulkItemResult:
            async with gate:
                try:
                    return await one(run)
                except InfraflowError as exc:
                    return failed_item(str(run["id"]), exc)

        results = list(await asyncio.gather(*(guarded(r) for r in selection.items)))
        failed = sum(1 for r in results if not r.success)
        log.info(
            "bulk %s by %s: %d runs, %d refused", action, principal.subject, len(results), failed
        )
        return BulkResult(
            action=action,
            dry_run=False,
            limit=cap,
            matched=len(results),
            accepted=len(results) - failed,
            failed=failed,
            has_more=selection.has_more,
            results=results,
        )

    def _limit(self, limit: int | None) -> int:
        if limit is None:
            return self.max_runs
        if not 1 <= limit <= self.max_runs:
            raise ValidationError(
                f"limit must be between 1 and {self.max_runs}",
                details={"fields": {"limit": f"must be between 1 and {self.max_runs}"}},
            )
        return limit

    async def _select(self, principal: Principal, params: RunFilterParams, cap: int) -> Selection:
        """The first ``cap`` matching runs (newest first), and whether more match."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            size = min(_PAGE, cap - len(items) + 1)  # one more tells whether more match
            page = await self._ops.list_runs(principal, _page(params, size, cursor))
            items.extend(page.items)
            cursor = page.next_cursor
            if len(items) > cap:
                return Selection(items[:cap], has_more=True)
            if not page.has_more or not cursor:
                return Selection(items, has_more=False)

    async def _preview(
        self, action: Action, principal: Principal, params: RunFilterParams, cap: int
    ) -> BulkPreview:
        ids: list[str] = []
        matched = 0
        cursor: str | None = None
        exact = True
        while True:
            page = await self._ops.list_runs(principal, _page(params, _PAGE, cursor))
            matched += len(page.items)
            ids.extend(str(item["id"]) for item in page.items[: max(0, cap - len(ids))])
            cursor = page.next_cursor
            if not page.has_more or not cursor:
                break
            if matched >= COUNT_CEILING:
                exact = False
                break
        return BulkPreview(
            action=action,
            dry_run=True,
            matched=matched,
            matched_exact=exact,
            limit=cap,
            run_ids=ids,
            has_more=matched > cap,
        )


def filter_params(selector: RunFilter, *, default_status: str) -> RunFilterParams:
    """The list's query parameters from a bulk ``filter`` (lists joined as in a query string);
    they are validated by the list's own rules (``core.runs.list_runs_query``)."""
    errors = FieldErrors()

    def joined(name: str, value: FilterValue) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if not value or any(not isinstance(v, str) or "," in v for v in value):
            errors.add(f"filter.{name}", "must be a non-empty list of values without commas")
            return None
        return ",".join(value)

    params = RunFilterParams(
        type=joined("type", selector.type),
        status=joined("status", selector.status) or default_status,
        resource_type=joined("resourceType", selector.resource_type),
        resource_id=joined("resourceId", selector.resource_id),
        triggered_by=joined("triggeredBy", selector.triggered_by),
        project_id=joined("projectId", selector.project_id),
        since=selector.since,
        until=selector.until,
    )
    errors.raise_if_any("the run filter is not valid")
    return params


def failed_item(run_id: str, exc: InfraflowError) -> BulkItemResult:
    """A refused run, shown as its single endpoint would have answered."""
    status = status_for(exc.code)
    if status is None or exc.code == INTERNAL_ERROR:
        log.error("bulk action on %s failed: %s (%s)", run_id, exc.message, exc.code)
        error = ErrorBody(code=INTERNAL_ERROR, message="an unexpected error occurred")
        return BulkItemResult(run_id=run_id, status=500, success=False, error=error)
    error = ErrorBody(code=exc.code, message=exc.message, details=exc.details or None)
    return BulkItemResult(run_id=run_id, status=status, success=False, error=error)


def _require_actor(principal: Principal) -> None:
    """Refuse at once callers who could not act on any run (read-only roles, viewers)."""
    if principal.is_fleet_writer:
        return
    if any(role in PROJECT_ACTING_ROLES for role in principal.projects.values()):
        return
    raise ForbiddenError("bulk actions need an Atlas write role or acting rights in a project")


def _page(params: RunFilterParams, size: int, cursor: str | None) -> RunFilterParams:
    return dataclasses.replace(params, page_size=str(size), page_token=cursor)
