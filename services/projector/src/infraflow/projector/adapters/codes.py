"""Small integer codes for the read model's low-cardinality strings (types, projects, users).

The writer assigns a code the first time it meets a value, inside the batch's transaction; the
mapping is immutable afterwards, so readers cache it freely. A value without a code has no run.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence

from infraflow.projector.adapters.store_sql import INSERT_CODE


class Codes:
    """The two-way mapping of ``codes``, shared by the writer and the reader threads."""

    def __init__(self) -> None:
        self._by_value: dict[tuple[int, str], int] = {}
        self._by_code: dict[tuple[int, int], str] = {}
        self._next: dict[int, int] = {}
        self._pending: list[tuple[int, str, int]] = []
        self._lock = threading.Lock()

    def load(self, conn: sqlite3.Connection) -> None:
        """Replace the mapping with what the file holds."""
        with self._lock:
            self._by_value.clear()
            self._by_code.clear()
            self._next.clear()
            self._pending.clear()
            for kind, value, code in conn.execute("SELECT kind, value, code FROM codes"):
                self._remember(int(kind), str(value), int(code))

    def _remember(self, kind: int, value: str, code: int) -> None:
        self._by_value[(kind, value)] = code
        self._by_code[(kind, code)] = value
        self._next[kind] = max(self._next.get(kind, 1), code + 1)

    # ---- writer -------------------------------------------------------------------------

    def assign(self, kind: int, value: str) -> int:
        """The code of ``value``, assigning the next free one if it has none (writer only;
        ``flush`` writes new codes in the batch's transaction)."""
        code = self._by_value.get((kind, value))
        if code is not None:
            return code
        with self._lock:
            code = self._next.get(kind, 1)
            self._remember(kind, value, code)
            self._pending.append((kind, value, code))
        return code

    def flush(self, tx: sqlite3.Connection) -> None:
        """Insert the codes assigned since the last flush (inside the open transaction)."""
        if self._pending:
            tx.executemany(INSERT_CODE, self._pending)
            self._pending.clear()

    # ---- readers ------------------------------------------------------------------------

    def lookup(self, conn: sqlite3.Connection, kind: int, values: Iterable[str]) -> list[int]:
        """The codes of the values that have one (a value without a code matches no run)."""
        out: list[int] = []
        for value in values:
            code = self._by_value.get((kind, value))
            if code is None:
                row = conn.execute(
                    "SELECT code FROM codes WHERE kind = ? AND value = ?", (kind, value)
                ).fetchone()
                if row is None:
                    continue
                code = int(row[0])
                with self._lock:
                    self._remember(kind, value, code)
            out.append(code)
        return out

    def name(self, conn: sqlite3.Connection, kind: int, code: int) -> str:
        """The value of a code (as stored by the writer)."""
        value = self._by_code.get((kind, code))
        if value is None:
            row = conn.execute(
                "SELECT value FROM codes WHERE kind = ? AND code = ?", (kind, code)
            ).fetchone()
            value = str(row[0]) if row is not None else f"#{code}"
            if row is not None:
                with self._lock:
                    self._remember(kind, value, code)
        return value

    def names(self, conn: sqlite3.Connection, kind: int, codes: Sequence[int]) -> list[str]:
        return [self.name(conn, kind, c) for c in codes]
