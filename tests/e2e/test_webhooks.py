"""Webhooks through the whole stack: real runs on real processes produce deliveries to a real
receiver on loopback (allowlisted), signed per Standard Webhooks, retried until the receiver
recovers, durable across a gateway crash, and recorded attempt by attempt."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from infraflow.devtools.stack import Stack
from infraflow.devtools.webhook_receiver import WebhookReceiver, verify_signature

from .conftest import Api, registration

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        base_dir=tmp_path_factory.mktemp("webhooks"),
        bmc_systems=2,
        kube=False,
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        extra_env={
            "INFRAFLOW_WEBHOOKS__ALLOW_NETWORKS": "127.0.0.0/8",
            "INFRAFLOW_WEBHOOKS__INITIAL_BACKOFF_S": "0.5",
            "INFRAFLOW_WEBHOOKS__BACKOFF_COEFFICIENT": "2",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def register_webhook(api: Api, url: str, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/webhooks", json={"url": url, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def register_server(stack: Stack, api: Api, index: int) -> str:
    assert stack.bmc is not None
    system = stack.bmc.systems[index]
    r = api.post("/v1/servers", json=registration(stack, system, f"hooked{index}"))
    assert r.status_code == 202, r.text
    return str(r.json()["meta"]["workflowId"])


def wait_log(api: Api, webhook_id: str, ok: Any, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/v1/webhooks/{webhook_id}/deliveries")
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["data"]
        if ok(items):
            return items
        assert time.monotonic() < deadline, f"delivery log: {items}"
        time.sleep(0.2)


def test_a_flaky_receiver_gets_each_event_once(stack: Stack, api: Api) -> None:
    with WebhookReceiver(fail_first=3) as rx:
        hook = register_webhook(
            api, rx.url, events=["run.started", "run.completed"], types=["server.register"]
        )
        run_id = register_server(stack, api, 0)
        assert api.wait_run(run_id)["status"] == "completed"
        rx.wait_for(lambda r: len(r.unique()) == 2, timeout=30)
        time.sleep(1.0)  # nothing more arrives once both are delivered
        received = rx.snapshot()
    unique = {r.headers["webhook-id"]: r.json() for r in received if r.answered < 300}
    assert sorted(p["type"] for p in unique.values()) == ["run.completed", "run.started"]
    assert {p["data"]["runId"] for p in unique.values()} == {run_id}
    assert len(received) == 5  # three refused attempts, then one success per event
    for r in received:
        verify_signature(hook["secret"], r)
    deliveries = wait_log(
        api, hook["id"], lambda d: len(d) == 2 and all(x["status"] == "delivered" for x in d)
    )
    assert sum(d["attempts"] for d in deliveries) == 5
    codes = [a["statusCode"] for d in deliveries for a in d["history"]]
    assert sorted(codes) == [204, 204, 500, 500, 500]
    assert all(a["latencyMs"] is not None for d in deliveries for a in d["history"])


def test_deliveries_survive_a_gateway_crash(stack: Stack, api: Api) -> None:
    with WebhookReceiver(fail_first=2) as rx:
        hook = register_webhook(api, rx.url, events=["run.completed"])
        run_id = register_server(stack, api, 1)
        assert api.wait_run(run_id)["status"] == "completed"
        rx.wait_for(lambda r: len(r.snapshot()) >= 1, timeout=30)
        stack.procs["gateway"].kill()  # kill -9 while the delivery waits for its next attempt
        stack.start_service("gateway")
        stack.wait_ready()
        rx.wait_for(lambda r: len(r.unique()) == 1, timeout=60)
        [delivered] = rx.unique().values()
    verify_signature(hook["secret"], delivered)
    assert delivered.json()["data"]["runId"] == run_id
    [delivery] = wait_log(api, hook["id"], lambda d: d and d[0]["status"] == "delivered")
    assert delivery["attempts"] >= 3


def test_metadata_and_loopback_destinations_are_refused_unless_allowlisted(
    stack: Stack, api: Api
) -> None:
    r = api.post("/v1/webhooks", json={"url": "http://169.254.169.254/", "events": ["*"]})
    assert r.status_code == 400
    assert "url" in r.json()["error"]["details"]["fields"]
    r = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["*"]})
    assert r.status_code == 201  # this stack allowlists 127.0.0.0/8


def test_test_ping_reaches_the_receiver(api: Api) -> None:
    with WebhookReceiver() as rx:
        hook = register_webhook(api, rx.url, events=["run.failed"])
        r = api.post(f"/v1/webhooks/{hook['id']}/test")
        assert r.status_code == 200, r.text
        assert r.json()["data"]["status"] == "delivered"
        [ping] = rx.snapshot()
    verify_signature(hook["secret"], ping)
    assert ping.json()["type"] == "webhook.test"
