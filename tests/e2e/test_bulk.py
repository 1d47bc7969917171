"""Bulk retry and cancel by filter (``POST /v1/workflows/runs:retry|cancel``) through the real
processes, each with eligible and ineligible runs mixed: a dry run counts first, the cap bounds a
call, a real call answers 207 with one result per run, and repeating a bulk retry retries
nothing twice. Test workflow types run on the test executor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from infraflow.common.streams import KV_IDEMPOTENCY
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .conftest import Api, register_all

pytestmark = pytest.mark.e2e

CAP = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("bulk")
    s = Stack(
        base_dir=base / "stack",
        bmc_systems=3,
        kube=False,
        test_agent=True,
        catalog_extra_file=str(write_catalog(base / "catalog.json")),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        extra_env={"INFRAFLOW_BULK_MAX_RUNS": str(CAP)},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def servers(stack: Stack, api: Api) -> list[str]:
    return register_all(stack, api, "bulk")


def kv(stack: Stack, key: str, *, present: bool) -> None:
    async def change() -> None:
        nc = await nats.connect(stack.nats_url)
        try:
            bucket = await nc.jetstream().key_value(KV_IDEMPOTENCY)
            await (bucket.put(key, b"1") if present else bucket.purge(key))
        finally:
            await nc.close()

    asyncio.run(change())


def start(api: Api, type_: str, server: str, script: dict[str, Any] | None = None) -> str:
    body = {"type": type_, "resourceId": server, "input": {"script": script or {}}}
    r = api.post("/v1/workflows/runs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["meta"]["workflowId"])


def wait_for(api: Api, run_id: str, ok: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = api.run(run_id)
        if ok(run):
            return run
        assert time.monotonic() < deadline, f"{run_id}: {run['status']}"
        time.sleep(0.1)


def by_run(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The results of a 207 body's ``data`` by run id."""
    return {item["runId"]: item for item in data["results"]}


def test_bulk_retry_by_filter(stack: Stack, api: Api, servers: list[str]) -> None:
    server = servers[0]
    flag = f"bulk.fail.{server}"
    kv(stack, flag, present=True)
    script = {"c": {"fail": "FLAKY_HW", "failWhile": flag}}
    first, second = (start(api, "test.steps", server, script) for _ in range(2))
    done = start(api, "test.steps", server)
    saga = start(api, "test.saga", server, {"finish": {"fail": "BOOM", "retryable": False}})
    assert [api.wait_run(r)["status"] for r in (first, second, done, saga)] == [
        "failed",
        "failed",
        "completed",
        "failed",
    ]
    mixed = {"resourceId": server, "type": ["test.steps"], "status": "failed,completed"}

    # dry run first: the count, and the runs a real call would act on (newest first)
    r = api.post("/v1/workflows/runs:retry", json={"filter": mixed, "dryRun": True})
    assert r.status_code == 200, r.text
    preview = r.json()["data"]
    assert preview["matched"] == 3
    assert preview["matchedExact"] is True
    assert preview["runIds"] == [done, second, first]
    assert preview["limit"] == CAP
    assert preview["hasMore"] is False
    r = api.post("/v1/workflows/runs:retry", json={"filter": mixed, "dryRun": True, "limit": 2})
    assert r.json()["data"]["runIds"] == [done, second]
    assert r.json()["data"]["hasMore"] is True
    # the cap per call
    r = api.post("/v1/workflows/runs:retry", json={"filter": mixed, "limit": CAP + 1})
    assert r.status_code == 400
    assert "limit" in r.json()["error"]["details"]["fields"]

    # the real thing: 207, one result per run; the completed run is refused
    kv(stack, flag, present=False)
    r = api.post("/v1/workflows/runs:retry", json={"filter": mixed, "fromStep": "c"})
    assert r.status_code == 207, r.text
    body = r.json()["data"]
    assert (body["matched"], body["accepted"], body["failed"]) == (3, 2, 1)
    results = by_run(body)
    assert results[done]["status"] == 409
    assert results[done]["error"]["code"] == "INVALID_STATE_TRANSITION"
    retries = {}
    for original in (first, second):
        item = results[original]
        assert item["status"] == 202
        assert item["success"] is True
        assert item["data"]["retryOf"] == original
        assert item["data"]["fromStep"] == "c"
        retries[original] = item["meta"]["workflowId"]
        assert item["meta"]["location"] == f"/v1/workflows/runs/{retries[original]}"
    for original, retry in retries.items():
        run = api.wait_run(retry)
        assert run["status"] == "completed"
        assert run["retryOf"] == original
        assert [s["status"] for s in run["steps"]] == ["skipped", "skipped", "succeeded"]

    # repeating it retries nothing twice
    r = api.post("/v1/workflows/runs:retry", json={"filter": mixed, "fromStep": "c"})
    assert r.status_code == 207
    again = by_run(r.json()["data"])
    assert r.json()["data"]["accepted"] == 0
    for original, retry in retries.items():
        assert again[original]["error"]["code"] == "CONFLICT"
        assert again[original]["error"]["details"]["retries"] == [retry]
        assert again[retry]["error"]["code"] == "INVALID_STATE_TRANSITION"  # it completed

    # without a status the filter selects what the action applies to (failed, cancelled)
    r = api.post("/v1/workflows/runs:retry", json={"filter": {"resourceId": [server]}})
    assert r.status_code == 207
    results = by_run(r.json()["data"])
    assert set(results) == {first, second, saga}
    assert results[saga]["status"] == 202
    assert api.wait_run(results[saga]["meta"]["workflowId"])["status"] == "failed"  # same input


