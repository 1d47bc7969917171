"""The read side at scale, through a real nats-server and the projector service process.

``test_read_side_at_scale`` (20k runs, normal suite) and ``test_read_side_at_1m`` (1,000,000
runs; ``INFRAFLOW_BENCH=1``) run the same code: generate the log (``scale.generate``), append it
to ``WF_EVENTS`` with pipelined ``publish_async``, start ``infraflow-projector`` on an empty read
model and time its catch-up, then time 1,000 random list queries with one filter and with three,
deep pages, get-by-id, the events query, estimates and metrics over 30 days, read the process's
resident memory and the file's size, and finally restart it and time how soon it answers.
Every latency is a NATS request/reply to the projector as the gateway makes it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common.contracts import (
    EstimateDuration,
    GetMetrics,
    GetResource,
    GetRun,
    GetRunEvents,
    ListRuns,
    Query,
    QueryReply,
)
from infraflow.devtools.nats_server import NatsServer

from .scale import TYPE_WEIGHTS, Truth, Workload, generate
from .support import ask

BENCH = bool(os.environ.get("INFRAFLOW_BENCH"))


class ProjectorProcess:
    """``infraflow-projector`` as a child process on its own read model."""

    def __init__(self, nats_url: str, db_path: Path, log_path: Path) -> None:
        self.env = dict(
            os.environ,
            INFRAFLOW_NATS__URL=nats_url,
            INFRAFLOW_DB_PATH=str(db_path),
            INFRAFLOW_REPLICA_NAME="scale",
            INFRAFLOW_LOG_JSON="false",
        )
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        exe = Path(sys.executable).parent / "infraflow-projector"
        with self.log_path.open("ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                str(exe), env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=log_file
            )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def memory_mb(self) -> tuple[float, float]:
        """(resident now, peak resident) in MB."""
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def publish_all(nc: Client, events: Any) -> int:
    """Append every (subject, payload) with pipelined acknowledged publishes; the count."""
    js = nc.jetstream(publish_async_max_pending=8000)
    n = 0
    for subject, payload in events:
        await js.publish_async(subject, payload)
        n += 1
    await asyncio.wait_for(js.publish_async_completed(), 120)
    return n


async def timed(samples: list[float], call: Awaitable[QueryReply]) -> QueryReply:
    started = time.perf_counter()
    reply = await call
    samples.append((time.perf_counter() - started) * 1000)
    assert reply.ok, reply.error
    return reply


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def wait_answering(nc: Client, deadline_s: float) -> QueryReply:
    """Poll a cheap query until the projector answers; the reply."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await ask(nc, GetResource(resource_type="server", resource_id="none"), 1.0)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            assert time.monotonic() < deadline, "the projector never answered"
            await asyncio.sleep(0.02)


class Measure:
    """Times the queries of the scale test and collects the numbers."""

    def __init__(self, nc: Client, truth: Truth, w: Workload, queries: int) -> None:
        self.nc = nc
        self.truth = truth
        self.w = w
        self.queries = queries
        self.rng = random.Random(11)
        self.facts = list(truth.runs.values())
        self.results: dict[str, Any] = {}

    def _filter(self, kind: str) -> dict[str, Any]:
        f = self.rng.choice(self.facts)
        now = self.w.now
        match kind:
            case "type":
                return {"types": [self.rng.choice(list(TYPE_WEIGHTS))]}
            case "status":
                return {"statuses": [self.rng.choice(["completed", "failed", "cancelled"])]}
            case "resourceType":
                return {"resource_types": [f.resource_type]}
            case "resourceId":
                return {"resource_ids": [f.resource_id]}
            case "triggeredBy":
                return {"triggered_by": [f.triggered_by]}
            case "projectId":
                return {"project_ids": [f.project_id or "prj_000"]}
            case "window":
                start = now - timedelta(days=self.rng.uniform(1, self.w.days))
                return {"since": start, "until": start + timedelta(days=self.rng.uniform(0.5, 7))}
        raise AssertionError(kind)

    async def lists(self, name: str, filters_per_query: int) -> None:
        kinds = ["type", "status", "resourceType", "resourceId", "triggeredBy", "projectId"]
        samples: list[float] = []
        for _ in range(self.queries):
            chosen = self.rng.sample([*kinds, "window"], filters_per_query)
            filters: dict[str, Any] = {}
            for kind in chosen:
                filters.update(self._filter(kind))
            reply = await timed(samples, ask(self.nc, ListRuns(page_size=50, **filters)))
            for item in reply.data:  # spot-check every answer against the generated truth
                fact = self.truth.runs[item["id"]]
                if "types" in filters:
                    assert fact.type in filters["types"]
                if "resource_ids" in filters:
                    assert fact.resource_id in filters["resource_ids"]
                if "triggered_by" in filters:
                    assert fact.triggered_by in filters["triggered_by"]
        self.record(name, samples)

    async def deep_page(self, pages: int) -> None:
        for label, filters in (("", {}), (" (type filter)", {"types": ["server.lifecycle"]})):
            cursor = None
            samples: list[float] = []
            seen: set[str] = set()
            for _ in range(pages):
                reply = await timed(
                    samples, ask(self.nc, ListRuns(page_size=50, cursor=cursor, **filters))
                )
                ids = [r["id"] for r in reply.data]
                assert not seen.intersection(ids)
                seen.update(ids)
                cursor = reply.next_cursor
                if cursor is None:
                    break
            self.results[f"page {len(samples)}{label} ms"] = round(samples[-1], 2)
            self.record(f"pages 1-{len(samples)}{label}", samples)

    async def by_id(self) -> None:
        samples: list[float] = []
        events: list[float] = []
        for _ in range(self.queries):
            f = self.rng.choice(self.facts)
            reply = await timed(samples, ask(self.nc, GetRun(run_id=f.id)))
            assert reply.data["status"] == f.status
            await timed(events, ask(self.nc, GetRunEvents(run_id=f.id)))
        self.record("get run by id", samples)
        self.record("run events", events)

    async def estimates(self) -> None:
        samples: list[float] = []
        for _ in range(200):
            wtype = self.rng.choice(list(TYPE_WEIGHTS))
            await timed(samples, ask(self.nc, EstimateDuration(workflow_type=wtype)))
        self.record("estimate duration", samples)

    async def metrics(self) -> None:
        since, until = self.w.now - timedelta(days=self.w.days), self.w.now
        cases: list[tuple[str, Callable[[], Query]]] = [
            ("metrics 30d", lambda: GetMetrics(since=since, until=until)),
            ("metrics 30d bucket=day", lambda: GetMetrics(since=since, until=until, bucket="day")),
            (
                "metrics 30d bucket=hour, 1 type",
                lambda: GetMetrics(
                    since=since, until=until, bucket="hour", types=["server.lifecycle"]
                ),
            ),
            (
                "metrics 30d, Arc user (3 projects)",
                lambda: GetMetrics(
                    since=since, until=until, scope_projects=["prj_001", "prj_002", "prj_003"]
                ),
            ),
        ]
        for name, make in cases:
            samples: list[float] = []
            for _ in range(30):
                reply = await timed(samples, ask(self.nc, make(), timeout=10))
            if name == "metrics 30d":
                assert reply.data["total"] == len(self.facts)
                self.results["metrics total"] = reply.data["total"]
            self.record(name, samples)

    def record(self, name: str, samples: list[float]) -> None:
        self.results[name] = {
            "n": len(samples),
            "p50 ms": round(statistics.median(samples), 2),
            "p99 ms": round(pct(samples, 99), 2),
            "max ms": round(max(samples), 2),
        }


