"""Errors shared by every service. Each carries a stable ``code`` and whether it is ``retryable``.

    InfraflowError(code, message, retryable, details)
    ├── ValidationError            VALIDATION_ERROR       400
    ├── NotFoundError              NOT_FOUND              404
    ├── ConflictError              CONFLICT               409
    │   ├── InvalidStateTransitionError  INVALID_STATE_TRANSITION 409
    │   └── ResourceBusyError      RESOURCE_BUSY          409
    ├── BrokerUnavailableError     SERVICE_UNAVAILABLE    503 (retryable)
    └── AppendConflictError        (internal) optimistic-concurrency conflict on a run's log

The gateway maps ``code`` to an HTTP status in one place; services turn ``retryable`` into a
delayed redelivery and everything else into a failure event.
"""

from __future__ import annotations

from typing import Any


class InfraflowError(Exception):
    """Base error with a machine-readable code."""

    code = "INTERNAL_ERROR"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.details = details or {}


class ValidationError(InfraflowError):
    code = "VALIDATION_ERROR"


class NotFoundError(InfraflowError):
    code = "NOT_FOUND"


class ConflictError(InfraflowError):
    code = "CONFLICT"


class InvalidStateTransitionError(ConflictError):
    code = "INVALID_STATE_TRANSITION"


class ResourceBusyError(ConflictError):
    code = "RESOURCE_BUSY"


class BrokerUnavailableError(InfraflowError):
    code = "SERVICE_UNAVAILABLE"
    retryable = True


class AppendConflictError(InfraflowError):
    """Another writer appended to the run's log first (expected-last-subject-sequence failed)."""

    code = "APPEND_CONFLICT"
    retryable = True

    def __init__(self, message: str, *, actual_last_seq: int | None = None) -> None:
        super().__init__(message)
        self.actual_last_seq = actual_last_seq
