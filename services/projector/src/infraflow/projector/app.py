"""Composition root of the projector: store + follower + query handlers, and ``main()``.

    infraflow-projector             follow WF_EVENTS, answer queries until SIGTERM
    infraflow-projector --rebuild   drop the read model first, then replay the whole log

Configuration: ``ProjectorSettings`` (``INFRAFLOW_NATS__URL``, ``INFRAFLOW_DB_PATH``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from infraflow.common import streams, subjects
from infraflow.common.catalog import Catalog, load_catalog
from infraflow.common.metrics import track_stream_lag
from infraflow.common.runtime import ServiceRuntime, run_service
from infraflow.common.tasks import cancel_and_wait
from infraflow.projector.adapters import store as store_module
from infraflow.projector.adapters.directory import ResourceDirectory
from infraflow.projector.adapters.follower import AppliedPosition, EventFollower, RunWatchers
from infraflow.projector.adapters.observations import DriftMonitor
from infraflow.projector.adapters.store import ProjectionStore
from infraflow.projector.core.batch import StreamMessage
from infraflow.projector.handlers import QueryHandlers
from infraflow.projector.settings import ProjectorSettings

log = logging.getLogger(__name__)

SERVICE_NAME = "projector"
STOP_TIMEOUT_S = 10.0


class Projector:
    """One projector replica: its SQLite read model, the follower that feeds it and the query
    handlers that read it. ``start`` and ``stop`` bracket its life on a connected client."""

    def __init__(
        self, settings: ProjectorSettings, nc: Client, js: JetStreamContext, catalog: Catalog
    ) -> None:
        self.settings = settings
        self._nc = nc
        self._js = js
        self.store = ProjectionStore(settings.db_path, catalog)
        self.position = AppliedPosition(self.store.applied_seq)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="projector-writer")
        self.follower = EventFollower(
            nc,
            js,
            self._apply,
            self.position,
            replica=settings.replica_name,
            batch_size=settings.batch_size,
            max_buffered=settings.max_buffered,
            heartbeat_s=settings.heartbeat_s,
            min_interval_s=settings.min_batch_interval_s,
            busy_rate=settings.busy_events_per_s,
        )
        self.watchers = RunWatchers()
        self.handlers = QueryHandlers(
            self.store,
            nc,
            js,
            self.position,
            catalog,
            watchers=self.watchers,
            threads=settings.query_threads,
            read_your_writes_timeout_s=settings.read_your_writes_timeout_s,
        )
        self.drift = DriftMonitor(
            nc, js, self.store, catalog, settings.drift, caught_up=self._ready
        )
        self.directory = ResourceDirectory(js)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._directory_task: asyncio.Task[None] | None = None
        self._subs: list[Subscription] = []
        self._was_caught_up = False

    @property
    def ready(self) -> bool:
        """True once the follower has caught up with the log (it stays true afterwards)."""
        self._was_caught_up = self._was_caught_up or self.follower.caught_up
        return self._was_caught_up

    def _ready(self) -> bool:
        return self.ready

    async def start(self) -> None:
        """Check the read model belongs to this log, then follow it and answer queries."""
        await self._check_log_identity()
        self._subs = await self.handlers.subscribe(self._nc)
        self._task = asyncio.create_task(self.follower.run(self._stop), name="projector-follower")
        self._directory_task = asyncio.create_task(
            self._publish_directory_when_ready(), name="resource-directory"
        )
        await self.drift.start()
        log.info(
            "projector %s serving from %s at sequence %d",
            self.settings.replica_name,
            self.settings.db_path,
            self.position.seq,
        )

    async def _publish_directory_when_ready(self) -> None:
        """Write the directory entries gathered while replaying, once caught up."""
        while not self.ready:
            await asyncio.sleep(0.1)
        try:
            await self.directory.flush()
        except Exception:
            log.exception("resource directory not written; it is retried with the next batch")

    async def stop(self) -> None:
        """Finish the batch being applied, stop answering, close the file."""
        await cancel_and_wait(self._directory_task)
        await self.drift.stop()
        self._stop.set()
        if self._task is not None:
            # normally quick (the current batch commits); bounded if the broker hangs a request
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                await cancel_and_wait(self._task)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()
        await self.handlers.close()
        self._writer.shutdown(wait=True)
        self.store.close()

    async def _apply(self, batch: list[StreamMessage]) -> int:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._writer, self.store.apply, batch)
        for bad in result.skipped:
            log.warning("skipped undecodable event %d on %s: %s", bad.seq, bad.subject, bad.reason)
        self.watchers.notify(result.run_ids)
        if result.resources:
            try:
                live = self.ready or self.follower.at_end
                await self.directory.publish(result.resources, result.applied_seq, live=live)
            except Exception:  # the directory is a shortcut for gateways, never a reason to stop
                log.exception(
                    "resource directory not written for the batch at %d", result.applied_seq
                )
        if self.ready:  # live runs only: a replay of the log would print millions of lines
            _log_lifecycle(batch)
        return result.applied_seq

    async def _check_log_identity(self) -> None:
        """A read model ahead of the stream was built from a log that no longer exists (the
        stream was recreated): it is dropped and rebuilt rather than silently stuck."""
        info = await self._js.stream_info(streams.EVENTS)
        last = int(info.state.last_seq)
        if self.store.applied_seq > last:
            log.warning(
                "read model at %d but %s ends at %d: rebuilding",
                self.store.applied_seq,
                streams.EVENTS,
                last,
            )
            await asyncio.get_running_loop().run_in_executor(self._writer, self.store.reset)
            self.position.reset(0)
            await self.directory.clear()

    def prometheus(self) -> str:
        """``/metrics`` lines of the follower."""
        s = self.follower.stats
        return (
            "# TYPE infraflow_projector_applied_seq gauge\n"
            f"infraflow_projector_applied_seq {self.position.seq}\n"
            "# TYPE infraflow_projector_received_total counter\n"
            f"infraflow_projector_received_total {s.received}\n"
            "# TYPE infraflow_projector_skipped_events_total counter\n"
            f"infraflow_projector_skipped_events_total {self.store.skipped_events}\n"
            "# TYPE infraflow_projector_consumers_total counter\n"
            f"infraflow_projector_consumers_total {s.consumers}\n"
            "# TYPE infraflow_projector_directory_puts_total counter\n"
            f"infraflow_projector_directory_puts_total {self.directory.puts}\n"
            "# TYPE infraflow_projector_directory_failures_total counter\n"
            f"infraflow_projector_directory_failures_total {self.directory.failures}\n"
        )


def create_projector(
    settings: ProjectorSettings,
    nc: Client,
    js: JetStreamContext,
    catalog: Catalog | None = None,
) -> Projector:
    """Wire a projector replica from its settings and a connected client."""
    return Projector(settings, nc, js, catalog or load_catalog(settings.catalog_extra_file))


async def serve(rt: ServiceRuntime, settings: ProjectorSettings) -> None:
    """The service's life: wait for the broker, run until SIGTERM, stop cleanly."""
    nc, js = await rt.connect()
    projector = create_projector(settings, nc, js)
    rt.ready_checks.append(lambda: projector.ready)
    rt.metrics.append(projector.prometheus)
    rt.metrics.append(projector.drift.prometheus)
    lag = track_stream_lag(js, streams.EVENTS, lambda: projector.position.seq, rt.stop)
    await projector.start()
    try:
        await rt.stop.wait()
    finally:
        await cancel_and_wait(lag)
        await projector.stop()


