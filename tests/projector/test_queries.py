"""Queries over NATS against an in-process projector fed through a real nats-server."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common.contracts import (
    EstimateDuration,
    GetMetrics,
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    ListRuns,
    decode_event,
    encode,
)
from infraflow.devtools.nats_server import NatsServer

from .support import (
    T0,
    RunHistory,
    ask,
    ok,
    publish,
    register_input,
    running,
    settings_for,
    wait_applied,
)


async def test_get_run_detail_and_events(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    h = RunHistory(input=register_input())
    h.created()
    h.started()
    h.step_ok(0, {"resource": {"vendor": "Dell"}})
    h.scheduled(1)
    h.step_started(1)
    h.timed_out(1)
    h.succeeded(1, output={"late": True})  # late fact: must not flip the timeout
    h.scheduled(1, attempt=2)
    h.step_started(1, attempt=2)
    h.succeeded(1, attempt=2)
    h.completed({"serial": "XYZ"})
    retry = RunHistory(resource_id=h.resource_id, retry_of=h.run_id, at=T0 + timedelta(hours=1))
    retry.created()
    seq = await publish(js, [*h.events, *retry.events])

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)
        reply = await ask(nc, GetRun(run_id=h.run_id))
        events = await ask(nc, GetRunEvents(run_id=h.run_id, after_seq=2, limit=3))
        rest = await ask(nc, GetRunEvents(run_id=h.run_id, after_seq=int(events.next_cursor or 0)))

    assert reply.ok
    assert reply.applied_seq == seq
    run = reply.data
    assert run["status"] == "completed"
    assert run["output"] == {"serial": "XYZ"}
    assert run["durationMs"] == (len(h.events) - 1) * 1000
    assert run["progress"] == {"completedSteps": 2, "totalSteps": 2, "currentStep": None}
    assert run["retries"] == [retry.run_id]
    assert run["input"]["bmc"]["address"] == "https://10.0.0.1"
    inventory = run["steps"][1]
    assert [a["status"] for a in inventory["attempts"]] == ["timed_out", "succeeded"]
    assert inventory["status"] == "succeeded"
    assert run["createdAt"] == "2026-03-01T12:00:00Z"

    assert events.ok
    assert events.has_more
    assert [e["seq"] for e in events.data] == [3, 4, 5]
    assert decode_event(encode(events.data[0]["event"])) == h.events[2]  # the original JSON
    assert [e["seq"] for e in rest.data] == list(range(6, len(h.events) + 1))
    assert not rest.has_more


async def test_list_runs_with_each_filter_and_combinations(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    histories: list[RunHistory] = []
    for i in range(12):
        h = RunHistory(
            ["server.register", "server.inspect", "server.lifecycle"][i % 3],
            resource_id=f"srv_{i % 4}",
            project_id=f"prj_{i % 2}",
            triggered_by=f"usr_{i % 3}",
            at=T0 + timedelta(minutes=i),
        )
        h.created()
        if i % 2:
            h.started()
        if i % 4 == 3:
            h.failed()
        histories.append(h)
    seq = await publish(js, [e for h in histories for e in h.events])
    newest_first = [h.run_id for h in reversed(histories)]
    by_id = {h.run_id: h for h in histories}

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)

        async def ids(**filters: object) -> list[str]:
            data = await ok(nc, ListRuns(**filters))  # type: ignore[arg-type]
            return [r["id"] for r in data]

        assert await ids() == newest_first
        assert await ids(types=["server.inspect"]) == [
            i for i in newest_first if by_id[i].workflow_type == "server.inspect"
        ]
        assert await ids(statuses=["failed"]) == [
            i for i in newest_first if any(e.name == "run_failed" for e in by_id[i].events)
        ]
        assert await ids(statuses=["pending", "failed"]) == [
            i
            for i in newest_first
            if not any(e.name == "run_started" for e in by_id[i].events)
            or any(e.name == "run_failed" for e in by_id[i].events)
        ]
        assert await ids(resource_types=["cluster"]) == []
        assert await ids(resource_ids=["srv_1", "srv_2"]) == [
            i for i in newest_first if by_id[i].resource_id in {"srv_1", "srv_2"}
        ]
        assert await ids(triggered_by=["usr_2"]) == [
            i for i in newest_first if by_id[i].triggered_by == "usr_2"
        ]
        assert await ids(project_ids=["prj_0"]) == [
            i for i in newest_first if by_id[i].project_id == "prj_0"
        ]
        assert await ids(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6)) == [
            h.run_id for h in reversed(histories[3:6])
        ]
        combo = await ids(
            types=["server.register", "server.lifecycle"],
            statuses=["running"],
            project_ids=["prj_1"],
            since=T0 + timedelta(minutes=2),
        )
        assert combo == [
            i
            for i in newest_first
            if by_id[i].workflow_type != "server.inspect"
            and by_id[i].project_id == "prj_1"
            and [e.name for e in by_id[i].events][-1] == "run_started"
            and by_id[i].time > T0 + timedelta(minutes=2)
        ]
        assert combo

        bad = await ask(nc, ListRuns(page_size=501))
        assert not bad.ok
        assert bad.error is not None
        assert bad.error.code == "VALIDATION_ERROR"
        bad = await ask(nc, ListRuns(cursor="bm9wZQ"))
        assert bad.error is not None
        assert bad.error.code == "VALIDATION_ERROR"
        bad = await ask(nc, ListRuns(statuses=["done"]))
        assert bad.error is not None
        assert bad.error.code == "VALIDATION_ERROR"


async def test_pages_neither_skip_nor_repeat_while_runs_arrive(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    old = [RunHistory(at=T0 + timedelta(seconds=i)) for i in range(60)]
    for h in old:
        h.created()
    seq = await publish(js, [h.events[0] for h in old])

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)
        seen: list[str] = []
        cursor = None
        arrivals = 0
        while True:
            reply = await ask(nc, ListRuns(page_size=7, cursor=cursor, statuses=["pending"]))
            assert reply.ok
            seen += [r["id"] for r in reply.data]
            # new runs land between pages (and are applied before the next page is read)
            fresh = [RunHistory(at=T0 + timedelta(days=1, seconds=arrivals + i)) for i in range(3)]
            for h in fresh:
                h.created()
            arrivals += 3
            await wait_applied(p, await publish(js, [h.events[0] for h in fresh]))
            if not reply.has_more:
                break
            cursor = reply.next_cursor
            assert cursor is not None
            assert base64.urlsafe_b64decode(cursor + "==")

    assert seen[:7] == sorted((h.run_id for h in old), reverse=True)[:7]
    assert len(seen) == len(set(seen)) == 60
    assert seen == sorted((h.run_id for h in old), reverse=True)


async def test_tenancy_hides_other_projects_as_not_found(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    mine = RunHistory(project_id="prj_mine", input=register_input("a")).happy()
    theirs = RunHistory(project_id="prj_theirs", input=register_input("b")).happy()
    seq = await publish(js, [*mine.events, *theirs.events])
    scope = ["prj_mine"]

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)
        assert (await ok(nc, GetRun(run_id=mine.run_id, scope_projects=scope)))["id"] == mine.run_id
        hidden = await ask(nc, GetRun(run_id=theirs.run_id, scope_projects=scope))
        missing = await ask(nc, GetRun(run_id="run_doesnotexist", scope_projects=scope))
        assert hidden.error is not None
        assert missing.error is not None
        assert hidden.error.code == missing.error.code == "NOT_FOUND"
        assert not hidden.ok
        assert hidden.data is None
        hidden_events = await ask(nc, GetRunEvents(run_id=theirs.run_id, scope_projects=scope))
        assert hidden_events.error is not None
        assert hidden_events.error.code == "NOT_FOUND"
        listed = await ok(nc, ListRuns(scope_projects=scope))
        assert [r["id"] for r in listed] == [mine.run_id]
        assert await ok(nc, ListRuns(scope_projects=scope, project_ids=["prj_theirs"])) == []
        assert len(await ok(nc, ListRuns())) == 2
        res = await ask(
            nc,
            GetResource(
                resource_type="server", resource_id=theirs.resource_id, scope_projects=scope
            ),
        )
        assert res.error is not None
        assert res.error.code == "NOT_FOUND"
        servers = await ok(nc, ListResources(resource_type="server", scope_projects=scope))
        assert [s["id"] for s in servers] == [mine.resource_id]
        metrics = await ok(nc, GetMetrics(scope_projects=scope))
        assert metrics["total"] == 1


async def test_resource_cache_follows_register_power_and_decommission(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    reg = RunHistory(input=register_input("node-9"))
    reg.created()
    reg.started()

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:

        async def server() -> dict[str, object]:
            data: dict[str, object] = await ok(
                nc, GetResource(resource_type="server", resource_id=reg.resource_id)
            )
            return data

        await wait_applied(p, await publish(js, reg.events))
        s = await server()
        assert (s["name"], s["state"], s["activeRunId"]) == ("node-9", "registering", reg.run_id)
        assert s["attributes"] == {
            "bmc": {"address": "https://10.0.0.1", "username": "admin", "verifyTls": False},
            "tags": {"rack": "r1"},
        }

        n = len(reg.events)
        reg.step_ok(0, {"resource": {"vendor": "Dell", "model": "R650", "powerState": "On"}})
        reg.step_ok(1, {"resource": {"hardware": {"cpus": 2, "memoryGiB": 256}}})
        reg.completed()
        await wait_applied(p, await publish(js, reg.events[n:]))
        s = await server()
        assert s["state"] == "registered"
        assert s["lastRunId"] == reg.run_id
        assert s["activeRunId"] is None
        attrs = s["attributes"]
        assert isinstance(attrs, dict)
        assert (attrs["vendor"], attrs["powerState"], attrs["hardware"]["cpus"]) == (
            "Dell",
            "On",
            2,
        )
        assert s["observedAt"] is not None

        power = RunHistory("server.lifecycle", resource_id=reg.resource_id, at=reg.time)
        power.created()
        power.started()
        power.step_ok(0)
        power.step_ok(1, {"resource": {"powerState": "Off"}})
        power.completed()
        await wait_applied(p, await publish(js, power.events))
        s = await server()
        assert s["state"] == "registered"
        assert s["lastRunId"] == power.run_id
        assert s["attributes"]["powerState"] == "Off"  # type: ignore[index]

        gone = RunHistory("server.decommission", resource_id=reg.resource_id, at=power.time)
        gone.happy()
        await wait_applied(p, await publish(js, gone.events))
        s = await server()
        assert s["state"] == "decommissioned"
        listed = await ok(
            nc, ListResources(resource_type="server", states=["decommissioned"], sites=["dc1"])
        )
        assert [r["id"] for r in listed] == [reg.resource_id]
        assert await ok(nc, ListResources(resource_type="server", states=["registered"])) == []


async def test_estimate_duration_uses_recent_completed_runs(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        catalog_estimate = await ok(nc, EstimateDuration(workflow_type="server.inspect"))
        assert catalog_estimate == 3000  # one inventory step, from the catalog

        seq = 0
        for i, extra_steps in enumerate([0, 4, 1, 9]):
            h = RunHistory("server.inspect", at=T0 + timedelta(hours=i))
            h.created()
            h.started()
            for _ in range(extra_steps):
                h.started()  # pad the history so the durations differ
            h.completed()
            seq = await publish(js, h.events)
            await wait_applied(p, seq)
            estimate = await ok(nc, EstimateDuration(workflow_type="server.inspect"))
            if i < 2:
                assert estimate == 3000  # fewer than 3 completed runs
        # durations 2s, 6s, 3s, 11s -> median (3000 + 6000) / 2
        assert estimate == 4500
        by_resource = await ok(
            nc, EstimateDuration(workflow_type="server.inspect", resource_type="cluster")
        )
        assert by_resource == 3000
        unknown = await ask(nc, EstimateDuration(workflow_type="nope.nothing"))
        assert unknown.error is not None
        assert unknown.error.code == "VALIDATION_ERROR"


async def test_metrics_totals_rates_and_durations(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    events = []
    for i in range(4):
        events += RunHistory("server.inspect", at=T0 + timedelta(minutes=i)).happy().events
    failed = RunHistory("server.inspect", at=T0 + timedelta(minutes=10))
    failed.created()
    failed.started()
    failed.failed("BMC_AUTH_FAILED")
    running_run = RunHistory("server.lifecycle", at=T0 + timedelta(minutes=11))
    running_run.created()
    running_run.started()
    seq = await publish(js, [*events, *failed.events, *running_run.events])

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)
        m = await ok(nc, GetMetrics(bucket="hour"))
        window = await ok(nc, GetMetrics(since=T0 + timedelta(minutes=5)))
        bad = await ask(nc, GetMetrics(bucket="fortnight"))

    assert m["total"] == 6
    assert m["byStatus"] == {
        "pending": 0,
        "running": 1,
        "completed": 4,
        "failed": 1,
        "cancelled": 0,
    }
    assert m["successRate"] == 0.8
    assert m["inFlight"] == 1
    inspect = m["byType"]["server.inspect"]
    assert inspect["count"] == 5
    assert inspect["byStatus"]["failed"] == 1
    assert inspect["durationMs"] == {
        "avg": 5000,
        "p50": 5000,
        "p95": 5000,
        "p99": 5000,
        "max": 5000,
    }
    assert m["topErrorCodes"] == [{"code": "BMC_AUTH_FAILED", "count": 1}]
    assert m["buckets"][0]["total"] == 6
    assert window["total"] == 2
    assert window["inFlight"] == 1
    assert bad.error is not None
    assert bad.error.code == "VALIDATION_ERROR"


async def test_undecodable_events_are_skipped_not_fatal(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    good = RunHistory().happy()
    await js.publish("wf.events.server.srv_x.run_x.run_created", b'{"not": "an event"}')
    await js.publish("wf.events.server.srv_x.run_x.weird", b"\xff\xfe")
    seq = await publish(js, good.events)

    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        await wait_applied(p, seq)
        assert p.store.skipped_events == 2
        assert (await ok(nc, GetRun(run_id=good.run_id)))["status"] == "completed"


async def test_two_replicas_share_the_queue_group(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    h = RunHistory().happy()
    seq = await publish(js, h.events)
    a = settings_for(nats_server.url, tmp_path / "a.db", replica_name="a")
    b = settings_for(nats_server.url, tmp_path / "b.db", replica_name="b")
    async with running(a, nc, js) as pa, running(b, nc, js) as pb:
        await wait_applied(pa, seq)
        await wait_applied(pb, seq)
        replies = await asyncio.gather(*(ask(nc, GetRun(run_id=h.run_id)) for _ in range(20)))
    assert all(r.ok and r.data["status"] == "completed" for r in replies)
    assert (tmp_path / "a.db").exists()
    assert (tmp_path / "b.db").exists()
