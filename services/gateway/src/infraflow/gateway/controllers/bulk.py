"""``POST /v1/workflows/runs:retry`` and ``runs:cancel``: act on every run a list filter selects.

The body's ``filter`` has the filters of ``GET /v1/workflows/runs``; ``dryRun`` answers 200 with
the count and the runs a real call would act on; a real call answers 207 with one result per
run (202-like, or the error its single endpoint would give). At most ``limit`` runs per call
(default and maximum: the gateway's cap, ``INFRAFLOW_BULK_MAX_RUNS``, 200 unless configured).
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from infraflow.gateway.controllers.support import caller, error_responses
from infraflow.gateway.core.access import Principal
from infraflow.gateway.operations import Operations
from infraflow.gateway.operations_bulk import DEFAULT_MAX_RUNS, BulkOperations
from infraflow.gateway.responses import ok
from infraflow.gateway.schemas import Envelope
from infraflow.gateway.schemas_bulk import BulkCancel, BulkPreview, BulkResult, BulkRetry

STATE_KEY = "bulk_max_runs"
"""``app.state`` entry holding the per-call cap (set by ``create_app`` from the settings)."""

_SHAPE = (
    " `filter` takes the filters of `GET /v1/workflows/runs` (a comma-separated string or a "
    "list each); without `status` it selects the runs the action applies to. Runs are taken "
    "newest first, at most `limit` (default and maximum: the gateway's cap, 200 unless "
    "configured); `hasMore` says more runs matched. `dryRun: true` answers 200 with "
    "`matched` and the `runIds` a real call would act on. A real call answers 207 with one "
    "result per run: `status` 202 with `data`/`meta` as the single endpoint's, or that "
    "endpoint's error (e.g. 409 `INVALID_STATE_TRANSITION` for a run in another state)."
)


_DRY_RUN = ResponseSpec(
    data_container=Envelope[BulkPreview],
    description="dryRun: the runs a real call would act on; nothing is changed",
    generate_examples=False,
)


def provide_bulk(
    request: Request[Any, Any, Any], operations: NamedDependency[Operations]
) -> BulkOperations:
    """The bulk use cases over the request's ``Operations``, with the configured cap."""
    cap = request.app.state.get(STATE_KEY, DEFAULT_MAX_RUNS)
    return BulkOperations(operations, max_runs=int(cap))


class BulkRunController(Controller):
    """Bulk retry and cancel of runs selected by a filter."""

    path = "/v1/workflows"
    tags = ["workflows"]
    dependencies = {"bulk": Provide(provide_bulk, sync_to_thread=False)}

    @post(
        "/runs:retry",
        operation_id="retryRuns",
        summary="Retry every failed or cancelled run a filter selects",
        description="Each run is retried as by `POST /v1/workflows/runs/{runId}/retry` (a new "
        "run with `retryOf`; `fromStep` applies to all); a run that was already retried is "
        "refused (409 `CONFLICT`), so repeating a bulk retry is safe." + _SHAPE,
        status_code=207,
        responses={**error_responses(400, 401, 403, 413, 500, 503), 200: _DRY_RUN},
    )
    async def retry_runs(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BulkRetry],
        bulk: NamedDependency[BulkOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[BulkResult | BulkPreview]]:
        outcome = await bulk.retry(caller(request, principal), data)
        return ok(request, outcome, status_code=200 if outcome.dry_run else 207)

    @post(
        "/runs:cancel",
        operation_id="cancelRuns",
        summary="Cancel every pending or running run a filter selects",
        description="Each run is cancelled as by `POST /v1/workflows/runs/{runId}/cancel` "
        "(`reason`, `terminate` apply to all)." + _SHAPE,
        status_code=207,
        responses={**error_responses(400, 401, 403, 413, 500, 503), 200: _DRY_RUN},
    )
    async def cancel_runs(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BulkCancel],
        bulk: NamedDependency[BulkOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[BulkResult | BulkPreview]]:
        outcome = await bulk.cancel(principal, data)
        return ok(request, outcome, status_code=200 if outcome.dry_run else 207)
