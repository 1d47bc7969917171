"""No run is lost: kill -9 of any service at random moments, a broker restart, two orchestrators.

Each test starts its own stack of real processes (real nats-server, the Redfish emulator, the
services) and drives it through the REST API only. Every accepted run (a 202) must reach a
terminal state and its event history must pass the invariant checker.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from infraflow.common.contracts import decode_event, encode
from infraflow.common.invariants import violations
from infraflow.common.streams import KV_LOCKS
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .conftest import Api, register_all

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "failed", "cancelled"}


def make_stack(base: Path, **kw: Any) -> Stack:
    catalog = write_catalog(base / "catalog.json")
    defaults: dict[str, Any] = {
        "base_dir": base / "stack",
        "kube": False,
        "catalog_extra_file": str(catalog),
        "services": ("gateway", "orchestrator", "bmc-agent", "projector"),
        "ack_wait_s": 3.0,
        "extra_env": {
            "INFRAFLOW_LOCK_SWEEP_INTERVAL_S": "2",
            # a claim left by a gateway killed mid-request is taken over quickly
            "INFRAFLOW_IDEMPOTENCY_STALE_S": "3",
        },
    }
    defaults.update(kw)
    return Stack(**defaults)


@pytest.fixture
def tmp_stack(tmp_path: Path) -> Iterator[list[Stack]]:
    holder: list[Stack] = []
    yield holder
    for s in holder:
        s.stop()


def register_servers(stack: Stack, api: Api) -> list[str]:
    return register_all(stack, api, "node")


def submit(api: Api, body: dict[str, Any], deadline: float, key: str | None = None) -> str | None:
    """POST until a 202, as a careful client does: the gateway may die after accepting, so
    every retry carries the same Idempotency-Key and gets the same run, never a second one."""
    headers = {"Idempotency-Key": key or f"submit-{time.monotonic_ns()}"}
    while time.monotonic() < deadline:
        try:
            r = api.post("/v1/workflows/runs", json=body, headers=headers)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if r.status_code == 202:
            return str(r.json()["meta"]["workflowId"])
        # 503: broker unreachable; 409 CONFLICT: the same key is still in progress elsewhere
        assert r.status_code in (503, 409), r.text
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "CONFLICT", r.text
        time.sleep(0.2)
    return None


def wait_all(api: Api, runs: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(runs):
        for run_id in runs:
            if run_id in done:
                continue
            try:
                r = api.get(f"/v1/workflows/runs/{run_id}")
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and r.json()["data"]["status"] in TERMINAL:
                done[run_id] = r.json()["data"]
        if len(done) < len(runs):
            assert time.monotonic() < deadline, (
                f"{len(runs) - len(done)} accepted runs not terminal: "
                f"{[r for r in runs if r not in done][:5]}"
            )
            time.sleep(0.5)
    return done


def check_histories(api: Api, runs: list[str]) -> None:
    bad = {}
    for run_id in runs:
        items = api.get(f"/v1/workflows/runs/{run_id}/events").json()["data"]
        problems = violations([decode_event(encode(i["event"])) for i in items])
        if problems:
            bad[run_id] = problems
    assert not bad, bad


def held_locks(stack: Stack) -> list[str]:
    async def keys() -> list[str]:
        nc = await nats.connect(stack.nats_url)
        try:
            kv = await nc.jetstream().key_value(KV_LOCKS)
            try:
                return list(await kv.keys())
            except Exception:  # no keys
                return []
        finally:
            await nc.close()

    return asyncio.run(keys())


MIN_KILLS = 8


class Chaos(threading.Thread):
    """kill -9 a random service every 0.5-2 s and start it again shortly after."""

    def __init__(self, stack: Stack, victims: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.stack, self.victims, self.rng = stack, victims, random.Random(seed)
        self.halt = threading.Event()
        self.kills: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        while not self.halt.wait(self.rng.uniform(0.5, 2.0)):
            name = self.rng.choice(self.victims)
            self.stack.procs[name].kill()
            self.kills[name] += 1
            time.sleep(self.rng.uniform(0.1, 1.0))
            self.stack.start_service(name)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
        for name, svc in self.stack.procs.items():
            if not svc.alive():
                self.stack.start_service(name)


def test_kill_9_anything_loses_no_run_and_applies_no_effect_twice(
    tmp_stack: list[Stack], tmp_path: Path
) -> None:
    stack = make_stack(tmp_path, bmc_systems=10, bmc_power_delay_s=0)
    tmp_stack.append(stack.start())
    api = Api(stack.api_url, stack.token())
    assert stack.bmc is not None
    servers = register_servers(stack, api)
    systems = {srv: sys_.id for srv, sys_ in zip(servers, stack.bmc.systems, strict=True)}
    power_before = {srv: stack.bmc.power_state(systems[srv]) for srv in servers}
    resets_before = _resets(stack)

    seed = int(time.time())
    print(f"chaos seed {seed}")
    chaos = Chaos(stack, ["orchestrator", "bmc-agent", "projector", "gateway"], seed)
    chaos.start()
    accepted: list[tuple[str, str]] = []
    deadline = time.monotonic() + 240
    try:
        for i in range(200):
            srv = servers[i % len(servers)]
            body = {"type": "test.power-cycle", "resourceId": srv}
            run_id = submit(api, body, deadline, key=f"cycle-{i}")
            assert run_id is not None, "could not get runs accepted"
            accepted.append((run_id, srv))
            time.sleep(0.05)
        # the chaos goes on while the accepted runs are worked off, until it has killed at least
        # MIN_KILLS times: a faster engine accepts the 200 runs in fewer seconds
        while sum(chaos.kills.values()) < MIN_KILLS and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
    finally:
        chaos.stop()
    print(f"kills: {dict(chaos.kills)}")
    assert sum(chaos.kills.values()) >= MIN_KILLS

    runs = [r for r, _ in accepted]
    final = wait_all(api, runs, timeout=240)
    statuses = collections.Counter(v["status"] for v in final.values())
    assert statuses == {"completed": len(runs)}, statuses
    check_histories(api, runs)

    # one Reset per power step that had to change the state: none applied twice
    resets = _resets(stack)
    per_server = collections.Counter(srv for _, srv in accepted)
    for srv in servers:
        n = per_server[srv]
        expected = 2 * n - (1 if power_before[srv] == "Off" else 0)
        got = resets[systems[srv]] - resets_before[systems[srv]]
        assert got == expected, f"{srv}: {got} resets for {n} power cycles (expected {expected})"
    # and no lock outlives its run
    deadline = time.monotonic() + 15
    while held_locks(stack):
        assert time.monotonic() < deadline, f"locks left: {held_locks(stack)}"
        time.sleep(0.5)


def _resets(stack: Stack) -> collections.Counter[str]:
    assert stack.bmc is not None
    out: collections.Counter[str] = collections.Counter()
    for req in stack.bmc.requests():
        if req.method == "POST" and req.path.endswith("/Actions/ComputerSystem.Reset"):
            out[req.path.split("/")[4]] += 1
    return out


def test_broker_restart_mid_load_loses_no_accepted_run(
    tmp_stack: list[Stack], tmp_path: Path
) -> None:
    stack = make_stack(tmp_path, bmc_systems=2, test_agent=True)
    tmp_stack.append(stack.start())
    api = Api(stack.api_url, stack.token())
    servers = register_servers(stack, api)
    accepted: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            body = {"type": "bench.noop5", "resourceId": servers[i % 2]}
            try:
                r = api.post("/v1/workflows/runs", json=body)
                if r.status_code == 202:
                    accepted.append(r.json()["meta"]["workflowId"])
                else:
                    assert r.status_code == 503, r.text
            except httpx.HTTPError:
                pass
            i += 1
            time.sleep(0.02)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(2)
    assert stack.nats is not None
    before = len(accepted)
    stack.nats.stop()  # SIGTERM: the broker goes away with runs in flight
    time.sleep(2)
    stack.nats.start()
    time.sleep(4)
    stop.set()
    loader.join(timeout=10)
    assert before > 10
    assert len(accepted) > before  # accepting again after the restart
    final = wait_all(api, accepted, timeout=120)
    assert collections.Counter(v["status"] for v in final.values()) == {"completed": len(accepted)}
    check_histories(api, accepted)


def test_two_orchestrators_never_double_decide(tmp_stack: list[Stack], tmp_path: Path) -> None:
    stack = make_stack(tmp_path, bmc_systems=1, test_agent=True, orchestrators=2)
    tmp_stack.append(stack.start())
    api = Api(stack.api_url, stack.token())
    (server,) = register_servers(stack, api)

    async def burst(n: int) -> list[str]:
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {stack.token()}"}
        ) as c:
            sem = asyncio.Semaphore(32)

            async def one() -> str:
                async with sem:
                    r = await c.post(
                        "/v1/workflows/runs", json={"type": "bench.noop5", "resourceId": server}
                    )
                    assert r.status_code == 202, r.text
                    return str(r.json()["meta"]["workflowId"])

            return await asyncio.gather(*(one() for _ in range(n)))

    t0 = time.monotonic()
    runs = asyncio.run(burst(300))
    final = wait_all(api, runs, timeout=120)
    elapsed = time.monotonic() - t0
    assert collections.Counter(v["status"] for v in final.values()) == {"completed": 300}
    print(
        f"two orchestrators: 300 five-step runs in {elapsed:.1f}s "
        f"({300 / elapsed:.0f} runs/s incl. polling)"
    )
    check_histories(api, runs)
