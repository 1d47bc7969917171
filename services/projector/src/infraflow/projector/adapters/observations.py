"""The drift loop's I/O: follow ``INFRA_OBSERVED``, compare with the cache, start sync runs.

    INFRA_OBSERVED ──(ordered consumer, last per subject first)──► latest observation per
    resource ──(settle, then core.drift.assess)──► StartRun on wf.cmd.start.<runId>
                                 ▲
    every resync_interval: every cached resource of a rule's type is assessed again against its
    latest observation, and one whose cache was not refreshed for max_observation_age gets a
    sync run anyway (an agent that stopped observing is caught too)

The consumer is ephemeral and per replica (the stream keeps the last observation of every
resource, so a restart starts by re-reading all of them). Evaluation waits ``settle_s`` after an
observation (bursts coalesce per resource, and the event follower catches up with the runs
that caused it) and only once the read model has caught up with the log. The generic part lives
here and in ``core.drift``; what to compare per resource type is the rule table there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from infraflow.common import subjects
from infraflow.common.catalog import Catalog
from infraflow.common.contracts import ResourceObserved, encode
from infraflow.common.tasks import cancel_and_wait
from infraflow.projector.adapters.store import ProjectionStore
from infraflow.projector.core import drift
from infraflow.projector.core.state import ResourceState, to_micros
from infraflow.projector.settings import DriftSettings

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(ResourceObserved)
_PAGE = 500


@dataclass(slots=True)
class DriftStats:
    """Counters for ``/metrics`` and tests."""

    observations: int = 0
    assessed: int = 0
    drift_runs: int = 0
    resync_runs: int = 0
    resyncs: int = 0
    errors: int = 0
    paused: int = 0
    """Automatic sync runs not started because their site's breaker was open."""


