"""``/v1/servers``: the server cache and the server workflows (register, batch register, inspect,
provision, power, rotate credentials, sync, decommission) and the installer's callback.

Every workflow endpoint checks the server state machine (``WorkflowType.allowed_from``): an
action the current state does not allow is ``409 INVALID_STATE_TRANSITION`` with
``details.currentState``, and no run is started.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from infraflow.common.contracts import RunSummary
from infraflow.common.errors import InfraflowError
from infraflow.gateway.auth import EXCLUDE_OPT_KEY, bearer_token
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
from infraflow.gateway.core.errors import INTERNAL_ERROR, status_for
from infraflow.gateway.core.validation import invalid
from infraflow.gateway.operations import Operations
from infraflow.gateway.operations_servers import BatchOutcome
from infraflow.gateway.responses import accepted, ok
from infraflow.gateway.schemas import (
    BatchItemResult,
    BatchResult,
    CallbackReceipt,
    CredentialsRotate,
    Envelope,
    ErrorBody,
    PowerRequest,
    ProvisioningCallbackBody,
    ProvisionRequest,
    Server,
    ServerBatchCreate,
    ServerCreate,
)

_ACCEPTED = (
    "202 Accepted once the command is durable: `Location` names the run, `meta.workflowId` is "
    "its id and `meta.estimatedDuration` a hint in ms."
)
_STATE = (
    " An action the server's state does not allow is 409 INVALID_STATE_TRANSITION with "
    "`details.currentState`."
)


class ServerController(Controller):
    """Bare metal servers (Atlas; power actions also for Arc members of the server's project)."""

    path = "/v1"
    tags = ["servers"]

    @post(
        "/servers",
        operation_id="registerServer",
        summary="Register a server (server.register)",
        description=_ACCEPTED + " The BMC password is sealed and never returned.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def register_server(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ServerCreate],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await operations.register_server(who, data))

    @post(
        "/servers:batchCreate",
        operation_id="registerServers",
        summary="Register several servers (one server.register run each)",
        description="207 Multi-Status: `data.results` holds one result per item, in order: "
        "`status` 202 with the run summary in `data` and `meta.workflowId`, or the item's "
        "error (`status`, `error.code`, `error.details.fields`). At most 100 items. With an "
        "`Idempotency-Key`, item i is registered under `<key>#i`.",
        status_code=207,
        responses=error_responses(400, 401, 403, 413, 500, 503),
    )
    async def register_servers(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ServerBatchCreate],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[BatchResult]]:
        who = caller(request, principal, idempotency_key, data)
        results = [_batch_item(o) for o in await operations.servers.register_batch(who, data)]
        failed = sum(1 for r in results if not r.success)
        body = BatchResult(results=results, accepted=len(results) - failed, failed=failed)
        return ok(request, body, status_code=207)

    @get(
        "/servers",
        operation_id="listServers",
        summary="List servers from the cache",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_servers(
        self,
        request: Request[Any, Any, Any],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        state_filter: Annotated[str | None, query("state", "states, comma-separated")] = None,
        site: Annotated[str | None, query("site", "sites, comma-separated")] = None,
        project_id: Annotated[str | None, query("projectId", "comma-separated")] = None,
        page_size: Annotated[str | None, query("pageSize", "1-500, default 50")] = None,
        page_token: Annotated[str | None, query("pageToken", "meta.pagination.nextCursor")] = None,
    ) -> Response[Envelope[list[Server]]]:
        page = await operations.list_servers(
            principal,
            state=state_filter,
            site=site,
            project_id=project_id,
            page_size=page_size,
            page_token=page_token,
        )
        return ok(request, page.items, pagination=page.pagination())

    @get(
        "/servers/{server_id:str}",
        operation_id="getServer",
        summary="Get a server from the cache",
        responses=error_responses(*READ_ERRORS),
    )
    async def get_server(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[Server]]:
        return ok(request, await operations.get_server(principal, server_id))

    @post(
        "/servers/{server_id:str}/power",
        operation_id="powerServer",
        summary="Power action (server.lifecycle)",
        description=_ACCEPTED + _STATE,
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def power_server(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        data: JSONBody[PowerRequest],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        outcome = await operations.start_on_server(
            who, "server.lifecycle", server_id, {"action": data.action}
        )
        return accepted(request, outcome)

    @post(
        "/servers/{server_id:str}/inspect",
        operation_id="inspectServer",
        summary="Hardware inspection (server.inspect)",
        description=_ACCEPTED + _STATE,
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def inspect_server(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key)
        return accepted(request, await operations.start_on_server(who, "server.inspect", server_id))

    @post(
        "/servers/{server_id:str}/provision",
        operation_id="provisionServer",
        summary="Install an OS from virtual media (server.provision)",
        description=_ACCEPTED
        + _STATE
        + " The installer calls back `POST /v1/servers/{id}/provisioning-callback` with the "
        "per-run token it was booted with.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def provision_server(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        data: JSONBody[ProvisionRequest],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await operations.servers.provision(who, server_id, data))

    @post(
        "/servers/{server_id:str}/rotate-credentials",
        operation_id="rotateServerCredentials",
        summary="Replace the BMC credentials (server.rotate-credentials)",
        description=_ACCEPTED
        + _STATE
        + " The new credentials are checked against the BMC before they replace the old ones.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def rotate_credentials(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        data: JSONBody[CredentialsRotate],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await operations.servers.rotate_credentials(who, server_id, data))

    @post(
        "/servers/{server_id:str}/sync",
        operation_id="syncServer",
        summary="Observe power and health now (sync.server-state)",
        description=_ACCEPTED,
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def sync_server(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key)
        outcome = await operations.start_on_server(who, "sync.server-state", server_id)
        return accepted(request, outcome)

    @post(
        "/servers/{server_id:str}/provisioning-callback",
        operation_id="provisioningCallback",
        summary="The installer reports the end of a provisioning run",
        description="Called by the installer, not by users: authenticated by the per-run token "
        "it was booted with (`Authorization: Bearer <token>`), not by a JWT. The first callback "
        "of a run is recorded; repeats answer 200 with `duplicate: true`.",
        status_code=200,
        responses=error_responses(400, 401, 500, 503),
        security=[{}],  # no bearer JWT: the per-run token authenticates the installer
        opt={EXCLUDE_OPT_KEY: True},
    )
    async def provisioning_callback(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        data: JSONBody[ProvisioningCallbackBody],
        operations: NamedDependency[Operations],
    ) -> Response[Envelope[CallbackReceipt]]:
        token = bearer_token(request.headers.get("authorization"))
        return ok(request, await operations.servers.record_callback(server_id, token, data))

    @delete(
        "/servers/{server_id:str}",
        operation_id="decommissionServer",
        summary="Decommission a server (server.decommission)",
        description=_ACCEPTED
        + _STATE
        + " `force=true` removes the server even when its BMC cannot be reached.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def decommission_server(
        self,
        request: Request[Any, Any, Any],
        server_id: FromPath[str],
        operations: NamedDependency[Operations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
        force: Annotated[str | None, query("force", "true: ignore BMC failures")] = None,
    ) -> Response[Envelope[RunSummary]]:
        if force not in (None, "true", "false"):
            raise invalid("force", "must be true or false")
        who = caller(request, principal, idempotency_key)
        outcome = await operations.servers.decommission(who, server_id, force == "true")
        return accepted(request, outcome)


def _batch_item(outcome: BatchOutcome) -> BatchItemResult:
    """One batch result as the API shows it (the same shapes as a 202 or an error envelope)."""
    if outcome.accepted is not None:
        a = outcome.accepted
        return BatchItemResult(
            index=outcome.index,
            status=a.status,
            success=True,
            data=a.data,
            meta={
                "workflowId": a.run_id,
                "estimatedDuration": a.estimated_duration_ms,
                "location": a.location,
            },
        )
    exc = outcome.error or InfraflowError("the item was not processed")
    status = status_for(exc.code)
    if status is None or exc.code == INTERNAL_ERROR:
        error = ErrorBody(code=INTERNAL_ERROR, message="an unexpected error occurred")
        status = 500
    else:
        error = ErrorBody(code=exc.code, message=exc.message, details=exc.details or None)
    return BatchItemResult(index=outcome.index, status=status, success=False, error=error)
