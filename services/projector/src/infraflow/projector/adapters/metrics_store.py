"""Writing and reading the metrics aggregates (``agg_counts``, ``agg_durations``, ``agg_errors``).

The writer applies a batch's ``Deltas`` in the batch's transaction. A metrics query reads the
aggregate rows the window plan names (whole days and hours) and counts the partial hours at its
edges from ``runs`` through the creation-time index, so its cost grows with the number of hours
and days in the window, not with the number of runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from infraflow.projector.adapters.codes import Codes
from infraflow.projector.adapters.store_sql import (
    ALL_PROJECTS_CODE,
    KIND_PROJECT,
    KIND_RESOURCE_TYPE,
    KIND_TYPE,
    STATUS_NAMES,
    UPSERT_COUNTS,
    UPSERT_DURATION,
    UPSERT_ERROR,
)
from infraflow.projector.core.aggregates import (
    ALL_PROJECTS,
    COUNTERS,
    DAY_US,
    END_OF_TIME,
    GRAIN_ALL,
    GRAIN_DAY,
    GRAIN_HOUR,
    HOUR_US,
    STATUS_COLUMNS,
    AggKey,
    Deltas,
    WindowPlan,
    plan_window,
)
from infraflow.projector.core.metrics import TypeTotals

_SUMS: Final = ", ".join(f"sum({c})" for c in COUNTERS)


def write_deltas(tx: sqlite3.Connection, codes: Codes, deltas: Deltas) -> None:
    """Add a batch's aggregate changes (inside the batch's open transaction)."""

    def key(k: AggKey) -> tuple[int, int, int, int, int]:
        grain, start, project, wtype, rtype = k
        pcode = (
            ALL_PROJECTS_CODE if project == ALL_PROJECTS else codes.assign(KIND_PROJECT, project)
        )
        return (
            grain,
            pcode,
            start,
            codes.assign(KIND_TYPE, wtype),
            codes.assign(KIND_RESOURCE_TYPE, rtype),
        )

    rows = []
    for k, counters in deltas.counts.items():
        low, high = deltas.extremes.get(k, (None, None))
        rows.append((*key(k), *counters, low, high))
    tx.executemany(UPSERT_COUNTS, rows)
    tx.executemany(UPSERT_DURATION, [(*key(k), b, n) for (k, b), n in deltas.durations.items()])
    tx.executemany(UPSERT_ERROR, [(*key(k), code, n) for (k, code), n in deltas.errors.items()])


@dataclass(frozen=True, slots=True)
class MetricsFilter:
    """Which runs a metrics query covers: types, resource types and projects by code (None:
    all); ``projects`` None reads the rollup over every project."""

    types: list[int] | None
    resource_types: list[int] | None
    projects: list[int] | None

    @classmethod
    def of(
        cls,
        conn: sqlite3.Connection,
        codes: Codes,
        types: Sequence[str] | None,
        resource_types: Sequence[str] | None,
        projects: Sequence[str] | None,
    ) -> MetricsFilter:
        return cls(
            types=None if types is None else codes.lookup(conn, KIND_TYPE, types),
            resource_types=(
                None
                if resource_types is None
                else codes.lookup(conn, KIND_RESOURCE_TYPE, resource_types)
            ),
            projects=None if projects is None else codes.lookup(conn, KIND_PROJECT, projects),
        )

    @property
    def empty(self) -> bool:
        return any(
            v is not None and not v for v in (self.types, self.resource_types, self.projects)
        )

    def agg_terms(self) -> tuple[str, list[Any]]:
        """Conditions over an ``agg_*`` table (after the grain and time range)."""
        projects = [ALL_PROJECTS_CODE] if self.projects is None else self.projects
        conds = [_in("project", projects)]
        params: list[Any] = list(projects)
        for column, values in (("type", self.types), ("rtype", self.resource_types)):
            if values is not None:
                conds.append(_in(column, values))
                params += values
        return " AND ".join(conds), params

    def run_terms(self) -> tuple[str, list[Any]]:
        """Residual conditions over ``runs`` (scanned by creation time)."""
        conds: list[str] = []
        params: list[Any] = []
        for column, values in (
            ("type", self.types),
            ("rtype", self.resource_types),
            ("project", self.projects),
        ):
            if values is not None:
                conds.append("+" + _in(column, values))
                params += values
        return " AND ".join(conds) or "1", params


def _in(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({','.join('?' * len(values))})"


class MetricsReader:
    """Reads the aggregates of one window plan on one reader connection."""

    def __init__(
        self, conn: sqlite3.Connection, codes: Codes, f: MetricsFilter, plan: WindowPlan
    ) -> None:
        self._conn = conn
        self._codes = codes
        self._f = f
        self._plan = plan

    def _type_name(self, code: int) -> str:
        return self._codes.name(self._conn, KIND_TYPE, code)

    def _spans(self, table: str, select: str, group: str) -> list[tuple[Any, ...]]:
        where, params = self._f.agg_terms()
        out: list[tuple[Any, ...]] = []
        for grain, start, end in self._plan.spans:
            sql = (
                f"SELECT {select} FROM {table} WHERE grain = ? AND {where} "
                f"AND start >= ? AND start < ? GROUP BY {group}"
            )
            out += self._conn.execute(sql, [grain, *params, start, end]).fetchall()
        return out

    def _edges(self, select: str, extra: str, group: str) -> list[tuple[Any, ...]]:
        where, params = self._f.run_terms()
        out: list[tuple[Any, ...]] = []
        for lo, hi in self._plan.edges:
            sql = (
                f"SELECT {select} FROM runs INDEXED BY runs_by_created "
                f"WHERE created_at >= ? AND created_at < ? AND {where} {extra} GROUP BY {group}"
            )
            out += self._conn.execute(sql, [lo, hi, *params]).fetchall()
        return out

    def totals(self) -> list[TypeTotals]:
        """Counters, duration statistics and histograms by workflow type."""
        by_type: dict[str, TypeTotals] = {}

        def entry(code: int) -> TypeTotals:
            name = self._type_name(code)
            return by_type.setdefault(name, TypeTotals(type=name))

        for row in self._spans("agg_counts", f"type, {_SUMS}, min(dur_min), max(dur_max)", "type"):
            part = TypeTotals(type="")
            part.by_status = dict(zip(STATUS_COLUMNS, row[1:6], strict=True))
            part.retries, part.step_retries, part.dur_count, part.dur_sum = row[6:10]
            part.dur_min, part.dur_max = row[10], row[11]
            entry(row[0]).merge(part)
        for code, status, n, retries, step_retries, dcount, dsum, dmin, dmax in self._edges(
            "type, status, count(*), count(retry_of), sum(step_retries), "
            "sum(status = 2), sum(CASE WHEN status = 2 THEN duration_ms END), "
            "min(CASE WHEN status = 2 THEN duration_ms END), "
            "max(CASE WHEN status = 2 THEN duration_ms END)",
            "",
            "type, status",
        ):
            part = TypeTotals(type="")
            part.by_status = {STATUS_NAMES[status]: n}
            part.retries, part.step_retries = retries, step_retries or 0
            part.dur_count, part.dur_sum = dcount or 0, dsum or 0
            part.dur_min, part.dur_max = dmin, dmax
            entry(code).merge(part)
        for code, b, n in [
            *self._spans("agg_durations", "type, bin, sum(n)", "type, bin"),
            *self._edges("type, duration_bin, count(*)", "AND status = 2", "type, duration_bin"),
        ]:
            hist = entry(code).histogram
            hist[b] = hist.get(b, 0) + n
        return list(by_type.values())

    def error_codes(self, limit: int) -> list[tuple[str, int]]:
        """The most frequent error codes of the failed runs, most frequent first."""
        counts: dict[str, int] = {}
        for code, n in [
            *self._spans("agg_errors", "code, sum(n)", "code"),
            *self._edges(
                "error_code, count(*)", "AND status = 3 AND error_code IS NOT NULL", "error_code"
            ),
        ]:
            counts[code] = counts.get(code, 0) + n
        ranked = sorted(((c, n) for c, n in counts.items() if n > 0), key=lambda x: (-x[1], x[0]))
        return ranked[:limit]

    def series(self, width_us: int) -> list[tuple[int, dict[str, int]]]:
        """Runs by status per bucket of ``width_us`` (by creation time), ascending."""
        out: dict[int, dict[str, int]] = {}
        status_sums = ", ".join(f"sum({s})" for s in STATUS_COLUMNS)
        bucket = f"(start / {width_us}) * {width_us}"
        for row in self._spans("agg_counts", f"{bucket} AS b, {status_sums}", "b"):
            counts = out.setdefault(row[0], dict.fromkeys(STATUS_COLUMNS, 0))
            for status, n in zip(STATUS_COLUMNS, row[1:], strict=True):
                counts[status] += n
        edge_bucket = f"(created_at / {width_us}) * {width_us}"
        for b, status, n in self._edges(f"{edge_bucket} AS b, status, count(*)", "", "b, status"):
            counts = out.setdefault(b, dict.fromkeys(STATUS_COLUMNS, 0))
            counts[STATUS_NAMES[status]] += n
        return sorted(out.items())


def in_flight(conn: sqlite3.Connection, f: MetricsFilter) -> int:
    """Runs pending or running right now, whenever they were created (the all-time rows)."""
    where, params = f.agg_terms()
    row = conn.execute(
        f"SELECT sum(pending + running) FROM agg_counts WHERE grain = ? AND {where}",
        [GRAIN_ALL, *params],
    ).fetchone()
    return int(row[0] or 0)


@dataclass(frozen=True, slots=True)
class MetricsData:
    """Everything a metrics answer is assembled from."""

    totals: list[TypeTotals]
    in_flight: int
    error_codes: list[tuple[str, int]]
    series: list[tuple[int, dict[str, int]]] | None


def read_metrics(
    conn: sqlite3.Connection,
    codes: Codes,
    f: MetricsFilter,
    *,
    since: int | None,
    until: int | None,
    bucket_us: int | None,
    top_errors: int,
) -> MetricsData:
    """The aggregates of the runs created in ``[since, until)`` that ``f`` selects, plus the
    runs in flight now and, with ``bucket_us``, the runs per time bucket."""
    if f.empty:
        return MetricsData([], 0, [], [] if bucket_us is not None else None)
    reader = MetricsReader(conn, codes, f, plan_window(since, until))
    series = None
    if bucket_us is not None:
        finest = GRAIN_DAY if bucket_us % DAY_US == 0 else GRAIN_HOUR
        if bucket_us < HOUR_US:  # finer than the aggregates: count the runs themselves
            plan = WindowPlan(spans=(), edges=((since or 0, until or END_OF_TIME),))
        else:
            plan = plan_window(since, until, finest=finest)
            if plan.spans and plan.spans[0][0] == GRAIN_ALL:
                plan = plan_window(0, END_OF_TIME, finest=finest)
        series = MetricsReader(conn, codes, f, plan).series(bucket_us)
    return MetricsData(
        totals=reader.totals(),
        in_flight=in_flight(conn, f),
        error_codes=reader.error_codes(top_errors),
        series=series,
    )
