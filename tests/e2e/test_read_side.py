"""The read side through every real process: runs listed with filters, the run detail, the
events history, a run followed live over Server-Sent Events (real HTTP streaming), metrics, and
a projector restart that resumes from its tracked position instead of replaying the log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from infraflow.devtools.stack import Stack

from .conftest import Api, registration

pytestmark = pytest.mark.e2e


def _register(stack: Stack, api: Api) -> tuple[str, str]:
    assert stack.bmc is not None
    system = stack.bmc.systems[-1]
    r = api.post("/v1/servers", json=registration(stack, system, "read-side-node", site="default"))
    assert r.status_code == 202, r.text
    return r.json()["meta"]["workflowId"], r.json()["data"]["resourceId"]


def _follow(stack: Stack, path: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Read an SSE stream line by line as it arrives; the messages with their arrival times."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {stack.token()}", "Accept": "text/event-stream"}
    with (
        httpx.Client(base_url=stack.api_url, timeout=timeout) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if current:
                    current["at"] = time.monotonic()
                    messages.append(current)
                current = {}
                continue
            key, _, value = line.partition(": ")
            current[key or "comment"] = json.loads(value) if key == "data" else value
    return messages


def test_list_detail_events_follow_and_metrics(stack: Stack, api: Api) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    register_run, server_id = _register(stack, api)
    # read-your-writes: readable right after the 202, whatever the projector has seen
    assert api.run(register_run)["status"] in ("pending", "running", "completed")
    assert api.wait_run(register_run)["status"] == "completed"

    r = api.post(f"/v1/servers/{server_id}/power", json={"action": "on"})
    assert r.status_code == 202, r.text
    power_run = r.json()["meta"]["workflowId"]
    opened = time.monotonic()
    messages = _follow(stack, f"/v1/workflows/runs/{power_run}/events")
    events = [m for m in messages if "event" in m]
    names = [m["event"] for m in events]
    assert names[0] == "run_created"
    assert names[-1] == "run_completed"  # the stream ended with the run
    assert [int(m["id"]) for m in events] == sorted(int(m["id"]) for m in events)
    assert all(m["data"]["runId"] == power_run for m in events)
    # followed live: the last events arrived well after the stream opened
    assert events[-1]["at"] - opened > 0.05

    history = api.get(f"/v1/workflows/runs/{power_run}/events").json()["data"]
    assert [item["seq"] for item in history] == [int(m["id"]) for m in events]

    listed = api.get(
        "/v1/workflows/runs",
        params={"resourceId": server_id, "status": "completed", "since": since},
    ).json()
    assert [x["id"] for x in listed["data"]] == [power_run, register_run]
    by_type = api.get(
        "/v1/workflows/runs",
        params={"type": "server.lifecycle", "resourceType": "server", "triggeredBy": "dev-admin"},
    ).json()["data"]
    assert power_run in [x["id"] for x in by_type]
    page = api.get("/v1/workflows/runs", params={"resourceId": server_id, "pageSize": "1"}).json()
    assert page["meta"]["pagination"]["hasMore"] is True
    rest = api.get(
        "/v1/workflows/runs",
        params={"resourceId": server_id, "pageToken": page["meta"]["pagination"]["nextCursor"]},
    ).json()
    assert [x["id"] for x in page["data"] + rest["data"]] == [power_run, register_run]

    detail = api.run(power_run)
    assert detail["durationMs"] is not None
    assert detail["estimatedDuration"] > 0
    assert detail["progress"]["completedSteps"] == detail["progress"]["totalSteps"]
    assert all(s["attempts"] and s["attempts"][0]["startedAt"] for s in detail["steps"])

    metrics = api.get("/v1/workflows/metrics", params={"since": since, "bucket": "minute"})
    assert metrics.status_code == 200, metrics.text
    data = metrics.json()["data"]
    assert data["byType"]["server.register"]["byStatus"]["completed"] >= 1
    assert data["byType"]["server.lifecycle"]["count"] >= 1
    assert data["byType"]["server.lifecycle"]["durationMs"]["max"] >= 0
    assert sum(b["total"] for b in data["buckets"]) == data["total"]


def test_projector_restart_resumes_and_answers_at_once(stack: Stack, api: Api) -> None:
    runs = api.get("/v1/workflows/runs", params={"pageSize": "500"}).json()["data"]
    assert runs
    stack.restart_service("projector")
    deadline = time.monotonic() + 15
    while True:
        r = api.get(f"/v1/workflows/runs/{runs[0]['id']}")
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    again = api.get("/v1/workflows/runs", params={"pageSize": "500"}).json()["data"]
    assert [x["id"] for x in again] == [x["id"] for x in runs]
