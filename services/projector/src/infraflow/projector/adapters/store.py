"""The read model in SQLite: one file per projector replica.

Write side (one thread): ``apply`` folds a batch of stream messages and commits the changed
rows together with the new ``last_applied_seq`` in ONE transaction, so a crash at any point
leaves the file at a batch boundary and a replayed message is skipped by its sequence.
Read side (any thread, one connection each): WAL lets queries run while a batch commits.

Schema (times are integer microseconds since the epoch, UTC):

    projector_meta      key -> value (schema_version)
    projector_position  the single row: last_applied_seq, skipped_events, orphan_events
    runs                id PK (WITHOUT ROWID) + the filter columns; one (column, id) index per
                        filter so every list page is a keyset range scan
    run_docs            id -> msgpack RunState (steps, attempts, input, output)
    run_events          seq PK, run_id, name, data (the event's original JSON); (run_id, seq)
    resources           (type, id) PK (WITHOUT ROWID), project_id, state, site, msgpack doc
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from infraflow.common.catalog import Catalog
from infraflow.projector.adapters.store_sql import (
    INSERT_EVENT,
    RUN_DRIVERS,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    UPSERT_DOC,
    UPSERT_RESOURCE,
    UPSERT_RUN,
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
_PROBE_CAP: Final = 5000  # index entries counted when choosing the driving filter

_encoder = msgspec.msgpack.Encoder()
_run_decoder = msgspec.msgpack.Decoder(RunState)
_resource_decoder = msgspec.msgpack.Decoder(ResourceState)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """``ListRuns`` filters by column: OR within a list, AND across lists; None = no filter."""

    type: Sequence[str] | None = None
    status: Sequence[str] | None = None
    resource_type: Sequence[str] | None = None
    resource_id: Sequence[str] | None = None
    triggered_by: Sequence[str] | None = None
    project_id: Sequence[str] | None = None
    since: int | None = None
    until: int | None = None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one ``apply`` did."""

    applied_seq: int
    events: int
    skipped: list[SkippedMessage]
    orphans: int


