"""Errors of the projector.

    InfraflowError (infraflow.common.errors)
    ├── ValidationError          VALIDATION_ERROR: a malformed query (bad cursor, page size)
    ├── NotFoundError            NOT_FOUND: unknown id, or outside the caller's projects
    └── ProjectorError           INTERNAL_ERROR
        ├── StoreError           the SQLite read model failed (sqlite3.Error mapped here)
        └── ConsumerLostError    the follower's ephemeral consumer vanished (broker restart,
                                 sequence gap): it is recreated from the tracked position

Query handlers answer every error as a ``QueryReply`` with ``ErrorInfo(code, message)``; the
follower logs and retries, it never dies of one.
"""

from __future__ import annotations

from infraflow.common.errors import InfraflowError


class ProjectorError(InfraflowError):
    """Base of the projector's own failures."""


class StoreError(ProjectorError):
    """The read model could not be read or written."""

    retryable = True


class ConsumerLostError(ProjectorError):
    """The follower's consumer is gone or skipped messages; it must be recreated."""

    retryable = True
