"""``/v1/workflows``: runs (list, get, events, start, cancel) and the workflow catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from infraflow.common.catalog import describe
from infraflow.common.contracts import RunDetail, RunSummary
from infraflow.common.errors import NotFoundError
from infraflow.gateway.controllers.support import (
    ACCEPTED_HEADERS,
    READ_ERRORS,
    WRITE_ERRORS,
    IdempotencyKey,
    caller,
    error_responses,
    query,
)
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.runs import MetricsParams, RunFilterParams, parse_last_event_id
from infraflow.gateway.core.validation import FieldErrors, parse_int
from infraflow.gateway.operations import Operations
from infraflow.gateway.responses import accepted, ok
from infraflow.gateway.schemas import Envelope, RunCancel, RunCreate, RunRetry


class WorkflowController(Controller):
    """Workflow runs and types."""

    path = "/v1/workflows"
    tags = ["workflows"]

    @get(
        "/runs",
        operation_id="listRuns",
        summary="List runs, newest first",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_runs(
        self,
        request: Request[Any, Any, Any],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        type_: Annotated[str | None, query("type", "workflow types, comma-separated")] = None,
        status: Annotated[
            str | None, query("status", "pending, running, completed, failed, cancelled")
        ] = None,
        resource_type: Annotated[str | None, query("resourceType", "server, cluster, vm")] = None,
        resource_id: Annotated[str | None, query("resourceId")] = None,
        triggered_by: Annotated[str | None, query("triggeredBy")] = None,
        project_id: Annotated[str | None, query("projectId")] = None,
        since: Annotated[
            str | None, query("since", "ISO 8601 date or date-time (start time)")
        ] = None,
        until: Annotated[
            str | None, query("until", "ISO 8601 date or date-time (start time)")
        ] = None,
        page_size: Annotated[str | None, query("pageSize", "1-500, default 50")] = None,
        page_token: Annotated[str | None, query("pageToken", "meta.pagination.nextCursor")] = None,
    ) -> Response[Envelope[list[RunSummary]]]:
        params = RunFilterParams(
            type=type_,
            status=status,
            resource_type=resource_type,
            resource_id=resource_id,
            triggered_by=triggered_by,
            project_id=project_id,
            since=since,
            until=until,
            page_size=page_size,
            page_token=page_token,
        )
        page = await operations.list_runs(principal, params)
        return ok(request, page.items, pagination=page.pagination())

    @post(
        "/runs",
        operation_id="startRun",
        summary="Start a run of any executable workflow type (Atlas write roles)",
        description="202 Accepted once the command is durable; see `Location`.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def start_run(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[RunCreate],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await operations.start_generic(who, data))

    @get(
        "/runs/{run_id:str}",
        operation_id="getRun",
        summary="A run with its steps, input (secrets redacted), output and error",
        responses=error_responses(*READ_ERRORS),
    )
    async def get_run(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[RunDetail]]:
        return ok(request, await operations.get_run(principal, run_id))

    @get(
        "/runs/{run_id:str}/events",
        operation_id="listRunEvents",
        summary="The run's event history (audit trail), oldest first; or follow it live (SSE)",
        description="JSON pages by default (`afterSeq`, `pageSize`). With "
        "`Accept: text/event-stream` the response is a Server-Sent Events stream: the events "
        "after `afterSeq` (or the `Last-Event-ID` header) and then each new one as it happens, "
        "until the run's terminal event. Each message has `id:` = the event's stream sequence, "
        "`event:` = its name and `data:` = the event as JSON; a comment line is sent as a "
        "keep-alive while nothing happens.",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_run_events(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        after_seq: Annotated[
            str | None, query("afterSeq", "only events after this sequence")
        ] = None,
        page_size: Annotated[str | None, query("pageSize", "1-1000, default 1000")] = None,
        last_event_id: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID",
                required=False,
                description="SSE resume point: the `id:` of the last event received",
            ),
        ] = None,
    ) -> Response[Envelope[list[dict[str, Any]]]]:
        if "text/event-stream" in request.headers.get("accept", ""):
            return await _follow(operations, principal, run_id, after_seq, last_event_id)
        page = await operations.run_events(principal, run_id, after_seq, page_size)
        return ok(request, page.items, pagination=page.pagination())

    @get(
        "/metrics",
        operation_id="getWorkflowMetrics",
        summary="Run metrics: totals, success rate, durations, retries, errors, time buckets",
        description="Over the runs created in [`since`, `until`) that the caller may see: totals "
        "by status, success rate, runs in flight now, per type counts, duration percentiles "
        "(completed runs; from a log-scale histogram, within ~2%) and retries, the top error "
        "codes and, with `bucket` (`minute` for windows up to a day, `hour`, `day`), runs per "
        "time bucket. Read from aggregates maintained as runs change, never by scanning runs.",
        responses=error_responses(*READ_ERRORS),
    )
    async def get_metrics(
        self,
        request: Request[Any, Any, Any],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        since: Annotated[str | None, query("since", "ISO 8601 date or date-time")] = None,
        until: Annotated[str | None, query("until", "ISO 8601 date or date-time")] = None,
        type_: Annotated[str | None, query("type", "workflow types, comma-separated")] = None,
        resource_type: Annotated[str | None, query("resourceType", "server, cluster, vm")] = None,
        bucket: Annotated[str | None, query("bucket", "minute, hour or day")] = None,
    ) -> Response[Envelope[dict[str, Any]]]:
        params = MetricsParams(
            since=since, until=until, type=type_, resource_type=resource_type, bucket=bucket
        )
        return ok(request, await operations.metrics(principal, params))

    @post(
        "/runs/{run_id:str}/retry",
        operation_id="retryRun",
        summary="Retry a failed or cancelled run as a new linked run",
        description="Creates a NEW run with `retryOf`; with `fromStep`, the steps before it are "
        "not executed again and keep the outputs recorded by the original run (they must have "
        "completed there: otherwise 409). Unknown `fromStep` is 400. `onBusy=fail` answers 409 "
        "`RESOURCE_BUSY` instead of queueing behind another run on the resource.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def retry_run(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
        data: JSONBody[RunRetry | None] = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await operations.retry_run(who, run_id, data))

    @post(
        "/runs/{run_id:str}/cancel",
        operation_id="cancelRun",
        summary="Cancel a pending or running run",
        description="The in-flight step is asked to stop, compensation runs, the run ends "
        "`cancelled`. `terminate` skips compensation (super_admin, provider_admin).",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def cancel_run(
        self,
        request: Request[Any, Any, Any],
        run_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        data: JSONBody[RunCancel | None] = None,
    ) -> Response[Envelope[RunDetail]]:
        run = await operations.cancel_run(principal, run_id, data)
        return ok(
            request,
            run,
            status_code=202,
            response_headers=ACCEPTED_HEADERS,
            headers={"Location": f"/v1/workflows/runs/{run_id}"},
            workflowId=run_id,
        )

    @get(
        "/types",
        operation_id="listWorkflowTypes",
        summary="The workflow catalog",
        responses=error_responses(401, 500),
    )
    async def list_types(
        self,
        request: Request[Any, Any, Any],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[list[dict[str, Any]]]]:
        return ok(request, [dict(describe(t)) for t in operations.catalog.types()])

    @get(
        "/types/{type_name:str}",
        operation_id="getWorkflowType",
        summary="One workflow type: steps, compensation, retry policies, estimate",
        responses=error_responses(401, 404, 500),
    )
    async def get_type(
        self,
        request: Request[Any, Any, Any],
        type_name: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[dict[str, Any]]]:
        workflow = operations.catalog.get(type_name)
        if workflow is None:
            raise NotFoundError("no such workflow type; see GET /v1/workflows/types")
        return ok(request, dict(describe(workflow)))


async def _follow(
    operations: Operations,
    principal: Principal,
    run_id: str,
    after_seq: str | None,
    last_event_id: str | None,
) -> Response[Any]:
    """The SSE stream of a run's events (404 before streaming if the run is not visible)."""
    errors = FieldErrors()
    after = parse_int(errors, "afterSeq", after_seq, default=0, low=0, high=2**63 - 1)
    errors.raise_if_any("the event filters are not valid")
    resume = parse_last_event_id(last_event_id)
    await operations.get_run(principal, run_id)

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        async for item in operations.follow_run_events(
            principal, run_id, resume if resume is not None else after
        ):
            if item is None:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                continue
            event = item.get("event") or {}
            yield ServerSentEventMessage(
                id=item["seq"],
                event=str(event.get("event", "message")),
                data=msgspec.json.encode(event).decode(),
            )

    return ServerSentEvent(messages())
