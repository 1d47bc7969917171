"""Projector settings: ``INFRAFLOW_`` environment variables (see ``ServiceSettings``)."""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, Field

from infraflow.common.settings import ServiceSettings


def _default_replica_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class DriftSettings(BaseModel):
    """When the projector compares observations with its cache and starts ``sync.*`` runs
    (``INFRAFLOW_DRIFT__...``; see ``adapters/observations.py``)."""

    enabled: bool = True
    settle_s: float = Field(default=1.0, ge=0)
    """Wait after an observation before comparing (coalesces bursts, lets runs land)."""
    min_interval_s: float = Field(default=30.0, ge=0)
    """At most one sync run per resource in this interval."""
    resync_interval_s: float = Field(default=300.0, gt=0)
    """Every this often, every cached resource with a drift rule is assessed again."""
    max_observation_age_s: float = Field(default=3600.0, gt=0)
    """At a resync, a resource whose cache was not refreshed for this long gets a sync run."""
    breaker_failure_ratio: float = Field(default=0.5, ge=0, le=1)
    """A site's automatic syncs pause while more than this share of its resources (observed
    within ``breaker_window_s``) could not be observed (e.g. their BMCs do not answer)."""
    breaker_min_resources: int = Field(default=2, ge=1)
    """The breaker needs at least this many recently observed resources at the site."""
    breaker_window_s: float = Field(default=300.0, gt=0)
    """Observations older than this do not count towards the breaker."""


class ProjectorSettings(ServiceSettings):
    """The read model's file, how the follower batches, and how long reads may wait."""

    db_path: str = ".state/projector.sqlite3"
    """This replica's SQLite file (``INFRAFLOW_DB_PATH``); every replica has its own."""
    replica_name: str = Field(default_factory=_default_replica_name)
    """Names this replica in logs and on its consumer (``INFRAFLOW_REPLICA_NAME``)."""
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    """Messages per pull request; a batch commits in one transaction."""
    min_batch_interval_s: float = Field(default=0.01, ge=0, le=1)
    """While busy (see ``busy_events_per_s``), live batches start at most this often: fewer,
    larger transactions for at most this much extra staleness."""
    busy_events_per_s: float = Field(default=1000.0, ge=0)
    """Above this many events a second the follower paces its batches; below it, every
    batch is applied at once (a quiet system's read model is as fresh as it can be)."""
    max_buffered: int = Field(default=20_000, ge=1)
    """Received but not yet applied messages before the follower stops pulling."""
    heartbeat_s: float = Field(default=1.0, gt=0)
    """Idle heartbeat of the follower's pull requests (silence for 3x means a lost consumer)."""
    read_your_writes_timeout_s: float = Field(default=2.0, ge=0)
    """How long a lookup of an unknown run waits for the follower to reach the stream's end."""
    query_threads: int = Field(default=4, ge=1)
    """Threads answering queries from SQLite (each with its own connection)."""
    drift: DriftSettings = DriftSettings()
    """Drift detection and periodic resync (``sync.*`` runs)."""
