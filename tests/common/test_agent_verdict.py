"""Whether an agent runs a delivered step command, from the run's last events of each kind."""

from __future__ import annotations

from datetime import UTC, datetime

from infraflow.common.agent import attempt_verdict
from infraflow.common.contracts import ExecuteStep, StepScheduled, encode
from infraflow.common.jetstream import StoredMsg

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def cmd(index: int = 1, attempt: int = 1, phase: str = "forward") -> ExecuteStep:
    return ExecuteStep(
        run_id="run_1",
        resource_type="server",
        resource_id="srv_1",
        workflow_type="t",
        step=f"s{index}",
        index=index,
        attempt=attempt,
        phase=phase,
        executor="bmc",
        action="power",
        site="default",
    )  # type: ignore[arg-type]


def scheduled(seq: int, index: int = 1, attempt: int = 1, phase: str = "forward") -> StoredMsg:
    ev = StepScheduled(
        event_id="evt_x",
        run_id="run_1",
        resource_type="server",
        resource_id="srv_1",
        time=NOW,
        step=f"s{index}",
        index=index,
        attempt=attempt,
        phase=phase,
        executor="bmc",
        action="power",  # type: ignore[arg-type]
        site="default",
        timeout_s=10,
    )
    return StoredMsg("s", seq, encode(ev), {})


def fact(seq: int, msg_id: str) -> StoredMsg:
    return StoredMsg("s", seq, b"{}", {"Nats-Msg-Id": msg_id})


def test_the_current_unresolved_attempt_runs() -> None:
    assert attempt_verdict(cmd(), {"step_scheduled": scheduled(5)}) == "run"


def test_a_newer_attempt_makes_ours_stale() -> None:
    assert attempt_verdict(cmd(), {"step_scheduled": scheduled(9, index=2)}) == "stale"
    assert attempt_verdict(cmd(), {"step_scheduled": scheduled(9, attempt=2)}) == "stale"


def test_an_attempt_already_reported_is_not_run_again() -> None:
    c = cmd()
    last = {"step_scheduled": scheduled(5), "step_succeeded": fact(7, f"{c.attempt_id}:result")}
    assert attempt_verdict(c, last) == "stale"
    other = {"step_scheduled": scheduled(5), "step_failed": fact(7, "run_1:f:0:1:result")}
    assert attempt_verdict(c, other) == "run"


def test_a_timed_out_attempt_is_stale_but_an_older_timeout_is_not() -> None:
    assert (
        attempt_verdict(cmd(), {"step_scheduled": scheduled(5), "step_timed_out": fact(8, "x")})
        == "stale"
    )
    assert (
        attempt_verdict(cmd(), {"step_scheduled": scheduled(5), "step_timed_out": fact(3, "x")})
        == "run"
    )


def test_a_finished_run_runs_nothing() -> None:
    for name in ("run_completed", "run_failed", "run_cancelled"):
        assert (
            attempt_verdict(cmd(), {"step_scheduled": scheduled(5), name: fact(9, "x")}) == "stale"
        )


def test_cancel_stops_forward_steps_but_not_compensation() -> None:
    last = {"step_scheduled": scheduled(5), "run_cancel_requested": fact(6, "x")}
    assert attempt_verdict(cmd(), last) == "cancelled"
    comp = {
        "step_scheduled": scheduled(9, phase="compensation"),
        "run_cancel_requested": fact(6, "x"),
    }
    assert attempt_verdict(cmd(phase="compensation"), comp) == "run"
