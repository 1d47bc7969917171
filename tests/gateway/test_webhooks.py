"""Webhooks through the gateway in-process against a real nats-server and a real HTTP
receiver on loopback: registration, the SSRF guard, Standard Webhooks signatures checked by an
independent implementation, retries with backoff, the delivery log, the test ping, scopes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import (
    ErrorInfo,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    StepFailed,
    encode,
)
from infraflow.common.ids import new_id
from infraflow.devtools.webhook_receiver import Received, WebhookReceiver
from infraflow.gateway.app import create_app
from infraflow.gateway.settings import GatewaySettings

from .conftest import ARC, FakeProjector, auth, body_of, serve, started

LOOPBACK = ["127.0.0.0/8", "::1/128"]


def verify_standard_webhook(secret: str, received: Received, tolerance_s: int = 300) -> None:
    """The Standard Webhooks verification, written from the specification (not the gateway's
    code): key = base64-decode(secret without ``whsec_``), signed content =
    ``{webhook-id}.{webhook-timestamp}.{body}``, signature = base64(HMAC-SHA256), header
    ``webhook-signature`` = space-separated ``v1,<sig>`` entries."""
    msg_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    assert abs(datetime.now(UTC).timestamp() - int(timestamp)) < tolerance_s
    key = base64.b64decode(secret.split("_", 1)[1])
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + received.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    candidates = [
        part.split(",", 1)[1]
        for part in received.headers["webhook-signature"].split(" ")
        if part.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, c) for c in candidates), "bad signature"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
def hook_settings(settings: GatewaySettings) -> GatewaySettings:
    settings.webhooks.allow_networks = list(LOOPBACK)
    settings.webhooks.initial_backoff_s = 0.2
    settings.webhooks.backoff_coefficient = 1.5
    settings.webhooks.max_attempts = 4
    settings.webhooks.timeout_s = 2.0
    return settings


@pytest.fixture
async def hooks(
    hook_settings: GatewaySettings, js: JetStreamContext, projector: FakeProjector
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(hook_settings)) as test_client:
        await started(test_client)
        yield test_client


class RunLog:
    """Appends a run's events to WF_EVENTS as the orchestrator and agents would."""

    def __init__(
        self, js: JetStreamContext, type_: str = "server.inspect", project: str | None = None
    ) -> None:
        self.js = js
        self.run_id = new_id("run")
        self.resource_id = new_id("srv")
        self.type = type_
        self.project = project
        self.time = datetime.now(UTC)

    def _base(self) -> dict[str, Any]:
        self.time += timedelta(milliseconds=5)
        return {
            "event_id": new_id("evt"),
            "run_id": self.run_id,
            "resource_type": "server",
            "resource_id": self.resource_id,
            "time": self.time,
        }

    async def append(self, event: Any) -> None:
        subject = subjects.event("server", self.resource_id, self.run_id, event.name)
        await self.js.publish(subject, encode(event))

    async def created(self) -> None:
        await self.append(
            RunCreated(
                **self._base(),
                workflow_type=self.type,
                input={},
                triggered_by="alice",
                steps=["inventory"],
                project_id=self.project,
            )
        )

    async def started(self) -> None:
        await self.append(RunStarted(**self._base()))

    async def step_failed(self) -> None:
        error = ErrorInfo(code="BMC_UNREACHABLE", message="no route", retryable=True)
        await self.append(
            StepFailed(**self._base(), step="inventory", index=0, attempt=1, error=error)
        )

    async def completed(self) -> None:
        await self.append(RunCompleted(**self._base()))

    async def failed(self) -> None:
        error = ErrorInfo(code="BMC_UNREACHABLE", message="no route", step="inventory")
        await self.append(RunFailed(**self._base(), error=error))


async def register(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    headers = body.pop("headers", None) or auth()
    response = await client.post("/v1/webhooks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = body_of(response)["data"]
    return data


async def until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def deliveries(client: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=auth())
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = body_of(response)["data"]
    return items


# ---- registration --------------------------------------------------------------------------


async def test_register_shows_the_secret_once(
    hooks: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    created = await register(hooks, url=receiver.url, events=["run.completed"])
    assert created["id"].startswith("whk_")
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"][6:])) == 32
    assert created["createdBy"] == "user-1"
    one = await hooks.get(f"/v1/webhooks/{created['id']}", headers=auth())
    assert one.status_code == 200
    assert "secret" not in body_of(one)["data"]
    assert created["secret"] not in one.text
    listing = body_of(await hooks.get("/v1/webhooks", headers=auth()))
    assert [w["id"] for w in listing["data"]] == [created["id"]]
    assert "secret" not in listing["data"][0]
    assert listing["meta"]["pagination"]["hasMore"] is False
    gone = await hooks.delete(f"/v1/webhooks/{created['id']}", headers=auth())
    assert gone.status_code == 200
    assert (await hooks.get(f"/v1/webhooks/{created['id']}", headers=auth())).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.100.100.200/",
    ],
)
async def test_non_public_destinations_are_refused_without_allowlist(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await client.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=auth())
    assert response.status_code == 400, response.text
    error = body_of(response)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "url" in error["details"]["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/", "events": ["*"]}, "url"),
        ({"url": "http://user:pw@example.com/", "events": ["*"]}, "url"),
        ({"url": "http://example.com/", "events": []}, "events"),
        ({"url": "http://example.com/", "events": ["run.exploded"]}, "events[0]"),
        ({"url": "http://example.com/", "events": ["*"], "types": ["nope.nothing"]}, "types[0]"),
        ({"url": "http://example.com/", "events": ["*"], "projectId": "a b"}, "projectId"),
        ({"events": ["*"]}, "url"),
    ],
)
async def test_invalid_registrations_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/webhooks", json=body, headers=auth())
    assert response.status_code == 400, response.text
    assert field in body_of(response)["error"]["details"]["fields"]