def test_bulk_cancel_by_filter(stack: Stack, api: Api, servers: list[str]) -> None:
    one, two = servers[1], servers[2]
    finished = start(api, "test.steps", two)
    assert api.wait_run(finished)["status"] == "completed"
    holders = [start(api, "test.hold", s) for s in (one, two)]
    for holder in holders:
        wait_for(
            api,
            holder,
            lambda run: run["status"] == "running" and run["steps"][1]["status"] == "running",
        )
    queued = start(api, "test.steps", one)
    wait_for(api, queued, lambda run: run.get("waitingFor") == holders[0])
    selector = {
        "resourceId": [one, two],
        "type": "test.hold,test.steps",
        "status": ["pending", "running", "completed"],
    }
    r = api.post("/v1/workflows/runs:cancel", json={"filter": selector, "dryRun": True})
    assert r.status_code == 200, r.text
    assert set(r.json()["data"]["runIds"]) == {finished, *holders, queued}
    assert r.json()["data"]["matched"] == 4

    # refused before anything happens: unknown fields, bad filters, who may not
    bad = api.post("/v1/workflows/runs:cancel", json={"filter": {"colour": "red"}})
    assert bad.status_code == 400
    bad = api.post("/v1/workflows/runs:cancel", json={"filter": {"status": "exploded"}})
    assert bad.status_code == 400
    assert "filter.status" in bad.json()["error"]["details"]["fields"]
    reader = Api(stack.api_url, stack.token("bulk-reader", roles=["support"]))
    assert reader.post("/v1/workflows/runs:cancel", json={"filter": selector}).status_code == 403
    operator = Api(stack.api_url, stack.token("bulk-operator", roles=["provider_operator"]))
    r = operator.post("/v1/workflows/runs:cancel", json={"filter": selector, "terminate": True})
    assert r.status_code == 403
    assert all(api.run(h)["status"] == "running" for h in holders)

    r = api.post("/v1/workflows/runs:cancel", json={"filter": selector, "reason": "maintenance"})
    assert r.status_code == 207, r.text
    body = r.json()["data"]
    assert (body["matched"], body["accepted"], body["failed"]) == (4, 3, 1)
    results = by_run(body)
    assert results[finished]["error"]["code"] == "INVALID_STATE_TRANSITION"
    for run_id in (*holders, queued):
        assert results[run_id]["status"] == 202
        assert results[run_id]["data"]["cancelRequested"] is True
        assert api.wait_run(run_id)["status"] == "cancelled"
    assert [c["name"] for c in api.run(holders[0])["compensation"]] == ["undo_prepare"]
    # nothing left to cancel
    r = api.post("/v1/workflows/runs:cancel", json={"filter": {"resourceId": [one, two]}})
    assert r.status_code == 207
    assert r.json()["data"]["results"] == []