def _size_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6


async def run_scale(server: NatsServer, tmp_path: Path, runs: int, queries: int) -> dict[str, Any]:
    nc = await nats.connect(server.url)
    results: dict[str, Any] = {"runs": runs}
    try:
        from infraflow.common.streams import ensure_topology

        js: JetStreamContext = nc.jetstream()
        await ensure_topology(js)
        w = Workload(runs=runs)
        truth = Truth()
        started = time.perf_counter()
        published = await publish_all(nc, generate(w, truth))
        results["events"] = published
        results["generate+publish s"] = round(time.perf_counter() - started, 1)
        info = await js.stream_info("WF_EVENTS")
        assert info.state.messages == published
        results["stream MB"] = round(info.state.bytes / 1e6)

        db = tmp_path / "projector.sqlite3"
        projector = ProjectorProcess(server.url, db, tmp_path / "projector.log")
        started = time.perf_counter()
        await projector.start()
        try:
            while (await wait_answering(nc, 60)).applied_seq < info.state.last_seq:
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - started
            results["catch-up s"] = round(elapsed, 1)
            results["catch-up events/s"] = round(published / elapsed)
            rss, peak = projector.memory_mb()
            results["RSS after catch-up MB"] = round(rss)
            results["peak RSS during catch-up MB"] = round(peak)

            m = Measure(nc, truth, w, queries)
            await m.lists("list, 1 filter", 1)
            await m.lists("list, 3 filters", 3)
            await m.deep_page(200)
            await m.by_id()
            await m.estimates()
            await m.metrics()
            results.update(m.results)
            rss, peak = projector.memory_mb()
            results["RSS after queries MB"] = round(rss)
            results["peak RSS MB"] = round(peak)
            results["read model on disk MB"] = round(_size_mb(db))
            await projector.stop()

            started = time.perf_counter()
            await projector.start()
            reply = await wait_answering(nc, 60)
            results["restart: answering after s"] = round(time.perf_counter() - started, 2)
            assert reply.applied_seq == info.state.last_seq  # resumed, not replaying
            some = next(iter(truth.runs.values()))
            assert (await ask(nc, GetRun(run_id=some.id))).ok
        finally:
            await projector.stop()
        log_text = (tmp_path / "projector.log").read_text()
        assert "skipped undecodable" not in log_text, log_text[-2000:]
    finally:
        await nc.close()
    return results


def report(results: dict[str, Any]) -> None:
    print()
    for key, value in results.items():
        print(f"  {key:40s} {value}")


async def test_read_side_at_scale(nats_server: NatsServer, tmp_path: Path) -> None:
    """The scaled-down run of the benchmark: the same code on 20,000 runs."""
    results = await run_scale(nats_server, tmp_path, runs=20_000, queries=200)
    report(results)
    assert results["metrics total"] == 20_000
    assert results["restart: answering after s"] < 5


@pytest.mark.bench
@pytest.mark.skipif(not BENCH, reason="set INFRAFLOW_BENCH=1")
@pytest.mark.timeout(7200)
async def test_read_side_at_1m(nats_server: NatsServer, tmp_path: Path) -> None:
    runs = int(os.environ.get("INFRAFLOW_BENCH_RUNS", "1000000"))
    results = await run_scale(nats_server, tmp_path, runs=runs, queries=1000)
    report(results)
    assert results["catch-up events/s"] >= 10_000
    assert results["list, 1 filter"]["p99 ms"] <= 20
    assert results["list, 3 filters"]["p99 ms"] <= 20
    assert results["metrics 30d"]["p99 ms"] <= 100
    assert results["peak RSS MB"] <= 400
    assert results["restart: answering after s"] < 5
