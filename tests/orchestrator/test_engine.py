"""The engine end to end in-process: decisions, agents' facts, timers, locks, compensation."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import streams
from infraflow.common.agent import StepContext, StepError
from infraflow.common.catalog import RetryPolicy, WorkflowType
from infraflow.common.contracts import ExecuteStep
from infraflow.common.invariants import assert_well_formed

from .harness import catalog_with, engine, step

FIVE = WorkflowType(
    name="test.five",
    trigger="test",
    description="five no-op steps",
    resource_type="server",
    steps=tuple(step(f"s{i}", action="noop") for i in range(5)),
)


async def noop(ctx: StepContext) -> dict[str, Any]:
    return {"step": ctx.command.step}


async def test_five_steps_complete_in_order(nc: Client, js: JetStreamContext) -> None:
    async with engine(nc, js, catalog_with(FIVE), {"noop": noop}) as eng:
        run = await eng.start_run("test.five")
        events = await eng.wait_terminal(run)
    assert_well_formed(events)
    assert events[-1].name == "run_completed"
    assert [e.step for e in events if e.name == "step_succeeded"] == [f"s{i}" for i in range(5)]


async def test_many_runs_in_parallel_all_complete(nc: Client, js: JetStreamContext) -> None:
    async with engine(nc, js, catalog_with(FIVE), {"noop": noop}) as eng:
        runs = [await eng.start_run("test.five", resource_id=f"srv_{i}") for i in range(30)]
        results = await asyncio.gather(
            *(eng.wait_terminal(r, f"srv_{i}", timeout=30) for i, r in enumerate(runs))
        )
    for events in results:
        assert_well_formed(events)
        assert events[-1].name == "run_completed"


async def test_retry_then_compensate_in_reverse(nc: Client, js: JetStreamContext) -> None:
    calls: list[str] = []

    async def ok(ctx: StepContext) -> dict[str, Any]:
        calls.append(ctx.command.step)
        return {}

    async def flaky(ctx: StepContext) -> dict[str, Any]:
        calls.append(f"{ctx.command.step}#{ctx.command.attempt}")
        raise StepError("BMC said no", code="BMC_BUSY", retryable=True)

    undo_a = step("undo_a", action="ok")
    undo_b = step("undo_b", action="ok")
    wf = WorkflowType(
        name="test.saga",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(
            step("a", action="ok", compensation=undo_a),
            step("b", action="ok", compensation=undo_b),
            step("c", action="flaky"),
        ),
    )
    async with engine(nc, js, catalog_with(wf), {"ok": ok, "flaky": flaky}) as eng:
        run = await eng.start_run("test.saga")
        events = await eng.wait_terminal(run)
    assert_well_formed(events)
    assert calls == ["a", "b", "c#1", "c#2", "c#3", "undo_b", "undo_a"]
    final = events[-1]
    assert final.name == "run_failed"
    assert final.error.code == "BMC_BUSY"  # type: ignore[attr-defined]
    assert final.error.step == "c"  # type: ignore[attr-defined]
    assert final.compensated  # type: ignore[attr-defined]


async def test_non_retryable_failure_fails_at_once(nc: Client, js: JetStreamContext) -> None:
    async def bad(ctx: StepContext) -> dict[str, Any]:
        raise StepError("wrong password", code="BMC_AUTH_FAILED", retryable=False)

    wf = WorkflowType(
        name="test.bad",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(step("x", action="bad"),),
    )
    async with engine(nc, js, catalog_with(wf), {"bad": bad}) as eng:
        events = await eng.wait_terminal(await eng.start_run("test.bad"))
    assert_well_formed(events)
    assert [e.name for e in events].count("step_scheduled") == 1
    assert events[-1].name == "run_failed"


async def test_step_timeout_retries_then_fails(nc: Client, js: JetStreamContext) -> None:
    async def hang(ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    wf = WorkflowType(
        name="test.slow",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(
            step(
                "x",
                action="hang",
                timeout_s=0.5,
                retry=RetryPolicy(max_attempts=2, initial_interval_s=0.05, jitter=0),
            ),
        ),
    )
    async with engine(nc, js, catalog_with(wf), {"hang": hang}) as eng:
        events = await eng.wait_terminal(await eng.start_run("test.slow"), timeout=20)
    assert_well_formed(events)
    assert [e.name for e in events].count("step_timed_out") == 2
    assert events[-1].name in ("run_failed",)


async def test_cancel_running_step_compensates(nc: Client, js: JetStreamContext) -> None:
    started = asyncio.Event()
    undone: list[str] = []

    async def slow(ctx: StepContext) -> dict[str, Any]:
        started.set()
        for _ in range(300):
            await asyncio.sleep(0.05)
            ctx.check_cancelled()
        return {}

    async def ok(ctx: StepContext) -> dict[str, Any]:
        if ctx.command.phase == "compensation":
            undone.append(ctx.command.step)
        return {}

    wf = WorkflowType(
        name="test.cancel",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(
            step("a", action="ok", compensation=step("undo_a", action="ok")),
            step("b", action="slow"),
        ),
    )
    async with engine(nc, js, catalog_with(wf), {"ok": ok, "slow": slow}) as eng:
        run = await eng.start_run("test.cancel")
        await asyncio.wait_for(started.wait(), 10)
        await eng.cancel(run)
        events = await eng.wait_terminal(run)
    assert_well_formed(events)
    assert events[-1].name == "run_cancelled"
    assert events[-1].compensated  # type: ignore[attr-defined]
    assert undone == ["undo_a"]


async def test_one_run_per_resource_fifo(nc: Client, js: JetStreamContext) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def work(ctx: StepContext) -> dict[str, Any]:
        order.append(ctx.command.run_id)
        if len(order) == 1:
            await gate.wait()
        return {}

    wf = WorkflowType(
        name="test.lock",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(step("w", action="work"),),
    )
    async with engine(nc, js, catalog_with(wf), {"work": work}) as eng:
        first = await eng.start_run("test.lock")
        while not order:
            await asyncio.sleep(0.01)
        second = await eng.start_run("test.lock")
        third = await eng.start_run("test.lock")
        busy = await eng.start_run("test.lock", on_busy="fail")
        busy_events = await eng.wait_terminal(busy)
        await asyncio.sleep(0.3)
        assert order == [first]  # the others wait
        gate.set()
        results = [await eng.wait_terminal(r) for r in (first, second, third)]
    assert order == [first, second, third]
    for evs in results:
        assert_well_formed(evs)
        assert evs[-1].name == "run_completed"
    assert any(e.name == "run_queued" for e in results[1])
    assert busy_events[-1].name == "run_failed"
    assert busy_events[-1].error.code == "RESOURCE_BUSY"  # type: ignore[attr-defined]
    assert busy_events[-1].error.details == {"runId": first}  # type: ignore[attr-defined]


async def test_retry_from_step_skips_completed_steps(nc: Client, js: JetStreamContext) -> None:
    attempts: dict[str, int] = {}
    fail_c = {"on": True}

    async def work(ctx: StepContext) -> dict[str, Any]:
        attempts[ctx.command.step] = attempts.get(ctx.command.step, 0) + 1
        if ctx.command.step == "c" and fail_c["on"]:
            raise StepError("nope", code="X", retryable=False)
        return {"from": ctx.command.step, "run": ctx.command.run_id}

    wf = WorkflowType(
        name="test.retry",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(step("a", action="work"), step("b", action="work"), step("c", action="work")),
    )
    async with engine(nc, js, catalog_with(wf), {"work": work}) as eng:
        original = await eng.start_run("test.retry")
        first = await eng.wait_terminal(original)
        assert first[-1].name == "run_failed"
        fail_c["on"] = False
        retry = await eng.start_run("test.retry", retry_of=original, from_step="c")
        events = await eng.wait_terminal(retry)
        bad = await eng.start_run("test.retry", retry_of=retry, from_step="c")
        bad_events = await eng.wait_terminal(bad)
    assert_well_formed(events)
    assert events[-1].name == "run_completed"
    skipped = [e for e in events if e.name == "step_skipped"]
    assert [e.step for e in skipped] == ["a", "b"]  # type: ignore[attr-defined]
    assert skipped[0].output == {"from": "a", "run": original}  # type: ignore[attr-defined]
    assert attempts == {"a": 1, "b": 1, "c": 2}
    assert bad_events[-1].error.code == "INVALID_STATE_TRANSITION"  # type: ignore[attr-defined]


async def test_facts_are_folded_on_without_reading_the_run_back(
    nc: Client, js: JetStreamContext
) -> None:
    """Each step command carries the run's sequence at dispatch; the agent appends its facts
    expecting the previous event, and the orchestrator folds them onto its cache. A new run
    starts from the empty state (the append expects no events), so a whole five-step run is
    decided without reading it back, and without an attempt check by the agent."""
    async with engine(nc, js, catalog_with(FIVE), {"noop": noop}) as eng:
        run = await eng.start_run("test.five")
        events = await eng.wait_terminal(run)
        assert eng.orch is not None
        log = eng.orch.log
        assert (log.loads, log.follows) == (0, 10)
        assert eng.worker.verdict_reads == 0
    assert_well_formed(events)
    assert events[-1].name == "run_completed"


async def test_a_fact_the_cache_cannot_prove_is_next_is_read_back(
    nc: Client, js: JetStreamContext
) -> None:
    """A fact is folded onto the cache only when it was appended right after the cached
    sequence; otherwise (a cache that lost the run, or is behind another writer) the run is
    read back, and the decision still sees every event."""
    gate = asyncio.Event()

    async def held(ctx: StepContext) -> dict[str, Any]:
        await gate.wait()
        return {}

    wf = WorkflowType(
        name="test.held",
        trigger="t",
        description="d",
        resource_type="server",
        steps=(step("a", action="held"), step("b", action="noop")),
    )
    async with engine(nc, js, catalog_with(wf), {"held": held, "noop": noop}) as eng:
        run = await eng.start_run("test.held")
        while not any(e.name == "step_started" for e in await eng.events(run)):
            await asyncio.sleep(0.02)
        assert eng.orch is not None
        log = eng.orch.log
        await asyncio.sleep(0.1)  # the orchestrator has followed step_started
        state, seq = await log.current("server", "srv_1", run)
        started = (await eng.events(run))[-1]
        assert started.name == "step_started"

        # the chain: only the event appended right after the cached sequence is folded on
        assert not log.follow(run, started, seq + 2, seq + 1)
        assert log.cached(run) is state
        assert log.follow(run, started, seq, seq - 1)  # already reflected: nothing to do
        assert log.cached(run) is state

        log.forget(run)  # e.g. evicted, or another replica started the run
        loads = log.loads
        gate.set()
        events = await eng.wait_terminal(run)
        assert log.loads > loads
    assert_well_formed(events)
    assert events[-1].name == "run_completed"
    assert [e.step for e in events if e.name == "step_succeeded"] == ["a", "b"]


async def test_a_command_whose_run_moved_on_is_checked_and_not_run(
    nc: Client, js: JetStreamContext
) -> None:
    """A step command arriving after its run changed (here: the run finished) fails the
    ``after_seq`` expectation, so the agent reads the run back and does not run it."""
    ran: list[int] = []

    async def counted(ctx: StepContext) -> dict[str, Any]:
        ran.append(ctx.command.index)
        return {}

    async with engine(nc, js, catalog_with(FIVE), {"noop": counted}) as eng:
        run = await eng.start_run("test.five")
        before = await eng.wait_terminal(run)
        scheduled = next(e for e in before if e.name == "step_scheduled")
        late = ExecuteStep(
            run_id=run,
            resource_type="server",
            resource_id="srv_1",
            workflow_type="test.five",
            step="s0",
            index=0,
            attempt=1,
            executor="test",
            action="noop",
            site="default",
            after_seq=1,
        )
        assert scheduled.index == 0
        reads = eng.worker.verdict_reads
        assert await eng.worker.execute(late)
        assert eng.worker.verdict_reads == reads + 1
        after = await eng.events(run)
    assert ran == [0, 1, 2, 3, 4]  # not a second time
    assert [e.event_id for e in after] == [e.event_id for e in before]


async def test_timers_of_finished_steps_are_purged(nc: Client, js: JetStreamContext) -> None:
    """Each step's start-to-close timer is cancelled when the step resolves (a purge sent
    without waiting for its answer): a finished run leaves no schedule behind."""
    async with engine(nc, js, catalog_with(FIVE), {"noop": noop}) as eng:
        run = await eng.start_run("test.five")
        await eng.wait_terminal(run)
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            info = await js.stream_info(streams.TIMERS, subjects_filter=f"wf.timer.{run}.*")
            left = info.state.subjects or {}
            if not left or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    assert left == {}
