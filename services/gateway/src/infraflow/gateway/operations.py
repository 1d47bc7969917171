"""What each endpoint does, between the thin controllers and the broker: reads from the
projector scoped to the caller, and run-starting use cases handed to the ``RunLauncher``.

Tenancy is enforced twice: the queries carry ``scope_projects`` and every answer is checked
again here, so a resource or run outside the caller's projects is always ``NOT_FOUND``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from infraflow.common import subjects
from infraflow.common.catalog import Catalog, WorkflowType
from infraflow.common.contracts import (
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    Query,
    QueryReply,
    ResourceEntry,
    ResourceView,
    encode,
    resource_key,
)
from infraflow.common.contracts.base import OnBusy
from infraflow.common.contracts.events import TERMINAL_EVENTS
from infraflow.common.errors import InfraflowError, NotFoundError, ValidationError
from infraflow.common.ids import is_id, new_id
from infraflow.common.vault import Vault, redact
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.adapters.kvmirror import KvMirror
from infraflow.gateway.core import access, runs, servers
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.errors import ForbiddenError
from infraflow.gateway.core.runs import MetricsParams, RunFilterParams, RunIds, RunPlan
from infraflow.gateway.core.validation import (
    SUBJECT_TOKEN,
    FieldErrors,
    check_text,
    decoder_field_error,
    parse_int,
    parse_multi,
    parse_page_size,
)
from infraflow.gateway.launcher import Accepted, IdempotencyRequest, Prepare, RunLauncher
from infraflow.gateway.operations_servers import ServerOperations
from infraflow.gateway.schemas import (
    CredentialsRotate,
    ProvisionRequest,
    RunCancel,
    RunCreate,
    RunRetry,
    Server,
    ServerCreate,
)

log = logging.getLogger(__name__)

_Body = TypeVar("_Body", ProvisionRequest, CredentialsRotate)

SERVER_PREFIX = "srv"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list and how to get the next one."""

    items: list[Any]
    page_size: int
    has_more: bool
    next_cursor: str | None

    def pagination(self) -> dict[str, Any]:
        return {
            "pageSize": self.page_size,
            "hasMore": self.has_more,
            "nextCursor": self.next_cursor,
        }


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, and how to recognise a repeat of this request."""

    principal: Principal
    request_id: str
    idempotency: IdempotencyRequest | None = None
    on_busy: OnBusy = "queue"
    """``fail``: answer 409 ``RESOURCE_BUSY`` instead of queueing behind another run."""


Admission = ResourceEntry | ResourceView
"""What a run start reads of its resource: ``id``, ``project_id``, ``site`` and ``state``."""


class Operations:
    """The gateway's use cases."""

    def __init__(
        self,
        broker: Broker,
        launcher: RunLauncher,
        catalog: Catalog,
        query_timeout_s: float,
        *,
        vault: Vault | None = None,
        callback_keys: Sequence[bytes] = (),
        directory: KvMirror[ResourceEntry] | None = None,
    ) -> None:
        self.broker = broker
        self.launcher = launcher
        self.catalog = catalog
        self._timeout = query_timeout_s
        self._directory = directory
        self.servers = ServerOperations(self, vault=vault, callback_keys=callback_keys)
        """Provisioning, rotation, batch registration and the installer's callback."""

    # ---- servers: reads --------------------------------------------------------------------

    async def get_server(self, principal: Principal, server_id: str) -> Server:
        return servers.server_from_view(await self._server_view(principal, server_id))

    async def list_servers(
        self,
        principal: Principal,
        *,
        state: str | None,
        site: str | None,
        project_id: str | None,
        page_size: str | None,
        page_token: str | None,
    ) -> Page:
        errors = FieldErrors()
        query = ListResources(
            resource_type=servers.RESOURCE_TYPE,
            states=parse_multi(errors, "state", state, allowed=servers.SERVER_STATES),
            sites=parse_multi(errors, "site", site, pattern=SUBJECT_TOKEN),
            project_ids=parse_multi(errors, "projectId", project_id, pattern=SUBJECT_TOKEN),
            page_size=parse_page_size(errors, page_size),
            cursor=page_token or None,
            scope_projects=principal.scope_projects,
        )
        if page_token is not None and not 0 < len(page_token) <= 512:
            errors.add("pageToken", "must be a token returned as meta.pagination.nextCursor")
        errors.raise_if_any("the server filters are not valid")
        reply = await self._ask(query)
        items = [
            servers.server_from_view(view)
            for view in (_view(item) for item in _items(reply))
            if principal.sees_project(view.project_id)
        ]
        return Page(items, query.page_size, reply.has_more, reply.next_cursor)

    async def _server_view(self, principal: Principal, server_id: str) -> ResourceView:
        if not is_id(server_id, SERVER_PREFIX):
            raise NotFoundError("no such server")
        reply = await self._ask(
            GetResource(
                resource_type=servers.RESOURCE_TYPE,
                resource_id=server_id,
                scope_projects=principal.scope_projects,
            )
        )
        if reply.data is None:
            raise NotFoundError("no such server")
        view = _view(reply.data)
        if view.id != server_id or not principal.sees_project(view.project_id):
            raise NotFoundError("no such server")
        return view

    # ---- servers: runs ---------------------------------------------------------------------

    async def register_server(self, caller: Caller, body: ServerCreate) -> Accepted:
        """``server.register``: seal the credentials, start the run."""
        access.require_fleet_writer(caller.principal)
        registration = servers.validate_registration(body)
        workflow = self._executable("server.register")

        async def prepare(ids: RunIds) -> RunPlan:
            assert ids.resource_id is not None
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=servers.RESOURCE_TYPE,
                resource_id=ids.resource_id,
                input=registration.run_input(),
                site=registration.site,
                credentials=registration.credentials(),
            )

        ids = RunIds(new_id("run"), new_id(SERVER_PREFIX))
        return await self._start(caller, prepare, ids)

    async def start_on_server(
        self,
        caller: Caller,
        workflow_type: str,
        server_id: str,
        run_input: dict[str, Any] | None = None,
    ) -> Accepted:
        """Start ``workflow_type`` on an existing server, checking who and from which state."""
        principal = caller.principal
        if not access.may_start_on_server(principal, workflow_type):
            raise ForbiddenError(f"not allowed to start {workflow_type}")
        workflow = self._executable(workflow_type)

        def check(view: Admission) -> None:
            access.authorize_server_workflow(principal, workflow_type, view.project_id)
            servers.check_transition(workflow, view.state)

        async def prepare(ids: RunIds) -> RunPlan:
            view = await self._admitted(
                principal,
                servers.RESOURCE_TYPE,
                server_id,
                check,
                lambda: self._server_view(principal, server_id),
            )
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=servers.RESOURCE_TYPE,
                resource_id=view.id,
                input=dict(run_input or {}),
                site=view.site,
                project_id=view.project_id,
            )

        return await self._start(caller, prepare, RunIds(new_id("run")))

    # ---- workflows -------------------------------------------------------------------------

    async def start_generic(self, caller: Caller, body: RunCreate) -> Accepted:
        """``POST /v1/workflows/runs``: any executable type, Atlas write roles only."""
        access.require_fleet_writer(caller.principal)
        workflow = runs.validate_run_create(body, self.catalog)
        if workflow.name == "server.register":
            try:
                registration_body = msgspec.convert(body.input or {}, ServerCreate)
            except msgspec.ValidationError as exc:
                field, message = decoder_field_error(str(exc), prefix="input")
                raise ValidationError(
                    "the registration input is not valid", details={"fields": {field: message}}
                ) from exc
            return await self.register_server(caller, registration_body)
        if workflow.resource_type == servers.RESOURCE_TYPE and body.resource_id is not None:
            # the same checks (and the same handling of secrets) as the server endpoints
            if workflow.name == "server.provision":
                request = _input_as(body.input, ProvisionRequest, "provisioning")
                return await self.servers.provision(caller, body.resource_id, request)
            if workflow.name == "server.rotate-credentials":
                rotation = _input_as(body.input, CredentialsRotate, "credentials")
                return await self.servers.rotate_credentials(caller, body.resource_id, rotation)
            return await self.start_on_server(caller, workflow.name, body.resource_id, body.input)
        return await self._start_other(caller, workflow, body)

    async def _start_other(
        self, caller: Caller, workflow: WorkflowType, body: RunCreate
    ) -> Accepted:
        prefix = runs.ID_PREFIX_BY_RESOURCE_TYPE[workflow.resource_type]

        async def prepare(ids: RunIds) -> RunPlan:
            resource_id = ids.resource_id or body.resource_id
            project_id = site = None
            if not workflow.creates_resource:
                assert resource_id is not None
                rid = resource_id
                view = await self._admitted(
                    caller.principal,
                    workflow.resource_type,
                    rid,
                    lambda v: servers.check_transition(workflow, v.state),
                    lambda: self._resource_view(caller.principal, workflow, rid),
                )
                project_id, site = view.project_id, view.site
            assert resource_id is not None
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=workflow.resource_type,
                resource_id=resource_id,
                input=dict(body.input or {}),
                site=site,
                project_id=project_id,
            )

        new_resource = new_id(prefix) if workflow.creates_resource else None
        return await self._start(caller, prepare, RunIds(new_id("run"), new_resource))

    async def _admitted(
        self,
        principal: Principal,
        resource_type: str,
        resource_id: str,
        check: Callable[[Admission], None],
        query: Callable[[], Awaitable[ResourceView]],
    ) -> Admission:
        """The resource a run is about to start on, passed through ``check`` (tenancy, state).
        The gateway's mirror of the resource directory answers without a query; a resource it
        does not hold, or one it would refuse, is asked of the read model, so an entry a moment
        behind never turns a valid request away."""
        if self._directory is not None:
            entry = self._directory.get(resource_key(resource_type, resource_id))
            if entry is not None and principal.sees_project(entry.project_id):
                try:
                    check(entry)
                    return entry
                except InfraflowError:
                    pass  # confirmed (or overturned) by the read model below
        view = await query()
        check(view)
        return view

    async def _resource_view(
        self, principal: Principal, workflow: WorkflowType, resource_id: str
    ) -> ResourceView:
        reply = await self._ask(
            GetResource(
                resource_type=workflow.resource_type,
                resource_id=resource_id,
                scope_projects=principal.scope_projects,
            )
        )
        if reply.data is None:
            raise NotFoundError(f"no such {workflow.resource_type}")
        view = _view(reply.data)
        if not principal.sees_project(view.project_id):
            raise NotFoundError(f"no such {workflow.resource_type}")
        return view

    async def get_run(self, principal: Principal, run_id: str) -> dict[str, Any]:
        if not is_id(run_id, "run"):
            raise NotFoundError("no such run")
        reply = await self._ask(GetRun(run_id=run_id, scope_projects=principal.scope_projects))
        run = reply.data
        if not isinstance(run, dict) or run.get("id") != run_id:
            raise NotFoundError("no such run")
        if not principal.sees_project(run.get("projectId")):
            raise NotFoundError("no such run")
        redacted: dict[str, Any] = redact(run)
        return redacted

    async def list_runs(self, principal: Principal, params: RunFilterParams) -> Page:
        query = runs.list_runs_query(params, self.catalog, principal.scope_projects)
        reply = await self._ask(query)
        items = [
            redact(item)
            for item in _items(reply)
            if isinstance(item, dict) and principal.sees_project(item.get("projectId"))
        ]
        return Page(items, query.page_size, reply.has_more, reply.next_cursor)

    async def run_events(
        self, principal: Principal, run_id: str, after_seq: str | None, page_size: str | None
    ) -> Page:
        errors = FieldErrors()
        after = parse_int(errors, "afterSeq", after_seq, default=0, low=0, high=2**63 - 1)
        limit = parse_int(errors, "pageSize", page_size, default=1000, low=1, high=1000)
        errors.raise_if_any("the event filters are not valid")
        await self.get_run(principal, run_id)  # 404 unless the run exists and is visible
        reply = await self._ask(
            GetRunEvents(
                run_id=run_id,
                after_seq=after,
                limit=limit,
                scope_projects=principal.scope_projects,
            )
        )
        return Page(redact(_items(reply)), limit, reply.has_more, reply.next_cursor)

    async def follow_run_events(
        self,
        principal: Principal,
        run_id: str,
        after_seq: int,
        *,
        wait_s: float | None = None,
        batch: int = 1000,
    ) -> AsyncIterator[dict[str, Any] | None]:
        """The run's events after ``after_seq``, then each new one as it is appended, until its
        terminal event; ``None`` when nothing arrived for ``wait_s`` (default
        ``runs.FOLLOW_WAIT_S``: a keep-alive). The run must exist and be visible (check with
        ``get_run`` before streaming)."""
        wait_s = runs.FOLLOW_WAIT_S if wait_s is None else wait_s
        after = after_seq
        while True:
            query = GetRunEvents(
                run_id=run_id,
                after_seq=after,
                limit=batch,
                wait_ms=int(wait_s * 1000),
                scope_projects=principal.scope_projects,
            )
            reply = await self.broker.ask(query, wait_s + self._timeout)  # a long poll
            items = redact(_items(reply))
            for item in items:
                after = max(after, int(item["seq"]))
                yield item
                if _event_name(item) in TERMINAL_EVENTS:
                    return
            if not items:
                run = await self.get_run(principal, run_id)
                if run.get("status") in runs.TERMINAL_STATUSES and not reply.has_more:
                    return  # ended before (or at) the client's last event
                yield None

    async def metrics(self, principal: Principal, params: MetricsParams) -> dict[str, Any]:
        """``GET /v1/workflows/metrics``: aggregates over the runs the caller may see."""
        query = runs.metrics_query(
            params, self.catalog, principal.scope_projects, datetime.now(UTC)
        )
        reply = await self._ask(query)
        if not isinstance(reply.data, dict):
            raise InfraflowError("the read model sent metrics in an unexpected shape")
        data: dict[str, Any] = reply.data
        return data

    async def retry_run(self, caller: Caller, run_id: str, body: RunRetry | None) -> Accepted:
        """A new run of a failed or cancelled run's type on the same resource, linked by
        ``retryOf``; with ``fromStep`` the earlier steps are skipped, keeping their outputs."""
        request = body or RunRetry()
        principal = caller.principal
        run = await self.get_run(principal, run_id)
        access.authorize_cancel(principal, run.get("projectId"), terminate=False)
        workflow = self._executable(str(run.get("type")))
        runs.check_retry(run, workflow, request.from_step)

        async def prepare(ids: RunIds) -> RunPlan:
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=str(run["resourceType"]),
                resource_id=str(run["resourceId"]),
                input=dict(run.get("input") or {}),
                site=run.get("site"),
                project_id=run.get("projectId"),
                retry_of=run_id,
                from_step=request.from_step,
            )

        return await self._start(caller, prepare, RunIds(new_id("run")))

    async def cancel_run(
        self, principal: Principal, run_id: str, body: RunCancel | None
    ) -> dict[str, Any]:
        """Ask the orchestrator to cancel a pending or running run."""
        request = body or RunCancel()
        if request.reason is not None:
            errors = FieldErrors()
            check_text(errors, "reason", request.reason, max_length=1024, allow_empty=True)
            errors.raise_if_any("the cancel request is not valid")
        run = await self.get_run(principal, run_id)
        access.authorize_cancel(principal, run.get("projectId"), request.terminate)
        command = runs.cancel_command(
            run,
            requested_by=principal.subject,
            reason=request.reason,
            terminate=request.terminate,
        )
        await self.launcher.cancel(subjects.command("cancel", run_id), encode(command), run_id)
        return {**run, "cancelRequested": True}

    # ---- helpers ---------------------------------------------------------------------------

    def _executable(self, name: str) -> WorkflowType:
        workflow = self.catalog.get(name)
        if workflow is None or not workflow.executable:
            raise ValidationError(f"workflow type {name} is not available yet")
        return workflow

    async def _start(self, caller: Caller, prepare: Prepare, ids: RunIds) -> Accepted:
        return await self.launcher.start(
            prepare,
            ids=ids,
            triggered_by=caller.principal.subject,
            request_id=caller.request_id,
            idempotency=caller.idempotency,
            on_busy=caller.on_busy,
        )

    async def _ask(self, query: Query) -> QueryReply:
        return await self.broker.ask(query, self._timeout)


def _items(reply: QueryReply) -> list[Any]:
    data = reply.data
    if data is None:
        return []
    if not isinstance(data, list):
        raise InfraflowError("the read model sent a list in an unexpected shape")
    return data


def _view(data: Any) -> ResourceView:
    try:
        return servers.resource_view(data)
    except msgspec.ValidationError as exc:
        raise InfraflowError("the read model sent a resource in an unexpected shape") from exc


def _input_as(data: dict[str, Any] | None, kind: type[_Body], what: str) -> _Body:
    """A generic start's ``input`` as the body of the matching server endpoint."""
    try:
        return msgspec.convert(data or {}, kind)
    except msgspec.ValidationError as exc:
        field, message = decoder_field_error(str(exc), prefix="input")
        raise ValidationError(
            f"the {what} input is not valid", details={"fields": {field: message}}
        ) from exc


def _event_name(item: Any) -> str | None:
    event = item.get("event") if isinstance(item, dict) else None
    return event.get("event") if isinstance(event, dict) else None
