"""The resource directory: the projector writes each resource's project, site and state to
KV ``wf-resources`` when they change (after a replay: once, the latest), as the read model has
them; a log that was replaced empties it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import streams
from infraflow.common.contracts import GetResource, ResourceEntry, resource_key
from infraflow.common.streams import KV_RESOURCES
from infraflow.devtools.nats_server import NatsServer

from .support import (
    T0,
    RunHistory,
    ok,
    publish,
    register_input,
    running,
    settings_for,
    wait_applied,
)

_decoder = msgspec.json.Decoder(ResourceEntry)


async def entry_of(js: JetStreamContext, h: RunHistory) -> ResourceEntry:
    kv = await js.key_value(KV_RESOURCES)
    got = await kv.get(resource_key(h.resource_type, h.resource_id))
    assert got.value is not None
    return _decoder.decode(got.value)


async def test_live_changes_are_written_as_the_read_model_has_them(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(
            p, await publish(js, RunHistory(input=register_input("warm")).happy().events)
        )
        reg = RunHistory(input=register_input("n1"), at=T0 + timedelta(hours=1))
        reg.created()
        seq = await publish(js, reg.events)
        await wait_applied(p, seq)
        during = await entry_of(js, reg)
        view = await ok(nc, GetResource(resource_type="server", resource_id=reg.resource_id))
        assert (during.project_id, during.site, during.state) == (
            view["projectId"],
            view["site"],
            view["state"],
        )
        assert during.seq == seq

        reg.started()
        for i in range(len(reg.steps)):
            reg.step_ok(i)
        reg.completed()
        seq = await publish(js, reg.events[1:])
        await wait_applied(p, seq)
        after = await entry_of(js, reg)
        view = await ok(nc, GetResource(resource_type="server", resource_id=reg.resource_id))
        assert after.state == view["state"] != during.state
        assert after.seq > during.seq


async def test_a_replay_writes_each_resource_once_when_caught_up(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    histories = [
        RunHistory(input=register_input(f"n{i}"), at=T0 + timedelta(minutes=i)).happy()
        for i in range(5)
    ]
    seq = await publish(js, [e for h in histories for e in h.events])
    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)
        for _ in range(100):
            if p.directory.puts >= len(histories):
                break
            await asyncio.sleep(0.05)
        assert p.directory.puts == len(histories)  # the latest entry of each, not every change
        for h in histories:
            view = await ok(nc, GetResource(resource_type="server", resource_id=h.resource_id))
            assert (await entry_of(js, h)).state == view["state"]


async def test_a_replaced_log_empties_the_directory(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    """A read model ahead of its stream was built from a log that no longer exists: it is
    rebuilt, and the directory entries of that log are deleted key by key (so the gateways'
    mirrors drop them too)."""
    settings = settings_for(nats_server.url, tmp_path / "p.db")
    old = [RunHistory(input=register_input(f"old{i}")).happy() for i in range(3)]
    async with running(settings, nc, js) as p:
        await wait_applied(p, await publish(js, [e for h in old for e in h.events]))
    kv = await js.key_value(KV_RESOURCES)
    assert len(await kv.keys()) == 3

    info = await js.stream_info(streams.EVENTS)
    await js.delete_stream(streams.EVENTS)
    await js.add_stream(info.config)
    new = RunHistory(input=register_input("new"), at=T0 + timedelta(hours=1)).happy()
    seq = await publish(js, new.events)
    async with running(settings, nc, js) as p:
        await wait_applied(p, seq)
        for _ in range(100):
            if await kv.keys() == [resource_key("server", new.resource_id)]:
                break
            await asyncio.sleep(0.05)
        assert await kv.keys() == [resource_key("server", new.resource_id)]