class DriftMonitor:
    """One projector replica's drift loop (see the module docstring)."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        store: ProjectionStore,
        catalog: Catalog,
        settings: DriftSettings,
        *,
        caught_up: Callable[[], bool] = lambda: True,
        rules: Mapping[str, drift.DriftRule] = drift.RULES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self._store = store
        self._catalog = catalog
        self.settings = settings
        self._caught_up = caught_up
        self.rules = {k: r for k, r in rules.items() if r.workflow_type in catalog}
        self._clock = clock
        self.tracker = drift.DriftTracker(int(settings.min_interval_s * 1e6))
        self.breaker = drift.SiteBreaker(
            ratio=settings.breaker_failure_ratio,
            min_resources=settings.breaker_min_resources,
            window=int(settings.breaker_window_s * 1e6),
        )
        self._open_sites: set[tuple[str, str | None]] = set()
        self.latest: dict[drift.ResourceKey, drift.Observation] = {}
        self.stats = DriftStats()
        self._pending: dict[drift.ResourceKey, asyncio.Task[None]] = {}
        self._sub: Any = None
        self._resync: asyncio.Task[None] | None = None

    def now(self) -> int:
        return int(self._clock() * 1_000_000)

    async def start(self) -> None:
        """Follow the observations and start the periodic resync."""
        if not self.settings.enabled or not self.rules:
            return
        self._resync = asyncio.create_task(self._run(), name="drift-monitor")

    async def _run(self) -> None:
        delay = 0.5
        while self._sub is None:
            try:
                self._sub = await self._js.subscribe(
                    subjects.OBSERVED_ALL,
                    cb=self._on_msg,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                )
            except Exception as exc:  # e.g. the stream is not there yet
                log.warning("cannot follow %s yet (%s); retrying", subjects.OBSERVED_ALL, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await self._resync_loop()

    async def stop(self) -> None:
        await cancel_and_wait(self._resync)
        pending = list(self._pending.values())
        self._pending.clear()
        await cancel_and_wait(pending)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    # ---- observations ------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        try:
            observed = _decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("undecodable observation on %s dropped", msg.subject)
            return
        seq = int(msg.metadata.sequence.stream) if msg.metadata else 0
        self.observe(
            drift.Observation(
                resource_type=observed.resource_type,
                resource_id=observed.resource_id,
                observed_at=to_micros(observed.observed_at),
                state=observed.state,
                gone=observed.gone,
                seq=seq,
                site=observed.site,
            )
        )

    def observe(self, observation: drift.Observation) -> None:
        """Remember the latest observation of a resource and assess it once it settles."""
        if observation.resource_type not in self.rules:
            return
        self.stats.observations += 1
        key = observation.key
        known = self.latest.get(key)
        if known is not None and known.observed_at > observation.observed_at:
            return
        self.latest[key] = observation
        self.breaker.record(self.rules[observation.resource_type], observation)
        self._breaker_changed(observation.resource_type, observation.site)
        if key not in self._pending:
            self._pending[key] = asyncio.create_task(self._settle(key))

    async def _settle(self, key: drift.ResourceKey) -> None:
        me = asyncio.current_task()
        try:
            await asyncio.sleep(self.settings.settle_s)
            while not self._caught_up():
                await asyncio.sleep(max(self.settings.settle_s, 0.1))
            # from here on, a newer observation schedules its own assessment
            if self._pending.get(key) is me:
                del self._pending[key]
            await self.evaluate(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.errors += 1
            log.exception("drift assessment of %s %s failed", *key)
        finally:
            if self._pending.get(key) is me:
                del self._pending[key]

    async def evaluate(self, key: drift.ResourceKey) -> drift.Assessment | None:
        """Assess the latest observation of ``key`` and start a sync run on drift."""
        observation = self.latest.get(key)
        rule = self.rules.get(key[0])
        if observation is None or rule is None:
            return None
        resource = await asyncio.to_thread(self._store.get_resource, *key)
        assessment = drift.assess(rule, observation, resource)
        self.stats.assessed += 1
        if assessment.verdict == "drift" and resource is not None:
            run_id = drift.sync_run_id(key, f"obs:{observation.seq}", observation.observed_at)
            await self._start(rule, resource, run_id, "drift", assessment.differences)
        return assessment

    # ---- periodic resync -------------------------------------------------------------

    async def _resync_loop(self) -> None:
        interval = self.settings.resync_interval_s
        while True:
            await asyncio.sleep(interval)
            if not self._caught_up():
                continue
            try:
                await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.errors += 1
                log.exception("drift resync failed")

    async def resync(self) -> None:
        """Assess every cached resource with a rule; refresh those not observed for long."""
        self.stats.resyncs += 1
        now = self.now()
        period = int(self.settings.resync_interval_s * 1e6)
        max_age = int(self.settings.max_observation_age_s * 1e6)
        self.tracker.forget_before(now)
        for rule in self.rules.values():
            async for resource in self._cached(rule.resource_type):
                if drift.skip_reason(rule, resource) is not None:
                    continue
                key = (resource.type, resource.id)
                if key in self.latest:
                    assessment = await self.evaluate(key)
                    if assessment is not None and assessment.verdict == "drift":
                        continue
                if drift.needs_refresh(resource, now, max_age):
                    bucket = now // period
                    run_id = drift.sync_run_id(key, f"resync:{bucket}", bucket * period)
                    await self._start(rule, resource, run_id, "resync", {})

    async def _cached(self, resource_type: str) -> Any:
        after: str | None = None
        while True:
            page: list[ResourceState] = await asyncio.to_thread(
                lambda a=after: self._store.list_resources(
                    resource_type,
                    project_ids=None,
                    states=None,
                    sites=None,
                    after_id=a,
                    limit=_PAGE,
                )
            )
            for resource in page:
                yield resource
            if len(page) < _PAGE:
                return
            after = page[-1].id

    # ---- starting runs -----------------------------------------------------------------

    async def _start(
        self,
        rule: drift.DriftRule,
        resource: ResourceState,
        run_id: str,
        reason: str,
        diff: Mapping[str, Mapping[str, Any]],
    ) -> None:
        key = (resource.type, resource.id)
        now = self.now()
        if not self.tracker.due(key, now):
            return
        if self._breaker_changed(resource.type, resource.site):
            self.stats.paused += 1
            return
        workflow = self._catalog.get(rule.workflow_type)
        command = drift.sync_command(
            rule,
            resource,
            run_id=run_id,
            reason="drift" if reason == "drift" else "resync",
            diff=diff,
            estimate_ms=workflow.estimate_ms if workflow is not None else 0,
            now=now,
        )
        await self._js.publish(
            subjects.command("start", run_id), encode(command), headers={"Nats-Msg-Id": run_id}
        )
        self.tracker.record(key, now)
        if reason == "drift":
            self.stats.drift_runs += 1
        else:
            self.stats.resync_runs += 1
        log.info(
            "started %s %s on %s %s (%s: %s)",
            rule.workflow_type,
            run_id,
            resource.type,
            resource.id,
            reason,
            ", ".join(diff) or "periodic",
        )

    def _breaker_changed(self, resource_type: str, site: str | None) -> bool:
        """Whether the site's breaker is open now; logs when it opens or closes."""
        key = (resource_type, site)
        now = self.now()
        is_open = self.breaker.is_open(resource_type, site, now)
        if is_open and key not in self._open_sites:
            failed, total = self.breaker.health(resource_type, site, now)
            self._open_sites.add(key)
            log.warning(
                "automatic syncs of %ss at site %s paused: %d of %d could not be observed",
                resource_type,
                site,
                failed,
                total,
            )
        elif not is_open and key in self._open_sites:
            self._open_sites.discard(key)
            log.info("automatic syncs of %ss at site %s resumed", resource_type, site)
        return is_open

    def prometheus(self) -> str:
        s = self.stats
        return (
            "# TYPE infraflow_projector_sync_paused_total counter\n"
            f"infraflow_projector_sync_paused_total {s.paused}\n"
            "# TYPE infraflow_projector_sync_breakers_open gauge\n"
            f"infraflow_projector_sync_breakers_open {len(self._open_sites)}\n"
            "# TYPE infraflow_projector_observations_total counter\n"
            f"infraflow_projector_observations_total {s.observations}\n"
            "# TYPE infraflow_projector_sync_runs_total counter\n"
            f'infraflow_projector_sync_runs_total{{reason="drift"}} {s.drift_runs}\n'
            f'infraflow_projector_sync_runs_total{{reason="resync"}} {s.resync_runs}\n'
        )
