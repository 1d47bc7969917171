"""The SQLite read model: one file per projector replica.

Write side (one thread): ``apply`` folds a batch of stream messages and commits the changed
rows, the metrics aggregates they move and the new ``last_applied_seq`` in ONE transaction, so a
crash at any point leaves the file at a batch boundary and a replayed message is skipped by its
sequence. Read side (any thread, one connection each): WAL lets queries run while a batch
commits.

Schema (``store_sql``; times are integer microseconds since the epoch, UTC):

    projector_meta      key -> value (schema_version)
    projector_position  the single row: last_applied_seq, skipped_events, orphan_events
    codes               (kind, value) -> small integer code of types, projects, users
    runs                id PK (WITHOUT ROWID) + coded filter columns; covering keyset indexes
    run_docs            id -> msgpack RunState (steps, attempts, input, output, event seqs)
    resources           (type, id) PK (WITHOUT ROWID), project_id, state, site, msgpack doc
    agg_counts, agg_durations, agg_errors
                        metrics aggregates per (grain, project, bucket start, type, rtype)

Raw events are not copied: ``WF_EVENTS`` is the history (see ``adapters.history``). That keeps
the file at roughly a quarter of the size it had with a copy of every event, and a rebuild
replays the same log the events query reads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from infraflow.common.catalog import Catalog
from infraflow.projector.adapters.codes import Codes
from infraflow.projector.adapters.metrics_store import (
    MetricsData,
    MetricsFilter,
    read_metrics,
    write_deltas,
)
from infraflow.projector.adapters.run_lists import RunFilter, list_run_ids
from infraflow.projector.adapters.store_sql import (
    KIND_PROJECT,
    KIND_RESOURCE_TYPE,
    KIND_TYPE,
    KIND_USER,
    SCHEMA,
    SCHEMA_VERSION,
    STATUS_CODES,
    TABLES,
    UPSERT_DOC,
    UPSERT_RESOURCE,
    UPSERT_RUN,
)
from infraflow.projector.core.aggregates import (
    NO_PROJECT,
    batch_deltas,
    contribution,
    duration_bin,
    step_retries,
)
from infraflow.projector.core.batch import (
    BatchChanges,
    ResourceKey,
    SkippedMessage,
    StreamMessage,
    decode_batch,
    fold_batch,
)
from infraflow.projector.core.state import COMPLETED, ResourceState, RunState
from infraflow.projector.errors import StoreError

log = logging.getLogger(__name__)

_CHUNK: Final = 500  # ids per IN (...) list
RUN_CACHE: Final = 4096
"""Folded runs the writer keeps between batches (a run's events usually span a few batches)."""
WRITER_CACHE_KIB: Final = 65_536
READER_CACHE_KIB: Final = 8_192

_encoder = msgspec.msgpack.Encoder()
_run_decoder = msgspec.msgpack.Decoder(RunState)
_resource_decoder = msgspec.msgpack.Decoder(ResourceState)

__all__ = ["ApplyResult", "ProjectionStore", "RunFilter", "rebuild"]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one ``apply`` did."""

    applied_seq: int
    events: int
    skipped: list[SkippedMessage]
    orphans: int
    run_ids: set[str] = field(default_factory=set)
    """The runs the batch changed (waiters on their histories are woken)."""
    resources: list[ResourceState] = field(default_factory=list)
    """The resources the batch changed, as committed."""


class ProjectionStore:
    """The SQLite read model. ``apply``/``reset`` belong to one writer thread; the read methods
    may be called from any thread (each thread gets its own connection)."""

    def __init__(self, path: str | Path, catalog: Catalog) -> None:
        self.path = Path(path)
        self.catalog = catalog
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.codes = Codes()
        self._cache: OrderedDict[str, RunState] = OrderedDict()
        self._writer = self._connect(WRITER_CACHE_KIB)
        self._migrate()
        self.codes.load(self._writer)
        self._applied_seq, self.skipped_events, self.orphan_events = self._load_position()

    # ---- connections ------------------------------------------------------------------

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the read model at {self.path}: {exc}") from exc
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(READER_CACHE_KIB)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    _reader = reader

    def close(self) -> None:
        """Close every connection (call once no thread uses the store any more)."""
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            self.codes.load(conn)  # forget codes assigned in the rolled-back batch
            self._cache.clear()  # and states folded by it
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Create the schema; a file from another schema version is dropped and replayed."""
        conn = self._writer
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "projector_meta" in tables:
            row = conn.execute(
                "SELECT value FROM projector_meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                log.warning("read model schema %s != %s: rebuilding", row, SCHEMA_VERSION)
                self._drop()
        conn.executescript(SCHEMA)  # every statement is idempotent
        conn.execute(
            "INSERT OR REPLACE INTO projector_meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def _drop(self) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _load_position(self) -> tuple[int, int, int]:
        row = self._writer.execute(
            "SELECT last_applied_seq, skipped_events, orphan_events FROM projector_position"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    # ---- write side -------------------------------------------------------------------

    @property
    def applied_seq(self) -> int:
        """The last stream sequence whose effects are committed."""
        return self._applied_seq

    def reset(self, *, vacuum: bool = False) -> None:
        """Drop every view and the tracked position: the follower replays from the start.
        ``vacuum`` also gives the freed space back to the file system."""
        self._drop()
        if vacuum:
            self._writer.execute("VACUUM")
        self._migrate()
        self.codes.load(self._writer)
        self._cache.clear()
        self._applied_seq, self.skipped_events, self.orphan_events = 0, 0, 0

    def apply(self, messages: list[StreamMessage]) -> ApplyResult:
        """Fold ``messages`` and commit the changes, the aggregates they move and the new
        position in one transaction."""
        batch = decode_batch(messages, self._applied_seq)
        if batch.last_seq == self._applied_seq:
            return ApplyResult(self._applied_seq, 0, [], 0)
        runs = self._load_runs(batch.run_ids)
        before = {run_id: contribution(state) for run_id, state in runs.items()}
        resources = self._load_resources(batch.resource_keys)
        changes = fold_batch(batch, runs, resources, self.catalog)
        deltas = batch_deltas(before, changes.runs.values())
        skipped = self.skipped_events + len(batch.skipped) + len(changes.failed)
        orphans = self.orphan_events + changes.orphans
        try:
            with self._transaction() as tx:
                self._write(tx, changes)
                write_deltas(tx, self.codes, deltas)
                self.codes.flush(tx)
                tx.execute(
                    "UPDATE projector_position SET last_applied_seq = ?, skipped_events = ?, "
                    "orphan_events = ? WHERE id = 1",
                    (batch.last_seq, skipped, orphans),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot commit the batch ending at {batch.last_seq}: {exc}") from exc
        self._applied_seq, self.skipped_events, self.orphan_events = (
            batch.last_seq,
            skipped,
            orphans,
        )
        self._remember(changes.runs.values())
        return ApplyResult(
            batch.last_seq,
            changes.events,
            [*batch.skipped, *changes.failed],
            changes.orphans,
            set(changes.runs),
            list(changes.resources.values()),
        )

    def _write(self, tx: sqlite3.Connection, changes: BatchChanges) -> None:
        codes = self.codes
        runs = changes.runs.values()
        tx.executemany(
            UPSERT_RUN,
            [
                (
                    r.id,
                    codes.assign(KIND_TYPE, r.type),
                    STATUS_CODES[r.status],
                    codes.assign(KIND_RESOURCE_TYPE, r.resource_type),
                    r.resource_id,
                    codes.assign(KIND_PROJECT, r.project_id or NO_PROJECT),
                    codes.assign(KIND_USER, r.triggered_by),
                    r.created_at,
                    r.completed_at,
                    r.duration_ms,
                    duration_bin(r.duration_ms) if r.duration_ms is not None else None,
                    r.retry_of,
                    r.error_code,
                    step_retries(r),
                )
                for r in runs
            ],
        )
        tx.executemany(UPSERT_DOC, [(r.id, _encoder.encode(r)) for r in runs])
        tx.executemany(
            UPSERT_RESOURCE,
            [
                (r.type, r.id, r.project_id, r.state, r.site, _encoder.encode(r))
                for r in changes.resources.values()
            ],
        )

    def _remember(self, runs: Iterable[RunState]) -> None:
        cache = self._cache
        for run in runs:
            cache[run.id] = run
            cache.move_to_end(run.id)
        while len(cache) > RUN_CACHE:
            cache.popitem(last=False)

    def _load_runs(self, ids: Iterable[str]) -> dict[str, RunState]:
        out: dict[str, RunState] = {}
        missing: list[str] = []
        for run_id in ids:
            cached = self._cache.pop(run_id, None)  # folded in place: taken out until committed
            if cached is None:
                missing.append(run_id)
            else:
                out[run_id] = cached
        for chunk in _chunks(sorted(missing)):
            marks = ",".join("?" * len(chunk))
            for run_id, doc in self._writer.execute(
                f"SELECT id, doc FROM run_docs WHERE id IN ({marks})", chunk
            ):
                out[run_id] = _run_decoder.decode(doc)
        return out

    def _load_resources(self, keys: Iterable[ResourceKey]) -> dict[ResourceKey, ResourceState]:
        out: dict[ResourceKey, ResourceState] = {}
        for chunk in _chunks(list(keys)):
            marks = ",".join("(?,?)" for _ in chunk)
            params = [v for key in chunk for v in key]
            for rtype, rid, doc in self._writer.execute(
                f"SELECT type, id, doc FROM resources WHERE (type, id) IN (VALUES {marks})", params
            ):
                out[(rtype, rid)] = _resource_decoder.decode(doc)
        return out

    # ---- read side --------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunState | None:
        row = self.reader().execute("SELECT doc FROM run_docs WHERE id = ?", (run_id,)).fetchone()
        return _run_decoder.decode(row[0]) if row else None

    def retries_of(self, run_id: str) -> list[str]:
        """Ids of the runs created as retries of ``run_id``, oldest first."""
        rows = self.reader().execute(
            "SELECT id FROM runs WHERE retry_of = ? ORDER BY id", (run_id,)
        )
        return [r[0] for r in rows]

    def list_runs(self, f: RunFilter, after_id: str | None, limit: int) -> list[RunState]:
        """Up to ``limit`` runs matching ``f`` with ids below ``after_id``, newest first (see
        ``run_lists`` for how a page is found)."""
        conn = self.reader()
        return self._run_docs(conn, list_run_ids(conn, self.codes, f, after_id, limit))

    @staticmethod
    def _run_docs(conn: sqlite3.Connection, ids: list[str]) -> list[RunState]:
        found: dict[str, RunState] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for run_id, doc in conn.execute(
                f"SELECT id, doc FROM run_docs WHERE id IN ({marks})", chunk
            ):
                found[run_id] = _run_decoder.decode(doc)
        return [found[i] for i in ids if i in found]

    def get_resource(self, resource_type: str, resource_id: str) -> ResourceState | None:
        row = (
            self.reader()
            .execute(
                "SELECT doc FROM resources WHERE type = ? AND id = ?", (resource_type, resource_id)
            )
            .fetchone()
        )
        return _resource_decoder.decode(row[0]) if row else None

    def list_resources(
        self,
        resource_type: str,
        *,
        project_ids: Sequence[str] | None,
        states: Sequence[str] | None,
        sites: Sequence[str] | None,
        after_id: str | None,
        limit: int,
    ) -> list[ResourceState]:
        """Resources of one type, newest id first, keyset-paginated by id."""
        conds = ["type = ?"]
        params: list[Any] = [resource_type]
        for column, values in (("project_id", project_ids), ("state", states), ("site", sites)):
            if values is None:
                continue
            if not values:
                return []
            conds.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
        if after_id is not None:
            conds.append("id < ?")
            params.append(after_id)
        sql = f"SELECT doc FROM resources WHERE {' AND '.join(conds)} ORDER BY id DESC LIMIT ?"
        rows = self.reader().execute(sql, [*params, limit])
        return [_resource_decoder.decode(r[0]) for r in rows]

    def recent_durations(
        self, workflow_type: str, resource_type: str | None, limit: int
    ) -> list[int]:
        """Durations (ms) of the latest completed runs of a type, most recent first."""
        conn = self.reader()
        type_codes = self.codes.lookup(conn, KIND_TYPE, [workflow_type])
        if not type_codes:
            return []
        sql = (
            "SELECT duration_ms FROM runs INDEXED BY runs_by_completion "
            f"WHERE type = ? AND status = {STATUS_CODES[COMPLETED]} AND duration_ms IS NOT NULL"
        )
        params: list[Any] = [type_codes[0]]
        if resource_type is not None:
            rtype_codes = self.codes.lookup(conn, KIND_RESOURCE_TYPE, [resource_type])
            if not rtype_codes:
                return []
            sql += " AND +rtype = ?"
            params.append(rtype_codes[0])
        sql += " ORDER BY completed_at DESC LIMIT ?"
        return [int(r[0]) for r in conn.execute(sql, [*params, limit])]

    def metrics(
        self,
        *,
        types: Sequence[str] | None,
        resource_types: Sequence[str] | None,
        projects: Sequence[str] | None,
        since: int | None,
        until: int | None,
        bucket_us: int | None,
        top_errors: int,
    ) -> MetricsData:
        """The metrics aggregates of a window (see ``metrics_store.read_metrics``);
        ``projects`` None covers every project."""
        conn = self.reader()
        f = MetricsFilter.of(conn, self.codes, types, resource_types, projects)
        return read_metrics(
            conn,
            self.codes,
            f,
            since=since,
            until=until,
            bucket_us=bucket_us,
            top_errors=top_errors,
        )


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def rebuild(db_path: str | Path, catalog: Catalog) -> None:
    """Drop every view and the tracked position of the read model at ``db_path`` (and give the
    space back): the next start of the projector replays the whole log. Run it while no
    projector uses the file."""
    store = ProjectionStore(db_path, catalog)
    try:
        store.reset(vacuum=True)
    finally:
        store.close()
