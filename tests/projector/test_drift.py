"""Drift: observations compared with the cache start ``sync.*`` runs (core rules, and the
projector following ``INFRA_OBSERVED`` against a real broker and read model)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import streams, subjects
from infraflow.common.contracts import ResourceObserved, StartRun, decode_command, encode
from infraflow.common.ids import id_time_ms, is_id, new_id
from infraflow.devtools.nats_server import NatsServer
from infraflow.projector.core import drift
from infraflow.projector.core.state import ResourceState, to_micros

from .support import T0, RunHistory, publish, running, settings_for, wait_applied

RULE = drift.RULES["cluster"]


def cached(**over: Any) -> ResourceState:
    values: dict[str, Any] = {
        "id": new_id("cls"),
        "type": "cluster",
        "state": "ready",
        "project_id": "prj-a",
        "attributes": {"phase": "Ready", "ready": True, "workers": 2, "conditions": [1]},
        "observed_at": 1_000,
        "created_at": 500,
    }
    values.update(over)
    return ResourceState(**values)


def seen(resource: ResourceState, at: int = 2_000, gone: bool = False, **state: Any) -> Any:
    return drift.Observation(
        resource_type=resource.type,
        resource_id=resource.id,
        observed_at=at,
        state={"phase": "Ready", "ready": True, "workers": 2, "conditions": [2], **state},
        gone=gone,
        seq=7,
    )


def test_a_changed_compared_field_is_drift_and_others_are_not() -> None:
    r = cached()
    assert drift.assess(RULE, seen(r), r).verdict == "in_sync"  # conditions are not compared
    found = drift.assess(RULE, seen(r, phase="Failed", ready=False), r)
    assert found.verdict == "drift"
    assert found.differences == {
        "phase": {"cached": "Ready", "observed": "Failed"},
        "ready": {"cached": True, "observed": False},
    }
    gone = drift.assess(RULE, seen(r, gone=True), r)
    assert gone.verdict == "drift"
    assert gone.differences["phase"]["observed"] == "Deleted"


def test_what_is_not_drift() -> None:
    r = cached()
    assert drift.assess(RULE, seen(r, phase="Failed"), None).verdict == "unknown"
    assert drift.assess(RULE, seen(r, phase="Failed"), cached(state="deleted")).verdict == (
        "settled"
    )
    busy = cached(active_run_id=new_id("run"))
    assert drift.assess(RULE, seen(busy, phase="Failed"), busy).verdict == "busy"
    assert drift.assess(RULE, seen(r, at=999, phase="Failed"), r).verdict == "stale"


def test_debounce_and_refresh_rules() -> None:
    tracker = drift.DriftTracker(min_interval=10)
    key = ("cluster", "cls_x")
    assert tracker.due(key, 0)
    tracker.record(key, 0)
    assert not tracker.due(key, 9)
    assert tracker.due(key, 10)
    tracker.forget_before(20)
    assert tracker.started == {}
    assert drift.needs_refresh(cached(observed_at=0), now=100, max_age=100)
    assert not drift.needs_refresh(cached(observed_at=50), now=100, max_age=100)


def test_sync_runs_are_derived_alike_by_every_replica() -> None:
    key = ("cluster", "cls_x")
    a = drift.sync_run_id(key, "obs:7", 1_700_000_000_000_000)
    assert a == drift.sync_run_id(key, "obs:7", 1_700_000_000_000_000)
    assert a != drift.sync_run_id(key, "obs:8", 1_700_000_000_000_000)
    assert is_id(a, "run")
    assert id_time_ms(a) == 1_700_000_000_000
    r = cached(site="dc1")
    cmd = drift.sync_command(
        RULE, r, run_id=a, reason="drift", diff={"phase": {}}, estimate_ms=5, now=10**15
    )
    assert cmd.workflow_type == "sync.cluster-state"
    assert (cmd.resource_type, cmd.resource_id, cmd.project_id, cmd.site) == (
        "cluster",
        r.id,
        "prj-a",
        "dc1",
    )
    assert cmd.triggered_by == "projector"
    assert cmd.input["reason"] == "drift"


def test_vm_rule() -> None:
    rule = drift.RULES["vm"]
    r = cached(
        id=new_id("vm"), type="vm", attributes={"phase": "Running", "ready": True, "running": True}
    )
    stopped = drift.Observation(
        resource_type="vm",
        resource_id=r.id,
        observed_at=2_000,
        state={"phase": "Stopped", "ready": False, "running": False, "cpu": 4},
    )
    assert set(drift.assess(rule, stopped, r).differences) == {"phase", "ready", "running"}


async def start_commands(js: JetStreamContext) -> list[StartRun]:
    info = await js.stream_info(streams.COMMANDS)
    out: list[StartRun] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(streams.COMMANDS, seq)
        command = decode_command(msg.data or b"")
        if isinstance(command, StartRun):
            out.append(command)
    return out


async def observe(js: JetStreamContext, rid: str, at: datetime, **state: Any) -> None:
    observation = ResourceObserved(
        resource_type="cluster",
        resource_id=rid,
        observed_at=at,
        source="test",
        state={"phase": "Ready", "ready": True, "workers": 2, **state},
    )
    await js.publish(subjects.observed("cluster", rid), encode(observation))


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_projector_starts_a_sync_run_on_drift_once_and_on_resync(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    rid = new_id("cls")
    create = RunHistory(
        "cluster.create",
        resource_type="cluster",
        resource_id=rid,
        project_id="prj-a",
        input={"name": "c", "template": "t", "credential": "x", "workers": 2},
    ).happy({1: {"resource": {"phase": "Ready", "ready": True, "workers": 2}}})
    last = await publish(js, create.events)
    settings = settings_for(
        nats_server.url,
        tmp_path / "p.db",
        drift={"settle_s": 0.05, "min_interval_s": 60, "resync_interval_s": 3600},
    )
    async with running(settings, nc, js) as projector:
        await wait_applied(projector, last)
        now = datetime.now(UTC)
        await observe(js, rid, now)  # agrees with the cache: nothing to do
        await observe(js, rid, now + timedelta(seconds=1), phase="Failed", ready=False)
        runs = await until(lambda: start_commands(js))
        assert len(runs) == 1
        run = runs[0]
        assert run.workflow_type == "sync.cluster-state"
        assert (run.resource_type, run.resource_id, run.project_id) == ("cluster", rid, "prj-a")
        assert run.triggered_by == "projector"
        assert run.input["differences"]["phase"] == {"cached": "Ready", "observed": "Failed"}
        # more drift on the same resource within the minimum interval starts nothing more
        await observe(js, rid, now + timedelta(seconds=2), phase="NotReady", ready=False)
        await asyncio.sleep(0.5)
        assert len(await start_commands(js)) == 1
        assert projector.drift.stats.drift_runs == 1

        # a periodic resync refreshes a resource not observed for longer than the max age
        projector.drift.settings = projector.drift.settings.model_copy(
            update={"max_observation_age_s": 1.0}
        )
        projector.drift.tracker.started.clear()
        projector.drift.latest.clear()
        await projector.drift.resync()
        runs = await start_commands(js)
        assert len(runs) == 2
        assert runs[1].input["reason"] == "resync"
        assert to_micros(T0) < to_micros(datetime.now(UTC))
