"""Commands: imperative messages that ask a service to do something.

* ``WF_COMMANDS`` (gateway → orchestrator): ``wf.cmd.<verb>.<runId>``, deduplicated by
  ``Nats-Msg-Id``.
* ``WF_STEPS`` (orchestrator → agents): ``wf.step.<executor>.<site>.<action>``, message id
  ``<runId>:<phase>:<index>:<attempt>``.
* ``WF_TIMERS``: durable timers fire a ``RunTimer`` on ``wf.timer.fired.<runId>.<name>``.
* Core NATS: ``StepHeartbeat`` on ``wf.heartbeat.<runId>``,
  ``CancelNotice`` on ``wf.cancel.<runId>``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from infraflow.common.contracts.base import Contract, OnBusy, Phase


class Command(Contract, frozen=True, kw_only=True, tag_field="command"):
    """A command addressed to one run."""

    run_id: str
    resource_type: str
    resource_id: str


class StartRun(Command, frozen=True, kw_only=True, tag="start"):
    """Start a new run of ``workflow_type`` (also used for retries: see ``retry_of``)."""

    workflow_type: str
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    triggered_by: str
    project_id: str | None = None
    site: str | None = None
    on_busy: OnBusy = "queue"
    request_id: str | None = None
    estimated_duration_ms: int = 0
    retry_of: str | None = None
    from_step: str | None = None
    requested_at: datetime | None = None


class CancelRun(Command, frozen=True, kw_only=True, tag="cancel"):
    """Cancel a pending or running run; ``terminate`` skips compensation."""

    requested_by: str
    reason: str | None = None
    terminate: bool = False


class ResumeRun(Command, frozen=True, kw_only=True, tag="resume"):
    """The resource lock was handed to this queued run: it may start now."""

    previous_holder: str | None = None


AnyCommand = StartRun | CancelRun | ResumeRun


TimerKind = Literal["timeout", "heartbeat", "retry"]


class RunTimer(Contract, frozen=True, kw_only=True, tag_field="command", tag="timer"):
    """A durable timer for one step attempt: a start-to-close or heartbeat deadline, or the end
    of a retry backoff."""

    run_id: str
    resource_type: str
    resource_id: str
    kind: TimerKind
    index: int
    attempt: int
    phase: Phase = "forward"
    due: datetime


class ExecuteStep(Contract, frozen=True, kw_only=True, tag_field="command", tag="execute_step"):
    """Execute one attempt of a step. Agents must make the action idempotent."""

    run_id: str
    resource_type: str
    resource_id: str
    workflow_type: str
    step: str
    index: int
    attempt: int
    phase: Phase = "forward"
    executor: str
    action: str
    site: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    project_id: str | None = None
    timeout_s: float = 60.0
    heartbeat_interval_s: float | None = None
    scheduled_at: datetime | None = None
    after_seq: int | None = None
    """The run's last event sequence when this attempt was dispatched. The agent appends
    ``step_started`` expecting it: if that holds, nothing happened to the run since (no cancel,
    timeout or newer attempt) and the attempt is current without reading the run's events."""

    @property
    def attempt_id(self) -> str:
        """Deterministic id of this attempt; the message id of the command."""
        return attempt_id(self.run_id, self.phase, self.index, self.attempt)


def attempt_id(run_id: str, phase: Phase, index: int, attempt: int) -> str:
    """``<runId>:<f|c>:<index>:<attempt>`` — stable across redeliveries and replicas."""
    return f"{run_id}:{'f' if phase == 'forward' else 'c'}:{index}:{attempt}"


class StepHeartbeat(Contract, frozen=True, kw_only=True, tag_field="kind", tag="heartbeat"):
    """An agent is still working on an attempt (core NATS, not persisted)."""

    run_id: str
    resource_type: str
    resource_id: str
    index: int
    attempt: int
    phase: Phase = "forward"
    step: str = ""
    time: datetime
    progress: float | None = None
    message: str | None = None


class CancelNotice(Contract, frozen=True, kw_only=True, tag_field="kind", tag="cancel"):
    """Tell agents to stop the run's in-flight step at a safe point (core NATS)."""

    run_id: str
    terminate: bool = False
    index: int | None = None
    """With ``attempt`` and ``phase``: stop only that attempt (it timed out); else every step."""
    attempt: int | None = None
    phase: Phase | None = None

    def matches(self, phase: Phase, index: int, attempt: int) -> bool:
        """Whether this notice stops that attempt: a run-wide cancel stops forward work only
        (the compensation it causes must run); terminate stops everything."""
        if self.attempt is not None:
            return self.index == index and self.attempt == attempt and self.phase == phase
        return self.terminate or phase == "forward"
