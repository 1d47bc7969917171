"""Effects: what the shell must do after appending a decision's events. All are idempotent, so
re-running them after a crash (or on another replica) is harmless."""

from __future__ import annotations

from dataclasses import dataclass

from infraflow.common.contracts import ExecuteStep, Phase, RunTimer


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Publish the step command (message id = attempt id, so a republish is deduplicated)."""

    command: ExecuteStep


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Schedule ``timer`` to fire at ``timer.due`` (re-arming replaces the previous schedule)."""

    name: str
    timer: RunTimer


@dataclass(frozen=True, slots=True)
class CancelTimer:
    run_id: str
    name: str


@dataclass(frozen=True, slots=True)
class AcquireLock:
    """Take the resource's lock or join its FIFO queue; the answer comes back as an input."""

    resource_type: str
    resource_id: str
    run_id: str
    fail_if_busy: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseLock:
    """Give up the lock (handing it to the next queued run) or leave the queue."""

    resource_type: str
    resource_id: str
    run_id: str


@dataclass(frozen=True, slots=True)
class NotifyCancel:
    """Ask agents to stop the run's in-flight step (best effort, core NATS)."""

    run_id: str
    terminate: bool = False
    attempt: tuple[Phase, int, int] | None = None
    """Only this (phase, index, attempt), e.g. an attempt that timed out."""


Effect = Dispatch | ArmTimer | CancelTimer | AcquireLock | ReleaseLock | NotifyCancel
