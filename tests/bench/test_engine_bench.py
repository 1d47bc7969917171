"""Engine benchmark: the whole stack as processes, runs started over REST as users start them.

Prints (and writes to ``test-artifacts/bench-engine.json``):
  (a) 202 latency p50/p95/p99 at a fixed request rate (open loop);
  (b) throughput and start-to-completion latency of ``bench.noop5`` (5 no-op steps on a no-op
      executor the benchmark starts), N runs with K in flight (closed loop);
  (c) start-to-completion p50/p95/p99 at a fixed run rate (open loop);
  (d) per-step orchestration overhead from the runs' own event timestamps.

Full size (200 req/s for 30 s; 2,000 runs, 64 in flight; 50 runs/s for 20 s) with
``INFRAFLOW_BENCH=1``; otherwise a small version runs in the normal suite so it cannot rot.
Numbers, not asserts: only correctness (every run completed) is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import uvloop

from infraflow.common import streams, subjects
from infraflow.common.contracts import decode_event
from infraflow.common.jetstream import read_subject
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .keepalive import KeepAliveClient

FULL = os.environ.get("INFRAFLOW_BENCH") == "1"
SIZES = {
    "a_rate": 200 if FULL else 50,
    "a_seconds": 30 if FULL else 3,
    "b_runs": 2000 if FULL else 100,
    "b_inflight": 64 if FULL else 16,
    "c_rate": 50 if FULL else 20,
    "c_seconds": 20 if FULL else 3,
}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50": pct(ms, 50),
        "p95": pct(ms, 95),
        "p99": pct(ms, 99),
        "max": max(ms) if ms else float("nan"),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("bench")
    s = Stack(
        base_dir=base / "stack",
        bmc_systems=1,
        kube=False,
        test_agent=True,
        catalog_extra_file=str(write_catalog(base / "catalog.json")),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        extra_env={"INFRAFLOW_LOG_LEVEL": "WARNING"},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


class Bench:
    def __init__(self, stack: Stack, server_id: str) -> None:
        self.stack, self.server_id = stack, server_id
        self.done: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.failed: list[str] = []
        self.body = json.dumps({"type": "bench.noop5", "resourceId": server_id}).encode()

    async def __aenter__(self) -> Bench:
        # the load generator shares the two cores with the stack: a lean keep-alive client
        # (about 0.1 ms of CPU per request here; aiohttp took about 0.5, httpx about 3.5)
        self.http = KeepAliveClient(
            self.stack.api_url, {"Authorization": f"Bearer {self.stack.token()}"}
        )
        self.nc = await nats.connect(self.stack.nats_url)
        await self.nc.subscribe("wf.events.*.*.*.run_completed", cb=self._on_end)
        await self.nc.subscribe("wf.events.*.*.*.run_failed", cb=self._on_end)
        await self.nc.subscribe("wf.events.*.*.*.run_cancelled", cb=self._on_end)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.nc.close()

    async def _on_end(self, msg: Any) -> None:
        now = time.perf_counter()
        run_id = msg.subject.split(".")[4]
        if not msg.subject.endswith("run_completed"):
            self.failed.append(run_id)
        self.done.setdefault(run_id, now)
        fut = self.waiters.pop(run_id, None)
        if fut is not None and not fut.done():
            fut.set_result(now)

    async def start(self) -> tuple[str, float, float]:
        t0 = time.perf_counter()
        status, body = await self.http.post("/v1/workflows/runs", self.body, "application/json")
        t1 = time.perf_counter()
        assert status == 202, body
        return str(json.loads(body)["meta"]["workflowId"]), t0, t1

    async def completion(self, run_id: str, timeout: float = 120) -> float:
        if run_id in self.done:
            return self.done[run_id]
        fut = asyncio.get_running_loop().create_future()
        self.waiters[run_id] = fut
        if run_id in self.done:  # landed meanwhile
            return self.done[run_id]
        return await asyncio.wait_for(fut, timeout)


async def open_loop(rate: float, seconds: float, action: Any) -> list[Any]:
    n = int(rate * seconds)
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action()))
    return await asyncio.gather(*tasks)


async def step_overhead(stack: Stack, server_id: str, runs: list[str]) -> dict[str, Any]:
    nc = await nats.connect(stack.nats_url)
    gaps: dict[str, list[float]] = {"decide": [], "dispatch": [], "execute": [], "total": []}
    try:
        for run_id in runs:
            msgs = await read_subject(
                nc, streams.EVENTS, subjects.run_events("server", server_id, run_id)
            )
            ev = [decode_event(m.data) for m in msgs]
            t = {(e.name, getattr(e, "index", -1)): e.time.timestamp() for e in ev}
            created = t[("run_created", -1)]
            completed = t[("run_completed", -1)]
            execute = 0.0
            for i in range(5):
                sched, start, ok = (
                    t[("step_scheduled", i)],
                    t[("step_started", i)],
                    t[("step_succeeded", i)],
                )
                gaps["dispatch"].append((start - sched) * 1000)
                gaps["execute"].append((ok - start) * 1000)
                execute += ok - start
                prev = t[("step_succeeded", i - 1)] if i else created
                gaps["decide"].append((sched - prev) * 1000)
            gaps["total"].append(((completed - created) - execute) * 1000 / 5)
    finally:
        await nc.close()
    return {k: summary(v) for k, v in gaps.items()}


def test_engine_benchmark(stack: Stack) -> None:
    assert stack.bmc is not None
    http = httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token()}"}
    )
    system = stack.bmc.systems[0]
    r = http.post(
        "/v1/servers",
        json={
            "name": "bench",
            "bmc": {
                "address": stack.bmc.system_url(system.id),
                "username": stack.bmc.username,
                "password": stack.bmc.password,
            },
        },
    )
    server_id = r.json()["data"]["resourceId"]
    deadline = time.monotonic() + 60
    while http.get(r.headers["location"]).json()["data"]["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {"sizes": SIZES, "cpus": os.cpu_count()}
        async with Bench(stack, server_id) as b:
            # warm up
            warm = [await b.start() for _ in range(20)]
            await asyncio.gather(*(b.completion(w[0]) for w in warm))

            # (a) 202 latency at a fixed request rate (an overloaded request counts as an error)
            async def a_one() -> tuple[str | None, float]:
                s0 = time.perf_counter()
                try:
                    run_id, t0, t1 = await b.start()
                except (OSError, asyncio.IncompleteReadError, TimeoutError, AssertionError):
                    return None, (time.perf_counter() - s0) * 1000
                return run_id, (t1 - t0) * 1000

            t0 = time.perf_counter()
            res = await open_loop(SIZES["a_rate"], SIZES["a_seconds"], a_one)
            a_elapsed = time.perf_counter() - t0
            ok = [(r, ms) for r, ms in res if r is not None]
            out["a_202_ms"] = summary([ms for _, ms in ok])
            out["a_errors"] = len(res) - len(ok)
            out["a_offered_rps"] = SIZES["a_rate"]
            out["a_achieved_rps"] = len(ok) / a_elapsed
            res = ok
            print("(a)", out["a_202_ms"], flush=True)
            await asyncio.gather(*(b.completion(r, timeout=600) for r, _ in res))

            # (b) throughput with K runs in flight
            n, k = SIZES["b_runs"], SIZES["b_inflight"]
            sem = asyncio.Semaphore(k)
            lat: list[float] = []

            async def b_one() -> str:
                async with sem:
                    run_id, s0, _ = await b.start()
                    lat.append((await b.completion(run_id) - s0) * 1000)
                    return run_id

            t0 = time.perf_counter()
            await asyncio.gather(*(b_one() for _ in range(n)))
            elapsed = time.perf_counter() - t0
            out["b_runs_per_s"] = n / elapsed
            out["b_steps_per_s"] = 5 * n / elapsed
            out["b_latency_ms"] = summary(lat)
            print("(b)", out["b_runs_per_s"], out["b_latency_ms"], flush=True)

            # (c) start-to-completion at a fixed run rate
            c_accept: list[float] = []

            async def c_one() -> tuple[str, float]:
                run_id, s0, s1 = await b.start()
                c_accept.append((s1 - s0) * 1000)
                return run_id, (await b.completion(run_id) - s0) * 1000

            res = await open_loop(SIZES["c_rate"], SIZES["c_seconds"], c_one)
            out["c_rate"] = SIZES["c_rate"]
            out["c_latency_ms"] = summary([ms for _, ms in res])
            out["c_202_ms"] = summary(c_accept)
            sample = [r for r, _ in res][:200]
            out["d_step_overhead_ms"] = await step_overhead(stack, server_id, sample)
            out["failed_runs"] = len(b.failed)
        return out

    result = uvloop.run(scenario())  # the load generator should not be the slow part
    Path("test-artifacts").mkdir(exist_ok=True)
    Path("test-artifacts/bench-engine.json").write_text(json.dumps(result, indent=2))
    print("\nengine benchmark" + (" (full)" if FULL else " (small)"))
    a = result["a_202_ms"]
    print(
        f"(a) 202 latency at {result['a_offered_rps']} req/s "
        f"(achieved {result['a_achieved_rps']:.0f}): p50 {a['p50']:.1f} ms, "
        f"p95 {a['p95']:.1f} ms, p99 {a['p99']:.1f} ms, max {a['max']:.1f} ms"
    )
    bl = result["b_latency_ms"]
    print(
        f"(b) {SIZES['b_runs']} runs, {SIZES['b_inflight']} in flight: "
        f"{result['b_runs_per_s']:.0f} runs/s ({result['b_steps_per_s']:.0f} steps/s), "
        f"latency p50 {bl['p50']:.0f} ms, p99 {bl['p99']:.0f} ms"
    )
    c = result["c_latency_ms"]
    print(
        f"(c) {result['c_rate']} runs/s: start-to-completion p50 {c['p50']:.1f} ms, "
        f"p95 {c['p95']:.1f} ms, p99 {c['p99']:.1f} ms"
    )
    d = result["d_step_overhead_ms"]
    print(
        f"(d) per step: overhead mean {d['total']['mean']:.2f} ms "
        f"(decide p50 {d['decide']['p50']:.2f}, dispatch p50 {d['dispatch']['p50']:.2f}, "
        f"no-op execute p50 {d['execute']['p50']:.2f})"
    )
    assert result["failed_runs"] == 0
