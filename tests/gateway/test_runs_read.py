"""``GET /v1/workflows/runs`` and ``/runs/{id}`` through the gateway against a REAL projector
(in-process, fed through a real nats-server): every filter, combinations, comma-separated
values, tenancy, keyset pages while runs arrive, the run detail and read-your-writes."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from projector.support import (
    T0,
    RunHistory,
    publish,
    running,
    settings_for,
    wait_applied,
)

from infraflow.devtools.nats_server import NatsServer
from infraflow.gateway.app import create_app
from infraflow.gateway.settings import GatewaySettings
from infraflow.projector.app import Projector

from .conftest import auth, body_of, serve, started

TYPES = {"server.inspect": "server", "server.lifecycle": "server", "vm.power": "vm"}
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class Fact:
    id: str
    type: str
    status: str
    resource_type: str
    resource_id: str
    triggered_by: str
    project_id: str | None
    created: datetime


def build(
    wtype: str,
    status: str,
    *,
    resource_id: str,
    user: str,
    project: str | None,
    at: datetime,
) -> RunHistory:
    """A run ending in ``status`` (pending and running ones stay in flight)."""
    h = RunHistory(
        wtype,
        resource_type=TYPES[wtype],
        resource_id=resource_id,
        triggered_by=user,
        project_id=project,
        at=at,
    )
    h.created()
    if status == "pending":
        return h
    h.started()
    if status == "completed":
        for i in range(len(h.steps)):
            h.step_ok(i)
        h.completed()
    elif status == "failed":
        h.scheduled(0)
        h.step_failed(0, retryable=False, code="BMC_AUTH_FAILED")
        h.failed("BMC_AUTH_FAILED", step=h.steps[0])
    elif status == "cancelled":
        h.cancel_requested()
        h.cancelled()
    return h


def fact(h: RunHistory, status: str) -> Fact:
    return Fact(
        h.run_id,
        h.workflow_type,
        status,
        h.resource_type,
        h.resource_id,
        h.triggered_by,
        h.project_id,
        h.events[0].time,
    )


@pytest.fixture
async def read_side(
    nats_server: NatsServer,
    nc: Client,
    js: JetStreamContext,
    tmp_path: Path,
    settings: GatewaySettings,
) -> AsyncIterator[tuple[Projector, httpx.AsyncClient]]:
    """A real projector replica and the gateway in front of it."""
    projector = running(settings_for(nats_server.url, tmp_path / "read.db"), nc, js)
    async with projector as p, serve(create_app(settings)) as client:
        await started(client)
        yield p, client


async def seed(js: JetStreamContext, p: Projector, n: int = 48) -> list[Fact]:
    rng = random.Random(5)
    facts: list[Fact] = []
    events = []
    for i in range(n):
        wtype = list(TYPES)[i % 3]
        status = STATUSES[(i * 7) % 5]
        prefix = "vm" if TYPES[wtype] == "vm" else "srv"
        h = build(
            wtype,
            status,
            resource_id=f"{prefix}_r{i % 4}",
            user=f"usr-{i % 3}",
            project=[None, "prj-a", "prj-b"][rng.randrange(3)],
            at=T0 + timedelta(hours=i * 2),
        )
        facts.append(fact(h, status))
        events += h.events
    await wait_applied(p, await publish(js, events))
    return facts


PARAMS: dict[str, Callable[[Fact], Any]] = {
    "type": lambda f: f.type,
    "status": lambda f: f.status,
    "resourceType": lambda f: f.resource_type,
    "resourceId": lambda f: f.resource_id,
    "triggeredBy": lambda f: f.triggered_by,
    "projectId": lambda f: f.project_id,
}


async def ids(client: httpx.AsyncClient, params: dict[str, str], **headers: Any) -> list[str]:
    response = await client.get(
        "/v1/workflows/runs", params={**params, "pageSize": "500"}, headers=auth(**headers)
    )
    assert response.status_code == 200, response.text
    return [r["id"] for r in body_of(response)["data"]]


def expect(facts: list[Fact], params: dict[str, str]) -> list[str]:
    """The ids a filter must return, computed from the facts, newest first."""
    out = []
    for f in facts:
        ok = True
        for name, raw in params.items():
            if name == "since":
                ok &= f.created >= datetime.fromisoformat(raw)
            elif name == "until":
                ok &= f.created < datetime.fromisoformat(raw)
            else:
                ok &= PARAMS[name](f) in raw.split(",")
        if ok:
            out.append(f.id)
    return sorted(out, reverse=True)


def values(facts: list[Fact], name: str) -> list[str]:
    return sorted({v for f in facts if (v := PARAMS[name](f)) is not None})


async def test_every_filter_alone_and_with_several_values(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    facts = await seed(js, p)
    assert await ids(client, {}) == sorted((f.id for f in facts), reverse=True)
    for name in PARAMS:
        options = values(facts, name)
        for value in options:
            params = {name: value}
            got = await ids(client, params)
            assert got == expect(facts, params), params
            assert got
        multi = {name: ",".join(options[:2])}
        assert await ids(client, multi) == expect(facts, multi), multi
    window = {
        "since": (T0 + timedelta(hours=10)).isoformat(),
        "until": (T0 + timedelta(hours=31)).isoformat(),
    }
    assert await ids(client, window) == expect(facts, window)
    assert len(expect(facts, window)) == 11
    assert await ids(client, {"type": "server.decommission"}) == []  # known type, no runs
    assert await ids(client, {"triggeredBy": "nobody"}) == []


async def test_filter_combinations(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    facts = await seed(js, p)
    rng = random.Random(9)
    names = [*PARAMS, "window"]
    checked = nonempty = 0
    for size in (2, 3, 4):
        for combo in itertools.combinations(names, size):
            params: dict[str, str] = {}
            for name in combo:
                if name == "window":
                    start = T0 + timedelta(hours=rng.randrange(0, 60))
                    params["since"] = start.isoformat()
                    params["until"] = (start + timedelta(hours=rng.randrange(6, 50))).isoformat()
                else:
                    pick = rng.sample(values(facts, name), k=min(2, len(values(facts, name))))
                    params[name] = ",".join(pick[: rng.randrange(1, 3)])
            expected = expect(facts, params)
            assert await ids(client, params) == expected, params
            checked += 1
            nonempty += bool(expected)
    assert checked == 21 + 35 + 35
    assert nonempty > 40  # the combinations are not all trivially empty


async def test_tenancy_narrows_every_list(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    facts = await seed(js, p)
    arc = {"sub": "tenant", "roles": (), "projects": {"prj-a": "member"}}
    mine = [
        f.id for f in sorted(facts, key=lambda f: f.id, reverse=True) if f.project_id == "prj-a"
    ]
    assert await ids(client, {}, **arc) == mine
    assert await ids(client, {"projectId": "prj-b"}, **arc) == []
    assert await ids(client, {"projectId": "prj-a,prj-b", "status": "completed"}, **arc) == [
        i for i in mine if next(f for f in facts if f.id == i).status == "completed"
    ]
    other = next(f for f in facts if f.project_id == "prj-b")
    response = await client.get(f"/v1/workflows/runs/{other.id}", headers=auth(**arc))
    assert response.status_code == 404


async def test_pages_neither_skip_nor_repeat_while_runs_arrive_concurrently(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    facts = await seed(js, p, n=60)
    stop = asyncio.Event()
    arrived: list[str] = []

    async def arrivals() -> None:
        i = 0
        while not stop.is_set():  # a steady stream of new runs (and status changes)
            h = build(
                "server.inspect",
                "running",
                resource_id="srv_new",
                user="usr-0",
                project="prj-a",
                at=T0 + timedelta(days=30, seconds=i),
            )
            i += 1
            arrived.append(h.run_id)
            await publish(js, h.events)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(arrivals())
    try:
        for params in ({}, {"type": "server.inspect,vm.power"}, {"projectId": "prj-a,prj-b"}):
            expected = expect(facts, params)
            seen: list[str] = []
            token = None
            while True:
                query = {**params, "pageSize": "7", **({"pageToken": token} if token else {})}
                body = body_of(await client.get("/v1/workflows/runs", params=query, headers=auth()))
                seen += [r["id"] for r in body["data"]]
                await asyncio.sleep(0.02)  # let runs arrive between pages too
                token = body["meta"]["pagination"]["nextCursor"]
                if not body["meta"]["pagination"]["hasMore"]:
                    break
            old = [i for i in seen if i not in set(arrived)]
            assert len(seen) == len(set(seen)), "an item was repeated"
            assert old == expected, "an item was skipped"
    finally:
        stop.set()
        await task
    assert len(arrived) > 20


async def test_run_detail_steps_attempts_compensation_and_retries(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    h = RunHistory("server.lifecycle", input={"action": "on"}, project_id=None)
    h.created(estimated_ms=7000)
    h.started()
    h.step_ok(0, {"accepted": True})
    h.scheduled(1)
    h.step_started(1)
    h.step_failed(1, attempt=1, code="BMC_UNREACHABLE")
    h.scheduled(1, attempt=2)
    h.step_started(1, attempt=2)
    h.step_failed(1, attempt=2, code="POWER_STATE_TIMEOUT", retryable=False)
    h.compensation_started(["restore_power"], [0])
    h.scheduled(0, phase="compensation", step="restore_power")
    h.step_started(0, phase="compensation", step="restore_power")
    h.succeeded(0, phase="compensation", step="restore_power")
    h.failed("POWER_STATE_TIMEOUT", step=h.steps[1])
    retry = RunHistory(
        "server.lifecycle",
        resource_id=h.resource_id,
        retry_of=h.run_id,
        from_step=h.steps[1],
        at=h.time,
    )
    retry.created()
    await wait_applied(p, await publish(js, [*h.events, *retry.events]))

    run = body_of(await client.get(f"/v1/workflows/runs/{h.run_id}", headers=auth()))["data"]
    assert run["status"] == "failed"
    assert run["error"]["code"] == "POWER_STATE_TIMEOUT"
    assert run["estimatedDuration"] == 7000
    assert run["durationMs"] == (len(h.events) - 1) * 1000
    assert run["progress"] == {"completedSteps": 1, "totalSteps": 2, "currentStep": h.steps[1]}
    first, second = run["steps"]
    assert (first["status"], first["output"]) == ("succeeded", {"accepted": True})
    assert [a["status"] for a in second["attempts"]] == ["failed", "failed"]
    assert [a["error"]["code"] for a in second["attempts"]] == [
        "BMC_UNREACHABLE",
        "POWER_STATE_TIMEOUT",
    ]
    assert all(a["startedAt"] and a["completedAt"] for a in second["attempts"])
    assert second["error"]["code"] == "POWER_STATE_TIMEOUT"
    [comp] = run["compensation"]
    assert (comp["name"], comp["status"]) == ("restore_power", "succeeded")
    assert run["retries"] == [retry.run_id]
    again = body_of(await client.get(f"/v1/workflows/runs/{retry.run_id}", headers=auth()))
    assert again["data"]["retryOf"] == h.run_id
    assert again["data"]["fromStep"] == h.steps[1]


async def test_a_run_is_readable_right_after_its_202(
    read_side: tuple[Projector, httpx.AsyncClient],
) -> None:
    _, client = read_side
    body = {
        "name": "n1",
        "bmc": {"address": "https://10.0.0.7", "username": "admin", "password": "pw-123456"},
    }
    response = await client.post("/v1/servers", json=body, headers=auth())
    assert response.status_code == 202, response.text
    run_id = body_of(response)["meta"]["workflowId"]
    got = await client.get(f"/v1/workflows/runs/{run_id}", headers=auth())
    assert got.status_code == 200  # nothing consumed the command: the pending view answers
    run = body_of(got)["data"]
    assert (run["id"], run["status"]) == (run_id, "pending")
    assert "pw-123456" not in got.text
