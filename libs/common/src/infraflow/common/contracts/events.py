"""Run events: the durable log in ``WF_EVENTS`` and the platform's audit trail.

Subject: ``wf.events.<resourceType>.<resourceId>.<runId>.<event>``; the payload's ``event`` field
repeats the name. The orchestrator appends decisions (with optimistic concurrency on the run's
subject); agents append the facts of step attempts (``step_started``, ``step_succeeded``,
``step_failed``). Secrets never appear in events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from infraflow.common.contracts.base import SCHEMA_VERSION, ErrorInfo, OnBusy, Phase


class RunEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="event", tag=True
):
    """Fields every run event carries."""

    event_id: str
    run_id: str
    resource_type: str
    resource_id: str
    time: datetime
    causation_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def name(self) -> str:
        """The event name (its tag), e.g. ``run_created``."""
        return str(self.__struct_config__.tag)


class RunCreated(RunEvent, frozen=True, kw_only=True, tag="run_created"):
    """A run was accepted: its type, (redacted) input, who started it and its planned steps."""

    workflow_type: str
    input: dict[str, Any]
    triggered_by: str
    steps: list[str]
    project_id: str | None = None
    site: str | None = None
    mutating: bool = True
    on_busy: OnBusy = "queue"
    retry_of: str | None = None
    from_step: str | None = None
    prior_outputs: dict[str, Any] = msgspec.field(default_factory=dict)
    request_id: str | None = None
    estimated_duration_ms: int = 0


class RunQueued(RunEvent, frozen=True, kw_only=True, tag="run_queued"):
    """Another mutating run holds the resource; this run waits its turn (FIFO)."""

    waiting_for: str


class RunStarted(RunEvent, frozen=True, kw_only=True, tag="run_started"):
    """The run holds its resource (if any) and begins executing steps."""


class StepScheduled(RunEvent, frozen=True, kw_only=True, tag="step_scheduled"):
    """An attempt of a step was dispatched to its executor."""

    step: str
    index: int
    attempt: int
    phase: Phase = "forward"
    executor: str
    action: str
    site: str
    timeout_s: float
    heartbeat_timeout_s: float | None = None


class StepStarted(RunEvent, frozen=True, kw_only=True, tag="step_started"):
    """An agent began executing an attempt."""

    step: str
    index: int
    attempt: int
    phase: Phase = "forward"
    worker: str = ""


class StepSucceeded(RunEvent, frozen=True, kw_only=True, tag="step_succeeded"):
    """An attempt finished; ``output`` is what later steps and the read model may use."""

    step: str
    index: int
    attempt: int
    phase: Phase = "forward"
    output: dict[str, Any] = msgspec.field(default_factory=dict)


class StepFailed(RunEvent, frozen=True, kw_only=True, tag="step_failed"):
    """An attempt failed; ``error.retryable`` says whether another attempt may help."""

    step: str
    index: int
    attempt: int
    phase: Phase = "forward"
    error: ErrorInfo


class StepTimedOut(RunEvent, frozen=True, kw_only=True, tag="step_timed_out"):
    """The orchestrator gave up waiting on an attempt."""

    step: str
    index: int
    attempt: int
    phase: Phase = "forward"
    timeout: Literal["start_to_close", "heartbeat"] = "start_to_close"


class StepSkipped(RunEvent, frozen=True, kw_only=True, tag="step_skipped"):
    """A step before ``fromStep`` of a retry: not executed, its original output carried over."""

    step: str
    index: int
    output: dict[str, Any] = msgspec.field(default_factory=dict)
    from_run: str = ""


class CompensationStarted(RunEvent, frozen=True, kw_only=True, tag="compensation_started"):
    """Completed steps are being undone in reverse order."""

    cause: Literal["failure", "cancel"]
    error: ErrorInfo | None = None
    steps: list[str] = msgspec.field(default_factory=list)
    """Names of the compensation steps, in the order they will run."""
    indices: list[int] = msgspec.field(default_factory=list)
    """The forward step index each compensation undoes, in the same order."""


class RunCancelRequested(RunEvent, frozen=True, kw_only=True, tag="run_cancel_requested"):
    """Someone asked to stop the run (``terminate``: hard stop, no compensation)."""

    requested_by: str
    reason: str | None = None
    terminate: bool = False


class RunCompleted(RunEvent, frozen=True, kw_only=True, tag="run_completed"):
    """Every step succeeded."""

    output: dict[str, Any] = msgspec.field(default_factory=dict)


class RunFailed(RunEvent, frozen=True, kw_only=True, tag="run_failed"):
    """The run ended in failure; ``error.step`` names the step that failed."""

    error: ErrorInfo
    compensated: bool = False


class RunCancelled(RunEvent, frozen=True, kw_only=True, tag="run_cancelled"):
    """The run ended because it was cancelled (or terminated)."""

    requested_by: str
    terminated: bool = False
    compensated: bool = False


AnyRunEvent = (
    RunCreated
    | RunQueued
    | RunStarted
    | StepScheduled
    | StepStarted
    | StepSucceeded
    | StepFailed
    | StepTimedOut
    | StepSkipped
    | CompensationStarted
    | RunCancelRequested
    | RunCompleted
    | RunFailed
    | RunCancelled
)

EVENT_TYPES: Final[dict[str, type[RunEvent]]] = {
    str(t.__struct_config__.tag): t
    for t in (
        RunCreated,
        RunQueued,
        RunStarted,
        StepScheduled,
        StepStarted,
        StepSucceeded,
        StepFailed,
        StepTimedOut,
        StepSkipped,
        CompensationStarted,
        RunCancelRequested,
        RunCompleted,
        RunFailed,
        RunCancelled,
    )
}
EVENT_NAMES: Final = frozenset(EVENT_TYPES)
TERMINAL_EVENTS: Final = frozenset({"run_completed", "run_failed", "run_cancelled"})
AGENT_FACTS: Final = frozenset({"step_started", "step_succeeded", "step_failed"})