def rebuild(db_path: str | Path, catalog_extra_file: str | None = None) -> None:
    """Drop the views and the tracked position of the read model at ``db_path``; the next
    start replays ``WF_EVENTS`` from the first sequence. Run it while no projector uses it."""
    store_module.rebuild(db_path, load_catalog(catalog_extra_file))


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``infraflow-projector``."""
    parser = argparse.ArgumentParser(prog="infraflow-projector", description=__doc__)
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="drop the read model and replay the whole event log before serving",
    )
    args = parser.parse_args(argv)
    settings = ProjectorSettings()
    if args.rebuild:
        rebuild(settings.db_path, settings.catalog_extra_file)

    async def _main(rt: ServiceRuntime) -> None:
        await serve(rt, settings)

    run_service(SERVICE_NAME, settings, _main)


_LIFECYCLE = frozenset({"run_created", "run_completed", "run_failed", "run_cancelled"})


def _log_lifecycle(batch: list[StreamMessage]) -> None:
    """One line per run created or ended in the batch, carrying its ``runId``."""
    for m in batch:
        try:
            resource_type, resource_id, run_id, event = subjects.parse_event(m.subject)
        except ValueError:
            continue
        if event in _LIFECYCLE:
            log.info(
                "projected %s (%s %s)", event, resource_type, resource_id, extra={"runId": run_id}
            )


if __name__ == "__main__":
    main()