async def test_a_name_resolving_to_loopback_is_refused_at_delivery_time(
    receiver: WebhookReceiver,
) -> None:
    """The check is repeated at each delivery on the resolved address: with no allowlist,
    ``localhost`` (resolving to 127.0.0.1) is never contacted."""
    from infraflow.gateway.webhooks.sender import WebhookSender
    from infraflow.gateway.webhooks.signing import new_secret
    from infraflow.gateway.webhooks.ssrf import DestinationGuard

    url = f"http://localhost:{receiver.port}/hooks"
    blocked = WebhookSender(DestinationGuard([]), 2.0)
    allowed = WebhookSender(DestinationGuard(LOOPBACK), 2.0)
    try:
        result = await blocked.send(url, new_secret(), "dlv_x", b"{}")
        assert result.status_code is None
        assert result.error is not None
        assert "loopback" in result.error
        assert receiver.snapshot() == []
        result = await allowed.send(url, new_secret(), "dlv_y", b"{}")
        assert result.status_code == 204
        assert len(receiver.snapshot()) == 1
        assert receiver.snapshot()[0].headers["host"] == f"localhost:{receiver.port}"
    finally:
        await blocked.close()
        await allowed.close()


# ---- delivery ------------------------------------------------------------------------------


async def test_events_are_delivered_signed_and_filtered(
    hooks: httpx.AsyncClient, js: JetStreamContext, receiver: WebhookReceiver
) -> None:
    everything = await register(hooks, url=receiver.url, events=["*"])
    with WebhookReceiver() as other:
        completed_only = await register(
            hooks, url=other.url, events=["run.completed"], types=["server.*"]
        )
        run = RunLog(js)
        await run.created()
        await run.started()
        await run.step_failed()
        await run.completed()
        unrelated = RunLog(js, type_="sync.server-state")
        await unrelated.created()
        await unrelated.completed()
        await until(lambda: len(receiver.unique()) == 4 and len(other.unique()) == 1)
        await asyncio.sleep(0.3)  # nothing else arrives
        assert len(other.snapshot()) == 1
        got = other.snapshot()[0]
        verify_standard_webhook(completed_only["secret"], got)
        assert got.json()["type"] == "run.completed"
        assert got.json()["data"]["runId"] == run.run_id
        assert got.json()["data"]["status"] == "completed"
    assert len(receiver.snapshot()) == 4
    types = sorted(r.json()["type"] for r in receiver.snapshot())
    assert types == ["run.completed", "run.completed", "run.started", "step.failed"]
    for received in receiver.snapshot():
        verify_standard_webhook(everything["secret"], received)
        assert received.headers["content-type"] == "application/json"
        assert received.headers["webhook-id"].startswith("dlv_")
    step = next(r.json() for r in receiver.snapshot() if r.json()["type"] == "step.failed")
    assert step["data"]["step"]["name"] == "inventory"
    assert step["data"]["error"]["code"] == "BMC_UNREACHABLE"
    assert step["data"]["workflowType"] == "server.inspect"
    assert step["data"]["triggeredBy"] == "alice"


async def test_a_failing_receiver_gets_the_event_once_after_retries(
    hooks: httpx.AsyncClient, js: JetStreamContext
) -> None:
    with WebhookReceiver(fail_first=3) as flaky:
        webhook = await register(hooks, url=flaky.url, events=["run.completed"])
        run = RunLog(js)
        await run.created()
        await run.completed()
        await until(lambda: len(flaky.unique()) == 1)
        await asyncio.sleep(0.5)  # no further attempt after the success
        attempts = flaky.snapshot()
    assert [r.answered for r in attempts] == [500, 500, 500, 204]
    assert len({r.headers["webhook-id"] for r in attempts}) == 1, "one delivery id throughout"
    assert len({r.body for r in attempts}) == 1, "the same body on every attempt"
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.15, f"backoff: {gaps}"
    assert gaps[2] > gaps[0], f"backoff grows: {gaps}"
    for received in attempts:
        verify_standard_webhook(webhook["secret"], received)
    await until_log(hooks, webhook["id"], lambda d: d and d[0]["status"] == "delivered")
    [delivery] = await deliveries(hooks, webhook["id"])
    assert delivery["id"] == attempts[0].headers["webhook-id"]
    assert delivery["attempts"] == 4
    assert delivery["runId"] == run.run_id
    assert delivery["event"] == "run.completed"
    history = delivery["history"]
    assert [a["attempt"] for a in history] == [1, 2, 3, 4]
    assert [a["statusCode"] for a in history] == [500, 500, 500, 204]
    assert [a["outcome"] for a in history] == ["retrying", "retrying", "retrying", "delivered"]
    assert all(a["latencyMs"] >= 0 for a in history)
    assert history[0]["error"] == "HTTP 500"
    assert delivery["lastStatusCode"] == 204


