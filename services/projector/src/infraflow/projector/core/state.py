"""The projector's folded state: what it remembers about each run and each resource.

These are mutable structs owned by the fold: ``evolve_run``/``evolve_resource`` update the
state they are given and return it. Times are integer microseconds since the epoch (UTC), so
arithmetic is exact and the stored form is compact; views turn them back into datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from infraflow.common.contracts import ErrorInfo

# ---- run statuses (the REST API's values) -----------------------------------------------

PENDING: Final = "pending"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

RUN_STATUSES: Final = frozenset({PENDING, RUNNING, COMPLETED, FAILED, CANCELLED})
TERMINAL_STATUSES: Final = frozenset({COMPLETED, FAILED, CANCELLED})
IN_FLIGHT_STATUSES: Final = frozenset({PENDING, RUNNING})

RUN_STATUS_BY_EVENT: Final[dict[str, str]] = {
    "run_created": PENDING,
    "run_queued": PENDING,
    "run_started": RUNNING,
    "run_completed": COMPLETED,
    "run_failed": FAILED,
    "run_cancelled": CANCELLED,
}
"""Which status each run-level event moves a run to."""

STATUS_RANK: Final[dict[str, int]] = {
    PENDING: 0,
    RUNNING: 1,
    COMPLETED: 2,
    FAILED: 2,
    CANCELLED: 2,
}
"""Statuses only move forward: a late ``run_started`` never reopens a finished run."""

# ---- attempt and step statuses ----------------------------------------------------------

SCHEDULED: Final = "scheduled"
SUCCEEDED: Final = "succeeded"
TIMED_OUT: Final = "timed_out"
SKIPPED: Final = "skipped"
STEP_PENDING: Final = "pending"
# an attempt is also RUNNING ("running") or FAILED ("failed")

RESOLVED_ATTEMPT_STATUSES: Final = frozenset({SUCCEEDED, FAILED, TIMED_OUT})
DONE_STEP_STATUSES: Final = frozenset({SUCCEEDED, SKIPPED})
"""Forward steps in these statuses count towards ``progress.completedSteps``."""

STEP_TIMEOUT_CODE: Final = "STEP_TIMEOUT"


class AttemptState(msgspec.Struct, kw_only=True, array_like=True):
    """One attempt of a step; its resolution, once recorded, is final."""

    attempt: int
    status: str = SCHEDULED
    scheduled_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    error: ErrorInfo | None = None
    worker: str | None = None
    output: dict[str, Any] | None = None


class StepState(msgspec.Struct, kw_only=True, array_like=True):
    """A step of a run (forward or compensation) with its attempts."""

    name: str
    index: int
    attempts: list[AttemptState] = msgspec.field(default_factory=list)
    skipped: bool = False
    skipped_at: int | None = None
    output: dict[str, Any] | None = None


class RunState(msgspec.Struct, kw_only=True, array_like=True):
    """Everything the read model knows about one run (stored as a msgpack array: no field
    names in every row)."""

    id: str
    type: str
    resource_type: str
    resource_id: str
    triggered_by: str
    created_at: int
    status: str = PENDING
    project_id: str | None = None
    site: str | None = None
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    planned_steps: list[str] = msgspec.field(default_factory=list)
    mutating: bool = True
    retry_of: str | None = None
    from_step: str | None = None
    estimated_duration_ms: int = 0
    started_at: int | None = None
    completed_at: int | None = None
    waiting_for: str | None = None
    current_step: str | None = None
    cancel_requested: bool = False
    output: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    steps: list[StepState] = msgspec.field(default_factory=list)
    compensation: list[StepState] = msgspec.field(default_factory=list)
    seqs: list[int] = msgspec.field(default_factory=list)
    """The stream sequences of the run's events, in order: its history is read back from the
    stream by sequence (the read model keeps no copy of raw events)."""

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from creation to the terminal event (None while in flight)."""
        if self.completed_at is None:
            return None
        return max(0, (self.completed_at - self.created_at) // 1000)

    @property
    def completed_steps(self) -> int:
        return sum(1 for s in self.steps if step_status(s) in DONE_STEP_STATUSES)

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None


class ResourceState(msgspec.Struct, kw_only=True):
    """A server, cluster or VM as the cache knows it."""

    id: str
    type: str
    name: str | None = None
    state: str | None = None
    project_id: str | None = None
    site: str | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
    last_run_id: str | None = None
    active_run_id: str | None = None
    prior_state: str | None = None
    """The state before the active run set its ``states.running`` value (restored when the
    run ends without a terminal state declared for its outcome)."""
    observed_at: int | None = None
    created_at: int | None = None
    updated_at: int | None = None
    revision: int = 0
    """Bumped on every change, so a fold can tell whether a row needs writing."""


def step_status(step: StepState) -> str:
    """A step's status: ``skipped``, ``pending`` (no attempt yet) or its latest attempt's."""
    if step.skipped:
        return SKIPPED
    if not step.attempts:
        return STEP_PENDING
    if any(a.status == SUCCEEDED for a in step.attempts):
        return SUCCEEDED
    return latest_attempt(step).status


def latest_attempt(step: StepState) -> AttemptState:
    return max(step.attempts, key=lambda a: a.attempt)


# ---- time -------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)
