"""Gateway fixtures: the app in-process against a real nats-server, a projector double that
answers ``wf.query.*`` with canned ``QueryReply``s, and helpers to read ``WF_COMMANDS``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from infraflow.common import streams
from infraflow.common.contracts import (
    AnyCommand,
    AnyQuery,
    ErrorInfo,
    EstimateDuration,
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    ListRuns,
    QueryReply,
    decode_command,
    decode_query,
    encode,
)
from infraflow.common.ids import new_id
from infraflow.common.settings import NatsSettings
from infraflow.common.vault import Vault
from infraflow.devtools.nats_server import NatsServer
from infraflow.gateway.app import create_app
from infraflow.gateway.auth import mint_token
from infraflow.gateway.settings import GatewaySettings

SECRET = "test-secret-that-is-long-enough-for-hs256!"
PASSWORD = "Sup3r-S3cret-BMC-pa55word"
ESTIMATE_MS = 4321


def token(
    sub: str = "user-1",
    roles: Sequence[str] = ("provider_operator",),
    projects: Mapping[str, str] | None = None,
    ttl_s: float = 600,
    secret: str = SECRET,
) -> str:
    return mint_token(secret, sub, roles=roles, projects=projects, ttl_s=ttl_s)


def auth(
    sub: str = "user-1",
    roles: Sequence[str] = ("provider_operator",),
    projects: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """Headers with a bearer token (Atlas operator unless told otherwise)."""
    return {"Authorization": f"Bearer {token(sub, roles, projects)}", **extra}


ARC = {"roles": (), "projects": {"prj-a": "member"}}


def server_view(
    *,
    state: str = "available",
    project_id: str | None = None,
    site: str = "dc1",
    server_id: str | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """A cached server as the projector returns it."""
    now = datetime.now(UTC).isoformat()
    return {
        "id": server_id or new_id("srv"),
        "type": "server",
        "name": "node-1",
        "state": state,
        "projectId": project_id,
        "site": site,
        "attributes": {
            "powerState": "On",
            "vendor": "Acme",
            "bmc": {"address": "https://10.0.0.5", "username": "admin", "verifyTls": False},
            **attributes,
        },
        "lastRunId": None,
        "createdAt": now,
        "updatedAt": now,
    }


def run_view(
    *, status: str = "running", project_id: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": run_id or new_id("run"),
        "type": "server.inspect",
        "status": status,
        "resourceType": "server",
        "resourceId": new_id("srv"),
        "projectId": project_id,
        "triggeredBy": "someone",
        "createdAt": datetime.now(UTC).isoformat(),
        "input": {"bmc": {"password": "***"}},
        "steps": [],
    }


@dataclass
class FakeProjector:
    """Answers read-model queries from dicts, honouring ``scope_projects`` like the real one."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    estimate: Any = ESTIMATE_MS
    queries: list[AnyQuery] = field(default_factory=list)
    silent: bool = False

    def add_server(self, **kwargs: Any) -> dict[str, Any]:
        view = server_view(**kwargs)
        self.resources[view["id"]] = view
        return view

    def add_run(self, **kwargs: Any) -> dict[str, Any]:
        view = run_view(**kwargs)
        self.runs[view["id"]] = view
        return view

    def of(self, kind: type[Any]) -> list[Any]:
        return [q for q in self.queries if isinstance(q, kind)]

    async def on_query(self, msg: Msg) -> None:
        query = decode_query(msg.data)
        self.queries.append(query)
        if self.silent:
            return
        await msg.respond(encode(self.answer(query)))

    def answer(self, query: AnyQuery) -> QueryReply:
        scope = query.scope_projects

        def visible(item: dict[str, Any]) -> bool:
            return scope is None or item.get("projectId") in scope

        match query:
            case GetResource(resource_id=rid):
                item = self.resources.get(rid)
                return _found(item if item and visible(item) else None)
            case ListResources():
                items = [r for r in self.resources.values() if visible(r)]
                return QueryReply(
                    data=items[: query.page_size],
                    has_more=len(items) > query.page_size,
                    next_cursor="cur-2" if len(items) > query.page_size else None,
                )
            case GetRun(run_id=rid):
                item = self.runs.get(rid)
                return _found(item if item and visible(item) else None)
            case ListRuns():
                items = [r for r in self.runs.values() if visible(r)]
                return QueryReply(data=items[: query.page_size], has_more=False)
            case GetRunEvents(run_id=rid):
                return QueryReply(data=self.events.get(rid, []))
            case EstimateDuration():
                return QueryReply(data=self.estimate)
            case _:
                return QueryReply(ok=False, error=ErrorInfo(code="VALIDATION_ERROR", message="?"))


def _found(item: dict[str, Any] | None) -> QueryReply:
    if item is None:
        return QueryReply(ok=False, error=ErrorInfo(code="NOT_FOUND", message="not found"))
    return QueryReply(data=item)


@pytest.fixture
async def projector(nc: Client, js: JetStreamContext) -> AsyncIterator[FakeProjector]:
    fake = FakeProjector()
    sub = await nc.subscribe("wf.query.*", queue="projector", cb=fake.on_query)
    await nc.flush()
    yield fake
    await sub.unsubscribe()


@pytest.fixture
def settings(nats_server: NatsServer) -> GatewaySettings:
    return GatewaySettings(
        auth={"jwt_hs256_secret": SECRET},
        credential_keys=Vault.generate_key(),
        nats=NatsSettings(url=nats_server.url, connect_timeout_s=0.5),
        publish_timeout_s=1.0,
        query_timeout_s=0.5,
        estimate_timeout_s=0.2,
        idempotency_wait_s=3.0,
        log_json=False,
    )


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """The app in this event loop (so in-test NATS responders keep running while a request is
    in flight), with its lifespan, behind an httpx client."""
    ready, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        # the lifespan's task group must be entered and left by one task
        async with app.lifespan():
            ready.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # start-up failed: raise its error
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
    finally:
        stop.set()
        await task


async def started(client: httpx.AsyncClient, timeout: float = 10.0) -> None:
    """Wait until the gateway's broker connection is ready."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.get("/readyz")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "gateway never became ready"
        await asyncio.sleep(0.02)


@pytest.fixture
async def client(
    settings: GatewaySettings, js: JetStreamContext, projector: FakeProjector
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(settings)) as test_client:
        await started(test_client)
        yield test_client


@dataclass
class Published:
    command: AnyCommand
    subject: str
    headers: dict[str, str]
    raw: bytes


async def commands(js: JetStreamContext) -> list[Published]:
    """Every message in ``WF_COMMANDS`` (nobody consumes it in these tests)."""
    info = await js.stream_info(streams.COMMANDS)
    out: list[Published] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(streams.COMMANDS, seq)
        out.append(
            Published(
                command=decode_command(msg.data or b""),
                subject=msg.subject or "",
                headers=dict(msg.headers or {}),
                raw=msg.data or b"",
            )
        )
    return out


def body_of(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode(response.content)
    return data
