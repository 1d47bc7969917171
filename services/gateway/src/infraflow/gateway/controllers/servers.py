"""``/v1/servers``: the server cache and the server workflows (register, power, inspect,
sync, decommission)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from infraflow.common.contracts import RunSummary
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
from infraflow.gateway.operations import Operations
from infraflow.gateway.responses import accepted, ok
from infraflow.gateway.schemas import Envelope, PowerRequest, Server, ServerCreate

_ACCEPTED = (
    "202 Accepted once the command is durable: `Location` names the run, `meta.workflowId` is "
    "its id and `meta.estimatedDuration` a hint in ms."
)


class ServerController(Controller):
    """Bare metal servers (Atlas; power actions also for Arc members of the server's project)."""

    path = "/v1/servers"
    tags = ["servers"]

    @post(
        "/",
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

    @get(
        "/",
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
        "/{server_id:str}",
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
        "/{server_id:str}/power",
        operation_id="powerServer",
        summary="Power action (server.lifecycle)",
        description=_ACCEPTED,
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
        "/{server_id:str}/inspect",
        operation_id="inspectServer",
        summary="Hardware inspection (server.inspect)",
        description=_ACCEPTED,
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
        "/{server_id:str}/sync",
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

    @delete(
        "/{server_id:str}",
        operation_id="decommissionServer",
        summary="Decommission a server (server.decommission)",
        description=_ACCEPTED,
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
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key)
        outcome = await operations.start_on_server(who, "server.decommission", server_id)
        return accepted(request, outcome)
