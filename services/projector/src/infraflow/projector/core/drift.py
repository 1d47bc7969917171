"""Drift between what agents observe and what the cache says, and when to start a sync run
(pure: times come in as integer microseconds, ids are derived, nothing is read or sent here).

Observations (``ResourceObserved`` on ``INFRA_OBSERVED``) are compared with the cached resource
field by field, per resource type, by the rules of :data:`RULES` — one table entry per type, so
each kind of observation (k8s informers for clusters and VMs, BMC power sync for servers) adds
its own entry and shares the rest. A difference starts the rule's ``sync.*`` workflow on that
resource; the run's ``resource`` output then corrects the cache.

Not every difference is drift: a resource the cache does not know, one in a settled state
(``deleted``), one a mutating run is changing right now (the run will update the cache), or an
observation older than the cache's last update are all left alone. A per-resource minimum
interval keeps a flapping resource from starting a run per observation; run ids are derived
from the observation (or the resync period), so projector replicas that reach the same decision
start the same run, which JetStream deduplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from infraflow.common.contracts import StartRun
from infraflow.common.ids import new_id
from infraflow.projector.core.state import ResourceState, from_micros

TRIGGERED_BY: Final = "projector"
"""``triggeredBy`` of the sync runs the projector starts."""

ResourceKey = tuple[str, str]
"""(resource type, resource id)"""

Verdict = Literal["drift", "in_sync", "unknown", "settled", "busy", "stale"]


@dataclass(frozen=True, slots=True)
class DriftRule:
    """How observations of one resource type are compared with the cache."""

    resource_type: str
    workflow_type: str
    """The ``sync.*`` workflow that re-observes the resource and corrects the cache."""
    fields: tuple[str, ...]
    """Attributes compared (only those the observation carries)."""
    gone: Mapping[str, Any] = field(default_factory=dict)
    """What a vanished resource looks like (the observation of a deleted object)."""
    settled_states: frozenset[str] = frozenset({"deleted", "decommissioned"})
    """Cache states in which the resource is not synced any more."""
    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    """Turns an observation's state into the comparable fields (drops values that are not
    facts about the resource, e.g. a transitional or unreadable one); None: as observed."""
    failed: Callable[[Mapping[str, Any]], bool] | None = None
    """Whether an observation reports that the resource could not be observed (it counts
    towards its site's breaker); None: observations never fail."""


def _server_fields(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """A power-sync observation's comparable fields: a settled power state (On/Off, not
    PoweringOn/Off or Unknown) and a health value, only from a BMC that answered."""
    if not state.get("reachable", True):
        return {}
    out: dict[str, Any] = {}
    if state.get("powerState") in ("On", "Off"):
        out["powerState"] = state["powerState"]
    if state.get("health") is not None:
        out["health"] = state["health"]
    return out


def _server_failed(state: Mapping[str, Any]) -> bool:
    return state.get("reachable", True) is False


RULES: Final[dict[str, DriftRule]] = {
    "cluster": DriftRule(
        resource_type="cluster",
        workflow_type="sync.cluster-state",
        fields=(
            "phase",
            "ready",
            "workers",
            "controlPlanes",
            "template",
            "version",
            "availableUpgrades",
        ),
        gone={"phase": "Deleted", "ready": False},
    ),
    "server": DriftRule(
        resource_type="server",
        workflow_type="sync.server-state",
        fields=("powerState", "health"),
        settled_states=frozenset({"decommissioned"}),
        prepare=_server_fields,
        failed=_server_failed,
    ),
    "vm": DriftRule(
        resource_type="vm",
        workflow_type="sync.cluster-state",
        fields=("phase", "ready", "running"),
        gone={"phase": "Deleted", "ready": False, "running": False},
    ),
}
"""The rule per resource type. Add an entry per kind of observation (one line each)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation, as received (``seq``: its stream sequence in ``INFRA_OBSERVED``)."""

    resource_type: str
    resource_id: str
    observed_at: int
    state: Mapping[str, Any]
    gone: bool = False
    seq: int = 0
    site: str | None = None

    @property
    def key(self) -> ResourceKey:
        return (self.resource_type, self.resource_id)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What an observation says about the cache: a verdict and the fields that differ."""

    verdict: Verdict
    differences: dict[str, dict[str, Any]] = field(default_factory=dict)


def observed_fields(rule: DriftRule, observation: Observation) -> Mapping[str, Any]:
    if observation.gone:
        return rule.gone
    return rule.prepare(observation.state) if rule.prepare else observation.state


def differences(
    rule: DriftRule, observed: Mapping[str, Any], cached: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``field -> {"cached", "observed"}`` for every compared field that differs."""
    return {
        name: {"cached": cached.get(name), "observed": observed[name]}
        for name in rule.fields
        if name in observed and cached.get(name) != observed[name]
    }


def skip_reason(rule: DriftRule, resource: ResourceState | None) -> Verdict | None:
    """Why a cached resource is not a candidate for a sync run right now, if it is not."""
    if resource is None:
        return "unknown"
    if resource.state in rule.settled_states:
        return "settled"
    if resource.active_run_id is not None:
        return "busy"
    return None


def assess(rule: DriftRule, observation: Observation, resource: ResourceState | None) -> Assessment:
    """Compare one observation with the cached resource."""
    reason = skip_reason(rule, resource)
    if reason is not None:
        return Assessment(reason)
    assert resource is not None
    if resource.observed_at is not None and observation.observed_at < resource.observed_at:
        return Assessment("stale")  # the cache was updated after this was observed
    diff = differences(rule, observed_fields(rule, observation), resource.attributes)
    return Assessment("drift" if diff else "in_sync", diff)


def needs_refresh(resource: ResourceState, now: int, max_age: int) -> bool:
    """Whether the cache has not been refreshed by any observation for ``max_age``."""
    seen = resource.observed_at if resource.observed_at is not None else resource.created_at
    return seen is None or now - seen >= max_age


@dataclass(slots=True)
class DriftTracker:
    """Per-resource debounce: at most one sync run per resource per ``min_interval``."""

    min_interval: int
    started: dict[ResourceKey, int] = field(default_factory=dict)

    def due(self, key: ResourceKey, now: int) -> bool:
        last = self.started.get(key)
        return last is None or now - last >= self.min_interval

    def record(self, key: ResourceKey, now: int) -> None:
        self.started[key] = now

    def forget_before(self, now: int) -> None:
        """Drop entries older than the interval (bounded memory)."""
        for key in [k for k, t in self.started.items() if now - t >= self.min_interval]:
            del self.started[key]


def sync_run_id(resource: ResourceKey, basis: str, at_us: int) -> str:
    """A run id every replica derives alike from the same decision: the time part is the
    observation's (or the resync period's) time, the rest a hash of resource and basis."""
    digest = hashlib.blake2b(f"{resource[0]}:{resource[1]}:{basis}".encode(), digest_size=13)
    return new_id("run", now_ms=at_us // 1000, entropy=int.from_bytes(digest.digest(), "big"))


def sync_command(
    rule: DriftRule,
    resource: ResourceState,
    *,
    run_id: str,
    reason: Literal["drift", "resync"],
    diff: Mapping[str, Mapping[str, Any]],
    estimate_ms: int,
    now: int,
) -> StartRun:
    """The ``StartRun`` of a sync run on ``resource`` (non-mutating: it never waits for a
    lock and never changes the resource's state, only its observed attributes)."""
    requested = from_micros(now)
    assert isinstance(requested, datetime)
    return StartRun(
        run_id=run_id,
        resource_type=resource.type,
        resource_id=resource.id,
        workflow_type=rule.workflow_type,
        input={"reason": reason, "differences": {k: dict(v) for k, v in diff.items()}},
        triggered_by=TRIGGERED_BY,
        project_id=resource.project_id,
        site=resource.site,
        estimated_duration_ms=estimate_ms,
        requested_at=requested,
    )


@dataclass(slots=True)
class SiteBreaker:
    """Pauses a site's automatic sync runs while most of its resources cannot be observed.

    When the BMCs (or the agent's path to them) of a whole site fail, every sync run there
    would fail too; starting them only adds load to a site that is already in trouble. The
    breaker is open for ``(resource type, site)`` while, among the resources observed there in
    the last ``window`` (microseconds), at least ``min_resources`` were observed and more than
    ``ratio`` of them failed. It closes by itself once observations succeed again. Runs
    started by hand (``POST /v1/servers/{id}/sync``) are not affected.
    """

    ratio: float = 0.5
    min_resources: int = 2
    window: int = 300_000_000
    latest: dict[tuple[str, str | None], dict[str, tuple[bool, int]]] = field(default_factory=dict)

    def record(self, rule: DriftRule, observation: Observation) -> None:
        """Remember whether the resource's latest observation failed."""
        failed = bool(rule.failed and not observation.gone and rule.failed(observation.state))
        site = self.latest.setdefault((observation.resource_type, observation.site), {})
        site[observation.resource_id] = (failed, observation.observed_at)

    def forget(self, resource_type: str, site: str | None, resource_id: str) -> None:
        self.latest.get((resource_type, site), {}).pop(resource_id, None)

    def health(self, resource_type: str, site: str | None, now: int) -> tuple[int, int]:
        """(failed, observed) among the site's recent observations."""
        recent = [
            failed
            for failed, at in self.latest.get((resource_type, site), {}).values()
            if now - at <= self.window
        ]
        return sum(recent), len(recent)

    def is_open(self, resource_type: str, site: str | None, now: int) -> bool:
        failed, total = self.health(resource_type, site, now)
        return total >= self.min_resources and failed > self.ratio * total
