"""``/v1/workflows``: runs (read, list, events, generic start, cancel) and the catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from nats.js import JetStreamContext

from infraflow.common.contracts import CancelRun, ListRuns, StartRun
from infraflow.common.ids import new_id
from infraflow.common.streams import KV_CREDENTIALS

from .conftest import ARC, PASSWORD, FakeProjector, auth, body_of, commands


async def test_get_run_and_unknown_run(client: httpx.AsyncClient, projector: FakeProjector) -> None:
    run = projector.add_run(status="running")
    response = await client.get(f"/v1/workflows/runs/{run['id']}", headers=auth())
    assert response.status_code == 200
    data = body_of(response)["data"]
    assert data["id"] == run["id"]
    assert data["input"] == {"bmc": {"password": "***"}}
    for missing in (new_id("run"), "bogus"):
        response = await client.get(f"/v1/workflows/runs/{missing}", headers=auth())
        assert response.status_code == 404
        assert body_of(response)["error"]["code"] == "NOT_FOUND"


async def test_list_runs_passes_parsed_filters_and_paginates(
    client: httpx.AsyncClient, projector: FakeProjector
) -> None:
    for _ in range(3):
        projector.add_run()
    response = await client.get(
        "/v1/workflows/runs",
        params={
            "type": "server.inspect,server.register",
            "status": "running,failed",
            "resourceType": "server",
            "triggeredBy": "alice,bob",
            "since": "2025-01-01",
            "until": "2025-01-31T12:00:00Z",
            "pageSize": "2",
            "pageToken": "abc",
        },
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    body = body_of(response)
    assert body["meta"]["pagination"] == {"pageSize": 2, "hasMore": False, "nextCursor": None}
    [query] = projector.of(ListRuns)
    assert query.types == ["server.inspect", "server.register"]
    assert query.statuses == ["running", "failed"]
    assert query.resource_types == ["server"]
    assert query.triggered_by == ["alice", "bob"]
    assert query.since == datetime(2025, 1, 1, tzinfo=UTC)
    assert query.until == datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert (query.page_size, query.cursor) == (2, "abc")
    default = body_of(await client.get("/v1/workflows/runs", headers=auth()))
    assert default["meta"]["pagination"]["pageSize"] == 50


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"status": "running,sleeping"}, {"status"}),
        ({"type": "server.teleport"}, {"type"}),
        ({"resourceType": "toaster"}, {"resourceType"}),
        ({"since": "yesterday", "until": "2025-13-01"}, {"since", "until"}),
        ({"since": "2025-02-01", "until": "2025-01-01"}, {"until"}),
        ({"pageSize": "0"}, {"pageSize"}),
        ({"pageSize": "501"}, {"pageSize"}),
        ({"pageSize": "ten"}, {"pageSize"}),
    ],
)
async def test_list_runs_validation(
    client: httpx.AsyncClient, params: dict[str, str], fields: set[str]
) -> None:
    response = await client.get("/v1/workflows/runs", params=params, headers=auth())
    assert response.status_code == 400
    error = body_of(response)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert set(error["details"]["fields"]) == fields


async def test_run_events(client: httpx.AsyncClient, projector: FakeProjector) -> None:
    run = projector.add_run()
    projector.events[run["id"]] = [{"event": "run_created", "seq": 1, "input": {"token": "t"}}]
    response = await client.get(f"/v1/workflows/runs/{run['id']}/events", headers=auth())
    assert response.status_code == 200
    body = body_of(response)
    assert body["data"] == [{"event": "run_created", "seq": 1, "input": {"token": "***"}}]
    response = await client.get(
        f"/v1/workflows/runs/{run['id']}/events?afterSeq=-1", headers=auth()
    )
    assert response.status_code == 400


async def test_workflow_types(client: httpx.AsyncClient) -> None:
    listing = body_of(await client.get("/v1/workflows/types", headers=auth()))["data"]
    names = {t["type"] for t in listing}
    assert {"server.register", "server.lifecycle", "cluster.create", "sync.server-state"} <= names
    response = await client.get("/v1/workflows/types/server.provision", headers=auth())
    data = body_of(response)["data"]
    assert data["executable"] is True
    assert data["compensation"] == [
        "power_off",
        "clear_boot_override",
        "eject_media",
        "release_slot",
    ]
    response = await client.get("/v1/workflows/types/no.such", headers=auth())
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"type": "server.teleport"}, "type", "unknown workflow type"),
        ({"type": "cluster.create"}, "type", "per project"),
        ({"type": "server.inspect"}, "resourceId", "is required"),
        ({"type": "server.inspect", "resourceId": "cls_1"}, "resourceId", "server id"),
        ({"type": "server.lifecycle", "resourceId": new_id("srv")}, "input.action", "one of"),
    ],
)
async def test_generic_start_validation(
    client: httpx.AsyncClient, js: JetStreamContext, body: dict[str, Any], field: str, message: str
) -> None:
    response = await client.post("/v1/workflows/runs", json=body, headers=auth())
    assert response.status_code == 400, response.text
    error = body_of(response)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert message in error["details"]["fields"][field]
    assert await commands(js) == []


async def test_generic_start_of_a_sync_run(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="error", site="dc3")
    response = await client.post(
        "/v1/workflows/runs",
        json={"type": "sync.server-state", "resourceId": server["id"], "input": {"why": "hand"}},
        headers=auth(sub="ops"),
    )
    assert response.status_code == 202, response.text
    [published] = await commands(js)
    command = published.command
    assert isinstance(command, StartRun)
    assert (command.workflow_type, command.resource_id, command.site) == (
        "sync.server-state",
        server["id"],
        "dc3",
    )
    assert command.input == {"why": "hand"}
    assert command.triggered_by == "ops"
    response = await client.post(
        "/v1/workflows/runs",
        json={"type": "sync.server-state", "resourceId": new_id("srv")},
        headers=auth(),
    )
    assert response.status_code == 404


async def test_generic_start_of_a_registration_seals_credentials(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    body = {
        "type": "server.register",
        "input": {
            "name": "n2",
            "bmc": {"address": "http://10.0.0.9", "username": "root", "password": PASSWORD},
        },
    }
    response = await client.post("/v1/workflows/runs", json=body, headers=auth())
    assert response.status_code == 202, response.text
    server_id = body_of(response)["data"]["resourceId"]
    [published] = await commands(js)
    assert PASSWORD.encode() not in published.raw
    kv = await js.key_value(KV_CREDENTIALS)
    assert (await kv.get(server_id)).value
    body["input"] = {"name": "n3", "bmc": {"address": "http://x", "username": "u"}}
    response = await client.post("/v1/workflows/runs", json=body, headers=auth())
    assert response.status_code == 400
    assert body_of(response)["error"]["details"]["fields"] == {"input.bmc.password": "is required"}


async def test_cancel_publishes_a_cancel_command_per_request(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    run = projector.add_run(status="running")
    path = f"/v1/workflows/runs/{run['id']}/cancel"
    first = await client.post(path, headers=auth(sub="ops"))
    assert first.status_code == 202, first.text
    body = body_of(first)
    assert body["meta"]["workflowId"] == run["id"]
    assert body["data"]["cancelRequested"] is True
    assert first.headers["location"] == f"/v1/workflows/runs/{run['id']}"
    second = await client.post(
        path,
        json={"reason": "wrong server", "terminate": True},
        headers=auth(roles=("super_admin",)),
    )
    assert second.status_code == 202
    published = await commands(js)
    assert len(published) == 2
    assert all(p.subject == f"wf.cmd.cancel.{run['id']}" for p in published)
    assert published[0].headers["Nats-Msg-Id"] != published[1].headers["Nats-Msg-Id"]
    cancel = published[1].command
    assert isinstance(cancel, CancelRun)
    assert (cancel.requested_by, cancel.reason, cancel.terminate) == (
        "user-1",
        "wrong server",
        True,
    )
    assert cancel.resource_id == run["resourceId"]


async def test_cancel_rules(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    done = projector.add_run(status="completed")
    response = await client.post(f"/v1/workflows/runs/{done['id']}/cancel", headers=auth())
    assert response.status_code == 409
    error = body_of(response)["error"]
    assert error["code"] == "INVALID_STATE_TRANSITION"
    assert error["details"]["currentState"] == "completed"
    running = projector.add_run(status="pending", project_id="prj-a")
    path = f"/v1/workflows/runs/{running['id']}/cancel"
    response = await client.post(path, json={"terminate": True}, headers=auth())
    assert response.status_code == 403  # provider_operator may cancel, not terminate
    response = await client.post(path, headers=auth(roles=("support",)))
    assert response.status_code == 403
    response = await client.post(path, headers=auth(sub="tenant", **ARC))
    assert response.status_code == 202  # a member of the run's project
    assert len(await commands(js)) == 1
