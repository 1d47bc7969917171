"""Projector settings: ``INFRAFLOW_`` environment variables (see ``ServiceSettings``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from infraflow.common.settings import ServiceSettings


def _default_replica_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ProjectorSettings(ServiceSettings):
    """The read model's file, how the follower batches, and how long reads may wait."""

    db_path: str = ".state/projector.sqlite3"
    """This replica's SQLite file (``INFRAFLOW_DB_PATH``); every replica has its own."""
    replica_name: str = Field(default_factory=_default_replica_name)
    """Names this replica in logs and on its consumer (``INFRAFLOW_REPLICA_NAME``)."""
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    """Messages per pull request; a batch commits in one transaction."""
    max_buffered: int = Field(default=20_000, ge=1)
    """Received but not yet applied messages before the follower stops pulling."""
    heartbeat_s: float = Field(default=1.0, gt=0)
    """Idle heartbeat of the follower's pull requests (silence for 3x means a lost consumer)."""
    read_your_writes_timeout_s: float = Field(default=2.0, ge=0)
    """How long a lookup of an unknown run waits for the follower to reach the stream's end."""
    query_threads: int = Field(default=4, ge=1)
    """Threads answering queries from SQLite (each with its own connection)."""