async def until_log(
    client: httpx.AsyncClient, webhook_id: str, ok: Any, timeout: float = 30.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not ok(await deliveries(client, webhook_id)):
        assert asyncio.get_running_loop().time() < deadline, "delivery log not as expected"
        await asyncio.sleep(0.05)


async def test_a_delivery_is_given_up_after_the_last_attempt(
    hooks: httpx.AsyncClient, js: JetStreamContext
) -> None:
    with WebhookReceiver(fail_first=100, fail_status=503) as down:
        webhook = await register(hooks, url=down.url, events=["run.failed"])
        run = RunLog(js)
        await run.created()
        await run.failed()
        await until_log(hooks, webhook["id"], lambda d: d and d[0]["status"] == "failed")
        assert len(down.snapshot()) == 4
    [delivery] = await deliveries(hooks, webhook["id"])
    assert delivery["attempts"] == 4
    assert delivery["lastError"] == "HTTP 503"
    assert delivery["nextAttemptAt"] is None


async def test_unreachable_receiver_is_recorded_and_retried(
    hooks: httpx.AsyncClient, js: JetStreamContext
) -> None:
    closed = WebhookReceiver().start()
    url = closed.url
    closed.stop()  # nothing listens on that port any more
    webhook = await register(hooks, url=url, events=["run.completed"])
    run = RunLog(js)
    await run.created()
    await run.completed()
    await until_log(hooks, webhook["id"], lambda d: d and d[0]["attempts"] >= 2)
    delivery = (await deliveries(hooks, webhook["id"]))[0]
    assert delivery["history"][0]["error"] == "connection failed"
    assert delivery["history"][0]["statusCode"] is None


async def test_events_before_a_webhook_existed_are_not_sent(
    hooks: httpx.AsyncClient, js: JetStreamContext, receiver: WebhookReceiver
) -> None:
    run = RunLog(js)
    run.time -= timedelta(minutes=5)
    await run.created()
    await run.completed()
    await asyncio.sleep(0.3)
    await register(hooks, url=receiver.url, events=["*"])
    fresh = RunLog(js)
    await fresh.created()
    await fresh.completed()
    await until(lambda: len(receiver.unique()) == 1)
    await asyncio.sleep(0.3)
    assert [r.json()["data"]["runId"] for r in receiver.snapshot()] == [fresh.run_id]


async def test_project_webhooks_only_get_their_projects_runs(
    hooks: httpx.AsyncClient, js: JetStreamContext, receiver: WebhookReceiver
) -> None:
    member = auth(sub="tenant", **ARC)
    await register(
        hooks, url=receiver.url, events=["run.completed"], projectId="prj-a", headers=member
    )
    theirs = RunLog(js, project="prj-b")
    fleet = RunLog(js)
    mine = RunLog(js, project="prj-a")
    for run in (theirs, fleet, mine):
        await run.created()
        await run.completed()
    await until(lambda: len(receiver.unique()) == 1)
    await asyncio.sleep(0.3)
    [got] = receiver.snapshot()
    assert got.json()["data"]["runId"] == mine.run_id
    assert got.json()["data"]["projectId"] == "prj-a"


async def test_test_ping_is_delivered_and_logged(
    hooks: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    webhook = await register(hooks, url=receiver.url, events=["run.failed"])
    response = await hooks.post(f"/v1/webhooks/{webhook['id']}/test", headers=auth())
    assert response.status_code == 200, response.text
    data = body_of(response)["data"]
    assert data["status"] == "delivered"
    assert data["lastStatusCode"] == 204
    assert data["event"] == "webhook.test"
    [got] = receiver.snapshot()
    verify_standard_webhook(webhook["secret"], got)
    assert got.json()["type"] == "webhook.test"
    assert got.headers["webhook-id"] == data["id"]
    logged = await deliveries(hooks, webhook["id"])
    assert [d["id"] for d in logged] == [data["id"]]


async def test_deliveries_to_a_deleted_webhook_stop(
    hooks: httpx.AsyncClient, js: JetStreamContext
) -> None:
    with WebhookReceiver(fail_first=100) as down:
        webhook = await register(hooks, url=down.url, events=["run.completed"])
        run = RunLog(js)
        await run.created()
        await run.completed()
        await until(lambda: len(down.snapshot()) >= 1)
        assert (await hooks.delete(f"/v1/webhooks/{webhook['id']}", headers=auth())).is_success
        seen = len(down.snapshot())
        await asyncio.sleep(1.0)
        assert len(down.snapshot()) <= seen + 1  # at most the attempt already in flight
