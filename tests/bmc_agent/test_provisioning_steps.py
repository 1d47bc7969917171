"""The ``provisioning`` executor against a real nats-server: per-site slots and the durable
callback wait (callback before the wait, during it, never, failed; deadlines across attempts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.bmc_agent.adapters.provisioning import ProvisioningStore
from infraflow.bmc_agent.provisioning import ProvisioningActions
from infraflow.common import streams, subjects
from infraflow.common.agent import StepCancelledError, StepContext, StepError, StepWorker
from infraflow.common.contracts import ErrorInfo, ExecuteStep, RunFailed, encode
from infraflow.common.ids import new_id
from infraflow.common.provisioning import ProvisioningCallback, callback_key

CAPS = {"dc1": 2, "open": 0}


@pytest.fixture
async def store(js: JetStreamContext) -> AsyncIterator[ProvisioningStore]:
    s = await ProvisioningStore.open(js, poll_s=30.0)  # long poll: only nudges wake a wait
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def actions(store: ProvisioningStore) -> ProvisioningActions:
    return ProvisioningActions(store, lambda site: CAPS.get(site, 1), slot_poll_s=0.1)


@pytest.fixture
def worker(nc: Client, js: JetStreamContext) -> StepWorker:
    return StepWorker(nc, js, "provisioning", list(CAPS), {})


def command(
    action: str,
    *,
    run_id: str | None = None,
    server_id: str | None = None,
    site: str = "dc1",
    attempt: int = 1,
    run_input: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    timeout_s: float = 60.0,
) -> ExecuteStep:
    return ExecuteStep(
        run_id=run_id or new_id("run"),
        resource_type="server",
        resource_id=server_id or new_id("srv"),
        workflow_type="server.provision",
        step=action,
        index=0,
        attempt=attempt,
        executor="provisioning",
        action=action,
        site=site,
        input=run_input or {},
        outputs=outputs or {},
        timeout_s=timeout_s,
    )


async def record_callback(
    js: JetStreamContext, cmd: ExecuteStep, status: str = "succeeded"
) -> None:
    kv = await js.key_value(streams.KV_PROVISIONING)
    record = ProvisioningCallback(
        run_id=cmd.run_id,
        server_id=cmd.resource_id,
        status=status,  # type: ignore[arg-type]
        message="disk wiped" if status == "failed" else None,
        received_at=datetime.now(UTC),
    )
    await kv.create(callback_key(cmd.run_id), encode(record))


# ---- slots ----------------------------------------------------------------------------------


async def test_a_site_runs_at_most_cap_provisionings(
    actions: ProvisioningActions, worker: StepWorker, store: ProvisioningStore
) -> None:
    a, b, c = (command("acquire_slot") for _ in range(3))
    out_a = await actions.acquire_slot(StepContext(worker, a, None))
    out_b = await actions.acquire_slot(StepContext(worker, b, None))
    assert {out_a["slot"], out_b["slot"]} == {0, 1}
    # a repeated attempt of a run that holds a slot gets the same slot back
    again = await actions.acquire_slot(StepContext(worker, a, None))
    assert again["slot"] == out_a["slot"]

    waiting = asyncio.create_task(actions.acquire_slot(StepContext(worker, c, None)))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # the third waits for a slot
    # other sites are not affected: no cap there
    free = await actions.acquire_slot(
        StepContext(worker, command("acquire_slot", site="open"), None)
    )
    assert free["slot"] is None

    release = command("release_slot", run_id=a.run_id, outputs={"acquire_slot": out_a})
    assert (await actions.release_slot(StepContext(worker, release, None)))["slot"] == out_a["slot"]
    out_c = await asyncio.wait_for(waiting, 5)
    assert out_c["slot"] == out_a["slot"]
    assert out_c["waited"] is True
    assert sorted(await store.holders("dc1", 2)) == sorted([b.run_id, c.run_id])
    # releasing twice (a retried compensation) is harmless
    assert (await actions.release_slot(StepContext(worker, release, None)))["slot"] is None


async def test_a_slot_of_an_ended_run_is_taken_over(
    actions: ProvisioningActions, worker: StepWorker, js: JetStreamContext
) -> None:
    holders = [command("acquire_slot") for _ in range(2)]
    for h in holders:
        await actions.acquire_slot(StepContext(worker, h, None))
    dead = holders[0]
    # the run died without giving its slot back, but its log says it ended
    failed = RunFailed(
        event_id=new_id("evt"),
        run_id=dead.run_id,
        resource_type="server",
        resource_id=dead.resource_id,
        time=datetime.now(UTC),
        error=ErrorInfo(code="BOOM", message="gone"),
    )
    await js.publish(
        subjects.event("server", dead.resource_id, dead.run_id, "run_failed"),
        encode(failed),
        stream=streams.EVENTS,
    )
    newcomer = command("acquire_slot")
    out = await asyncio.wait_for(actions.acquire_slot(StepContext(worker, newcomer, None)), 5)
    assert out["slot"] == 0


async def test_waiting_for_a_slot_stops_when_cancelled(
    actions: ProvisioningActions, worker: StepWorker
) -> None:
    for _ in range(2):
        await actions.acquire_slot(StepContext(worker, command("acquire_slot"), None))
    ctx = StepContext(worker, command("acquire_slot"), None)
    waiting = asyncio.create_task(actions.acquire_slot(ctx))
    await asyncio.sleep(0.2)
    ctx.cancelled.set()
    with pytest.raises(StepCancelledError):
        await asyncio.wait_for(waiting, 2)


# ---- callbacks ------------------------------------------------------------------------------


async def test_a_callback_that_came_first_is_found_at_once(
    actions: ProvisioningActions, worker: StepWorker, js: JetStreamContext
) -> None:
    cmd = command("wait_callback")
    await record_callback(js, cmd)
    out = await asyncio.wait_for(actions.wait_callback(StepContext(worker, cmd, None)), 2)
    assert out["installer"]["status"] == "succeeded"


async def test_a_callback_during_the_wait_wakes_it(
    actions: ProvisioningActions, worker: StepWorker, js: JetStreamContext
) -> None:
    cmd = command("wait_callback")
    waiting = asyncio.create_task(actions.wait_callback(StepContext(worker, cmd, None)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    t0 = time.monotonic()
    await record_callback(js, cmd)
    out = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - t0 < 2  # the nudge, not the 30 s poll
    assert out["installer"]["status"] == "succeeded"


async def test_an_installer_failure_fails_the_step(
    actions: ProvisioningActions, worker: StepWorker, js: JetStreamContext
) -> None:
    cmd = command("wait_callback")
    await record_callback(js, cmd, status="failed")
    with pytest.raises(StepError) as failure:
        await actions.wait_callback(StepContext(worker, cmd, None))
    assert failure.value.code == "INSTALLER_FAILED"
    assert failure.value.retryable is False
    assert "disk wiped" in failure.value.message


async def test_no_callback_times_out_and_the_deadline_survives_a_retry(
    actions: ProvisioningActions, worker: StepWorker
) -> None:
    cmd = command("wait_callback", run_input={"callbackTimeoutS": 2})
    first = asyncio.create_task(actions.wait_callback(StepContext(worker, cmd, None)))
    await asyncio.sleep(1.2)
    first.cancel()  # the agent died mid-wait
    retried = command(
        "wait_callback",
        run_id=cmd.run_id,
        server_id=cmd.resource_id,
        attempt=2,
        run_input={"callbackTimeoutS": 2},
    )
    t0 = time.monotonic()
    with pytest.raises(StepError) as failure:
        await actions.wait_callback(StepContext(worker, retried, None))
    assert time.monotonic() - t0 < 1.5  # what was left of the first deadline, not 2 s again
    assert failure.value.code == "INSTALLER_CALLBACK_TIMEOUT"
    assert failure.value.retryable is False


async def test_the_wait_never_outlives_its_step_timeout(
    actions: ProvisioningActions, worker: StepWorker
) -> None:
    cmd = command("wait_callback", run_input={"callbackTimeoutS": 3600}, timeout_s=2.0)
    with pytest.raises(StepError) as failure:
        await asyncio.wait_for(actions.wait_callback(StepContext(worker, cmd, None)), 5)
    assert failure.value.details["timeoutS"] == 1.0
