"""The read model's guarantees: a replica rebuilt from the log answers every query exactly like
one built incrementally; list cursors carry their position across replicas; the events long
poll; and the pure pieces behind metrics (bins, window plans, aggregate deltas)."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import (
    EstimateDuration,
    GetMetrics,
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    ListRuns,
    Query,
    encode,
)
from infraflow.devtools.nats_server import NatsServer
from infraflow.projector.app import Projector, rebuild
from infraflow.projector.core.aggregates import (
    DAY_US,
    GRAIN_ALL,
    GRAIN_DAY,
    GRAIN_HOUR,
    HOUR_US,
    Deltas,
    bin_bounds,
    bin_value,
    contribution,
    duration_bin,
    plan_window,
)
from infraflow.projector.core.runs import evolve_run
from infraflow.projector.core.state import to_micros

from .scale import TYPE_WEIGHTS, Truth, Workload, generate
from .support import T0, RunHistory, publish, register_input, running, settings_for, wait_applied
from .test_lifecycle import SlowProjector

NOW = datetime(2026, 3, 10, tzinfo=UTC)


def special_runs() -> list[RunHistory]:
    """Histories the generator does not make: compensation, late facts, timeouts, queueing,
    skipped steps of a retry from a step."""
    reg = RunHistory(input=register_input("n1"), at=NOW - timedelta(days=2))
    reg.happy({0: {"resource": {"vendor": "HPE", "powerState": "On"}}})
    prov = RunHistory("server.lifecycle", resource_id=reg.resource_id, at=reg.time)
    prov.created()
    prov.started()
    prov.step_ok(0)
    prov.scheduled(1)
    prov.step_started(1)
    prov.timed_out(1)
    prov.succeeded(1)  # late: the timeout stands
    prov.compensation_started(["restore"], [0])
    prov.scheduled(0, phase="compensation", step="restore")
    prov.succeeded(0, phase="compensation", step="restore")
    prov.failed("STEP_TIMEOUT", step=prov.steps[1])
    retry = RunHistory(
        "server.lifecycle",
        resource_id=reg.resource_id,
        retry_of=prov.run_id,
        from_step=prov.steps[1],
        at=prov.time,
    )
    retry.created()
    retry.started()
    retry.skipped(0, {"from": "original"})
    retry.step_ok(1)
    retry.completed()
    queued = RunHistory(project_id="prj_b", input=register_input("n2"), at=retry.time)
    queued.created()
    queued.queued(reg.run_id)
    return [reg, prov, retry, queued]


def queries(truth: Truth, specials: list[RunHistory]) -> list[Query]:
    rng = random.Random(3)
    facts = list(truth.runs.values())
    out: list[Query] = []
    for f in [*rng.sample(facts, 150)]:
        out += [GetRun(run_id=f.id), GetRunEvents(run_id=f.id), GetRunEvents(run_id=f.id, limit=2)]
    for h in specials:
        out += [GetRun(run_id=h.run_id), GetRunEvents(run_id=h.run_id)]
    for _ in range(40):
        f = rng.choice(facts)
        filters = rng.sample(
            [
                {"types": [f.type]},
                {"statuses": [f.status, "failed"]},
                {"resource_types": [f.resource_type]},
                {"resource_ids": [f.resource_id]},
                {"triggered_by": [f.triggered_by]},
                {"project_ids": [f.project_id or "prj_001"]},
                {"since": NOW - timedelta(days=2), "until": NOW - timedelta(hours=20)},
            ],
            rng.randrange(0, 4),
        )
        merged = {k: v for d in filters for k, v in d.items()}
        out.append(ListRuns(page_size=rng.choice([5, 50, 500]), **merged))
    scopes = [None, ["prj_001", "prj_002"]]
    for scope in scopes:
        out += [
            GetMetrics(scope_projects=scope),
            GetMetrics(since=NOW - timedelta(days=2, hours=5, minutes=7), scope_projects=scope),
            GetMetrics(
                since=NOW - timedelta(days=1, minutes=30),
                until=NOW - timedelta(hours=3, minutes=10),
                bucket="hour",
                scope_projects=scope,
            ),
            GetMetrics(bucket="day", types=["vm.power", "server.inspect"], scope_projects=scope),
            GetMetrics(resource_types=["cluster"], bucket="day", scope_projects=scope),
            ListRuns(scope_projects=scope, page_size=100),
            ListResources(resource_type="server", scope_projects=scope, page_size=200),
        ]
    out += [EstimateDuration(workflow_type=t) for t in TYPE_WEIGHTS]
    out += [GetResource(resource_type="server", resource_id=specials[0].resource_id)]
    return out


async def answers(p: Projector, qs: list[Query]) -> list[bytes]:
    """Every answer, and the pages that follow each list (read through their cursors)."""
    out: list[bytes] = []
    for q in qs:
        tag = str(type(q).__struct_config__.tag)
        reply = await p.handlers.answer(subjects.query(tag), encode(q))
        assert reply.ok, (q, reply.error)
        out.append(encode(reply))
        pages = 0
        while isinstance(q, ListRuns) and reply.has_more and pages < 5:
            q = ListRuns(**{**_fields(q), "cursor": reply.next_cursor})
            reply = await p.handlers.answer(subjects.query(tag), encode(q))
            out.append(encode(reply))
            pages += 1
    return out


def _fields(q: ListRuns) -> dict[str, object]:
    return {f: getattr(q, f) for f in q.__struct_fields__}


def aggregates(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [
            *conn.execute("SELECT * FROM agg_counts ORDER BY grain, project, start, type, rtype"),
            *conn.execute("SELECT * FROM agg_durations ORDER BY 1, 2, 3, 4, 5, 6"),
            *conn.execute("SELECT * FROM agg_errors ORDER BY 1, 2, 3, 4, 5, 6"),
            *conn.execute("SELECT * FROM runs ORDER BY id"),
        ]
    finally:
        conn.close()


async def test_a_rebuilt_replica_answers_exactly_like_the_incremental_one(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    truth = Truth()
    log = list(generate(Workload(runs=1500, days=3, now=NOW), truth))
    specials = special_runs()
    a = settings_for(nats_server.url, tmp_path / "a.db", replica_name="a")
    async with running(a, nc, js) as pa:
        # applied in many small batches, with the special histories interleaved
        seq = 0
        for i in range(0, len(log), 400):
            for subject, payload in log[i : i + 400]:
                seq = (await js.publish(subject, payload)).seq
            if i // 400 < len(specials):
                seq = await publish(js, specials[i // 400].events)
            await wait_applied(pa, seq)
        assert pa.follower.stats.batches > 20
        before = await answers(pa, queries(truth, specials))

    b = settings_for(nats_server.url, tmp_path / "b.db", replica_name="b")
    async with running(b, nc, js) as pb:  # B: built once, then dropped by the rebuild command
        await wait_applied(pb, seq)
    rebuild(b.db_path)
    async with running(b, nc, js) as pb:
        await wait_applied(pb, seq)
        assert pb.follower.stats.start_seqs == [1]  # replayed from the first sequence
        assert pb.follower.stats.batches < 20  # in a few big batches
        after = await answers(pb, queries(truth, specials))

    assert after == before
    assert len(before) > 500
    assert aggregates(tmp_path / "a.db") == aggregates(tmp_path / "b.db")


async def test_a_cursor_makes_a_lagging_replica_catch_up_first(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    a = settings_for(nats_server.url, tmp_path / "a.db", replica_name="a")
    # B applies each batch a second late (the late runs may take a few batches)
    b = settings_for(
        nats_server.url, tmp_path / "b.db", replica_name="b", read_your_writes_timeout_s=8.0
    )
    async with running(a, nc, js) as pa, running(b, nc, js, cls=SlowProjector) as pb:
        first = [RunHistory(at=T0 + timedelta(minutes=i)) for i in range(10)]
        for h in first:
            h.created()
        seq = await publish(js, [h.events[0] for h in first])
        await wait_applied(pa, seq)
        await wait_applied(pb, seq)
        # runs older than the first page's end land: A sees them before B does
        late = [RunHistory(at=T0 + timedelta(seconds=30 + 60 * i)) for i in range(3)]
        for h in late:
            h.created()
        seq = await publish(js, [h.events[0] for h in late])
        await wait_applied(pa, seq)
        assert pb.position.seq < seq

        tag = subjects.query("list_runs")
        page1 = await pa.handlers.answer(tag, encode(ListRuns(page_size=4)))
        started = time.monotonic()
        page2 = await pb.handlers.answer(
            tag, encode(ListRuns(page_size=100, cursor=page1.next_cursor))
        )
        assert time.monotonic() - started > 0.1  # B waited for the position in the cursor
    got = [r["id"] for r in page1.data + page2.data]
    everything = sorted((h.run_id for h in first + late), reverse=True)
    assert got == everything


async def test_events_long_poll_wakes_on_a_new_event(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    h = RunHistory()
    h.created()
    async with running(settings_for(nats_server.url, tmp_path / "p.db"), nc, js) as p:
        seq = await publish(js, h.events)
        await wait_applied(p, seq)
        tag = subjects.query("get_run_events")
        waiting = asyncio.create_task(
            p.handlers.answer(
                tag, encode(GetRunEvents(run_id=h.run_id, after_seq=seq, wait_ms=5000))
            )
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        h.started()
        started = time.monotonic()
        new = await publish(js, h.events[1:])
        reply = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 1.0
        assert [e["seq"] for e in reply.data] == [new]
        idle = await p.handlers.answer(
            tag, encode(GetRunEvents(run_id=h.run_id, after_seq=new, wait_ms=200))
        )
        assert idle.ok
        assert idle.data == []
        too_long = await p.handlers.answer(
            tag, encode(GetRunEvents(run_id=h.run_id, wait_ms=3_600_000))
        )
        assert too_long.error is not None
        assert too_long.error.code == "VALIDATION_ERROR"
        assert p.watchers.waiting == 0


def test_duration_bins_are_exact_below_64_ms_then_within_two_percent() -> None:
    assert [duration_bin(v) for v in range(64)] == list(range(64))
    previous = -1
    for value in [*range(64, 5000, 7), *range(5000, 10**9, 9_999_991)]:
        b = duration_bin(value)
        low, high = bin_bounds(b)
        assert low <= value < high
        assert b >= previous
        previous = b
        assert abs(bin_value(b) - value) <= value / 64


def test_window_plans_cover_the_window_exactly_once() -> None:
    base = to_micros(T0.replace(hour=0))
    rng = random.Random(1)
    for _ in range(500):
        lo = base + rng.randrange(0, 5 * DAY_US)
        hi = lo + rng.choice([rng.randrange(1, HOUR_US), rng.randrange(1, 4 * DAY_US)])
        for finest in (GRAIN_DAY, GRAIN_HOUR):
            plan = plan_window(lo, hi, finest=finest)
            pieces = sorted([*((s, e) for _, s, e in plan.spans), *plan.edges])
            assert pieces[0][0] == lo
            assert pieces[-1][1] == hi
            assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
            for grain, s, e in plan.spans:
                unit = DAY_US if grain == GRAIN_DAY else HOUR_US
                assert s % unit == 0
                assert e % unit == 0
                assert finest == GRAIN_DAY or grain == GRAIN_HOUR
            assert all(e - s < HOUR_US or s % HOUR_US for s, e in plan.edges)
    assert plan_window(None, None).spans == ((GRAIN_ALL, 0, 1),)
    assert plan_window(5, 5) == plan_window(9, 3)


def test_deltas_move_a_run_between_statuses_without_double_counting() -> None:
    h = RunHistory("server.inspect", project_id="prj_a")
    h.created()
    state = evolve_run(None, h.events[0])
    assert state is not None
    pending = contribution(state)
    deltas = Deltas()
    deltas.change(None, pending)
    h.started()
    state = evolve_run(state, h.events[-1])
    assert state is not None
    running_now = contribution(state)
    deltas.change(pending, running_now)
    deltas.change(running_now, running_now)  # no change, no delta
    compact = deltas.compact()
    rows = {key[:3]: row[:5] for key, row in compact.counts.items()}
    hour = state.created_at - state.created_at % HOUR_US
    assert rows[(GRAIN_HOUR, hour, "prj_a")] == [0, 1, 0, 0, 0]
    assert rows[(GRAIN_HOUR, hour, "*")] == [0, 1, 0, 0, 0]
    assert len(compact.counts) == 6  # hour, day, all time; the project and the rollup
