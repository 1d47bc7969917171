"""``/v1/servers``: registration, server workflows, the cache views."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from infraflow.common.contracts import EstimateDuration, GetResource, ListResources, StartRun
from infraflow.common.ids import is_id, new_id
from infraflow.common.streams import KV_CREDENTIALS
from infraflow.common.vault import Vault
from infraflow.gateway.settings import GatewaySettings

from .conftest import ARC, ESTIMATE_MS, PASSWORD, FakeProjector, auth, body_of, commands

REGISTRATION: dict[str, Any] = {
    "name": "node-01",
    "bmc": {"address": "https://10.1.2.3:8443", "username": "admin", "password": PASSWORD},
    "tags": {"rack": "r12"},
}


async def test_register_returns_202_after_the_command_is_in_jetstream(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    settings: GatewaySettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {**REGISTRATION, "triggeredBy": "someone-else"}
    started = time.monotonic()
    response = await client.post("/v1/servers", json=body, headers=auth(sub="alice"))
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert elapsed < 1.0
    envelope = body_of(response)
    run = envelope["data"]
    run_id = envelope["meta"]["workflowId"]
    assert is_id(run_id, "run")
    assert run["id"] == run_id
    assert response.headers["location"] == f"/v1/workflows/runs/{run_id}"
    assert envelope["meta"]["estimatedDuration"] == ESTIMATE_MS
    assert run["status"] == "pending"
    assert run["type"] == "server.register"
    assert run["resourceType"] == "server"
    assert is_id(run["resourceId"], "srv")
    assert run["triggeredBy"] == "alice"
    assert run["estimatedDuration"] == ESTIMATE_MS
    assert run["progress"]["totalSteps"] == 2

    # the command is durable before the 202
    [published] = await commands(js)
    command = published.command
    assert isinstance(command, StartRun)
    assert published.subject == f"wf.cmd.start.{run_id}"
    assert published.headers["Nats-Msg-Id"] == run_id
    assert command.workflow_type == "server.register"
    assert command.resource_id == run["resourceId"]
    assert command.triggered_by == "alice"
    assert command.site == "default"
    assert command.request_id == envelope["meta"]["requestId"]
    assert command.estimated_duration_ms == ESTIMATE_MS
    assert command.input == {
        "name": "node-01",
        "bmc": {"address": "https://10.1.2.3:8443", "username": "admin", "verifyTls": True},
        "site": "default",
        "tags": {"rack": "r12"},
    }

    # the credentials are sealed under the server id
    kv = await js.key_value(KV_CREDENTIALS)
    sealed = (await kv.get(run["resourceId"])).value
    assert sealed is not None
    assert PASSWORD.encode() not in sealed
    vault = Vault(settings.credential_key_list)
    assert vault.open(sealed) == {
        "address": "https://10.1.2.3:8443",
        "username": "admin",
        "password": PASSWORD,
        "verifyTls": True,
        "site": "default",
    }

    # the password is nowhere else
    assert PASSWORD not in response.text
    assert PASSWORD.encode() not in published.raw
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({**REGISTRATION, "name": "-bad-"}, {"name"}),
        ({**REGISTRATION, "name": "x" * 64}, {"name"}),
        ({**REGISTRATION, "site": "dc.1"}, {"site"}),
        ({**REGISTRATION, "tags": {"bad key!": "v"}}, {"tags.bad key!"}),
        (
            {
                **REGISTRATION,
                "bmc": {"address": "ftp://10.0.0.1", "username": "", "password": ""},
            },
            {"bmc.address", "bmc.username", "bmc.password"},
        ),
        (
            {**REGISTRATION, "bmc": {**REGISTRATION["bmc"], "address": "https://u:p@10.0.0.1"}},
            {"bmc.address"},
        ),
        ({"name": "a"}, {"bmc"}),
        ({**REGISTRATION, "bmc": {"address": "https://x", "username": "u"}}, {"bmc.password"}),
        ({**REGISTRATION, "name": 5}, {"name"}),
        ({**REGISTRATION, "bmc": {**REGISTRATION["bmc"], "verifyTls": "no"}}, {"bmc.verifyTls"}),
        ([1, 2], {"body"}),
    ],
)
async def test_registration_validation_errors(
    client: httpx.AsyncClient, js: JetStreamContext, body: Any, fields: set[str]
) -> None:
    response = await client.post("/v1/servers", json=body, headers=auth())
    assert response.status_code == 400, response.text
    error = body_of(response)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert set(error["details"]["fields"]) == fields
    assert PASSWORD not in response.text
    assert await commands(js) == []


async def test_malformed_and_missing_json_is_400(client: httpx.AsyncClient) -> None:
    headers = auth(**{"Content-Type": "application/json"})
    response = await client.post("/v1/servers", content=b'{"name": ', headers=headers)
    assert response.status_code == 400
    error = body_of(response)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "body" in error["details"]["fields"]
    response = await client.post("/v1/servers", content=b"", headers=headers)
    assert response.status_code == 400
    assert body_of(response)["error"]["details"]["fields"] == {
        "body": "a JSON request body is required"
    }


async def test_power_starts_lifecycle_with_the_servers_site_and_project(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="provisioned", project_id="prj-a", site="dc7")
    response = await client.post(
        f"/v1/servers/{server['id']}/power", json={"action": "reboot"}, headers=auth()
    )
    assert response.status_code == 202, response.text
    [published] = await commands(js)
    command = published.command
    assert isinstance(command, StartRun)
    assert command.workflow_type == "server.lifecycle"
    assert command.input == {"action": "reboot"}
    assert (command.site, command.project_id) == ("dc7", "prj-a")
    assert command.resource_id == server["id"]
    assert body_of(response)["data"]["projectId"] == "prj-a"
    assert projector.of(GetResource)[0].scope_projects is None
    assert projector.of(EstimateDuration)[0].workflow_type == "server.lifecycle"


@pytest.mark.parametrize(
    ("method", "suffix", "workflow"),
    [
        ("POST", "/inspect", "server.inspect"),
        ("POST", "/sync", "sync.server-state"),
        ("DELETE", "", "server.decommission"),
    ],
)
async def test_server_workflows(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    projector: FakeProjector,
    method: str,
    suffix: str,
    workflow: str,
) -> None:
    server = projector.add_server(state="available")
    response = await client.request(method, f"/v1/servers/{server['id']}{suffix}", headers=auth())
    assert response.status_code == 202, response.text
    assert body_of(response)["data"]["type"] == workflow
    [published] = await commands(js)
    assert isinstance(published.command, StartRun)
    assert published.command.workflow_type == workflow


async def test_state_not_allowed_is_409_with_the_current_state(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="registering")
    response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=auth())
    assert response.status_code == 409
    error = body_of(response)["error"]
    assert error["code"] == "INVALID_STATE_TRANSITION"
    assert error["details"]["currentState"] == "registering"
    assert "available" in error["details"]["allowedStates"]
    assert await commands(js) == []


async def test_unknown_server_is_404(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    for server_id in (new_id("srv"), "not-an-id"):
        response = await client.post(
            f"/v1/servers/{server_id}/power", json={"action": "on"}, headers=auth()
        )
        assert response.status_code == 404
        assert body_of(response)["error"]["code"] == "NOT_FOUND"
        response = await client.get(f"/v1/servers/{server_id}", headers=auth())
        assert response.status_code == 404
    assert await commands(js) == []


async def test_invalid_power_action_is_400(
    client: httpx.AsyncClient, projector: FakeProjector
) -> None:
    server = projector.add_server()
    response = await client.post(
        f"/v1/servers/{server['id']}/power", json={"action": "explode"}, headers=auth()
    )
    assert response.status_code == 400
    assert body_of(response)["error"]["details"]["fields"] == {
        "action": "is not one of the allowed values"
    }


async def test_get_server_flattens_the_cache_and_never_shows_credentials(
    client: httpx.AsyncClient, projector: FakeProjector
) -> None:
    server = projector.add_server(
        state="available",
        project_id="prj-a",
        hardware={"cpus": 64, "memoryGiB": 512},
        health="OK",
        serial="SN1",
        bmc={"address": "https://10.0.0.5", "username": "admin", "password": PASSWORD},
    )
    response = await client.get(f"/v1/servers/{server['id']}", headers=auth())
    assert response.status_code == 200
    data = body_of(response)["data"]
    assert data["id"] == server["id"]
    assert data["state"] == "available"
    assert data["powerState"] == "On"
    assert data["hardwareSpecs"] == {"cpus": 64, "memoryGiB": 512}
    assert data["bmc"] == {"address": "https://10.0.0.5", "username": "admin", "verifyTls": None}
    assert (data["vendor"], data["serial"], data["health"]) == ("Acme", "SN1", "OK")
    assert PASSWORD not in response.text


async def test_list_servers_paginates(client: httpx.AsyncClient, projector: FakeProjector) -> None:
    for _ in range(3):
        projector.add_server()
    response = await client.get(
        "/v1/servers?pageSize=2&state=available,error&site=dc1", headers=auth()
    )
    assert response.status_code == 200
    body = body_of(response)
    assert len(body["data"]) == 2
    assert body["meta"]["pagination"] == {"pageSize": 2, "hasMore": True, "nextCursor": "cur-2"}
    [query] = projector.of(ListResources)
    assert (query.states, query.sites, query.page_size) == (["available", "error"], ["dc1"], 2)
    response = await client.get("/v1/servers?pageSize=501&state=melted", headers=auth())
    assert response.status_code == 400
    assert set(body_of(response)["error"]["details"]["fields"]) == {"pageSize", "state"}


async def test_arc_member_powers_servers_of_own_project_only(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    mine = projector.add_server(project_id="prj-a")
    other = projector.add_server(project_id="prj-b")
    atlas_only = projector.add_server(project_id=None)
    arc = auth(sub="tenant", **ARC)
    response = await client.post(
        f"/v1/servers/{mine['id']}/power", json={"action": "off"}, headers=arc
    )
    assert response.status_code == 202, response.text
    for hidden in (other, atlas_only):
        response = await client.post(
            f"/v1/servers/{hidden['id']}/power", json={"action": "off"}, headers=arc
        )
        assert response.status_code == 404
        assert (await client.get(f"/v1/servers/{hidden['id']}", headers=arc)).status_code == 404
    # inspecting needs an Atlas write role even inside the project
    response = await client.post(f"/v1/servers/{mine['id']}/inspect", headers=arc)
    assert response.status_code == 403
    viewer = auth(sub="viewer", roles=(), projects={"prj-a": "viewer"})
    response = await client.post(
        f"/v1/servers/{mine['id']}/power", json={"action": "off"}, headers=viewer
    )
    assert response.status_code == 403
    assert len(await commands(js)) == 1
    assert projector.of(GetResource)[0].scope_projects == ["prj-a"]
    listing = body_of(await client.get("/v1/servers", headers=arc))["data"]
    assert [s["id"] for s in listing] == [mine["id"]]
