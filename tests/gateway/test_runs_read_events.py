"""``GET /v1/workflows/runs/{id}/events`` against a real projector: the history (read back from
the stream by sequence), its pages, and ``Accept: text/event-stream`` following a run live until
its terminal event, with ``id:`` = stream sequence and ``Last-Event-ID`` to resume."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from projector.support import RunHistory, publish, running, settings_for, wait_applied

from infraflow.common.contracts import decode_event, encode
from infraflow.devtools.nats_server import NatsServer
from infraflow.gateway.app import create_app
from infraflow.gateway.core import runs
from infraflow.gateway.settings import GatewaySettings
from infraflow.projector.app import Projector

from .conftest import auth, body_of, serve, started

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def read_side(
    nats_server: NatsServer,
    nc: Client,
    js: JetStreamContext,
    tmp_path: Path,
    settings: GatewaySettings,
) -> AsyncIterator[tuple[Projector, httpx.AsyncClient]]:
    projector = running(settings_for(nats_server.url, tmp_path / "e.db"), nc, js)
    async with projector as p, serve(create_app(settings)) as client:
        await started(client)
        yield p, client


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The messages of an event stream (comments kept as ``{"comment": ...}``)."""
    out: list[dict[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        message: dict[str, Any] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key == "":
                message["comment"] = value
            elif key == "data":
                message["data"] = json.loads(value)
            else:
                message[key] = value
        if message:
            out.append(message)
    return out


async def test_history_pages_and_tenancy(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    other = RunHistory(project_id="prj-b").happy()  # interleaved in the stream
    h = RunHistory(project_id="prj-a")
    h.created()
    seq = await publish(js, [*other.events[:3], h.events[0], *other.events[3:]])
    h.started()
    h.step_ok(0, {"resource": {"vendor": "Dell"}})
    h.completed()
    await wait_applied(p, max(seq, await publish(js, h.events[1:])))

    path = f"/v1/workflows/runs/{h.run_id}/events"
    body = body_of(await client.get(path, headers=auth()))
    events = [decode_event(encode(item["event"])) for item in body["data"]]
    assert events == h.events  # the original events, in order
    seqs = [item["seq"] for item in body["data"]]
    assert seqs == sorted(seqs)
    assert seqs[0] == 4  # after the other run's first three
    first = body_of(await client.get(path, params={"pageSize": "2"}, headers=auth()))
    assert [i["seq"] for i in first["data"]] == seqs[:2]
    assert first["meta"]["pagination"]["hasMore"] is True
    cursor = first["meta"]["pagination"]["nextCursor"]
    rest = body_of(await client.get(path, params={"afterSeq": cursor}, headers=auth()))
    assert [i["seq"] for i in rest["data"]] == seqs[2:]
    assert rest["meta"]["pagination"]["hasMore"] is False

    arc = auth(sub="t", roles=(), projects={"prj-b": "member"})
    assert (await client.get(path, headers=arc)).status_code == 404
    assert (await client.get(path, headers={**arc, **SSE})).status_code == 404


async def test_sse_streams_history_then_follows_until_the_run_ends(
    read_side: tuple[Projector, httpx.AsyncClient], js: JetStreamContext
) -> None:
    p, client = read_side
    h = RunHistory("server.lifecycle")
    h.created()
    h.started()
    h.step_ok(0)
    await wait_applied(p, await publish(js, h.events))
    already = len(h.events)
    path = f"/v1/workflows/runs/{h.run_id}/events"

    started_at = time.monotonic()
    stream = asyncio.create_task(client.get(path, headers={**auth(), **SSE}))
    await asyncio.sleep(0.5)
    assert not stream.done()  # still following the running run
    h.step_ok(1)
    await publish(js, h.events[already:])
    await asyncio.sleep(0.3)
    assert not stream.done()
    n = len(h.events)
    h.completed()
    h.step_started(1, attempt=9)  # a late fact after the end: not streamed
    last = await publish(js, h.events[n:])
    response = await asyncio.wait_for(stream, 10)
    assert time.monotonic() - started_at >= 0.8

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = [m for m in parse_sse(response.text) if "comment" not in m]
    assert [m["event"] for m in messages] == [e.name for e in h.events[:-1]]
    assert [m["data"] for m in messages] == [json.loads(encode(e)) for e in h.events[:-1]]
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(ids)
    assert ids[-1] == last - 1  # the terminal event's stream sequence

    resumed = await client.get(path, headers={**auth(), **SSE, "Last-Event-ID": str(ids[3])})
    again = [m for m in parse_sse(resumed.text) if "comment" not in m]
    assert [int(m["id"]) for m in again] == ids[4:]
    # resuming after the end: what was appended since (the late fact), then the stream closes
    done = await client.get(path, headers={**auth(), **SSE, "Last-Event-ID": str(ids[-1])})
    tail = [m for m in parse_sse(done.text) if "comment" not in m]
    assert [(int(m["id"]), m["event"]) for m in tail] == [(last, "step_started")]


async def test_sse_keeps_the_connection_alive_and_follows_a_pending_run(
    read_side: tuple[Projector, httpx.AsyncClient],
    js: JetStreamContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p, client = read_side
    monkeypatch.setattr(runs, "FOLLOW_WAIT_S", 0.2)
    h = RunHistory("server.inspect")
    h.created()
    await wait_applied(p, await publish(js, h.events))
    stream = asyncio.create_task(
        client.get(f"/v1/workflows/runs/{h.run_id}/events", headers={**auth(), **SSE})
    )
    await asyncio.sleep(0.7)
    h.started()
    h.step_ok(0)
    h.failed("BMC_UNREACHABLE")
    await publish(js, h.events[1:])
    response = await asyncio.wait_for(stream, 10)
    messages = parse_sse(response.text)
    assert any(m.get("comment") == "keep-alive" for m in messages)
    names = [m["event"] for m in messages if "event" in m]
    assert names == [e.name for e in h.events]
    assert names[-1] == "run_failed"
