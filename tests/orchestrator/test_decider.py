"""The decider, given/when/then: past events, one input, the expected new events and effects.

Transitions covered (one section each below):

* start: mutating → ``run_created`` + AcquireLock; non-mutating → started at once; unknown or
  not executable type → ``run_failed`` VALIDATION_ERROR; duplicate start → nothing;
* lock: granted → ``run_started`` + first step; busy → ``run_queued`` or (on_busy=fail)
  ``run_failed`` RESOURCE_BUSY; granted to a terminal run → ReleaseLock; repeated answers → nothing;
* scheduling: ``step_scheduled`` → Dispatch (the full command) + timeout timer;
* facts: started (heartbeat deadline only with a heartbeat timeout), succeeded (next step or
  ``run_completed`` with outputs), failed (retry timer at resolved_at + backoff; non-retryable
  code; exhausted attempts → compensation or ``run_failed``); late and duplicate facts → nothing;
* timers: timeout → ``step_timed_out`` + attempt-scoped NotifyCancel; heartbeat only once started;
  retry → next attempt; stale timers → nothing;
* cancel: before the run exists → retry later; pending/queued → ``run_cancelled``; running →
  ``run_cancel_requested`` + NotifyCancel, compensation in reverse once the attempt resolved;
  during backoff; duplicates; escalation to terminate;
* terminate: immediate ``run_cancelled`` (terminated), lock released, timers cancelled, in-flight
  attempt notified, no compensation;
* compensation: reverse order, a failing compensation retried per its own policy then given up
  (``failedCompensations``), timed-out steps compensated too;
* retry-from-step: outputs carried as ``step_skipped``; unknown step, incomplete earlier steps,
  an original that is not failed/cancelled, a missing original, another workflow type;
* Recover (``outstanding``) in every status; Heartbeat re-arms the heartbeat deadline.

Tests whose docstring starts with ``BUG`` describe a defect of the core and fail until it is
fixed: a run-wide cancel notice sent while compensating (three tests), and ``Recover`` or a
redelivered ``step_started`` pulling the heartbeat deadline back to ``started_at`` (two).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from infraflow.common.catalog import DEFAULT_CATALOG
from infraflow.common.contracts import (
    CompensationStarted,
    ExecuteStep,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunQueued,
    RunTimer,
    StepScheduled,
    StepSkipped,
    StepTimedOut,
)
from infraflow.orchestrator.core import (
    AcquireLock,
    ArmTimer,
    AttemptStatus,
    Cancel,
    CancelTimer,
    Dispatch,
    FactAppended,
    Heartbeat,
    LockBusy,
    LockGranted,
    NotifyCancel,
    Recover,
    ReleaseLock,
    RunState,
    RunStatus,
    Start,
    TimerFired,
    decide,
    initial,
    outstanding,
    retry_due,
)

from .decider_dsl import (
    CATALOG,
    JITTERY,
    RUN,
    SAGA,
    T0,
    Given,
    Ids,
    at,
    timer_names,
)

LOCK = ReleaseLock("server", "srv_1", RUN)


def saga() -> Given:
    return Given("test.saga")


def saga_at_c() -> Given:
    """a and b succeeded; c (not compensable, jittery retries) is scheduled at t=20."""
    return saga().running().at(5).step_ok(0, output={"a": 1}).at(20).step_ok(1, output={"b": 2})


# ---- start ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("on_busy", "fail_if_busy"), [("queue", False), ("fail", True)])
def test_start_of_a_mutating_run_creates_it_and_asks_for_the_lock(
    on_busy: Any, fail_if_busy: bool
) -> None:
    then = saga().when(Start(saga().start_command(on_busy=on_busy, site="dc1")))

    assert then.names == ["run_created"]
    created = then.event(RunCreated)
    assert created.event_id == "evt_new_0001"
    assert created.time == T0
    assert created.causation_id == f"cmd:{RUN}:StartRun"
    assert created.workflow_type == "test.saga"
    assert created.steps == ["a", "b", "c"]
    assert created.mutating is True
    assert created.on_busy == on_busy
    assert created.site == "dc1"
    assert created.input == {"target": "On"}
    assert created.triggered_by == "usr_tester"
    assert created.project_id == "prj_1"
    assert created.request_id == "req_1"
    assert then.effects == (AcquireLock("server", "srv_1", RUN, fail_if_busy=fail_if_busy),)
    assert then.state.status is RunStatus.PENDING


@pytest.mark.parametrize("workflow_type", ["test.read", "sync.server-state"])
def test_start_of_a_non_mutating_run_starts_at_once_without_a_lock(workflow_type: str) -> None:
    g = Given(workflow_type)

    then = g.when(Start(g.start_command()))

    assert then.names == ["run_created", "run_started", "step_scheduled"]
    assert then.event(RunCreated).mutating is False
    assert then.effects_of(AcquireLock) == []
    assert then.effects_of(ReleaseLock) == []
    first = g.wf.steps[0]
    assert then.effect(Dispatch).command.step == first.name
    assert then.effect(ArmTimer).timer.due == T0 + timedelta(seconds=first.timeout_s)
    assert then.state.status is RunStatus.RUNNING


def test_start_of_an_unknown_type_fails_validation() -> None:
    g = Given("test.saga")

    then = g.when(Start(g.start_command(workflow_type="no.such")))

    assert then.names == ["run_created", "run_failed"]
    assert then.event(RunCreated).steps == []
    failed = then.event(RunFailed)
    assert failed.error.code == "VALIDATION_ERROR"
    assert "no.such" in failed.error.message
    assert failed.error.retryable is False
    assert then.effects == ()
    assert then.state.status is RunStatus.FAILED


@pytest.mark.parametrize("workflow_type", ["test.draft", "test.draft-undo"])
def test_start_of_a_type_that_is_not_executable_fails_validation(workflow_type: str) -> None:
    g = Given(workflow_type)

    then = g.when(Start(g.start_command()))

    assert then.names == ["run_created", "run_failed"]
    assert then.event(RunFailed).error.code == "VALIDATION_ERROR"
    assert then.effects_of(AcquireLock) == []
    assert then.effects_of(Dispatch) == []


def test_duplicate_start_of_a_pending_run_changes_nothing() -> None:
    g = saga().created()

    g.when(Start(g.start_command())).nothing()


def test_duplicate_start_of_a_running_run_changes_nothing() -> None:
    g = saga().running().at(3).step_ok(0)

    then = g.when(Start(g.start_command(workflow_type="test.plain")))

    then.nothing()
    assert then.state.workflow_type == "test.saga"


# ---- lock -----------------------------------------------------------------------------------


def test_lock_granted_starts_the_run_and_schedules_the_first_step() -> None:
    g = saga().created().at(2)

    then = g.when(LockGranted())

    assert then.names == ["run_started", "step_scheduled"]
    scheduled = then.event(StepScheduled)
    assert (scheduled.step, scheduled.index, scheduled.attempt, scheduled.phase) == (
        "a",
        0,
        1,
        "forward",
    )
    assert then.effect(Dispatch).command.attempt_id == f"{RUN}:f:0:1"
    assert then.effect(ArmTimer).name == "timeout-f0-1"
    assert then.effect(ArmTimer).timer.due == at(2 + 30)
    assert then.state.status is RunStatus.RUNNING


def test_lock_busy_queues_the_run_behind_the_holder() -> None:
    g = saga().created()

    then = g.when(LockBusy("run_holder"))

    assert then.names == ["run_queued"]
    assert then.event(RunQueued).waiting_for == "run_holder"
    assert then.effects == ()
    assert then.state.status is RunStatus.QUEUED
    assert then.state.waiting_for == "run_holder"


def test_queued_run_starts_when_the_lock_is_granted() -> None:
    g = saga().created().decided(LockBusy("run_holder")).at(60)

    then = g.when(LockGranted())

    assert then.names == ["run_started", "step_scheduled"]
    assert then.state.waiting_for is None
    assert then.effect(ArmTimer).timer.due == at(90)


def test_lock_busy_with_on_busy_fail_fails_the_run_naming_the_holder() -> None:
    g = saga().created(on_busy="fail")

    then = g.when(LockBusy("run_holder"))

    assert then.names == ["run_failed"]
    err = then.event(RunFailed).error
    assert err.code == "RESOURCE_BUSY"
    assert err.details == {"runId": "run_holder"}
    assert err.retryable is False
    assert then.effects_of(Dispatch) == []
    assert then.effects_of(AcquireLock) == []


@pytest.mark.parametrize("answer", [LockBusy("run_other"), LockGranted()])
def test_lock_answers_to_a_running_run_change_nothing(answer: LockBusy | LockGranted) -> None:
    saga().running().when(answer).nothing()


def test_lock_busy_to_a_queued_run_changes_nothing() -> None:
    saga().created().decided(LockBusy("run_holder")).when(LockBusy("run_holder")).nothing()


def test_lock_granted_to_a_terminal_run_gives_it_back() -> None:
    g = saga().created()
    g.decided(Cancel(g.cancel_command()))

    then = g.when(LockGranted())

    assert then.names == []
    assert then.effects == (LOCK,)


# ---- scheduling -----------------------------------------------------------------------------


def test_scheduled_step_is_dispatched_with_its_full_command_and_a_timeout() -> None:
    g = saga().running(site="dc1").at(4).step_ok(0, output={"a": 1}).at(5)

    g.reported(g.started_fact(1)).at(9)
    then = g.when(g.succeeded_fact(1, output={"b": 2}))

    scheduled = then.event(StepScheduled)
    assert scheduled.step == "c"
    assert scheduled.executor == "test"
    assert scheduled.action == "do_c"
    assert scheduled.site == "dc1"
    assert scheduled.timeout_s == 30.0
    assert scheduled.heartbeat_timeout_s is None
    assert then.effect(Dispatch).command == ExecuteStep(
        run_id=RUN,
        resource_type="server",
        resource_id="srv_1",
        workflow_type="test.saga",
        step="c",
        index=2,
        attempt=1,
        phase="forward",
        executor="test",
        action="do_c",
        site="dc1",
        params={},
        input={"target": "On"},
        outputs={"a": {"a": 1}, "b": {"b": 2}},
        project_id="prj_1",
        timeout_s=30.0,
        heartbeat_interval_s=None,
        scheduled_at=at(9),
    )
    assert then.effect(ArmTimer, name="timeout-f2-1").timer.due == at(39)


def test_dispatch_of_a_heartbeating_step_asks_for_heartbeats_three_times_per_deadline() -> None:
    g = saga().running().at(4)

    g.reported(g.started_fact(0))
    then = g.when(g.succeeded_fact(0))

    cmd = then.effect(Dispatch).command
    assert cmd.step == "b"
    assert cmd.params == {}
    assert cmd.heartbeat_interval_s == pytest.approx(20 / 3)
    assert then.event(StepScheduled).heartbeat_timeout_s == 20.0
    assert then.effect(ArmTimer, name="timeout-f1-1").timer.due == at(4 + 120)


def test_default_site_is_used_when_the_command_names_none() -> None:
    then = saga().created().when(LockGranted())

    assert then.event(StepScheduled).site == "default"
    assert then.effect(Dispatch).command.site == "default"
    assert then.effect(Dispatch).command.params == {"p": 1}


# ---- facts: started / succeeded ------------------------------------------------------------


def test_step_started_without_a_heartbeat_timeout_arms_nothing() -> None:
    g = saga().running().at(1)

    then = g.when(g.started_fact(0))

    then.nothing()
    assert then.state.current is not None
    assert then.state.current.status is AttemptStatus.STARTED


def test_step_started_with_a_heartbeat_timeout_arms_the_heartbeat_deadline() -> None:
    g = saga().running().at(1).step_ok(0).at(7)

    then = g.when(g.started_fact(1))

    assert then.names == []
    timer = then.effect(ArmTimer).timer
    assert then.effect(ArmTimer).name == "heartbeat-f1-1"
    assert (timer.kind, timer.index, timer.attempt, timer.phase) == ("heartbeat", 1, 1, "forward")
    assert timer.due == at(7 + 20)


def test_step_succeeded_schedules_the_next_step_and_cancels_the_attempts_timers() -> None:
    g = saga().running().at(1).step_ok(0).at(3)
    g.reported(g.started_fact(1)).at(10)

    then = g.when(g.succeeded_fact(1, output={"b": 2}))

    assert then.names == ["step_scheduled"]
    assert then.event(StepScheduled).index == 2
    assert timer_names(then.effects, CancelTimer) == {"timeout-f1-1", "heartbeat-f1-1"}
    assert timer_names(then.effects, ArmTimer) == {"timeout-f2-1"}
    assert then.effect(Dispatch).command.outputs == {"a": {}, "b": {"b": 2}}


def test_last_step_succeeded_completes_the_run_with_every_output() -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).at(25)

    then = g.when(g.succeeded_fact(2, output={"c": 3}))

    assert then.names == ["run_completed"]
    assert then.event(RunCompleted).output == {"a": {"a": 1}, "b": {"b": 2}, "c": {"c": 3}}
    assert then.effects == (CancelTimer(RUN, "timeout-f2-1"), LOCK)
    assert then.state.status is RunStatus.COMPLETED


def test_non_mutating_run_completes_without_touching_a_lock() -> None:
    g = Given("test.read").running().at(2)
    g.reported(g.started_fact(0))

    then = g.when(g.succeeded_fact(0, output={"seen": True}))

    assert then.names == ["run_completed"]
    assert then.effects == (CancelTimer(RUN, "timeout-f0-1"),)


# ---- facts: failed --------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "delay_s"), [(1, 5.0), (2, 8.0)])
def test_retryable_failure_with_attempts_left_arms_a_retry_timer_after_the_backoff(
    attempt: int, delay_s: float
) -> None:
    g = Given("test.plain").running().at(1)
    for n in range(1, attempt):
        g.step_failed(0, n).fired("retry", 0, n)
    g.reported(g.started_fact(0, attempt)).at(50)
    fact = g.failed_fact(0, attempt, code="FLAKY", retryable=True)
    g.at(51)

    then = g.when(fact)

    assert then.names == []
    assert then.effect(CancelTimer) == CancelTimer(RUN, f"timeout-f0-{attempt}")
    retry = then.effect(ArmTimer)
    assert retry.name == f"retry-f0-{attempt}"
    assert (retry.timer.kind, retry.timer.attempt) == ("retry", attempt)
    assert retry.timer.due == at(50 + delay_s)  # from the failure's time (FLAT: 5 s, then 8)
    assert retry_due(then.state, CATALOG) == retry.timer.due


def test_retry_delay_has_deterministic_jitter_seeded_by_the_attempt() -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).at(30)
    fact = g.failed_fact(2, code="BMC_BUSY")

    first = g.when(fact, ids=Ids("x"))
    again = g.when(FactAppended(fact), ids=Ids("y"))

    due = first.effect(ArmTimer).timer.due
    assert again.effect(ArmTimer).timer.due == due
    expected = JITTERY.delay_s(1, f"{RUN}:forward:2:1")
    assert due == at(30) + timedelta(seconds=expected)
    assert 2.0 * 0.9 <= expected <= 2.0 * 1.1
    assert expected != 2.0  # the jitter is really applied


@pytest.mark.parametrize(
    ("code", "retryable"), [("FATAL", False), ("BAD_INPUT", True)], ids=["not-retryable", "code"]
)
def test_non_retryable_failure_is_not_retried(code: str, retryable: bool) -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).at(22)

    then = g.when(g.failed_fact(2, code=code, retryable=retryable))

    assert then.names == ["compensation_started", "step_scheduled"]
    assert [t for t in then.effects_of(ArmTimer) if t.timer.kind == "retry"] == []
    started = then.event(CompensationStarted)
    assert started.cause == "failure"
    assert started.error is not None
    assert (started.error.code, started.error.step) == (code, "c")


def test_failure_without_anything_to_compensate_fails_the_run() -> None:
    g = Given("test.plain").running().at(1)
    g.reported(g.started_fact(0)).at(2)

    then = g.when(g.failed_fact(0, code="FATAL", retryable=False))

    assert then.names == ["run_failed"]
    failed = then.event(RunFailed)
    assert (failed.error.code, failed.error.step, failed.compensated) == ("FATAL", "x", False)
    assert CancelTimer(RUN, "timeout-f0-1") in then.effects
    assert LOCK in then.effects
    assert then.effects_of(ArmTimer) == []
    assert then.effects_of(Dispatch) == []


def test_exhausted_attempts_fail_the_run_with_the_last_error() -> None:
    g = Given("test.plain").running().at(1)
    g.step_failed(0, 1).fired("retry", 0, 1).step_failed(0, 2).fired("retry", 0, 2)
    g.reported(g.started_fact(0, 3)).at(40)

    then = g.when(g.failed_fact(0, 3, code="STILL_FLAKY"))

    assert then.names == ["run_failed"]
    assert then.event(RunFailed).error.code == "STILL_FLAKY"
    assert then.effects_of(ArmTimer) == []
    assert LOCK in then.effects


def test_exhausted_attempts_start_compensation_of_completed_steps_in_reverse() -> None:
    g = saga_at_c()
    for n in (1, 2, 3):
        g.step_failed(2, n).fired("retry", 2, n)
    g.reported(g.started_fact(2, 4)).at(200)

    then = g.when(g.failed_fact(2, 4, code="BMC_BUSY"))

    assert then.names == ["compensation_started", "step_scheduled"]
    started = then.event(CompensationStarted)
    assert (started.cause, started.steps, started.indices) == (
        "failure",
        ["undo_b", "undo_a"],
        [1, 0],
    )
    scheduled = then.event(StepScheduled)
    assert (scheduled.step, scheduled.index, scheduled.phase) == ("undo_b", 1, "compensation")
    cmd = then.effect(Dispatch).command
    assert (cmd.phase, cmd.step, cmd.attempt_id) == ("compensation", "undo_b", f"{RUN}:c:1:1")
    assert then.effect(ArmTimer).name == "timeout-c1-1"


# ---- timers ---------------------------------------------------------------------------------


def test_timeout_times_out_the_attempt_and_tells_only_that_attempt_to_stop() -> None:
    g = Given("test.plain").running().at(30)

    then = g.when(g.timer_fired("timeout", 0))

    assert then.names == ["step_timed_out"]
    timed_out = then.event(StepTimedOut)
    assert (timed_out.index, timed_out.attempt, timed_out.timeout) == (0, 1, "start_to_close")
    assert timed_out.causation_id == f"timer:{RUN}:timeout-f0-1"
    assert then.effect(NotifyCancel) == NotifyCancel(RUN, attempt=("forward", 0, 1))
    assert then.effect(CancelTimer) == CancelTimer(RUN, "timeout-f0-1")
    assert then.effect(ArmTimer).timer.due == at(30 + 5)
    assert then.state.current is not None
    assert then.state.current.error is not None
    assert then.state.current.error.code == "STEP_TIMEOUT"


def test_timeout_of_a_started_heartbeating_step_cancels_both_its_timers() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).at(121)

    then = g.when(g.timer_fired("timeout", 1))

    assert then.names == ["step_timed_out"]
    assert timer_names(then.effects, CancelTimer) == {"timeout-f1-1", "heartbeat-f1-1"}


def test_heartbeat_timer_is_ignored_until_the_step_started() -> None:
    g = saga().running().at(1).step_ok(0).at(25)

    g.when(g.timer_fired("heartbeat", 1)).nothing()


def test_heartbeat_timer_times_out_a_started_step() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).at(22)

    then = g.when(g.timer_fired("heartbeat", 1))

    assert then.names == ["step_timed_out"]
    assert then.event(StepTimedOut).timeout == "heartbeat"
    assert then.effect(NotifyCancel) == NotifyCancel(RUN, attempt=("forward", 1, 1))
    assert then.state.current is not None
    assert then.state.current.error is not None
    assert then.state.current.error.code == "HEARTBEAT_TIMEOUT"


def test_retry_timer_schedules_the_next_attempt() -> None:
    g = Given("test.plain").running().at(1).step_failed(0).at(6)

    then = g.when(g.timer_fired("retry", 0, 1))

    assert then.names == ["step_scheduled"]
    assert then.event(StepScheduled).attempt == 2
    assert then.effect(Dispatch).command.attempt == 2
    assert then.effect(Dispatch).command.scheduled_at == at(6)
    assert then.effect(ArmTimer).name == "timeout-f0-2"
    assert then.effect(ArmTimer).timer.due == at(36)


def test_timed_out_attempt_is_retried_and_can_still_succeed() -> None:
    g = Given("test.plain").running().at(30).fired("timeout", 0).at(35)
    g.fired("retry", 0, 1).at(36).step_ok(0, 2, output={"x": 2})

    assert g.state.next_index == 1
    assert g.state.unknown == ()  # the success settles what the timeout left unknown


def test_timeout_of_the_last_attempt_fails_the_run() -> None:
    g = Given("test.solo").running().at(30)

    then = g.when(g.timer_fired("timeout", 0))

    assert then.names == ["step_timed_out", "run_failed"]
    assert then.event(RunFailed).error.code == "STEP_TIMEOUT"
    assert then.effect(NotifyCancel) == NotifyCancel(RUN, attempt=("forward", 0, 1))
    assert then.effects_of(ArmTimer) == []


def stale_timers() -> list[Any]:
    """(given, timer) where the timer names an attempt that no longer matters."""
    retried = Given("test.plain").running().at(30).fired("timeout", 0).at(35).fired("retry", 0, 1)
    moved_on = Given("test.plain").running().at(1).step_ok(0)
    done = Given("test.plain").running().at(1).step_ok(0).step_ok(1)
    waiting = Given("test.plain").running().at(1).step_failed(0)
    cases = [
        ("timeout of a retried attempt", retried, retried.timer("timeout", 0, 1)),
        ("retry fired twice", retried, retried.timer("retry", 0, 1)),
        ("heartbeat of a retried attempt", retried, retried.timer("heartbeat", 0, 1)),
        ("timeout of a succeeded step", moved_on, moved_on.timer("timeout", 0)),
        ("timeout of a future attempt", moved_on, moved_on.timer("timeout", 1, 2)),
        ("wrong phase", moved_on, moved_on.timer("timeout", 1, 1, "compensation")),
        ("timeout after the run ended", done, done.timer("timeout", 1)),
        ("retry after the run ended", done, done.timer("retry", 1)),
        ("timeout during the backoff", waiting, waiting.timer("timeout", 0)),
        ("heartbeat during the backoff", waiting, waiting.timer("heartbeat", 0)),
    ]
    return [pytest.param(given, timer, id=why) for why, given, timer in cases]


@pytest.mark.parametrize(("given", "timer"), stale_timers())
def test_stale_timers_are_ignored(given: Given, timer: RunTimer) -> None:
    then = given.when(TimerFired(timer))

    assert then.names == []
    assert then.effects_of(Dispatch) == []


# ---- late and duplicate facts ---------------------------------------------------------------


def test_late_success_after_a_timeout_changes_nothing() -> None:
    g = Given("test.plain").running().at(1)
    g.reported(g.started_fact(0)).at(30).fired("timeout", 0).at(31)
    before = g.state

    then = g.when(g.succeeded_fact(0, output={"late": True}))

    assert then.names == []
    assert then.effects_of(Dispatch) == []
    assert then.state.outputs == before.outputs == {}
    assert then.state.current == before.current
    assert then.state.unknown == (0,)


def test_late_fact_of_an_attempt_that_was_retried_changes_nothing() -> None:
    g = Given("test.plain").running().at(30).fired("timeout", 0).at(35).fired("retry", 0, 1)

    then = g.when(g.failed_fact(0, 1, code="LATE"))

    then.nothing()


@pytest.mark.parametrize("which", ["started", "succeeded"])
def test_duplicate_fact_after_the_run_moved_on_changes_nothing(which: str) -> None:
    g = Given("test.plain").running().at(1)
    started, succeeded = g.started_fact(0), g.succeeded_fact(0)
    g.reported(started, succeeded)

    then = g.when(FactAppended(started if which == "started" else succeeded))

    then.nothing()


def test_duplicate_failure_during_the_backoff_only_rederives_the_retry_timer() -> None:
    g = Given("test.plain").running().at(1)
    failed = g.failed_fact(0)
    g.reported(g.started_fact(0), failed)

    then = g.when(FactAppended(failed))

    assert then.names == []
    assert then.effects_of(Dispatch) == []
    assert then.effect(ArmTimer).timer.due == at(1 + 5)


def test_facts_after_the_run_ended_change_nothing() -> None:
    g = Given("test.plain").running().at(1).step_ok(0).step_ok(1)

    then = g.when(g.succeeded_fact(1, output={"again": True}))

    then.nothing()
    assert then.state.status is RunStatus.COMPLETED


def test_facts_do_not_advance_a_run_in_backoff_before_its_retry_timer() -> None:
    g = Given("test.plain").running().at(1).step_failed(0).at(2)

    then = g.when(Recover())

    assert then.names == []
    assert then.effects_of(Dispatch) == []


# ---- cancel ---------------------------------------------------------------------------------


def test_cancel_before_the_run_exists_is_retried_later() -> None:
    g = saga()

    then = g.when(Cancel(g.cancel_command()))

    assert then.decision.retry_later is True
    then.nothing()


@pytest.mark.parametrize("queued", [False, True])
def test_cancel_of_a_waiting_run_cancels_it_without_compensation(queued: bool) -> None:
    g = saga().created()
    if queued:
        g.decided(LockBusy("run_holder"))

    then = g.when(Cancel(g.cancel_command(by="usr_ops")))

    assert then.names == ["run_cancel_requested", "run_cancelled"]
    requested = then.event(RunCancelRequested)
    assert (requested.requested_by, requested.reason, requested.terminate) == (
        "usr_ops",
        "test",
        False,
    )
    cancelled = then.event(RunCancelled)
    assert (cancelled.requested_by, cancelled.terminated, cancelled.compensated) == (
        "usr_ops",
        False,
        False,
    )
    assert then.effects == (LOCK,)  # leaves the queue (or gives back a lock just granted)


def test_cancel_of_a_running_step_asks_the_agent_to_stop_and_waits() -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2))

    then = g.when(Cancel(g.cancel_command()))

    assert then.names == ["run_cancel_requested"]
    assert then.effects == (NotifyCancel(RUN, terminate=False),)
    assert then.state.cancel is not None
    assert then.state.status is RunStatus.RUNNING


def test_cancel_compensates_completed_steps_in_reverse_once_the_attempt_resolved() -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2))
    g.decided(Cancel(g.cancel_command())).at(23)

    # the agent stopped c at a safe point
    then = g.when(g.failed_fact(2, code="CANCELLED", retryable=False))
    assert then.names == ["compensation_started", "step_scheduled"]
    started = then.event(CompensationStarted)
    assert (started.cause, started.steps, started.indices) == (
        "cancel",
        ["undo_b", "undo_a"],
        [1, 0],
    )
    assert then.event(StepScheduled).step == "undo_b"

    g = then.then().at(24)
    g.reported(g.started_fact(1, phase="compensation"))
    then = g.when(g.succeeded_fact(1, phase="compensation"))
    assert then.names == ["step_scheduled"]
    assert (then.event(StepScheduled).step, then.event(StepScheduled).index) == ("undo_a", 0)

    g = then.then().at(25)
    g.reported(g.started_fact(0, phase="compensation"))
    then = g.when(g.succeeded_fact(0, phase="compensation"))
    assert then.names == ["run_cancelled"]
    cancelled = then.event(RunCancelled)
    assert (cancelled.terminated, cancelled.compensated) == (False, True)
    assert then.effects == (CancelTimer(RUN, "timeout-c0-1"), LOCK)


def test_cancel_waits_for_a_step_that_ignores_it_and_compensates_that_step_too() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1))
    g.decided(Cancel(g.cancel_command())).at(50)

    then = g.when(g.succeeded_fact(1))  # b finished anyway

    assert then.event(CompensationStarted).indices == [1, 0]


def test_cancel_during_a_retry_backoff_compensates_at_once() -> None:
    g = saga().running().at(1).step_ok(0).at(2).step_failed(1).at(3)

    then = g.when(Cancel(g.cancel_command()))

    assert then.names == ["run_cancel_requested", "compensation_started", "step_scheduled"]
    assert then.event(CompensationStarted).indices == [0]
    assert then.event(StepScheduled).step == "undo_a"

    g = then.then().at(40)
    g.when(g.timer_fired("retry", 1, 1)).nothing()  # the backoff ended: no new attempt


def test_cancel_with_nothing_to_compensate_ends_the_run_uncompensated() -> None:
    g = Given("test.plain").running().at(1)
    g.reported(g.started_fact(0)).decided(Cancel(g.cancel_command())).at(2)

    then = g.when(g.failed_fact(0, code="CANCELLED", retryable=False))

    assert then.names == ["run_cancelled"]
    assert then.event(RunCancelled).compensated is False
    assert LOCK in then.effects


def test_cancelled_step_is_not_retried_even_if_retryable() -> None:
    g = Given("test.plain").running().at(1)
    g.reported(g.started_fact(0)).decided(Cancel(g.cancel_command())).at(2)

    then = g.when(g.failed_fact(0, code="FLAKY", retryable=True))

    assert then.names == ["run_cancelled"]
    assert [t for t in then.effects_of(ArmTimer) if t.timer.kind == "retry"] == []


def test_cancel_of_a_step_that_then_times_out_compensates_it() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.decided(Cancel(g.cancel_command())).at(122)  # b never started; the agent is gone

    then = g.when(g.timer_fired("timeout", 1))

    assert then.names == ["step_timed_out", "compensation_started", "step_scheduled"]
    assert then.event(CompensationStarted).steps == ["undo_b", "undo_a"]


def test_duplicate_cancel_changes_nothing() -> None:
    g = saga_at_c()
    g.decided(Cancel(g.cancel_command()))

    then = g.when(Cancel(g.cancel_command(by="usr_other")))

    then.nothing()


def test_cancel_of_a_finished_run_changes_nothing() -> None:
    g = Given("test.plain").running().at(1).step_ok(0).step_ok(1)

    g.when(Cancel(g.cancel_command())).nothing()
    g.when(Cancel(g.cancel_command(terminate=True))).nothing()


def test_terminate_after_cancel_escalates_to_a_hard_stop() -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).decided(Cancel(g.cancel_command()))

    then = g.when(Cancel(g.cancel_command(terminate=True)))

    assert then.names == ["run_cancel_requested", "run_cancelled"]
    assert then.event(RunCancelRequested).terminate is True
    assert then.event(RunCancelled).terminated is True
    assert NotifyCancel(RUN, terminate=True) in then.effects


# ---- terminate ------------------------------------------------------------------------------


def test_terminate_stops_at_once_without_compensation() -> None:
    g = saga().running().at(1).step_ok(0, output={"a": 1}).at(2)
    g.reported(g.started_fact(1)).at(3)

    then = g.when(Cancel(g.cancel_command(terminate=True)))

    assert then.names == ["run_cancel_requested", "run_cancelled"]
    cancelled = then.event(RunCancelled)
    assert (cancelled.terminated, cancelled.compensated) == (True, False)
    assert NotifyCancel(RUN, terminate=True) in then.effects
    assert timer_names(then.effects, CancelTimer) == {"timeout-f1-1", "heartbeat-f1-1"}
    assert LOCK in then.effects
    assert then.effects_of(Dispatch) == []
    assert then.effects_of(ArmTimer) == []


def test_terminate_of_a_waiting_run() -> None:
    g = saga().created()

    then = g.when(Cancel(g.cancel_command(terminate=True)))

    assert then.names == ["run_cancel_requested", "run_cancelled"]
    assert then.event(RunCancelled).terminated is True
    assert then.effects == (LOCK,)


def test_terminate_stops_a_running_compensation() -> None:
    g = saga_at_c().at(21)
    g.step_failed(2, code="FATAL", retryable=False)  # compensation: undo_b scheduled
    g.reported(g.started_fact(1, phase="compensation"))

    then = g.when(Cancel(g.cancel_command(terminate=True)))

    assert then.names == ["run_cancel_requested", "run_cancelled"]
    assert then.event(RunCancelled).terminated is True
    assert NotifyCancel(RUN, terminate=True) in then.effects
    assert timer_names(then.effects, CancelTimer) == {"timeout-c1-1", "heartbeat-c1-1"}


def test_terminate_during_a_retry_backoff_cancels_the_retry_timer() -> None:
    """(``_terminal_effects`` used to test ``retry_due(before)``, always None once a cancel is
    recorded, so the armed retry timer was left behind.)"""
    g = Given("test.plain").running().at(1).step_failed(0).at(2)

    then = g.when(Cancel(g.cancel_command(terminate=True)))

    assert then.names == ["run_cancel_requested", "run_cancelled"]
    assert LOCK in then.effects
    assert CancelTimer(RUN, "retry-f0-1") in then.effects


# ---- compensation ---------------------------------------------------------------------------


def failing_c() -> Given:
    """c failed for good: compensation started and undo_b (index 1) is scheduled at t=30."""
    g = saga_at_c().at(30)
    return g.step_failed(2, code="FATAL", retryable=False)


def test_failing_compensation_is_retried_per_its_own_policy() -> None:
    g = failing_c().at(31)
    g.reported(g.started_fact(1, phase="compensation")).at(32)

    then = g.when(g.failed_fact(1, phase="compensation", code="BMC_BUSY"))

    assert then.names == []
    retry = then.effect(ArmTimer)
    assert retry.name == "retry-c1-1"
    assert retry.timer.due == at(32 + 3)  # TWICE: 3 s, no jitter

    g = then.then().at(35)
    then = g.when(g.timer_fired("retry", 1, 1, "compensation"))
    assert then.names == ["step_scheduled"]
    assert (then.event(StepScheduled).phase, then.event(StepScheduled).attempt) == (
        "compensation",
        2,
    )


def test_compensation_given_up_moves_on_and_fails_the_run_uncompensated() -> None:
    g = failing_c().at(31)
    g.step_failed(1, 1, "compensation").at(34).fired("retry", 1, 1, "compensation").at(35)
    g.reported(g.started_fact(1, 2, "compensation")).at(36)

    then = g.when(g.failed_fact(1, 2, "compensation", code="BMC_BUSY"))
    assert then.names == ["step_scheduled"]  # undo_b given up after 2 attempts: undo_a next
    assert then.event(StepScheduled).step == "undo_a"

    g = then.then().at(37).step_ok(0, phase="compensation")
    failed = g.events[-1]
    assert isinstance(failed, RunFailed)
    assert failed.compensated is False
    assert (failed.error.code, failed.error.step) == ("FATAL", "c")
    assert failed.error.details == {"failedCompensations": ["undo_b"]}


def test_compensation_given_up_after_cancel_cancels_the_run_uncompensated() -> None:
    g = saga().running().at(1).step_ok(0)
    g.reported(g.started_fact(1)).decided(Cancel(g.cancel_command()))
    g.step_failed(1, code="CANCELLED", retryable=False)  # only undo_a: b never completed
    g.step_failed(0, 1, "compensation").fired("retry", 0, 1, "compensation")

    g.reported(g.started_fact(0, 2, "compensation"))

    then = g.when(g.failed_fact(0, 2, "compensation"))

    assert then.names == ["run_cancelled"]
    assert then.event(RunCancelled).compensated is False


def test_all_compensations_succeeding_fail_the_run_compensated() -> None:
    g = failing_c().at(31).step_ok(1, phase="compensation")

    g.reported(g.started_fact(0, phase="compensation"))

    then = g.when(g.succeeded_fact(0, phase="compensation"))

    failed = then.event(RunFailed)
    assert failed.compensated is True
    assert failed.error.details is None


def test_steps_whose_attempt_timed_out_are_compensated_too() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).at(122).fired("timeout", 1).at(127)
    g.fired("retry", 1, 1).at(128)
    g.reported(g.started_fact(1, 2)).at(129)

    then = g.when(g.failed_fact(1, 2, code="FATAL", retryable=False))

    started = then.event(CompensationStarted)
    assert (started.steps, started.indices) == (["undo_b", "undo_a"], [1, 0])


def test_compensation_timeout_is_retried() -> None:
    g = failing_c().at(30 + 30)

    then = g.when(g.timer_fired("timeout", 1, 1, "compensation"))

    assert then.names == ["step_timed_out"]
    assert then.effect(ArmTimer).name == "retry-c1-1"
    assert then.effect(NotifyCancel) == NotifyCancel(RUN, attempt=("compensation", 1, 1))


def test_scheduling_a_compensation_after_cancel_does_not_tell_agents_to_stop_it() -> None:
    """BUG: after a cancel, every compensation step is dispatched together with a run-wide,
    non-terminate NotifyCancel.

    ``_attempt_effects`` adds ``NotifyCancel(run, terminate=False)`` whenever the run has a
    cancel request and the current attempt is in flight, whatever its phase. Agents stop every
    running step of the run that a run-wide notice matches (``CancelNotice.matches``), so a
    compensation step that is already running when the notice lands (a redelivery, a
    ``Recover`` from the lock sweeper, the next compensation's dispatch) fails with CANCELLED,
    non-retryable, and is given up: the cancel sabotages the compensation it asked for."""
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).decided(Cancel(g.cancel_command())).at(22)

    then = g.when(g.failed_fact(2, code="CANCELLED", retryable=False))

    assert then.event(StepScheduled).phase == "compensation"
    assert then.effect(Dispatch).command.step == "undo_b"
    assert then.effects_of(NotifyCancel) == []


def test_recover_during_a_compensation_after_cancel_does_not_tell_agents_to_stop_it() -> None:
    """BUG (same cause): ``Recover`` — sent every 30 s by the lock sweeper to every lock holder
    — re-derives a run-wide NotifyCancel while a compensation step runs."""
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).decided(Cancel(g.cancel_command())).at(22)
    g.step_failed(2, code="CANCELLED", retryable=False).at(23)
    g.reported(g.started_fact(1, phase="compensation")).at(40)

    then = g.when(Recover())

    assert then.names == []
    assert then.effects_of(NotifyCancel) == []


def test_cancel_during_a_failure_compensation_lets_the_compensation_finish() -> None:
    """BUG (same cause): a cancel that arrives while a failure's compensation step runs asks
    the agents to stop that compensation step."""
    g = failing_c().at(31)
    g.reported(g.started_fact(1, phase="compensation")).at(32)

    then = g.when(Cancel(g.cancel_command()))

    assert then.names == ["run_cancel_requested"]
    assert then.effects_of(NotifyCancel) == []


# ---- retry from a step -----------------------------------------------------------------------


def failed_original(fail_at: int = 2) -> Given:
    """run_0 of test.three: steps before ``fail_at`` succeeded, then step ``fail_at`` failed."""
    g = Given("test.three", run_id="run_0").running().at(1)
    for i in range(fail_at):
        g.step_ok(i, output={"n": i})
    g.step_failed(fail_at, code="NOPE", retryable=False)
    assert g.state.status is RunStatus.FAILED
    return g


def test_retry_from_a_step_carries_prior_outputs_and_skips_earlier_steps() -> None:
    original = failed_original().state
    g = Given("test.three").created(retry_of="run_0", from_step="r", original=original)
    created = g.events[0]
    assert isinstance(created, RunCreated)
    assert created.prior_outputs == {"p": {"n": 0}, "q": {"n": 1}}
    assert (created.retry_of, created.from_step) == ("run_0", "r")

    then = g.at(5).when(LockGranted())

    assert then.names == ["run_started", "step_skipped", "step_skipped", "step_scheduled"]
    skipped = [e for e in then.events if isinstance(e, StepSkipped)]
    assert [(s.step, s.index, s.output, s.from_run) for s in skipped] == [
        ("p", 0, {"n": 0}, "run_0"),
        ("q", 1, {"n": 1}, "run_0"),
    ]
    assert then.event(StepScheduled).step == "r"
    assert then.effect(Dispatch).command.outputs == {"p": {"n": 0}, "q": {"n": 1}}

    g = then.then().at(6).step_ok(2, output={"n": 2})
    done = g.events[-1]
    assert isinstance(done, RunCompleted)
    assert done.output == {"p": {"n": 0}, "q": {"n": 1}, "r": {"n": 2}}


def test_retry_without_a_step_runs_everything_again() -> None:
    original = failed_original().state

    then = Given("test.three").created(retry_of="run_0", original=original).when(LockGranted())

    assert then.names == ["run_started", "step_scheduled"]
    assert then.event(StepScheduled).step == "p"


def test_retry_of_a_cancelled_run_is_allowed() -> None:
    o = Given("test.three", run_id="run_0").running().at(1).step_ok(0)
    o.decided(Cancel(o.cancel_command()))
    o.step_failed(1, code="CANCELLED", retryable=False)
    assert o.state.status is RunStatus.CANCELLED

    then = (
        Given("test.three")
        .created(retry_of="run_0", from_step="q", original=o.state)
        .when(LockGranted())
    )

    assert then.names == ["run_started", "step_skipped", "step_scheduled"]


def compensated_saga(*, undo_a_gives_up: bool = False) -> Given:
    """run_0 of test.saga: a and b succeeded, c failed for good, undo_b succeeded, and undo_a
    succeeded too (or gave up after its two attempts)."""
    g = Given("test.saga", run_id="run_0").running().at(1)
    g.step_ok(0, output={"a": 1}).step_ok(1, output={"b": 2})
    g.step_failed(2, code="FATAL", retryable=False).step_ok(1, phase="compensation")
    if undo_a_gives_up:
        g.step_failed(0, 1, "compensation").fired("retry", 0, 1, "compensation")
        g.step_failed(0, 2, "compensation")
    else:
        g.step_ok(0, phase="compensation")
    assert g.state.status is RunStatus.FAILED
    return g


def test_retry_from_a_step_refuses_steps_the_original_compensated() -> None:
    g = Given("test.saga")

    then = g.when(Start(g.start_command(retry_of="run_0", from_step="c"), compensated_saga().state))

    assert then.names == ["run_created", "run_failed"]
    err = then.event(RunFailed).error
    assert err.code == "INVALID_STATE_TRANSITION"
    assert "compensated" in err.message


def test_retry_from_a_step_keeps_a_step_whose_compensation_gave_up() -> None:
    """undo_a gave up, so a's effects are still there: a retry from b may skip a (not from c:
    b was undone)."""
    original = compensated_saga(undo_a_gives_up=True).state
    g = Given("test.saga")

    then = g.created(retry_of="run_0", from_step="b", original=original).when(LockGranted())

    assert then.names == ["run_started", "step_skipped", "step_scheduled"]
    assert then.event(StepSkipped).output == {"a": 1}
    refused = Given("test.saga").when(
        Start(Given("test.saga").start_command(retry_of="run_0", from_step="c"), original)
    )
    assert refused.event(RunFailed).error.code == "INVALID_STATE_TRANSITION"


def retry_problems() -> list[Any]:
    """(from_step, original, expected code) for retries that cannot proceed."""
    running = Given("test.three", run_id="run_0").running().state
    completed = Given("test.three", run_id="run_0").running().step_ok(0).step_ok(1).step_ok(2)
    other_type = (
        Given("test.plain", run_id="run_0").running().step_failed(0, code="X", retryable=False)
    )
    invalid = "INVALID_STATE_TRANSITION"
    return [
        pytest.param("zz", failed_original().state, "VALIDATION_ERROR", id="unknown step"),
        pytest.param("r", failed_original(fail_at=1).state, invalid, id="earlier step failed"),
        pytest.param("q", running, invalid, id="original still running"),
        pytest.param("q", completed.state, invalid, id="original completed"),
        pytest.param("q", None, "NOT_FOUND", id="original missing"),
        pytest.param("q", other_type.state, "VALIDATION_ERROR", id="another workflow type"),
    ]


@pytest.mark.parametrize(("from_step", "original", "code"), retry_problems())
def test_retry_that_cannot_proceed_fails_at_once(
    from_step: str, original: RunState | None, code: str
) -> None:
    g = Given("test.three")

    then = g.when(Start(g.start_command(retry_of="run_0", from_step=from_step), original))

    assert then.names == ["run_created", "run_failed"]
    assert then.event(RunFailed).error.code == code
    assert then.event(RunCreated).prior_outputs == {}
    assert then.effects_of(AcquireLock) == []


# ---- recover --------------------------------------------------------------------------------


def test_recover_of_an_unknown_run_does_nothing() -> None:
    saga().when(Recover()).nothing()
    assert outstanding(initial(RUN, "server", "srv_1"), saga().context()) == []


@pytest.mark.parametrize(
    ("on_busy", "queued"), [("queue", False), ("queue", True), ("fail", False)]
)
def test_recover_of_a_run_waiting_for_its_lock_asks_again(on_busy: Any, queued: bool) -> None:
    g = saga().created(on_busy=on_busy)
    if queued:
        g.decided(LockBusy("run_holder"))

    then = g.when(Recover())

    assert then.names == []
    assert then.effects == (AcquireLock("server", "srv_1", RUN, fail_if_busy=on_busy == "fail"),)


def test_recover_of_a_scheduled_attempt_redispatches_the_identical_command() -> None:
    g = saga().created().at(2)
    first = g.when(LockGranted())
    g = first.then().at(9)

    then = g.when(Recover())

    assert then.names == []
    assert then.effect(Dispatch) == first.effect(Dispatch)
    assert then.effect(ArmTimer) == first.effect(ArmTimer)
    assert then.effect(ArmTimer).timer.due == at(32)


def test_recover_of_a_started_attempt_rearms_its_timers() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).at(5)

    then = g.when(Recover())

    assert then.names == []
    assert then.effects_of(Dispatch) == []
    assert then.effect(ArmTimer, name="timeout-f1-1").timer.due == at(1 + 120)
    # no earlier than the start's deadline, no later than a fresh window from now
    assert at(2 + 20) <= then.effect(ArmTimer, name="heartbeat-f1-1").timer.due <= at(5 + 20)


def test_recover_in_a_backoff_rearms_the_same_retry_timer() -> None:
    g = Given("test.plain").running().at(1)
    g.reported(g.started_fact(0)).at(3)
    first = g.when(g.failed_fact(0))
    g = first.then().at(4)

    then = g.when(Recover())

    assert then.names == []
    assert then.effect(ArmTimer) == first.effect(ArmTimer)
    assert then.effects_of(Dispatch) == []


def test_recover_after_a_timeout_rearms_the_retry_and_repeats_the_stop_notice() -> None:
    g = Given("test.plain").running().at(30).fired("timeout", 0).at(31)

    then = g.when(Recover())

    assert then.names == []
    assert then.effect(ArmTimer).timer.due == at(35)
    assert then.effect(NotifyCancel) == NotifyCancel(RUN, attempt=("forward", 0, 1))


def test_recover_with_a_cancel_pending_repeats_the_notice() -> None:
    g = saga_at_c().at(21)
    g.reported(g.started_fact(2)).decided(Cancel(g.cancel_command())).at(22)

    then = g.when(Recover())

    assert then.names == []
    assert NotifyCancel(RUN, terminate=False) in then.effects


def test_recover_of_a_finished_run_releases_its_lock() -> None:
    g = Given("test.plain").running().at(1).step_ok(0).step_ok(1).at(3)

    then = g.when(Recover())

    assert then.names == []
    assert then.effects == (LOCK,)


def test_recover_of_a_terminated_run_repeats_the_hard_stop() -> None:
    g = saga().running().at(1)
    g.reported(g.started_fact(0)).decided(Cancel(g.cancel_command(terminate=True))).at(2)

    then = g.when(Recover())

    assert then.names == []
    assert set(then.effects) == {
        CancelTimer(RUN, "timeout-f0-1"),
        NotifyCancel(RUN, terminate=True),
        LOCK,
    }


def test_recover_of_a_finished_non_mutating_run_does_nothing() -> None:
    g = Given("test.read").running().at(1).step_ok(0)

    g.when(Recover()).nothing()


def test_outstanding_is_what_recover_asks_for() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1))

    assert list(g.when(Recover()).effects) == outstanding(g.state, g.context())


def test_recover_does_not_pull_the_heartbeat_deadline_into_the_past() -> None:
    """BUG: ``Recover`` re-arms the heartbeat timer at ``started_at + heartbeat_timeout``,
    replacing the later deadline that heartbeats had pushed it to.

    The lock sweeper feeds ``Recover`` to every lock holder every 30 s (and every redelivered
    input is followed by one), so a step that heartbeats properly but runs longer than its
    heartbeat timeout (server.lifecycle's wait_power_state: 600 s, heartbeat 60 s) gets a
    heartbeat timer that is already due, fires at once and times the healthy step out.
    Here: b started at t=2 (deadline t=22), heartbeats at t=15, 30, 45 moved it to t=65; at
    t=50 Recover arms it for t=22."""
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1))
    for t in (15, 30, 45):
        g.at(t).decided(Heartbeat(1, 1))
    g.at(50)

    then = g.when(Recover())

    due = then.effect(ArmTimer, name="heartbeat-f1-1").timer.due
    assert due > then.now, f"heartbeat deadline re-armed at {due - T0} while now is {then.now - T0}"


def test_redelivered_step_started_does_not_pull_the_heartbeat_deadline_into_the_past() -> None:
    """BUG (same cause): a redelivered ``step_started`` fact re-arms the heartbeat deadline
    from ``started_at`` too."""
    g = saga().running().at(1).step_ok(0).at(2)
    started = g.started_fact(1)
    g.reported(started)
    for t in (15, 30, 45):
        g.at(t).decided(Heartbeat(1, 1))
    g.at(50)

    then = g.when(FactAppended(started))

    due = then.effect(ArmTimer, name="heartbeat-f1-1").timer.due
    assert due > then.now, f"heartbeat deadline re-armed at {due - T0} while now is {then.now - T0}"


# ---- heartbeat --------------------------------------------------------------------------------


def test_heartbeat_pushes_the_deadline_out_from_now() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).at(17)

    then = g.when(Heartbeat(1, 1))

    assert then.names == []
    assert then.effects == (
        ArmTimer("heartbeat-f1-1", g.timer("heartbeat", 1, 1, due=at(17 + 20))),
    )


@pytest.mark.parametrize(
    "heartbeat",
    [
        pytest.param(Heartbeat(1, 2), id="another attempt"),
        pytest.param(Heartbeat(0, 1), id="another step"),
        pytest.param(Heartbeat(1, 1, "compensation"), id="another phase"),
    ],
)
def test_heartbeat_for_another_attempt_is_ignored(heartbeat: Heartbeat) -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).at(10)

    g.when(heartbeat).nothing()


def test_heartbeat_before_the_step_started_is_ignored() -> None:
    g = saga().running().at(1).step_ok(0).at(2)

    g.when(Heartbeat(1, 1)).nothing()


def test_heartbeat_of_a_step_without_heartbeat_timeout_is_ignored() -> None:
    g = saga().running().at(1)
    g.reported(g.started_fact(0)).at(2)

    g.when(Heartbeat(0, 1)).nothing()


def test_heartbeat_after_the_run_ended_is_ignored() -> None:
    g = saga().running().at(1).step_ok(0).at(2)
    g.reported(g.started_fact(1)).decided(Cancel(g.cancel_command(terminate=True)))

    g.when(Heartbeat(1, 1)).nothing()


def test_heartbeat_of_a_compensation_step() -> None:
    g = failing_c().at(31)
    g.reported(g.started_fact(1, phase="compensation")).at(40)

    then = g.when(Heartbeat(1, 1, "compensation"))

    assert then.effect(ArmTimer).name == "heartbeat-c1-1"
    assert then.effect(ArmTimer).timer.due == at(40 + 15)


# ---- the real catalog --------------------------------------------------------------------------


def test_server_lifecycle_runs_its_two_bmc_steps_to_completion() -> None:
    g = Given("server.lifecycle", catalog=DEFAULT_CATALOG)
    then = g.created(input={"action": "on"}).at(1).when(LockGranted())
    cmd = then.effect(Dispatch).command
    assert (cmd.executor, cmd.action, cmd.step, cmd.params) == (
        "bmc",
        "power",
        "power_action",
        {"wait": False},
    )
    assert then.effect(ArmTimer).timer.due == at(1 + 120)

    g = then.then().at(2).step_ok(0, output={"requested": "On"}).at(3)
    scheduled = g.events[-1]
    assert isinstance(scheduled, StepScheduled)
    assert (scheduled.step, scheduled.timeout_s, scheduled.heartbeat_timeout_s) == (
        "wait_power_state",
        600.0,
        60.0,
    )
    then = g.when(g.started_fact(1))
    assert then.effect(ArmTimer).timer.due == at(3 + 60)

    g = then.then().at(30)
    then = g.when(g.succeeded_fact(1, output={"power": "On"}))
    assert then.event(RunCompleted).output == {
        "power_action": {"requested": "On"},
        "wait_power_state": {"power": "On"},
    }


def test_server_register_bmc_auth_failure_is_never_retried() -> None:
    g = Given("server.register", catalog=DEFAULT_CATALOG).running().at(1)
    g.reported(g.started_fact(0)).at(2)

    then = g.when(g.failed_fact(0, code="BMC_AUTH_FAILED", retryable=True))

    assert then.names == ["run_failed"]
    assert then.event(RunFailed).error.code == "BMC_AUTH_FAILED"


def test_server_register_busy_bmc_is_retried_with_jittered_backoff() -> None:
    g = Given("server.register", catalog=DEFAULT_CATALOG).running().at(1)
    g.reported(g.started_fact(0)).at(2)

    then = g.when(g.failed_fact(0, code="BMC_BUSY", retryable=True))

    policy = DEFAULT_CATALOG["server.register"].steps[0].retry
    delay = policy.delay_s(1, f"{RUN}:forward:0:1")
    assert then.effect(ArmTimer).timer.due == at(2) + timedelta(seconds=delay)
    assert 1.8 <= delay <= 2.2


def test_run_whose_type_left_the_catalog_fails_instead_of_crashing() -> None:
    """A deployment dropped the type while a run was in flight: the decider never raises."""
    g = Given("test.plain").running().at(1)
    g.reported(g.started_fact(0)).at(2)
    g.catalog = DEFAULT_CATALOG

    then = g.when(Recover())

    assert then.names == ["run_failed"]
    assert then.event(RunFailed).error.code == "VALIDATION_ERROR"
    assert NotifyCancel(RUN, terminate=True) in then.effects
    assert LOCK in then.effects


def test_decisions_take_their_ids_and_time_from_the_context() -> None:
    g = saga().created().at(7)
    state = g.state
    ctx = g.context(Ids("evt_ctx"))

    decision = decide(state, LockGranted(), ctx)

    assert [e.event_id for e in decision.events] == ["evt_ctx_0001", "evt_ctx_0002"]
    assert {e.time for e in decision.events} == {at(7)}
    assert decide(state, LockGranted(), g.context(Ids("evt_ctx"))) == decision  # pure


def test_saga_fixture_matches_its_description() -> None:
    assert [s.compensation.name if s.compensation else None for s in SAGA.steps] == [
        "undo_a",
        "undo_b",
        None,
    ]
