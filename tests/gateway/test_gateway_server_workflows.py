"""Server workflows at the gateway: provisioning input, the state machine on every action,
batch registration (207), credential rotation, forced decommission and the installer's
callback (per-run token, recorded once, never logged)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import msgspec
import pytest
from nats.js import JetStreamContext

from infraflow.common.catalog import DEFAULT_CATALOG, SERVER_STATES
from infraflow.common.contracts import StartRun
from infraflow.common.ids import new_id
from infraflow.common.provisioning import (
    ProvisioningCallback,
    callback_key,
    callback_token,
    derive_callback_key,
)
from infraflow.common.streams import KV_CREDENTIALS, KV_PROVISIONING
from infraflow.common.vault import Vault
from infraflow.gateway.settings import GatewaySettings

from .conftest import PASSWORD, FakeProjector, auth, body_of, commands

IMAGE = {"url": "https://images.example.com/installer.iso"}


def registration(name: str, **bmc: Any) -> dict[str, Any]:
    return {
        "name": name,
        "bmc": {"address": "https://10.1.2.3", "username": "admin", "password": PASSWORD, **bmc},
    }


# ---- provisioning --------------------------------------------------------------------------


async def test_provision_starts_with_a_checked_input(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="available", site="dc3", project_id="prj-a")
    request = {
        "image": {**IMAGE, "checksum": "AB" * 32, "checksumType": "sha256"},
        "userData": "#cloud-config\n",
        "callbackTimeoutS": 900,
    }
    response = await client.post(
        f"/v1/servers/{server['id']}/provision", json=request, headers=auth()
    )
    assert response.status_code == 202, response.text
    [published] = await commands(js)
    command = published.command
    assert isinstance(command, StartRun)
    assert command.workflow_type == "server.provision"
    assert (command.site, command.project_id) == ("dc3", "prj-a")
    assert command.input == {
        "image": {**IMAGE, "checksum": "ab" * 32, "checksumType": "sha256"},
        "userData": "#cloud-config\n",
        "callbackTimeoutS": 900,
    }


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"image": {"url": "ftp://x/y.iso"}}, "image.url"),
        ({"image": {"url": "https://x/y.iso?infraflow_token=t"}}, "image.url"),
        ({"image": {**IMAGE, "checksum": "ab"}}, "image.checksumType"),
        ({"image": {**IMAGE, "checksum": "zz" * 32, "checksumType": "sha256"}}, "image.checksum"),
        ({"image": {**IMAGE, "checksumType": "crc32"}}, "image.checksumType"),
        ({"image": IMAGE, "callbackTimeoutS": 0}, "callbackTimeoutS"),
        ({"image": IMAGE, "callbackTimeoutS": 99999}, "callbackTimeoutS"),
        ({"image": IMAGE, "userData": "x" * (64 * 1024 + 1)}, "userData"),
        ({}, "image"),
    ],
)
async def test_provision_validation(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    projector: FakeProjector,
    request_body: dict[str, Any],
    field: str,
) -> None:
    server = projector.add_server(state="available")
    response = await client.post(
        f"/v1/servers/{server['id']}/provision", json=request_body, headers=auth()
    )
    assert response.status_code == 400, response.text
    assert field in body_of(response)["error"]["details"]["fields"]
    assert await commands(js) == []


# ---- the state machine ---------------------------------------------------------------------

ACTIONS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/inspect", None, "server.inspect"),
    ("POST", "/provision", {"image": IMAGE}, "server.provision"),
    ("POST", "/power", {"action": "on"}, "server.lifecycle"),
    ("POST", "/rotate-credentials", {"password": "n3w-Pa55word!"}, "server.rotate-credentials"),
    ("POST", "/sync", None, "sync.server-state"),
    ("DELETE", "", None, "server.decommission"),
]


@pytest.mark.parametrize(("method", "suffix", "payload", "workflow"), ACTIONS)
@pytest.mark.parametrize("state", SERVER_STATES)
async def test_every_server_action_follows_the_state_machine(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    projector: FakeProjector,
    method: str,
    suffix: str,
    payload: dict[str, Any] | None,
    workflow: str,
    state: str,
) -> None:
    server = projector.add_server(state=state)
    response = await client.request(
        method, f"/v1/servers/{server['id']}{suffix}", json=payload, headers=auth()
    )
    allowed = DEFAULT_CATALOG[workflow].allowed_from
    assert allowed is not None
    if state in allowed:
        assert response.status_code == 202, response.text
        [published] = await commands(js)
        assert isinstance(published.command, StartRun)
        assert published.command.workflow_type == workflow
    else:
        assert response.status_code == 409, response.text
        error = body_of(response)["error"]
        assert error["code"] == "INVALID_STATE_TRANSITION"
        assert error["details"]["currentState"] == state
        assert error["details"]["allowedStates"] == sorted(allowed)
        assert await commands(js) == []


def test_the_state_machine_as_the_api_describes_it() -> None:
    servers = [t for t in DEFAULT_CATALOG.types() if t.resource_type == "server"]
    for t in servers:
        declared = {t.states.running, t.states.completed, t.states.failed, t.states.cancelled}
        assert declared - {None} <= set(SERVER_STATES), t.name
        assert t.allowed_from is None or t.allowed_from <= set(SERVER_STATES), t.name
    allowed = {t.name: t.allowed_from for t in servers}
    assert allowed["server.provision"] == {"registered", "available"}
    assert allowed["server.inspect"] == {"registered", "available", "error"}
    stable = {"registered", "available", "provisioned", "error"}
    for name in ("server.lifecycle", "server.decommission", "server.rotate-credentials"):
        assert allowed[name] == stable
    assert "decommissioned" not in (allowed["sync.server-state"] or ())


# ---- batch registration --------------------------------------------------------------------


async def test_batch_registration_is_207_item_by_item(
    client: httpx.AsyncClient, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    items = [
        registration("node-a"),
        {"name": "node-b", "bmc": {"address": "https://10.0.0.9", "username": "admin"}},
        registration("bad name!", address="not a url"),
        registration("node-d", verifyTls=False),
    ]
    response = await client.post("/v1/servers:batchCreate", json={"servers": items}, headers=auth())
    assert response.status_code == 207, response.text
    data = body_of(response)["data"]
    assert (data["accepted"], data["failed"]) == (2, 2)
    results = data["results"]
    assert [(r["index"], r["status"], r["success"]) for r in results] == [
        (0, 202, True),
        (1, 400, False),
        (2, 400, False),
        (3, 202, True),
    ]
    assert results[1]["error"]["details"]["fields"] == {"bmc.password": "is required"}
    assert set(results[2]["error"]["details"]["fields"]) == {"name", "bmc.address"}
    published = await commands(js)
    assert sorted(p.command.run_id for p in published) == sorted(
        r["meta"]["workflowId"] for r in (results[0], results[3])
    )
    kv = await js.key_value(KV_CREDENTIALS)
    for r in (results[0], results[3]):
        assert r["data"]["status"] == "pending"
        assert (await kv.get(r["data"]["resourceId"])).value
    assert PASSWORD not in response.text
    assert PASSWORD not in caplog.text


async def test_batch_with_an_idempotency_key_replays_each_item(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    items = [registration("node-a"), registration("node-b")]
    headers = auth(**{"Idempotency-Key": "batch-1"})
    first = body_of(
        await client.post("/v1/servers:batchCreate", json={"servers": items}, headers=headers)
    )
    again = body_of(
        await client.post("/v1/servers:batchCreate", json={"servers": items}, headers=headers)
    )
    ids = [r["meta"]["workflowId"] for r in first["data"]["results"]]
    assert [r["meta"]["workflowId"] for r in again["data"]["results"]] == ids
    assert len(await commands(js)) == 2


@pytest.mark.parametrize("count", [0, 101])
async def test_batch_size_is_bounded(client: httpx.AsyncClient, count: int) -> None:
    response = await client.post(
        "/v1/servers:batchCreate",
        json={"servers": [registration(f"n{i}") for i in range(count)]},
        headers=auth(),
    )
    assert response.status_code == 400
    assert "servers" in body_of(response)["error"]["details"]["fields"]


async def test_batch_needs_a_write_role(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/servers:batchCreate",
        json={"servers": [registration("n1")]},
        headers=auth(roles=("support",)),
    )
    assert response.status_code == 403


# ---- credentials ---------------------------------------------------------------------------


async def test_rotation_seals_a_candidate_and_keeps_the_password_out_of_the_run(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    projector: FakeProjector,
    settings: GatewaySettings,
) -> None:
    server = projector.add_server(state="provisioned")
    new_password = "brand-N3w-password"
    response = await client.post(
        f"/v1/servers/{server['id']}/rotate-credentials",
        json={"username": "root", "password": new_password},
        headers=auth(),
    )
    assert response.status_code == 202, response.text
    [published] = await commands(js)
    command = published.command
    assert isinstance(command, StartRun)
    assert command.input == {"username": "root"}
    assert new_password.encode() not in published.raw
    assert new_password not in response.text
    kv = await js.key_value(KV_CREDENTIALS)
    sealed = (await kv.get(f"{server['id']}.candidate.{command.run_id}")).value
    assert sealed is not None
    assert Vault(settings.credential_key_list).open(sealed) == {
        "password": new_password,
        "username": "root",
    }
    # the live credentials are untouched until the run has checked the new ones
    with pytest.raises(Exception, match="not found"):
        await kv.get(server["id"])


async def test_forced_decommission(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="error")
    response = await client.delete(f"/v1/servers/{server['id']}?force=true", headers=auth())
    assert response.status_code == 202, response.text
    [published] = await commands(js)
    assert isinstance(published.command, StartRun)
    assert published.command.input == {"force": True}
    bad = await client.delete(f"/v1/servers/{server['id']}?force=maybe", headers=auth())
    assert bad.status_code == 400


# ---- the installer's callback ----------------------------------------------------------------


def token_for(settings: GatewaySettings, server_id: str, run_id: str) -> str:
    key = derive_callback_key(settings.credential_key_list[0])
    return callback_token(key, server_id, run_id)


async def test_callback_with_the_runs_token_is_recorded_once(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    settings: GatewaySettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server_id, run_id = new_id("srv"), new_id("run")
    token = token_for(settings, server_id, run_id)
    url = f"/v1/servers/{server_id}/provisioning-callback"
    headers = {"Authorization": f"Bearer {token}"}  # no JWT: the token is the credential
    first = await client.post(
        url, json={"runId": run_id, "status": "succeeded", "message": "ok"}, headers=headers
    )
    assert first.status_code == 200, first.text
    assert body_of(first)["data"] == {
        "runId": run_id,
        "serverId": server_id,
        "status": "succeeded",
        "duplicate": False,
    }
    kv = await js.key_value(KV_PROVISIONING)
    record = msgspec.json.decode(
        (await kv.get(callback_key(run_id))).value or b"", type=ProvisioningCallback
    )
    assert (record.server_id, record.status, record.message) == (server_id, "succeeded", "ok")

    second = await client.post(url, json={"runId": run_id, "status": "failed"}, headers=headers)
    assert body_of(second)["data"]["duplicate"] is True
    record = msgspec.json.decode(
        (await kv.get(callback_key(run_id))).value or b"", type=ProvisioningCallback
    )
    assert record.status == "succeeded"  # the first callback wins
    assert token not in caplog.text
    assert await commands(js) == []


@pytest.mark.parametrize(
    "case", ["no header", "wrong token", "other run", "other server", "user jwt"]
)
async def test_callback_without_the_runs_token_is_401(
    client: httpx.AsyncClient, js: JetStreamContext, settings: GatewaySettings, case: str
) -> None:
    server_id, run_id = new_id("srv"), new_id("run")
    token = {
        "no header": None,
        "wrong token": "A" * 22,
        "other run": token_for(settings, server_id, new_id("run")),
        "other server": token_for(settings, new_id("srv"), run_id),
        "user jwt": auth()["Authorization"].split()[1],
    }[case]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        f"/v1/servers/{server_id}/provisioning-callback",
        json={"runId": run_id, "status": "succeeded"},
        headers=headers,
    )
    assert response.status_code == 401, response.text
    assert body_of(response)["error"]["code"] == "UNAUTHORIZED"
    kv = await js.key_value(KV_PROVISIONING)
    with pytest.raises(Exception, match="not found"):
        await kv.get(callback_key(run_id))


async def test_callback_body_is_validated(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    server_id = new_id("srv")
    response = await client.post(
        f"/v1/servers/{server_id}/provisioning-callback",
        json={"runId": "nope", "status": "succeeded"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status_code == 400
    assert "runId" in body_of(response)["error"]["details"]["fields"]
    response = await client.post(
        f"/v1/servers/{server_id}/provisioning-callback",
        json={"runId": new_id("run"), "status": "done"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status_code == 400


async def test_openapi_documents_the_server_endpoints(client: httpx.AsyncClient) -> None:
    paths = body_of(await client.get("/schema/openapi.json"))["paths"]
    for path in (
        "/v1/servers:batchCreate",
        "/v1/servers/{server_id}/provision",
        "/v1/servers/{server_id}/rotate-credentials",
        "/v1/servers/{server_id}/provisioning-callback",
    ):
        assert path in paths, sorted(paths)
    assert paths["/v1/servers/{server_id}/provisioning-callback"]["post"]["security"] == [{}]


async def test_generic_start_of_server_workflows_gets_the_same_checks(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="available")
    bad = await client.post(
        "/v1/workflows/runs",
        json={"type": "server.provision", "resourceId": server["id"], "input": {}},
        headers=auth(),
    )
    assert bad.status_code == 400
    assert "input.image" in body_of(bad)["error"]["details"]["fields"]
    rotate = await client.post(
        "/v1/workflows/runs",
        json={
            "type": "server.rotate-credentials",
            "resourceId": server["id"],
            "input": {"password": "generic-N3w-pass"},
        },
        headers=auth(),
    )
    assert rotate.status_code == 202, rotate.text
    [published] = await commands(js)
    assert isinstance(published.command, StartRun)
    assert published.command.input == {}
    assert b"generic-N3w-pass" not in published.raw
    kv = await js.key_value(KV_CREDENTIALS)
    assert (await kv.get(f"{server['id']}.candidate.{published.command.run_id}")).value