@dataclass(frozen=True, slots=True)
class RunAggregate:
    """Runs of one type in one status within a metrics window."""

    type: str
    status: str
    count: int
    retries: int


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
        self._writer = self._connect()
        self._migrate()
        self._applied_seq, self.skipped_events, self.orphan_events = self._load_position()

    # ---- connections ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -65536")
            conn.execute("PRAGMA mmap_size = 268435456")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the read model at {self.path}: {exc}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

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
        with self._transaction() as tx:
            for table in TABLES:
                tx.execute(f"DROP TABLE IF EXISTS {table}")

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
        self._applied_seq, self.skipped_events, self.orphan_events = 0, 0, 0

    def apply(self, messages: list[StreamMessage]) -> ApplyResult:
        """Fold ``messages`` and commit the changes with the new position in one transaction."""
        batch = decode_batch(messages, self._applied_seq)
        if batch.last_seq == self._applied_seq:
            return ApplyResult(self._applied_seq, 0, [], 0)
        runs = self._load_runs(batch.run_ids)
        resources = self._load_resources(batch.resource_keys)
        changes = fold_batch(batch, runs, resources, self.catalog)
        skipped = self.skipped_events + len(batch.skipped) + len(changes.failed)
        orphans = self.orphan_events + changes.orphans
        try:
            with self._transaction() as tx:
                self._write(tx, changes)
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
        return ApplyResult(
            batch.last_seq, len(batch.events), [*batch.skipped, *changes.failed], changes.orphans
        )

    @staticmethod
    def _write(tx: sqlite3.Connection, changes: BatchChanges) -> None:
        tx.executemany(INSERT_EVENT, [(e.seq, e.run_id, e.name, e.data) for e in changes.events])
        runs = changes.runs.values()
        tx.executemany(
            UPSERT_RUN,
            [
                (
                    r.id,
                    r.type,
                    r.status,
                    r.resource_type,
                    r.resource_id,
                    r.project_id,
                    r.triggered_by,
                    r.created_at,
                    r.completed_at,
                    r.duration_ms,
                    r.retry_of,
                    r.error_code,
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

    def _load_runs(self, ids: Iterable[str]) -> dict[str, RunState]:
        out: dict[str, RunState] = {}
        for chunk in _chunks(list(ids)):
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
        row = self._reader().execute("SELECT doc FROM run_docs WHERE id = ?", (run_id,)).fetchone()
        return _run_decoder.decode(row[0]) if row else None

    def retries_of(self, run_id: str) -> list[str]:
        """Ids of the runs created as retries of ``run_id``, oldest first."""
        rows = self._reader().execute(
            "SELECT id FROM runs WHERE retry_of = ? ORDER BY id", (run_id,)
        )
        return [r[0] for r in rows]

    def list_runs(self, f: RunFilter, after_id: str | None, limit: int) -> list[RunState]:
        """Up to ``limit`` runs matching ``f`` with ids below ``after_id``, newest first.

        One multi-value filter drives the scan: a backwards range scan of its (column, id)
        index per value, merged by id, so a page costs O(page) index steps when the other
        filters match often. With several filters the driver is the one matching the fewest
        runs (probed with a capped count), so a rare value is never found by walking a common
        one. The others are residual terms (``+col`` keeps the planner off their indexes).
        """
        filters: list[tuple[str, str, Sequence[str]]] = []
        for column, index in RUN_DRIVERS:
            values: Sequence[str] | None = getattr(f, column)
            if values is not None:
                if not values:
                    return []
                filters.append((column, index, list(dict.fromkeys(values))))
        conn = self._reader()
        driver: tuple[str, str, Sequence[str]] | None = None
        if len(filters) == 1:
            driver = filters[0]
        elif filters:
            driver = min(filters, key=lambda d: _probe(conn, *d))
        conds: list[str] = []
        params: list[Any] = []
        for column, _, values in filters:
            if driver is None or column != driver[0]:
                conds.append(f"+{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if f.since is not None:
            conds.append("+created_at >= ?")
            params.append(f.since)
        if f.until is not None:
            conds.append("+created_at < ?")
            params.append(f.until)
        if after_id is not None:
            conds.append("id < ?")
            params.append(after_id)
        where = " AND ".join(conds) or "1"
        if driver is None:
            sql = f"SELECT id FROM runs WHERE {where} ORDER BY id DESC LIMIT ?"
            ids = [r[0] for r in conn.execute(sql, [*params, limit])]
        else:
            column, index, values = driver
            sql = (
                f"SELECT id FROM runs INDEXED BY {index} WHERE {column} = ? AND {where} "
                "ORDER BY id DESC LIMIT ?"
            )
            pages = [[r[0] for r in conn.execute(sql, [v, *params, limit])] for v in values]
            ids = list(heapq.merge(*pages, reverse=True))[:limit]
        return self._run_docs(conn, ids)

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

    def run_events(self, run_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """The run's raw events after ``after_seq``, in stream order."""
        rows = self._reader().execute(
            "SELECT seq, data FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after_seq, limit),
        )
        return [(int(seq), bytes(data)) for seq, data in rows]

    def get_resource(self, resource_type: str, resource_id: str) -> ResourceState | None:
        row = (
            self._reader()
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
        rows = self._reader().execute(sql, [*params, limit])
        return [_resource_decoder.decode(r[0]) for r in rows]

    def recent_durations(
        self, workflow_type: str, resource_type: str | None, limit: int
    ) -> list[int]:
        """Durations (ms) of the latest completed runs of a type, most recent first."""
        sql = (
            "SELECT duration_ms FROM runs INDEXED BY runs_by_completion "
            "WHERE type = ? AND status = ? AND duration_ms IS NOT NULL"
        )
        params: list[Any] = [workflow_type, COMPLETED]
        if resource_type is not None:
            sql += " AND resource_type = ?"
            params.append(resource_type)
        sql += " ORDER BY completed_at DESC LIMIT ?"
        return [int(r[0]) for r in self._reader().execute(sql, [*params, limit])]

    def run_aggregates(self, f: RunFilter) -> list[RunAggregate]:
        """Counts by (type, status) of the runs matching ``f``."""
        where, params = _where(f)
        rows = self._reader().execute(
            "SELECT type, status, count(*), count(retry_of) FROM runs "
            f"WHERE {where} GROUP BY type, status",
            params,
        )
        return [RunAggregate(t, s, int(c), int(r)) for t, s, c, r in rows]

    def completed_durations(self, f: RunFilter) -> dict[str, list[int]]:
        """Durations (ms, ascending) of the completed runs matching ``f``, by type."""
        where, params = _where(f)
        out: dict[str, list[int]] = {}
        rows = self._reader().execute(
            f"SELECT type, duration_ms FROM runs WHERE {where} AND status = ? "
            "AND duration_ms IS NOT NULL ORDER BY type, duration_ms",
            [*params, COMPLETED],
        )
        for rtype, duration in rows:
            out.setdefault(rtype, []).append(int(duration))
        return out

    def error_codes(self, f: RunFilter, limit: int) -> list[tuple[str, int]]:
        """The most frequent error codes of the failed runs matching ``f``."""
        where, params = _where(f)
        rows = self._reader().execute(
            f"SELECT error_code, count(*) AS n FROM runs WHERE {where} AND error_code IS NOT NULL "
            "GROUP BY error_code ORDER BY n DESC, error_code LIMIT ?",
            [*params, limit],
        )
        return [(str(code), int(n)) for code, n in rows]

    def buckets(self, f: RunFilter, width_us: int) -> list[tuple[int, str, int]]:
        """(bucket start µs, status, count) of the runs matching ``f`` by creation time."""
        where, params = _where(f)
        rows = self._reader().execute(
            f"SELECT (created_at / ?) * ? AS b, status, count(*) FROM runs WHERE {where} "
            "GROUP BY b, status ORDER BY b",
            [width_us, width_us, *params],
        )
        return [(int(b), str(s), int(c)) for b, s, c in rows]


def _where(f: RunFilter) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    for column, _ in RUN_DRIVERS:
        values: Sequence[str] | None = getattr(f, column)
        if values is None:
            continue
        conds.append(f"{column} IN ({','.join('?' * len(values))})" if values else "0")
        params.extend(values)
    if f.since is not None:
        conds.append("created_at >= ?")
        params.append(f.since)
    if f.until is not None:
        conds.append("created_at < ?")
        params.append(f.until)
    return " AND ".join(conds) or "1", params


def _probe(conn: sqlite3.Connection, column: str, index: str, values: Sequence[str]) -> int:
    """How many runs match one filter, counted up to ``_PROBE_CAP`` index entries."""
    marks = ",".join("?" * len(values))
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM runs INDEXED BY {index} "
        f"WHERE {column} IN ({marks}) LIMIT ?)",
        [*values, _PROBE_CAP],
    ).fetchone()
    return int(row[0])


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
