"""The durable engine over REST, through real processes: retry-from-step, cancel (running and
pending), terminate, compensation after a failing step, FIFO per resource, fail-fast busy and
idempotency keys. Test workflow types run on the test executor (infraflow.devtools.test_agent)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from infraflow.common.invariants import assert_well_formed
from infraflow.common.streams import KV_IDEMPOTENCY
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .conftest import Api, register_all

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("engine")
    catalog = write_catalog(base / "catalog.json")
    s = Stack(
        base_dir=base / "stack",
        bmc_systems=3,
        kube=False,
        test_agent=True,
        catalog_extra_file=str(catalog),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def servers(stack: Stack, api: Api) -> list[str]:
    """Three registered servers (real register runs against the Redfish emulator)."""
    return register_all(stack, api, "node")


def kv_put(stack: Stack, key: str, value: bytes = b"1") -> None:
    async def put() -> None:
        nc = await nats.connect(stack.nats_url)
        try:
            kv = await nc.jetstream().key_value(KV_IDEMPOTENCY)
            await kv.put(key, value)
        finally:
            await nc.close()

    asyncio.run(put())


def kv_delete(stack: Stack, key: str) -> None:
    async def delete() -> None:
        nc = await nats.connect(stack.nats_url)
        try:
            kv = await nc.jetstream().key_value(KV_IDEMPOTENCY)
            await kv.purge(key)
        finally:
            await nc.close()

    asyncio.run(delete())


def start(
    api: Api, type_: str, server: str, input_: dict[str, Any] | None = None, **params: str
) -> str:
    r = api.post(
        "/v1/workflows/runs",
        json={"type": type_, "resourceId": server, "input": input_ or {}},
        params=params,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["meta"]["workflowId"])


def wait_status(api: Api, run_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = api.run(run_id)
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"{run_id} is {run['status']}, not {status}"
        time.sleep(0.1)


def wait_until(api: Api, run_id: str, ok: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = api.run(run_id)
        if ok(run):
            return run
        assert time.monotonic() < deadline, f"{run_id}: condition not met: {run}"
        time.sleep(0.1)


def wait_step(api: Api, run_id: str, step: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        steps = {s["name"]: s["status"] for s in api.run(run_id)["steps"]}
        if steps.get(step) == status:
            return
        assert time.monotonic() < deadline, f"{step} of {run_id} is {steps.get(step)}"
        time.sleep(0.1)


def test_compensation_after_a_failing_step(api: Api, servers: list[str]) -> None:
    run_id = start(
        api, "test.saga", servers[0], {"script": {"finish": {"fail": "BOOM", "retryable": False}}}
    )
    run = api.wait_run(run_id)
    assert run["status"] == "failed"
    assert run["error"]["code"] == "BOOM"
    assert run["error"]["step"] == "finish"
    assert [c["name"] for c in run["compensation"]] == ["undo_configure", "undo_reserve"]
    assert all(c["status"] == "succeeded" for c in run["compensation"])
    assert_well_formed(api.events(run_id))
    # steps that were undone cannot be skipped by a retry
    r = api.post(f"/v1/workflows/runs/{run_id}/retry", json={"fromStep": "finish"})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "INVALID_STATE_TRANSITION"


def test_retry_from_step_keeps_earlier_outputs(stack: Stack, api: Api, servers: list[str]) -> None:
    flag = f"fail.{servers[1]}"
    kv_put(stack, flag)
    original = start(
        api, "test.steps", servers[1], {"script": {"c": {"fail": "FLAKY_HW", "failWhile": flag}}}
    )
    failed = api.wait_run(original)
    assert failed["status"] == "failed"
    r = api.post(f"/v1/workflows/runs/{original}/retry", json={"fromStep": "nope"})
    assert r.status_code == 400
    assert "fromStep" in r.json()["error"]["details"]["fields"]
    kv_delete(stack, flag)
    r = api.post(f"/v1/workflows/runs/{original}/retry", json={"fromStep": "c"})
    assert r.status_code == 202, r.text
    retry = r.json()["meta"]["workflowId"]
    assert r.json()["data"]["retryOf"] == original
    run = api.wait_run(retry)
    assert run["status"] == "completed"
    assert run["retryOf"] == original
    assert run["fromStep"] == "c"
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["a"]["status"] == "skipped"
    assert steps["b"]["status"] == "skipped"
    assert steps["a"]["output"] == {"recorded": "a", "attempt": 1}
    assert steps["c"]["status"] == "succeeded"
    assert retry in api.run(original)["retries"]
    assert_well_formed(api.events(retry))
    # a completed run cannot be retried
    r = api.post(f"/v1/workflows/runs/{retry}/retry", json={})
    assert r.status_code == 409


def test_cancel_running_then_pending_and_fifo(stack: Stack, api: Api, servers: list[str]) -> None:
    holder = start(api, "test.hold", servers[2])
    wait_step(api, holder, "hold", "running")
    queued = [start(api, "test.saga", servers[2]) for _ in range(3)]
    for q in queued:
        run = wait_until(api, q, lambda r: r.get("waitingFor") is not None)
        assert run["status"] == "pending"
        assert run["waitingFor"] == holder
    # fail fast instead of queueing
    r = api.post(
        "/v1/workflows/runs",
        json={"type": "test.saga", "resourceId": servers[2]},
        params={"onBusy": "fail"},
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "RESOURCE_BUSY"
    assert r.json()["error"]["details"]["runId"] == holder
    # cancel a pending run: no step ran, nothing to compensate
    r = api.post(f"/v1/workflows/runs/{queued[1]}/cancel", json={"reason": "not needed"})
    assert r.status_code == 202
    cancelled = api.wait_run(queued[1])
    assert cancelled["status"] == "cancelled"
    assert cancelled["steps"][0]["status"] in ("pending", "not_started", "waiting") or not any(
        s.get("attempts") for s in cancelled["steps"]
    )
    # cancel the running holder: its in-flight step stops, the finished step is compensated
    r = api.post(f"/v1/workflows/runs/{holder}/cancel", json={})
    assert r.status_code == 202
    run = api.wait_run(holder)
    assert run["status"] == "cancelled"
    assert [c["name"] for c in run["compensation"]] == ["undo_prepare"]
    # the others start in FIFO order
    first, third = api.wait_run(queued[0]), api.wait_run(queued[2])
    assert first["status"] == third["status"] == "completed"
    assert first["startedAt"] <= third["startedAt"]
    for run_id in (holder, *queued):
        assert_well_formed(api.events(run_id))
    # cancelling a finished run is refused
    assert api.post(f"/v1/workflows/runs/{holder}/cancel", json={}).status_code == 409


def test_terminate_is_a_hard_stop(api: Api, servers: list[str]) -> None:
    holder = start(api, "test.hold", servers[0])
    wait_step(api, holder, "hold", "running")
    r = api.post(f"/v1/workflows/runs/{holder}/cancel", json={"terminate": True})
    assert r.status_code == 202
    run = api.wait_run(holder)
    assert run["status"] == "cancelled"
    assert run["compensation"] == []
    events = api.events(holder)
    assert_well_formed(events)
    final = (
        events[-1]
        if events[-1].name == "run_cancelled"
        else next(e for e in events if e.name == "run_cancelled")
    )
    assert final.terminated  # type: ignore[attr-defined]
    # the resource is free again
    after = start(api, "test.saga", servers[0])
    assert api.wait_run(after)["status"] == "completed"


def test_idempotency_key_returns_the_first_run(api: Api, servers: list[str]) -> None:
    body = {"type": "test.saga", "resourceId": servers[1], "input": {}}
    h = {"Idempotency-Key": "e2e-key-1"}
    a = api.post("/v1/workflows/runs", json=body, headers=h)
    b = api.post("/v1/workflows/runs", json=body, headers=h)
    assert a.status_code == b.status_code == 202
    assert a.json()["meta"]["workflowId"] == b.json()["meta"]["workflowId"]
    c = api.post("/v1/workflows/runs", json={**body, "input": {"x": 1}}, headers=h)
    assert c.status_code == 409
    assert api.wait_run(a.json()["meta"]["workflowId"])["status"] == "completed"
