"""The run fold, given/when/then: past events in, the expected view out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from infraflow.common.contracts import AnyRunEvent, RunDetail
from infraflow.projector.core.runs import evolve_run
from infraflow.projector.core.state import RunState
from infraflow.projector.core.views import run_detail, run_summary

from .support import T0, RunHistory, register_input


def fold(events: list[AnyRunEvent]) -> RunState | None:
    state: RunState | None = None
    for e in events:
        state = evolve_run(state, e)
    return state


def detail(h: RunHistory, retries: list[str] | None = None) -> RunDetail:
    state = fold(h.events)
    assert state is not None
    return run_detail(state, retries or [])


def test_created_run_is_pending_with_planned_steps() -> None:
    h = RunHistory(input=register_input())
    h.created(estimated_ms=5000)

    d = detail(h)

    assert d.status == "pending"
    assert d.type == "server.register"
    assert d.created_at == T0
    assert d.started_at is None
    assert d.duration_ms is None
    assert d.estimated_duration == 5000
    assert d.progress.total_steps == 2
    assert d.progress.completed_steps == 0
    assert [(s.name, s.status) for s in d.steps] == [
        ("connect", "pending"),
        ("inventory", "pending"),
    ]
    assert d.input == register_input()


def test_queued_run_waits_for_the_holder_then_runs() -> None:
    h = RunHistory()
    h.created()
    h.queued("run_holder")
    assert detail(h).status == "pending"
    assert detail(h).waiting_for == "run_holder"

    h.started()

    d = detail(h)
    assert d.status == "running"
    assert d.waiting_for is None
    assert d.started_at == T0 + timedelta(seconds=2)


def test_happy_path_completes_with_output_duration_and_timeline() -> None:
    h = RunHistory()
    h.created()
    h.started()
    h.step_ok(0, {"vendor": "Dell"})
    h.step_ok(1)
    h.completed({"serial": "ABC"})

    d = detail(h)

    assert d.status == "completed"
    assert d.output == {"serial": "ABC"}
    assert d.duration_ms == 8000  # created at T0, completed 8 events later
    assert d.progress.completed_steps == 2
    assert d.progress.current_step is None
    first = d.steps[0]
    assert first.status == "succeeded"
    assert first.output == {"vendor": "Dell"}
    assert first.duration_ms == 1000  # started -> succeeded
    [attempt] = first.attempts
    assert attempt.status == "succeeded"
    assert attempt.worker == "bmc-agent-1"
    assert attempt.scheduled_at == T0 + timedelta(seconds=2)
    assert attempt.completed_at == T0 + timedelta(seconds=4)


def test_failed_attempt_then_retry_keeps_both_attempts() -> None:
    h = RunHistory()
    h.created()
    h.started()
    h.scheduled(0)
    h.step_started(0)
    h.step_failed(0)
    h.scheduled(0, attempt=2)
    h.step_started(0, attempt=2)

    d = detail(h)

    step = d.steps[0]
    assert [a.status for a in step.attempts] == ["failed", "running"]
    assert step.attempts[0].error is not None
    assert step.attempts[0].error.code == "BMC_UNREACHABLE"
    assert step.status == "running"
    assert d.progress.current_step == "connect"


def test_late_success_does_not_flip_a_timed_out_attempt() -> None:
    h = RunHistory()
    h.created()
    h.started()
    h.scheduled(0)
    h.step_started(0)
    h.timed_out(0)
    h.succeeded(0, output={"late": True})  # the agent finished after the orchestrator gave up

    d = detail(h)

    [attempt] = d.steps[0].attempts
    assert attempt.status == "timed_out"
    assert attempt.error is not None
    assert attempt.error.code == "STEP_TIMEOUT"
    assert d.steps[0].status == "timed_out"
    assert d.steps[0].output is None
    assert d.progress.completed_steps == 0


def test_late_start_after_resolution_fills_times_but_keeps_status() -> None:
    h = RunHistory()
    h.created()
    h.scheduled(0)
    h.step_failed(0)
    h.step_started(0)

    [attempt] = detail(h).steps[0].attempts
    assert attempt.status == "failed"
    assert attempt.started_at is not None


def test_compensation_goes_to_its_own_list() -> None:
    h = RunHistory("server.provision")
    h.created()
    h.started()
    h.step_ok(0)
    h.step_ok(1)
    h.scheduled(2)
    h.step_failed(2, retryable=False)
    h.compensation_started(["eject_media"], [1])
    h.scheduled(1, phase="compensation", step="eject_media")
    h.succeeded(1, phase="compensation", step="eject_media")
    h.failed("BMC_UNREACHABLE", step="boot_once_cd")

    d = detail(h)

    assert d.status == "failed"
    assert d.error is not None
    assert d.error.step == "boot_once_cd"
    assert [s.name for s in d.steps] == h.steps  # forward plan only
    assert [(s.name, s.index, s.status) for s in d.compensation] == [
        ("eject_media", 1, "succeeded")
    ]
    assert d.progress.completed_steps == 2


def test_retry_with_skipped_steps_counts_them_as_done() -> None:
    h = RunHistory(retry_of="run_original", from_step="inventory")
    h.created()
    h.started()
    h.skipped(0, {"vendor": "Dell"})
    h.step_ok(1)
    h.completed()

    d = detail(h, retries=[])

    assert d.retry_of == "run_original"
    assert d.from_step == "inventory"
    assert [s.status for s in d.steps] == ["skipped", "succeeded"]
    assert d.steps[0].output == {"vendor": "Dell"}
    assert d.progress.completed_steps == 2


def test_terminal_status_is_never_reopened() -> None:
    h = RunHistory()
    h.created()
    h.cancel_requested()
    h.cancelled()
    h.started()  # a stray late decision

    d = detail(h)

    assert d.status == "cancelled"
    assert d.started_at is None
    assert d.cancel_requested is True


def test_failed_run_carries_its_error_into_the_summary() -> None:
    h = RunHistory()
    h.created()
    h.started()
    h.failed("BMC_AUTH_FAILED", step="connect")

    s = run_summary(fold(h.events))  # type: ignore[arg-type]

    assert s.status == "failed"
    assert s.error is not None
    assert s.error.code == "BMC_AUTH_FAILED"
    assert s.duration_ms == 2000


def test_events_of_an_unknown_run_fold_to_nothing() -> None:
    h = RunHistory()
    h.created()
    h.started()

    assert fold(h.events[1:]) is None


def test_duplicate_run_created_is_ignored() -> None:
    h = RunHistory()
    first = h.created()
    h.started()
    state = fold([*h.events, first])

    assert state is not None
    assert state.status == "running"


_FACTS = st.lists(st.sampled_from(["started", "succeeded", "failed", "timed_out"]), max_size=8)


@given(_FACTS)
def test_an_attempt_keeps_its_first_resolution(facts: list[str]) -> None:
    h = RunHistory()
    h.created()
    h.scheduled(0)
    makers: dict[str, Any] = {
        "started": lambda: h.step_started(0),
        "succeeded": lambda: h.succeeded(0),
        "failed": lambda: h.step_failed(0),
        "timed_out": lambda: h.timed_out(0),
    }
    for f in facts:
        makers[f]()

    [attempt] = detail(h).steps[0].attempts

    resolutions = [f for f in facts if f != "started"]
    if resolutions:
        assert attempt.status == resolutions[0]
    else:
        assert attempt.status == ("running" if facts else "scheduled")
