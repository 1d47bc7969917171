"""Orchestrator settings (``INFRAFLOW_`` environment variables)."""

from __future__ import annotations

from infraflow.common.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    max_inflight: int = 128
    """Messages handled concurrently per consumer (commands, facts, timers)."""
    cache_size: int = 20_000
    """Runs whose folded state is kept in memory (a miss costs one batched read)."""
    lock_sweep_interval_s: float = 30.0
    """How often held resource locks are checked for finished or stuck holders."""
    heartbeat_min_interval_s: float = 2.0
    """Heartbeats of one attempt closer together than this do not re-arm its deadline."""
