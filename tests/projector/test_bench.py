"""Catch-up rate of the projector through a real nats-server (``INFRAFLOW_BENCH=1`` to run;
``INFRAFLOW_BENCH_RUNS`` sets the number of runs, about 8 events each)."""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import encode
from infraflow.devtools.nats_server import NatsServer

from .support import T0, RunHistory, register_input, running, settings_for

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not os.environ.get("INFRAFLOW_BENCH"), reason="set INFRAFLOW_BENCH=1"),
]


async def test_catch_up_rate(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    runs = int(os.environ.get("INFRAFLOW_BENCH_RUNS", "20000"))
    rng = random.Random(7)
    types = ["server.register", "server.lifecycle", "server.inspect"]
    histories = [
        RunHistory(
            rng.choice(types),
            input=register_input(f"n{i}"),
            at=T0 + timedelta(seconds=i),
            project_id=f"prj_{i % 7}",
        ).happy({0: {"resource": {"powerState": "On"}}})
        for i in range(runs)
    ]
    published = 0
    for w in range(0, runs, 50):  # 50 runs in flight at a time, their events interleaved
        pending = [list(reversed(h.events)) for h in histories[w : w + 50]]
        while pending:
            events = rng.choice(pending)
            e = events.pop()
            if not events:
                pending.remove(events)
            subject = subjects.event(e.resource_type, e.resource_id, e.run_id, e.name)
            await nc.publish(subject, encode(e))
            published += 1
        await nc.flush()
    while (await js.stream_info("WF_EVENTS")).state.messages < published:
        await nc.flush()

    started = time.perf_counter()
    async with running(settings_for(nats_server.url, tmp_path / "bench.db"), nc, js) as p:
        assert await p.position.wait_for(published, 3600)
        elapsed = time.perf_counter() - started
        batches = p.follower.stats.batches
    rate = published / elapsed
    print(f"\ncaught up {published} events ({runs} runs) in {elapsed:.2f}s: {rate:,.0f} events/s")
    print(f"{batches} batches, {(tmp_path / 'bench.db').stat().st_size / 1e6:.0f} MB")
    assert rate >= 10_000
