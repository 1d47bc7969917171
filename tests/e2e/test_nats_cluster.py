"""R3 on a 3-node JetStream cluster: losing a NATS node in the middle of a load of runs loses no
accepted run.

The stack runs as real processes against three clustered nats-servers on loopback; every
service gets all three URLs and ``INFRAFLOW_NATS__REPLICAS=3``, so every stream and bucket has
three replicas. Runs are submitted through the REST API while the node leading ``WF_EVENTS`` is
killed with SIGKILL; every run that got a 202 must complete with a well-formed history, and the
node, started again, must catch up.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from infraflow.common import streams
from infraflow.common.contracts import decode_event, encode
from infraflow.common.invariants import assert_well_formed
from infraflow.devtools.nats_server import NatsServer
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .conftest import Api, register_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TERMINAL = {"completed", "failed", "cancelled"}
STREAMS = (streams.COMMANDS, streams.EVENTS, streams.STEPS, streams.TIMERS, streams.OBSERVED)
BUCKETS = (streams.KV_LOCKS, streams.KV_IDEMPOTENCY, streams.KV_CREDENTIALS)


@pytest.fixture
def cluster_stack(tmp_path: Path) -> Iterator[Stack]:
    catalog = write_catalog(tmp_path / "catalog.json")
    stack = Stack(
        base_dir=tmp_path / "stack",
        nats_nodes=3,
        kube=False,
        bmc_systems=2,
        bmc_power_delay_s=0,
        catalog_extra_file=str(catalog),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        test_agent=True,
        ack_wait_s=3.0,  # messages whose ack died with the node come back quickly
        extra_env={
            "INFRAFLOW_LOCK_SWEEP_INTERVAL_S": "2",
            "INFRAFLOW_RATE_LIMIT__ENABLED": "false",  # this is a load test of the broker
        },
    )
    stack.start()
    try:
        stack.wait_services_ready()
        yield stack
    finally:
        stack.stop()


def test_killing_a_nats_node_mid_load_loses_no_accepted_run(cluster_stack: Stack) -> None:
    stack = cluster_stack
    assert len(stack.nats_cluster) == 3
    assert stack.nats_url.count(",") == 2  # the services were given every node

    replicas = asyncio.run(_replication(stack))
    for name, (configured, peers, _) in replicas.items():
        assert configured == 3, f"{name} has {configured} replicas"
        assert peers == 2, f"{name} has {peers} peers besides its leader"

    api = Api(stack.api_url, stack.token())
    servers = _register(stack, api)
    loader = _Load(api, servers)
    loader.start()
    try:
        _wait_until(
            lambda: len(loader.accepted) >= 40 or loader.unexpected,
            30,
            "the first runs were not accepted",
        )
        victim = _node(stack, asyncio.run(_leader(stack, streams.EVENTS)))
        before = len(loader.accepted)
        victim.kill()  # SIGKILL: no lame duck, no goodbye to the routes
        killed_at = time.monotonic()
        # the cluster elects new leaders; the services reconnect to the surviving nodes and
        # the load goes on for a while with runs in every phase
        _wait_until(
            lambda: (
                loader.unexpected
                or (len(loader.accepted) >= before + 100 and time.monotonic() > killed_at + 5)
            ),
            60,
            "runs were not accepted after the kill",
        )
        print(
            f"killed {victim.name} (leader of {streams.EVENTS}); accepted {before} runs before, "
            f"{len(loader.accepted) - before} in {time.monotonic() - killed_at:.1f}s after; "
            f"refused {dict(loader.refused)}"
        )
    finally:
        loader.stop()
    assert not loader.unexpected, loader.unexpected[:3]

    runs = list(loader.accepted)
    final = _wait_all(api, runs, timeout=90)
    assert collections.Counter(r["status"] for r in final.values()) == {"completed": len(runs)}
    for run_id in runs:
        items = api.get(f"/v1/workflows/runs/{run_id}/events").json()["data"]
        assert_well_formed([decode_event(encode(i["event"])) for i in items])

    # a new leader serves the log, and the killed node catches up once it is back
    assert asyncio.run(_leader(stack, streams.EVENTS)) != victim.name
    victim.start()
    _wait_until(
        lambda: all(current == 2 for _, _, current in asyncio.run(_replication(stack)).values()),
        30,
        "the restarted node did not catch up",
    )


# ---- helpers -------------------------------------------------------------------------------


class _Load(threading.Thread):
    """Submits ``bench.noop5`` runs (five steps on the test executor) until stopped."""

    def __init__(self, api: Api, servers: list[str]) -> None:
        super().__init__(daemon=True)
        self.api, self.servers = api, servers
        self.accepted: list[str] = []
        self.refused: collections.Counter[int | str] = collections.Counter()
        self.unexpected: list[str] = []  # answers that are bugs (checked by the test)
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            body = {"type": "bench.noop5", "resourceId": self.servers[i % len(self.servers)]}
            i += 1
            try:
                r = self.api.post("/v1/workflows/runs", json=body)
            except httpx.HTTPError as exc:
                self.refused[type(exc).__name__] += 1
                continue
            if r.status_code == 202:
                self.accepted.append(str(r.json()["meta"]["workflowId"]))
            elif r.status_code == 503:
                # not accepted is fine while the cluster fails over (nothing half-exists)
                self.refused[r.status_code] += 1
                time.sleep(0.1)
            else:
                self.unexpected.append(f"{r.status_code} {r.text}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


def _register(stack: Stack, api: Api) -> list[str]:
    return register_all(stack, api, "r3-node")


def _wait_all(api: Api, runs: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(runs):
        for run_id in runs:
            if run_id in done:
                continue
            r = api.get(f"/v1/workflows/runs/{run_id}")
            if r.status_code == 200 and r.json()["data"]["status"] in TERMINAL:
                done[run_id] = r.json()["data"]
        if len(done) < len(runs):
            missing = [r for r in runs if r not in done]
            assert time.monotonic() < deadline, f"{len(missing)} runs not terminal: {missing[:5]}"
            time.sleep(0.5)
    return done


def _wait_until(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def _node(stack: Stack, name: str) -> NatsServer:
    return next(n for n in stack.nats_cluster if n.name == name)


async def _leader(stack: Stack, stream: str) -> str:
    nc = await nats.connect(servers=stack.nats_url.split(","))
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None
        assert info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()


async def _replication(stack: Stack) -> dict[str, tuple[int, int, int]]:
    """Per stream (KV buckets are streams ``KV_<bucket>``): configured replicas, peers besides
    the leader, and how many of those peers are current."""
    nc = await nats.connect(servers=stack.nats_url.split(","))
    try:
        js = nc.jetstream()
        out: dict[str, tuple[int, int, int]] = {}
        for name in (*STREAMS, *(f"KV_{b}" for b in BUCKETS)):
            info = await js.stream_info(name)
            peers = (info.cluster.replicas or []) if info.cluster else []
            current = sum(1 for p in peers if p.current and not p.offline)
            out[name] = (int(info.config.num_replicas or 1), len(peers), current)
        return out
    finally:
        await nc.close()
