"""Accepted means durable, 503 means nothing was accepted, and Idempotency-Key semantics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from infraflow.common.contracts import StartRun
from infraflow.common.ids import new_id
from infraflow.common.streams import (
    COMMANDS,
    EVENTS,
    KV_CREDENTIALS,
    KV_IDEMPOTENCY,
    ensure_topology,
)
from infraflow.devtools.nats_server import NatsServer
from infraflow.gateway.app import create_app
from infraflow.gateway.core import idempotency as idem
from infraflow.gateway.settings import GatewaySettings

from .conftest import PASSWORD, FakeProjector, auth, body_of, commands, serve, started

REGISTRATION: dict[str, Any] = {
    "name": "node-9",
    "bmc": {"address": "https://10.9.9.9", "username": "admin", "password": PASSWORD},
}


async def _credential_keys(js: JetStreamContext) -> list[str]:
    kv = await js.key_value(KV_CREDENTIALS)
    try:
        return [k for k in await kv.keys()]
    except nats.js.errors.NoKeysError:
        return []


async def test_broker_down_is_503_and_leaves_nothing_behind(
    client: httpx.AsyncClient,
    nats_server: NatsServer,
    projector: FakeProjector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = projector.add_server()
    nats_server.stop()
    await asyncio.sleep(0.2)
    response = await client.post("/v1/servers", json=REGISTRATION, headers=auth())
    assert response.status_code == 503
    body = body_of(response)
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert PASSWORD not in response.text
    response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=auth())
    assert response.status_code == 503
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 503
    assert PASSWORD not in caplog.text

    restarted = NatsServer(store_dir=nats_server.store_dir, port=nats_server.port).start()
    try:
        nc = await nats.connect(restarted.url)
        js = nc.jetstream()
        await ensure_topology(js)
        assert await _credential_keys(js) == []
        assert (await js.stream_info(COMMANDS)).state.messages == 0
        await nc.close()
    finally:
        restarted.stop()


async def test_a_failed_publish_removes_the_sealed_credentials(
    client: httpx.AsyncClient, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await js.delete_stream(COMMANDS)  # the publish now has no stream to land in
    response = await client.post("/v1/servers", json=REGISTRATION, headers=auth())
    assert response.status_code == 503, response.text
    assert body_of(response)["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert await _credential_keys(js) == []
    bucket = await js.stream_info(f"KV_{KV_CREDENTIALS}")
    assert bucket.state.last_seq == 2  # sealed, then purged
    assert PASSWORD not in caplog.text


async def test_same_idempotency_key_and_body_returns_the_first_response(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    headers = auth(**{"Idempotency-Key": "k-1"})
    first = await client.post("/v1/servers", json=REGISTRATION, headers=headers)
    again = await client.post("/v1/servers", json=REGISTRATION, headers=headers)
    assert first.status_code == again.status_code == 202
    assert body_of(first)["data"] == body_of(again)["data"]
    assert body_of(again)["meta"]["workflowId"] == body_of(first)["meta"]["workflowId"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await commands(js)) == 1
    assert len(await _credential_keys(js)) == 1
    # the stored record holds neither the password nor the body
    kv = await js.key_value(KV_IDEMPOTENCY)
    [key] = await kv.keys()
    assert PASSWORD.encode() not in ((await kv.get(key)).value or b"")

    other_body = {**REGISTRATION, "name": "node-10"}
    conflict = await client.post("/v1/servers", json=other_body, headers=headers)
    assert conflict.status_code == 409
    assert body_of(conflict)["error"]["code"] == "CONFLICT"
    # a different password is a different body too
    other_password = {**REGISTRATION, "bmc": {**REGISTRATION["bmc"], "password": "x"}}
    conflict = await client.post("/v1/servers", json=other_password, headers=headers)
    assert conflict.status_code == 409
    assert len(await commands(js)) == 1


async def test_idempotency_keys_are_per_caller_and_path(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server()
    key = {"Idempotency-Key": "same"}
    assert (
        await client.post("/v1/servers", json=REGISTRATION, headers=auth(sub="a", **key))
    ).status_code == 202
    assert (
        await client.post("/v1/servers", json=REGISTRATION, headers=auth(sub="b", **key))
    ).status_code == 202
    response = await client.post(
        f"/v1/servers/{server['id']}/inspect", headers=auth(sub="a", **key)
    )
    assert response.status_code == 202
    assert len(await commands(js)) == 3
    bad = await client.post(
        "/v1/servers", json=REGISTRATION, headers=auth(**{"Idempotency-Key": "a b"})
    )
    assert bad.status_code == 400
    assert "Idempotency-Key" in body_of(bad)["error"]["details"]["fields"]


async def test_replay_survives_a_state_change(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="available")
    headers = auth(**{"Idempotency-Key": "inspect-1"})
    first = await client.post(f"/v1/servers/{server['id']}/inspect", headers=headers)
    assert first.status_code == 202
    server["state"] = "inspecting"  # the run started; a plain retry would now be a 409
    again = await client.post(f"/v1/servers/{server['id']}/inspect", headers=headers)
    assert again.status_code == 202
    assert body_of(again)["meta"]["workflowId"] == body_of(first)["meta"]["workflowId"]
    assert len(await commands(js)) == 1


async def test_a_failed_request_releases_its_idempotency_key(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="registering")
    headers = auth(**{"Idempotency-Key": "retry-me"})
    response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=headers)
    assert response.status_code == 409
    server["state"] = "registered"
    response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=headers)
    assert response.status_code == 202


async def test_concurrent_requests_with_one_key_start_one_run(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    headers = auth(**{"Idempotency-Key": "race"})
    responses = await asyncio.gather(
        *(client.post("/v1/servers", json=REGISTRATION, headers=headers) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [202] * 5, [r.text for r in responses]
    run_ids = {body_of(r)["meta"]["workflowId"] for r in responses}
    assert len(run_ids) == 1
    published = await commands(js)
    assert len(published) == 1
    assert isinstance(published[0].command, StartRun)
    assert published[0].command.run_id in run_ids
    assert len(await _credential_keys(js)) == 1


async def _claim_by_another_gateway(
    js: JetStreamContext, settings: GatewaySettings, path: str, key: str, *, age_ms: int
) -> str:
    """Store a pending claim as a (crashed or slow) gateway would have; returns its run id."""
    run_id = new_id("run")
    record = idem.IdempotencyRecord(
        state="pending",
        body_hash=idem.body_fingerprint(
            idem.fingerprint_secret(settings.credential_key_list), None
        ),
        run_id=run_id,
        created_at_ms=int(time.time() * 1000) - age_ms,
    )
    kv = await js.key_value(KV_IDEMPOTENCY)
    await kv.create(idem.storage_key("user-1", "POST", path, key), idem.encode_record(record))
    return run_id


async def test_a_claim_still_in_progress_is_409(
    settings: GatewaySettings, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server()
    path = f"/v1/servers/{server['id']}/inspect"
    await _claim_by_another_gateway(js, settings, path, "busy", age_ms=0)
    settings.idempotency_wait_s = 0.3
    async with serve(create_app(settings)) as client:
        await started(client)
        response = await client.post(path, headers=auth(**{"Idempotency-Key": "busy"}))
    assert response.status_code == 409
    error = body_of(response)["error"]
    assert error["code"] == "CONFLICT"
    assert "in progress" in error["message"]
    assert await commands(js) == []


async def test_a_stale_claim_is_taken_over_with_its_run_id(
    client: httpx.AsyncClient,
    settings: GatewaySettings,
    js: JetStreamContext,
    projector: FakeProjector,
) -> None:
    server = projector.add_server()
    path = f"/v1/servers/{server['id']}/inspect"
    stale_ms = int(settings.idempotency_stale_s * 1000) + 1000
    run_id = await _claim_by_another_gateway(js, settings, path, "crashed", age_ms=stale_ms)
    response = await client.post(path, headers=auth(**{"Idempotency-Key": "crashed"}))
    assert response.status_code == 202
    assert body_of(response)["meta"]["workflowId"] == run_id
    [published] = await commands(js)
    assert published.headers["Nats-Msg-Id"] == run_id


async def test_readiness_recreates_lost_streams(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    await js.delete_stream(EVENTS)
    assert (await client.get("/readyz")).status_code == 503
    deadline = time.monotonic() + 10
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (await js.stream_info(EVENTS)).config.name == EVENTS
