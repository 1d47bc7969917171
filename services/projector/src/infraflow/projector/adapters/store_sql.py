"""The SQL of the read model: schema and the statements of the write path.

Times are integer microseconds since the epoch (UTC). Low-cardinality strings (workflow type,
resource type, project, user) are stored as small integer codes (``codes``), which keeps the
list indexes narrow enough to carry every filter column: each list index is
``(driver column, id, the other filter columns)``, so a page is a keyset range scan that checks
the remaining filters inside the index, without touching the table.

Raw events are not stored: the events query reads a run's history from ``WF_EVENTS``, starting
at the run's first sequence. Metrics read the ``agg_*`` tables, maintained in the same
transaction as the runs they summarize (see ``core.aggregates``).
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 2

STATUS_CODES: Final[dict[str, int]] = {
    "pending": 0,
    "running": 1,
    "completed": 2,
    "failed": 3,
    "cancelled": 4,
}
STATUS_NAMES: Final[dict[int, str]] = {v: k for k, v in STATUS_CODES.items()}

KIND_TYPE: Final = 1
KIND_RESOURCE_TYPE: Final = 2
KIND_PROJECT: Final = 3
KIND_USER: Final = 4
ALL_PROJECTS_CODE: Final = -1
"""The project code of the aggregate rollup over every project (never in ``codes``)."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS projector_meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projector_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_applied_seq INTEGER NOT NULL,
    skipped_events INTEGER NOT NULL DEFAULT 0,
    orphan_events INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO projector_position (id, last_applied_seq) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS codes (
    kind INTEGER NOT NULL, value TEXT NOT NULL, code INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    type INTEGER NOT NULL,
    status INTEGER NOT NULL,
    rtype INTEGER NOT NULL,
    resource_id TEXT NOT NULL,
    project INTEGER NOT NULL,
    trig INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    duration_ms INTEGER,
    duration_bin INTEGER,
    retry_of TEXT,
    error_code TEXT,
    step_retries INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_type
    ON runs (type, id, status, rtype, project, trig, created_at);
CREATE INDEX IF NOT EXISTS runs_by_status
    ON runs (status, id, type, rtype, project, trig, created_at);
CREATE INDEX IF NOT EXISTS runs_by_project
    ON runs (project, id, type, status, rtype, trig, created_at);
CREATE INDEX IF NOT EXISTS runs_by_trig
    ON runs (trig, id, type, status, rtype, project, created_at);
CREATE INDEX IF NOT EXISTS runs_by_created
    ON runs (created_at, id, type, status, rtype, project, trig);
CREATE INDEX IF NOT EXISTS runs_by_resource ON runs (resource_id, id);
CREATE INDEX IF NOT EXISTS runs_by_retry_of ON runs (retry_of) WHERE retry_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_by_completion ON runs (type, completed_at) WHERE status = 2;
CREATE TABLE IF NOT EXISTS run_docs (
    id TEXT PRIMARY KEY, doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    project_id TEXT,
    state TEXT,
    site TEXT,
    doc BLOB NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resources_by_project ON resources (type, project_id, id);
CREATE INDEX IF NOT EXISTS resources_by_state ON resources (type, state, id);
CREATE TABLE IF NOT EXISTS agg_counts (
    grain INTEGER NOT NULL,
    project INTEGER NOT NULL,
    start INTEGER NOT NULL,
    type INTEGER NOT NULL,
    rtype INTEGER NOT NULL,
    pending INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    step_retries INTEGER NOT NULL DEFAULT 0,
    dur_count INTEGER NOT NULL DEFAULT 0,
    dur_sum INTEGER NOT NULL DEFAULT 0,
    dur_min INTEGER,
    dur_max INTEGER,
    PRIMARY KEY (grain, project, start, type, rtype)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_durations (
    grain INTEGER NOT NULL,
    project INTEGER NOT NULL,
    start INTEGER NOT NULL,
    type INTEGER NOT NULL,
    rtype INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (grain, project, start, type, rtype, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_errors (
    grain INTEGER NOT NULL,
    project INTEGER NOT NULL,
    start INTEGER NOT NULL,
    type INTEGER NOT NULL,
    rtype INTEGER NOT NULL,
    code TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (grain, project, start, type, rtype, code)
) WITHOUT ROWID;
"""

UPSERT_RUN: Final = """
INSERT INTO runs (id, type, status, rtype, resource_id, project, trig, created_at,
                  completed_at, duration_ms, duration_bin, retry_of, error_code, step_retries)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, completed_at = excluded.completed_at,
    duration_ms = excluded.duration_ms, duration_bin = excluded.duration_bin,
    error_code = excluded.error_code, step_retries = excluded.step_retries
WHERE status IS NOT excluded.status OR completed_at IS NOT excluded.completed_at
    OR error_code IS NOT excluded.error_code OR step_retries IS NOT excluded.step_retries
"""
UPSERT_DOC: Final = (
    "INSERT INTO run_docs (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
)
UPSERT_RESOURCE: Final = """
INSERT INTO resources (type, id, project_id, state, site, doc) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (type, id) DO UPDATE SET
    project_id = excluded.project_id, state = excluded.state, site = excluded.site,
    doc = excluded.doc
"""
INSERT_CODE: Final = "INSERT INTO codes (kind, value, code) VALUES (?, ?, ?)"
UPSERT_COUNTS: Final = """
INSERT INTO agg_counts (grain, project, start, type, rtype, pending, running, completed, failed,
                        cancelled, retries, step_retries, dur_count, dur_sum, dur_min, dur_max)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (grain, project, start, type, rtype) DO UPDATE SET
    pending = pending + excluded.pending,
    running = running + excluded.running,
    completed = completed + excluded.completed,
    failed = failed + excluded.failed,
    cancelled = cancelled + excluded.cancelled,
    retries = retries + excluded.retries,
    step_retries = step_retries + excluded.step_retries,
    dur_count = dur_count + excluded.dur_count,
    dur_sum = dur_sum + excluded.dur_sum,
    dur_min = min(coalesce(dur_min, excluded.dur_min), coalesce(excluded.dur_min, dur_min)),
    dur_max = max(coalesce(dur_max, excluded.dur_max), coalesce(excluded.dur_max, dur_max))
"""
UPSERT_DURATION: Final = """
INSERT INTO agg_durations (grain, project, start, type, rtype, bin, n) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (grain, project, start, type, rtype, bin) DO UPDATE SET n = n + excluded.n
"""
UPSERT_ERROR: Final = """
INSERT INTO agg_errors (grain, project, start, type, rtype, code, n) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (grain, project, start, type, rtype, code) DO UPDATE SET n = n + excluded.n
"""

TABLES: Final = (
    "runs",
    "run_docs",
    "run_events",
    "resources",
    "codes",
    "agg_counts",
    "agg_durations",
    "agg_errors",
    "projector_position",
)
"""Every table a rebuild drops (``run_events`` is schema 1's, dropped on upgrade)."""

RUN_FILTERS: Final = (
    # (RunFilter field, column, covering index, code kind or None)
    ("resource_id", "resource_id", "runs_by_resource", None),
    ("triggered_by", "trig", "runs_by_trig", KIND_USER),
    ("project_id", "project", "runs_by_project", KIND_PROJECT),
    ("type", "type", "runs_by_type", KIND_TYPE),
    ("status", "status", "runs_by_status", None),
    ("resource_type", "rtype", None, KIND_RESOURCE_TYPE),
)
"""The list filters, most selective first (the order breaks ties between equal probes).
``resource_type`` has no index of its own: with three values it never narrows much, so it is
checked inside whichever index drives the scan."""
