"""The projector's life: read-your-writes, restarts, rebuilds, broker restarts, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import (
    GetMetrics,
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    ListRuns,
    Query,
    StartRun,
    encode,
)
from infraflow.common.streams import ensure_topology
from infraflow.devtools.nats_server import NatsServer
from infraflow.projector.app import Projector, rebuild
from infraflow.projector.core.batch import StreamMessage

from .support import (
    T0,
    RunHistory,
    ask,
    ok,
    publish,
    register_input,
    run_id,
    running,
    settings_for,
    wait_applied,
)


class SlowProjector(Projector):
    """Applies every batch a second late, so queries race the follower."""

    async def _apply(self, batch: list[StreamMessage]) -> int:
        await asyncio.sleep(1.0)
        return await super()._apply(batch)


async def test_pending_command_answers_before_the_orchestrator_runs(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    rid = run_id(T0)
    command = StartRun(
        run_id=rid,
        resource_type="server",
        resource_id="srv_new",
        workflow_type="server.register",
        input=register_input(),
        triggered_by="usr_alice",
        project_id="prj_a",
        requested_at=T0,
    )
    await js.publish(subjects.command("start", rid), encode(command))

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js):
        run = await ok(nc, GetRun(run_id=rid))
        events = await ok(nc, GetRunEvents(run_id=rid))
        other_tenant = await ask(nc, GetRun(run_id=rid, scope_projects=["prj_b"]))
        started = time.monotonic()
        missing = await ask(nc, GetRun(run_id=run_id(T0)))
        missing_took = time.monotonic() - started

    assert run["status"] == "pending"
    assert run["type"] == "server.register"
    assert run["createdAt"] == "2026-03-01T12:00:00Z"
    assert run["progress"]["totalSteps"] == 2
    assert "password" not in run["input"]["bmc"]
    assert events == []
    assert other_tenant.error is not None
    assert other_tenant.error.code == "NOT_FOUND"
    assert missing.error is not None
    assert missing.error.code == "NOT_FOUND"
    assert missing_took < 1.0  # caught up: nothing to wait for


async def test_unknown_run_waits_for_the_follower_to_reach_the_stream_end(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    settings = settings_for(nats_server.url, tmp_path / "p.db")
    async with running(settings, nc, js, cls=SlowProjector) as p:
        known = RunHistory().happy()
        await wait_applied(p, await publish(js, known.events))
        h = RunHistory(at=T0 + timedelta(hours=1))
        h.created()
        seq = await publish(js, h.events)
        assert p.position.seq < seq  # the follower is behind when the queries arrive
        missing = asyncio.create_task(ask(nc, GetRun(run_id=run_id(T0))))
        await asyncio.sleep(0.05)

        started = time.monotonic()
        other = await ask(nc, GetRun(run_id=known.run_id))
        assert time.monotonic() - started < 0.5  # not queued behind the waiting lookup
        assert other.ok

        reply = await ask(nc, GetRun(run_id=h.run_id))
        assert reply.ok
        assert reply.data["status"] == "pending"
        assert reply.applied_seq >= seq
        not_found = await missing
        assert not_found.error is not None
        assert not_found.error.code == "NOT_FOUND"


@pytest.mark.parametrize("busy", [True, False])
async def test_batches_are_paced_only_while_busy(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path, busy: bool
) -> None:
    """Busy: at most one batch starts per interval. Quiet (below the busy rate): every event
    is applied as soon as it arrives."""
    interval = 0.2
    settings = settings_for(
        nats_server.url,
        tmp_path / "p.db",
        min_batch_interval_s=interval,
        busy_events_per_s=0 if busy else 1_000_000,
    )
    async with running(settings, nc, js) as p:
        histories = [RunHistory(at=T0 + timedelta(minutes=i)) for i in range(40)]
        before = p.follower.stats.batches
        started = time.monotonic()
        seq = 0
        for h in histories:  # one event every few milliseconds
            h.created()
            seq = await publish(js, h.events)
            await asyncio.sleep(0.005)
        await wait_applied(p, seq)
        elapsed = time.monotonic() - started
        batches = p.follower.stats.batches - before
        if busy:  # one event per batch would make 40
            assert batches <= elapsed / interval + 2, (batches, elapsed)
        else:
            assert batches >= 10, (batches, elapsed)
        listed = await ok(nc, ListRuns(page_size=100))
    assert {r["id"] for r in listed} == {h.run_id for h in histories}


async def test_restart_resumes_from_the_tracked_sequence(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    settings = settings_for(nats_server.url, tmp_path / "p.db")
    first = RunHistory().happy()
    seq1 = await publish(js, first.events)
    async with running(settings, nc, js) as p:
        await wait_applied(p, seq1)
        assert p.follower.stats.start_seqs == [1]

    second = RunHistory(at=T0 + timedelta(hours=1)).happy()
    seq2 = await publish(js, second.events)
    async with running(settings, nc, js) as p:
        assert p.position.seq == seq1
        await wait_applied(p, seq2)
        assert p.follower.stats.start_seqs == [seq1 + 1]  # not from zero
        assert p.follower.stats.received == len(second.events)
        listed = await ok(nc, ListRuns())
        assert p.ready
        assert f"infraflow_projector_applied_seq {seq2}" in p.prometheus()
    assert [r["id"] for r in listed] == [second.run_id, first.run_id]


def _scenario() -> tuple[list[RunHistory], list[Query]]:
    reg = RunHistory(input=register_input("n1"))
    reg.happy({0: {"resource": {"vendor": "HPE", "powerState": "On"}}})
    failed = RunHistory("server.inspect", resource_id=reg.resource_id, at=T0 + timedelta(hours=1))
    failed.created()
    failed.started()
    failed.scheduled(0)
    failed.timed_out(0)
    failed.succeeded(0)
    failed.failed("STEP_TIMEOUT")
    retry = RunHistory(
        "server.inspect", resource_id=reg.resource_id, retry_of=failed.run_id, at=failed.time
    ).happy()
    other = RunHistory(project_id="prj_b", input=register_input("n2"), at=retry.time)
    other.created()
    other.queued(reg.run_id)
    histories = [reg, failed, retry, other]
    queries: list[Query] = [
        *(GetRun(run_id=h.run_id) for h in histories),
        *(GetRunEvents(run_id=h.run_id) for h in histories),
        ListRuns(),
        ListRuns(page_size=2, statuses=["completed", "failed"]),
        GetResource(resource_type="server", resource_id=reg.resource_id),
        ListResources(resource_type="server"),
        GetMetrics(),
    ]
    return histories, queries


async def test_rebuild_gives_identical_answers(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    settings = settings_for(nats_server.url, tmp_path / "p.db")
    histories, queries = _scenario()
    seq = await publish(js, [e for h in histories for e in h.events])

    async def answers(p: Projector) -> list[Any]:
        await wait_applied(p, seq)
        return [encode(await ask(nc, q)) for q in queries]

    async with running(settings, nc, js) as p:
        before = await answers(p)
    rebuild(settings.db_path)
    async with running(settings, nc, js) as p:
        after = await answers(p)
        assert p.follower.stats.start_seqs == [1]  # replayed from the first sequence

    assert after == before
    assert all(b'"ok":true' in a for a in before)


async def test_follower_resumes_after_a_broker_restart(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    reconnected = asyncio.Event()

    async def on_reconnected() -> None:
        reconnected.set()

    client = await nats.connect(
        nats_server.url,
        reconnect_time_wait=0.1,
        max_reconnect_attempts=-1,
        reconnected_cb=on_reconnected,
    )
    try:
        js = client.jetstream()
        await ensure_topology(js)
        settings = settings_for(nats_server.url, tmp_path / "p.db")
        async with running(settings, client, js) as p:
            before = RunHistory().happy()
            await wait_applied(p, await publish(js, before.events))

            nats_server.stop()
            nats_server.start()
            await asyncio.wait_for(reconnected.wait(), 15)

            after = RunHistory(at=T0 + timedelta(hours=1)).happy()
            seq = await publish(js, after.events)
            await wait_applied(p, seq, timeout=15)
            assert p.follower.stats.consumers >= 2  # the in-memory consumer was recreated
            assert (await ok(client, GetRun(run_id=after.run_id)))["status"] == "completed"
    finally:
        await client.close()


async def test_service_process_stops_cleanly_on_sigterm(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    h = RunHistory().happy()
    await publish(js, h.events)
    exe = Path(sys.executable).parent / "infraflow-projector"
    env = dict(
        os.environ,
        INFRAFLOW_NATS__URL=nats_server.url,
        INFRAFLOW_DB_PATH=str(tmp_path / "svc.sqlite3"),
        INFRAFLOW_REPLICA_NAME="subprocess",
        INFRAFLOW_LOG_JSON="false",
    )
    log_path = tmp_path / "projector.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(exe), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = await ask(nc, GetRun(run_id=h.run_id), timeout=1)
                if reply.ok:
                    break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                pass
            assert proc.returncode is None, log_path.read_text()
            assert time.monotonic() < deadline, "the projector never answered"
            await asyncio.sleep(0.1)
        assert reply.data["status"] == "completed"
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0, log_path.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0  # nothing left running
    assert (tmp_path / "svc.sqlite3").exists()
    assert "stopped" in log_path.read_text()
