"""The SQL of the read model: schema and the statements of the write path.

Times are integer microseconds since the epoch (UTC). Every list is a keyset scan: ``runs``
has one (column, id) index per filter, so a page costs O(page) index steps at any size.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

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
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    project_id TEXT,
    triggered_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    duration_ms INTEGER,
    retry_of TEXT,
    error_code TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_type ON runs (type, id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, id);
CREATE INDEX IF NOT EXISTS runs_by_resource_type ON runs (resource_type, id);
CREATE INDEX IF NOT EXISTS runs_by_resource_id ON runs (resource_id, id);
CREATE INDEX IF NOT EXISTS runs_by_triggered_by ON runs (triggered_by, id);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project_id, id);
CREATE INDEX IF NOT EXISTS runs_by_retry_of ON runs (retry_of) WHERE retry_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_by_completion ON runs (type, status, completed_at);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS run_docs (
    id TEXT PRIMARY KEY, doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS run_events (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS run_events_by_run ON run_events (run_id, seq);
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
"""

UPSERT_RUN: Final = """
INSERT INTO runs (id, type, status, resource_type, resource_id, project_id, triggered_by,
                  created_at, completed_at, duration_ms, retry_of, error_code)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, completed_at = excluded.completed_at,
    duration_ms = excluded.duration_ms, error_code = excluded.error_code
"""
UPSERT_DOC: Final = (
    "INSERT INTO run_docs (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
)
INSERT_EVENT: Final = "INSERT OR IGNORE INTO run_events (seq, run_id, name, data) VALUES (?,?,?,?)"
UPSERT_RESOURCE: Final = """
INSERT INTO resources (type, id, project_id, state, site, doc) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (type, id) DO UPDATE SET
    project_id = excluded.project_id, state = excluded.state, site = excluded.site,
    doc = excluded.doc
"""

TABLES: Final = ("runs", "run_docs", "run_events", "resources", "projector_position")

# The list filters, most selective first: the first one present drives the index range scan.
RUN_DRIVERS: Final = (
    ("resource_id", "runs_by_resource_id"),
    ("triggered_by", "runs_by_triggered_by"),
    ("project_id", "runs_by_project"),
    ("type", "runs_by_type"),
    ("resource_type", "runs_by_resource_type"),
    ("status", "runs_by_status"),
)
