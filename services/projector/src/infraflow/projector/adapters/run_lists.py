"""Keyset-paged run lists over the covering indexes of ``runs``.

A page is ``ids < cursor`` newest first. One filter *drives* the scan: a backwards range scan of
its ``(column, id, ...)`` index per value, merged by id, so a page costs O(page / density of the
other filters) index steps. The other filters, and the creation-time window, are checked inside
that same index (it carries every filter column), never by visiting the table. With several
filters the driver is the one matching the fewest runs (probed with a capped count); a narrow
creation-time window can drive too (its index is ordered by time, so its rows are sorted by id,
which is cheap because the probe proved them few). Without any filter the primary key drives.

Ids are time-sortable (``ids``: the gateway's accept time) and a run is created after it was
accepted, so ``until`` also bounds the ids: the scan starts at the first id that could match
instead of walking every newer run.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from infraflow.common.ids import new_id
from infraflow.projector.adapters.codes import Codes
from infraflow.projector.adapters.store_sql import RUN_FILTERS, STATUS_CODES

PROBE_CAP: Final = 4000
"""Index entries counted at most when comparing the filters' sizes."""
CLOCK_SKEW_MS: Final = 3_600_000
"""How far a gateway's clock may run ahead of the orchestrator's when ids bound ``until``."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """``ListRuns`` filters by column: OR within a list, AND across lists; None = no filter.
    ``since``/``until`` bound the creation time (µs, ``[since, until)``)."""

    type: Sequence[str] | None = None
    status: Sequence[str] | None = None
    resource_type: Sequence[str] | None = None
    resource_id: Sequence[str] | None = None
    triggered_by: Sequence[str] | None = None
    project_id: Sequence[str] | None = None
    since: int | None = None
    until: int | None = None


@dataclass(frozen=True, slots=True)
class _Term:
    column: str
    index: str | None
    values: list[Any]

    def sql(self, residual: bool = False) -> str:
        """``column IN (...)``; a residual term gets a unary ``+`` so the planner never picks
        its index over the driver's."""
        plus = "+" if residual else ""
        return f"{plus}{self.column} IN ({','.join('?' * len(self.values))})"


def _terms(conn: sqlite3.Connection, codes: Codes, f: RunFilter) -> list[_Term] | None:
    """The filters as SQL terms over coded columns; None when a filter can match nothing."""
    terms: list[_Term] = []
    for name, column, index, kind in RUN_FILTERS:
        raw: Sequence[str] | None = getattr(f, name)
        if raw is None:
            continue
        unique = list(dict.fromkeys(raw))
        values: list[Any]
        if name == "status":
            values = [STATUS_CODES[s] for s in unique if s in STATUS_CODES]
        elif kind is not None:
            values = codes.lookup(conn, kind, unique)
        else:
            values = unique
        if not values:
            return None
        terms.append(_Term(column, index, values))
    return terms


def list_run_ids(
    conn: sqlite3.Connection, codes: Codes, f: RunFilter, after_id: str | None, limit: int
) -> list[str]:
    """Up to ``limit`` ids of runs matching ``f`` below ``after_id``, newest first."""
    terms = _terms(conn, codes, f)
    if terms is None or (f.since is not None and f.until is not None and f.until <= f.since):
        return []
    upper = after_id
    if f.until is not None:
        bound = new_id("run", now_ms=f.until // 1000 + CLOCK_SKEW_MS, entropy=0)
        upper = bound if upper is None else min(upper, bound)
    window: list[str] = []
    window_params: list[Any] = []
    if f.since is not None:
        window.append("created_at >= ?")
        window_params.append(f.since)
    if f.until is not None:
        window.append("created_at < ?")
        window_params.append(f.until)

    indexed = [t for t in terms if t.index is not None]
    driver: _Term | None = None
    by_time = False
    if indexed and indexed[0].column == "resource_id":
        driver = indexed[0]  # a resource has few runs: nothing drives better
    elif f.since is not None and _probe_window(conn, window, window_params, upper):
        by_time = True  # few runs in the window: scan it and sort by id
    elif len(indexed) == 1:
        driver = indexed[0]
    elif indexed:
        sizes = {t.column: _probe(conn, t, upper) for t in indexed}
        driver = min(indexed, key=lambda t: sizes[t.column])

    conds: list[str] = []
    params: list[Any] = []
    for t in terms:
        if t is not driver:
            conds.append(t.sql(residual=True))
            params.extend(t.values)
    conds += window if by_time else ["+" + w for w in window]
    params += window_params
    if upper is not None:
        conds.append("id < ?")
        params.append(upper)
    where = " AND ".join(conds) or "1"
    if by_time:
        sql = (
            f"SELECT id FROM runs INDEXED BY runs_by_created WHERE {where} ORDER BY id DESC LIMIT ?"
        )
        return [r[0] for r in conn.execute(sql, [*params, limit])]
    if driver is None:
        sql = f"SELECT id FROM runs WHERE {where} ORDER BY id DESC LIMIT ?"
        return [r[0] for r in conn.execute(sql, [*params, limit])]
    sql = (
        f"SELECT id FROM runs INDEXED BY {driver.index} WHERE {driver.column} = ? AND {where} "
        "ORDER BY id DESC LIMIT ?"
    )
    pages = [[r[0] for r in conn.execute(sql, [v, *params, limit])] for v in driver.values]
    if len(pages) == 1:
        return pages[0]
    return list(heapq.merge(*pages, reverse=True))[:limit]


def _probe(conn: sqlite3.Connection, term: _Term, upper: str | None) -> int:
    """How many runs match one filter (below ``upper``), counted up to ``PROBE_CAP``."""
    cond, params = term.sql(), list(term.values)
    if upper is not None:
        cond += " AND id < ?"
        params.append(upper)
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM runs INDEXED BY {term.index} WHERE {cond} LIMIT ?)",
        [*params, PROBE_CAP],
    ).fetchone()
    return int(row[0])


def _probe_window(
    conn: sqlite3.Connection, window: list[str], params: list[Any], upper: str | None
) -> bool:
    """Whether the creation-time window holds fewer than ``PROBE_CAP`` runs (below ``upper``)."""
    conds = list(window)
    args = list(params)
    if upper is not None:
        conds.append("id < ?")
        args.append(upper)
    row = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM runs INDEXED BY runs_by_created "
        f"WHERE {' AND '.join(conds)} LIMIT ?)",
        [*args, PROBE_CAP],
    ).fetchone()
    return int(row[0]) < PROBE_CAP


__all__ = ["PROBE_CAP", "RunFilter", "list_run_ids"]
