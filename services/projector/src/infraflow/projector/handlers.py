"""Query handlers: request/reply on ``wf.query.<tag>`` in the queue group ``projector``.

Each query is decoded, answered from this replica's SQLite file (in a thread pool, so a slow
read never stalls the follower) and replied to with a ``QueryReply``. Failures are data:
``NOT_FOUND`` (unknown id, or outside the caller's ``scope_projects`` — the two are
indistinguishable), ``VALIDATION_ERROR`` (malformed query), ``INTERNAL_ERROR`` (a bug).

Read-your-writes: an unknown run may have been accepted a moment ago. ``GetRun`` and
``GetRunEvents`` then look for its ``StartRun`` still waiting in ``WF_COMMANDS`` (a pending
view), and otherwise wait (bounded) until the follower has applied the stream's last sequence
as of the query before answering ``NOT_FOUND``. A list cursor carries the position its page was
read at, and a replica behind it catches up (bounded) before reading the next page.

``GetRunEvents`` reads the run's history from ``WF_EVENTS`` itself (``adapters.history``); with
``wait_ms`` it is a long poll: when nothing follows ``after_seq`` yet and the run has not ended,
it waits until the follower applies an event of that run (``RunWatchers``) or the time is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from infraflow.common import streams, subjects
from infraflow.common.catalog import Catalog
from infraflow.common.contracts import (
    ErrorInfo,
    EstimateDuration,
    GetMetrics,
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    ListRuns,
    Query,
    QueryReply,
    RunDetail,
    StartRun,
    decode_command,
    decode_query,
    encode,
)
from infraflow.common.errors import InfraflowError, NotFoundError, ValidationError
from infraflow.common.jetstream import get_last
from infraflow.projector.adapters.follower import AppliedPosition, RunWatchers
from infraflow.projector.adapters.history import (
    HistoryReadError,
    read_by_seqs,
    read_tail,
    run_filter,
)
from infraflow.projector.adapters.store import ProjectionStore, RunFilter
from infraflow.projector.core import metrics
from infraflow.projector.core.cursors import (
    CursorError,
    decode_cursor,
    decode_cursor_at,
    encode_cursor,
)
from infraflow.projector.core.state import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    RunState,
    to_micros,
)
from infraflow.projector.core.tenancy import narrow, visible
from infraflow.projector.core.views import (
    pending_run_detail,
    resource_view,
    run_detail,
    run_summary,
)
from infraflow.projector.errors import StoreError

log = logging.getLogger(__name__)

QUEUE_GROUP: Final = "projector"
MAX_PAGE_SIZE: Final = 500
MAX_EVENTS_LIMIT: Final = 10_000
MAX_WAIT_MS: Final = 60_000
BUCKETS_US: Final[dict[str, int]] = {
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
}
MAX_MINUTE_WINDOW_US: Final = 86_400_000_000
"""Minute buckets are counted from the runs themselves: at most one day of them."""
TOP_ERROR_CODES: Final = 10

T = TypeVar("T")


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """A successful answer before it becomes a ``QueryReply``; ``applied_seq`` overrides the
    position taken when the query arrived (when the answer was read after waiting)."""

    data: Any
    has_more: bool = False
    next_cursor: str | None = None
    applied_seq: int | None = None


class QueryHandlers:
    """Answers every read-model query from the store (see the module docstring)."""

    def __init__(
        self,
        store: ProjectionStore,
        nc: Client,
        js: JetStreamContext,
        position: AppliedPosition,
        catalog: Catalog,
        *,
        watchers: RunWatchers | None = None,
        threads: int = 4,
        read_your_writes_timeout_s: float = 2.0,
        max_inflight: int = 256,
    ) -> None:
        self._store = store
        self._nc = nc
        self._js = js
        self._position = position
        self.watchers = watchers or RunWatchers()
        self._catalog = catalog
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="projector-query")
        self._ryw_timeout_s = read_your_writes_timeout_s
        # nats-py runs a subscription's callbacks one at a time: each request gets its own
        # task so a lookup waiting for the follower never holds up the queries behind it
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_inflight)
        self._routes: dict[type[Query], Callable[[Any], Awaitable[Answer]]] = {
            GetRun: self.handle_get_run,
            ListRuns: self.handle_list_runs,
            GetRunEvents: self.handle_get_run_events,
            GetResource: self.handle_get_resource,
            ListResources: self.handle_list_resources,
            EstimateDuration: self.handle_estimate_duration,
            GetMetrics: self.handle_get_metrics,
        }

    async def subscribe(self, nc: Client) -> list[Subscription]:
        """One queue subscription per query subject."""
        subs = []
        for query_type in self._routes:
            tag = str(query_type.__struct_config__.tag)
            subs.append(
                await nc.subscribe(subjects.query(tag), queue=QUEUE_GROUP, cb=self._on_request)
            )
        return subs

    async def close(self) -> None:
        """Finish the queries in flight, then release the reader threads."""
        if self._inflight:
            await asyncio.wait(set(self._inflight))
        self._pool.shutdown(wait=True)

    # ---- the edge: decode, dispatch, encode ---------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        await self._slots.acquire()  # back-pressure: at most max_inflight queries at once
        task = asyncio.create_task(self._respond(msg))
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _respond(self, msg: Msg) -> None:
        reply = await self.answer(msg.subject, msg.data)
        try:
            await msg.respond(encode(reply))
        except Exception as exc:  # the connection is going away: the caller will time out
            log.warning("could not reply on %s: %s", msg.subject, exc)

    async def answer(self, subject: str, payload: bytes) -> QueryReply:
        """The reply to one query; never raises."""
        applied = self._position.seq
        try:
            try:
                query = decode_query(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ValidationError(f"malformed query: {exc}") from exc
            tag = str(type(query).__struct_config__.tag)
            if subject != subjects.query(tag):
                raise ValidationError(f"a {tag} query sent to {subject}")
            answer = await self._routes[type(query)](query)
        except InfraflowError as exc:
            return QueryReply(
                ok=False, error=ErrorInfo(code=exc.code, message=exc.message), applied_seq=applied
            )
        except Exception:
            log.exception("query on %s failed", subject)
            return QueryReply(
                ok=False,
                error=ErrorInfo(code="INTERNAL_ERROR", message="the query failed", retryable=True),
                applied_seq=applied,
            )
        return QueryReply(
            data=answer.data,
            has_more=answer.has_more,
            next_cursor=answer.next_cursor,
            applied_seq=applied if answer.applied_seq is None else answer.applied_seq,
        )

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    # ---- runs -----------------------------------------------------------------------------

    async def handle_get_run(self, q: GetRun) -> Answer:
        state, applied = await self._find_run(q.run_id, q.scope_projects)
        if isinstance(state, RunDetail):
            return Answer(data=msgspec.to_builtins(state), applied_seq=applied)
        retries = await self._read(self._store.retries_of, state.id)
        return Answer(data=msgspec.to_builtins(run_detail(state, retries)), applied_seq=applied)

    async def handle_get_run_events(self, q: GetRunEvents) -> Answer:
        if not 1 <= q.limit <= MAX_EVENTS_LIMIT or q.after_seq < 0:
            raise ValidationError(f"limit must be 1-{MAX_EVENTS_LIMIT}, afterSeq at least 0")
        if not 0 <= q.wait_ms <= MAX_WAIT_MS:
            raise ValidationError(f"waitMs must be 0-{MAX_WAIT_MS}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + q.wait_ms / 1000
        while True:
            known = self._position.seq  # every event up to here is recorded in the run's state
            state, applied = await self._find_run(q.run_id, q.scope_projects)
            if isinstance(state, RunDetail):  # accepted, not started: no events yet
                page: list[tuple[int, bytes]] = []
                more = False
                done = False
            else:
                page, more = await self._history(state, q.after_seq, q.limit, known)
                done = state.status in TERMINAL_STATUSES
            remaining = deadline - loop.time()
            if page or done or remaining <= 0:
                break
            # long poll: wake when the follower applies an event of this run
            await self.watchers.wait(q.run_id, remaining)
        # the original JSON goes out verbatim, without a decode/encode round trip
        data = [{"seq": seq, "event": msgspec.Raw(raw)} for seq, raw in page]
        return Answer(
            data=data,
            has_more=more,
            next_cursor=str(page[-1][0]) if page else None,
            applied_seq=applied,
        )

    async def _history(
        self, state: RunState, after_seq: int, limit: int, known: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """The run's events after ``after_seq`` from the stream: the ones the read model
        recorded by sequence, then (for a run still going) any the follower has not applied
        yet, i.e. after position ``known`` (see ``adapters.history``)."""
        seqs = [s for s in state.seqs if s > after_seq]
        try:
            page = await read_by_seqs(self._nc, seqs[:limit])
            more = len(seqs) > limit
            if not more and state.status not in TERMINAL_STATUSES:
                subject_filter = run_filter(state.resource_type, state.resource_id, state.id)
                start = max([after_seq, known, *state.seqs[-1:]])
                page += await read_tail(
                    self._nc, subject_filter, after_seq=start, limit=limit - len(page) + 1
                )
                more = len(page) > limit
        except HistoryReadError as exc:
            raise StoreError(f"could not read the history of {state.id}: {exc}") from exc
        return page[:limit], more

    async def _find_run(
        self, run_id: str, scope: list[str] | None
    ) -> tuple[RunState | RunDetail, int | None]:
        """The run (or its pending view) and, when it was read after waiting for the follower,
        the position that read reflects."""
        applied: int | None = None
        state = await self._read(self._store.get_run, run_id)
        if state is None:
            pending = await self._pending_run(run_id, scope)
            if pending is not None:
                return pending, None
            # the orchestrator may have taken the command and the follower applied its events
            # between the first read and the command lookup: look again before waiting
            state = await self._read(self._store.get_run, run_id)
            if state is None and await self._catch_up():
                applied = self._position.seq  # taken before the read: a safe lower bound
                state = await self._read(self._store.get_run, run_id)
        if state is None or not visible(state.project_id, scope):
            raise NotFoundError(f"run {run_id} not found")
        return state, applied

    async def _pending_run(self, run_id: str, scope: list[str] | None) -> RunDetail | None:
        """A run still waiting in ``WF_COMMANDS`` for the orchestrator, as a pending view."""
        try:
            subject = subjects.command("start", run_id)
        except ValueError:
            return None  # not an id that could exist
        stored = await get_last(self._js, streams.COMMANDS, subject)
        if stored is None:
            return None
        try:
            command = decode_command(stored.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("undecodable start command on %s", subject)
            return None
        if not isinstance(command, StartRun) or not visible(command.project_id, scope):
            return None
        accepted = _header_time(stored.headers.get("Nats-Time-Stamp"))
        return pending_run_detail(command, self._catalog.get(command.workflow_type), accepted)

    async def _catch_up(self) -> bool:
        """Wait (bounded) for the follower to apply the stream's current last sequence; True
        when something was applied meanwhile (worth looking again)."""
        before = self._position.seq
        info = await self._js.stream_info(streams.EVENTS)
        target = int(info.state.last_seq)
        if target <= before:
            return False
        await self._position.wait_for(target, self._ryw_timeout_s)
        return self._position.seq > before

    async def handle_list_runs(self, q: ListRuns) -> Answer:
        _check_page_size(q.page_size)
        unknown = set(q.statuses or ()) - RUN_STATUSES
        if unknown:
            raise ValidationError(f"unknown status(es): {', '.join(sorted(unknown))}")
        after, seen_seq = _cursor_at("runs", q.cursor)
        if seen_seq > self._position.seq:
            # another replica served the previous page: see at least what it saw (no skips)
            await self._position.wait_for(seen_seq, self._ryw_timeout_s)
        applied = self._position.seq
        f = RunFilter(
            type=q.types,
            status=q.statuses,
            resource_type=q.resource_types,
            resource_id=q.resource_ids,
            triggered_by=q.triggered_by,
            project_id=narrow(q.project_ids, q.scope_projects),
            since=to_micros(q.since) if q.since else None,
            until=to_micros(q.until) if q.until else None,
        )
        runs = await self._read(self._store.list_runs, f, after, q.page_size + 1)
        page = runs[: q.page_size]
        more = len(runs) > q.page_size
        return Answer(
            data=msgspec.to_builtins([run_summary(r) for r in page]),
            has_more=more,
            next_cursor=encode_cursor("runs", page[-1].id, max(applied, seen_seq))
            if more
            else None,
            applied_seq=applied,
        )

    # ---- resources ----------------------------------------------------------------------

    async def handle_get_resource(self, q: GetResource) -> Answer:
        # a primary-key lookup takes tens of microseconds: cheaper on the event loop than the
        # hop to a reader thread, and it sits on the path of every 202 (the gateway's checks)
        resource = self._store.get_resource(q.resource_type, q.resource_id)
        if resource is None or not visible(resource.project_id, q.scope_projects):
            raise NotFoundError(f"{q.resource_type} {q.resource_id} not found")
        return Answer(data=msgspec.to_builtins(resource_view(resource)))

    async def handle_list_resources(self, q: ListResources) -> Answer:
        _check_page_size(q.page_size)
        after = _cursor(f"resources.{q.resource_type}", q.cursor)
        found = await self._read(
            partial(
                self._store.list_resources,
                q.resource_type,
                project_ids=narrow(q.project_ids, q.scope_projects),
                states=q.states,
                sites=q.sites,
                after_id=after,
                limit=q.page_size + 1,
            )
        )
        page = found[: q.page_size]
        more = len(found) > q.page_size
        return Answer(
            data=msgspec.to_builtins([resource_view(r) for r in page]),
            has_more=more,
            next_cursor=encode_cursor(f"resources.{q.resource_type}", page[-1].id)
            if more
            else None,
        )

    # ---- estimates and metrics ----------------------------------------------------------

    async def handle_estimate_duration(self, q: EstimateDuration) -> Answer:
        durations = await self._read(
            self._store.recent_durations, q.workflow_type, q.resource_type, metrics.ESTIMATE_SAMPLE
        )
        workflow = self._catalog.get(q.workflow_type)
        if workflow is None and len(durations) < metrics.ESTIMATE_MIN_SAMPLES:
            raise ValidationError(f"unknown workflow type {q.workflow_type!r}")
        fallback = workflow.estimate_ms if workflow is not None else 0
        return Answer(data=metrics.estimate_ms(durations, fallback))

    async def handle_get_metrics(self, q: GetMetrics) -> Answer:
        bucket_us = _bucket_us(q)
        data = await self._read(
            partial(
                self._store.metrics,
                types=q.types,
                resource_types=q.resource_types,
                projects=q.scope_projects,
                since=to_micros(q.since) if q.since else None,
                until=to_micros(q.until) if q.until else None,
                bucket_us=bucket_us,
                top_errors=TOP_ERROR_CODES,
            )
        )
        view = metrics.metrics_view(
            data.totals,
            in_flight=data.in_flight,
            error_codes=data.error_codes,
            buckets=data.series,
        )
        view["since"] = q.since
        view["until"] = q.until
        view["bucket"] = q.bucket
        return Answer(data=msgspec.to_builtins(view))


def _bucket_us(q: GetMetrics) -> int | None:
    if q.bucket is None:
        return None
    if q.bucket not in BUCKETS_US:
        raise ValidationError(f"bucket must be one of {', '.join(BUCKETS_US)}")
    if q.since is not None and q.until is not None and q.until < q.since:
        raise ValidationError("until must not be before since")
    width = BUCKETS_US[q.bucket]
    if width < BUCKETS_US["hour"]:
        until = to_micros(q.until) if q.until else to_micros(datetime.now(UTC))
        if q.since is None or until - to_micros(q.since) > MAX_MINUTE_WINDOW_US:
            raise ValidationError("bucket=minute needs since and a window of at most one day")
    return width


def _check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValidationError(f"pageSize must be between 1 and {MAX_PAGE_SIZE}")


def _cursor(kind: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(kind, cursor)
    except CursorError as exc:
        raise ValidationError(f"invalid cursor: {exc}") from exc


def _cursor_at(kind: str, cursor: str | None) -> tuple[str | None, int]:
    if cursor is None:
        return None, 0
    try:
        return decode_cursor_at(kind, cursor)
    except CursorError as exc:
        raise ValidationError(f"invalid cursor: {exc}") from exc


def _header_time(value: str | None) -> datetime:
    """The broker's timestamp of a stored message (when the gateway's command landed)."""
    if value:
        try:
            return msgspec.json.decode(msgspec.json.encode(value), type=datetime)
        except msgspec.ValidationError:
            pass
    return datetime.now(UTC)
