"""Pure arithmetic behind the metrics and duration-estimate queries: exact statistics over
small samples (estimates) and the metrics view assembled from aggregate totals."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from infraflow.projector.core.aggregates import duration_summary
from infraflow.projector.core.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    from_micros,
)

STATUS_ORDER: Final = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)

ESTIMATE_SAMPLE: Final = 20
"""How many of the latest completed runs an estimate looks at."""
ESTIMATE_MIN_SAMPLES: Final = 3
"""Below this many completed runs the catalog's estimate is used instead."""


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile (``p`` in 0..100) of ascending values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: Sequence[int]) -> int:
    """The median, rounded down to whole milliseconds (mean of the middle two when even)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) // 2


def estimate_ms(recent_durations: Sequence[int], catalog_estimate_ms: int) -> int:
    """Median of the latest completed runs' durations when there are enough, else the catalog's
    estimate."""
    sample = recent_durations[:ESTIMATE_SAMPLE]
    if len(sample) >= ESTIMATE_MIN_SAMPLES:
        return median(sample)
    return catalog_estimate_ms


def duration_stats(sorted_durations: Sequence[int]) -> dict[str, int | None]:
    """avg, p50, p95, p99 and max of ascending durations (all None when there are none)."""
    if not sorted_durations:
        return {"avg": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "avg": round(sum(sorted_durations) / len(sorted_durations)),
        "p50": percentile(sorted_durations, 50),
        "p95": percentile(sorted_durations, 95),
        "p99": percentile(sorted_durations, 99),
        "max": sorted_durations[-1],
    }


def success_rate(completed: int, failed: int, cancelled: int) -> float | None:
    """Completed runs over finished runs (None before any run finished)."""
    finished = completed + failed + cancelled
    return round(completed / finished, 4) if finished else None


@dataclass(slots=True)
class TypeTotals:
    """The aggregate counters of one workflow type over a metrics window."""

    type: str
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUS_ORDER, 0))
    retries: int = 0
    step_retries: int = 0
    dur_count: int = 0
    dur_sum: int = 0
    dur_min: int | None = None
    dur_max: int | None = None
    histogram: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.by_status.values())

    def merge(self, other: TypeTotals) -> None:
        """Add another part of the window (rows of another grain, or the raw edges)."""
        for status, n in other.by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + n
        self.retries += other.retries
        self.step_retries += other.step_retries
        self.dur_count += other.dur_count
        self.dur_sum += other.dur_sum
        self.dur_min = _pick(min, self.dur_min, other.dur_min)
        self.dur_max = _pick(max, self.dur_max, other.dur_max)
        for b, n in other.histogram.items():
            self.histogram[b] = self.histogram.get(b, 0) + n


def _pick(fn: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def _by_status() -> dict[str, int]:
    return dict.fromkeys(STATUS_ORDER, 0)


def metrics_view(
    totals: Iterable[TypeTotals],
    *,
    in_flight: int,
    error_codes: Sequence[tuple[str, int]],
    buckets: Sequence[tuple[int, dict[str, int]]] | None = None,
) -> dict[str, Any]:
    """The metrics answer: totals by status, success rate, in-flight runs, per type counts,
    duration percentiles and retries, the top error codes and, optionally, runs per bucket
    (``(bucket start µs, counts by status)``, ascending)."""
    overall = _by_status()
    by_type: dict[str, dict[str, Any]] = {}
    retries = step_retries = 0
    for t in sorted(totals, key=lambda t: t.type):
        if t.count == 0:
            continue
        for status, n in t.by_status.items():
            overall[status] += n
        retries += t.retries
        step_retries += t.step_retries
        counts = {s: t.by_status.get(s, 0) for s in STATUS_ORDER}
        by_type[t.type] = {
            "count": t.count,
            "byStatus": counts,
            "successRate": success_rate(counts[COMPLETED], counts[FAILED], counts[CANCELLED]),
            "durationMs": duration_summary(
                t.histogram, t.dur_count, t.dur_sum, t.dur_min, t.dur_max
            ),
            "retries": t.retries,
            "stepRetries": t.step_retries,
        }
    out: dict[str, Any] = {
        "total": sum(overall.values()),
        "byStatus": overall,
        "successRate": success_rate(overall[COMPLETED], overall[FAILED], overall[CANCELLED]),
        "inFlight": in_flight,
        "retries": retries,
        "stepRetries": step_retries,
        "byType": by_type,
        "topErrorCodes": [{"code": code, "count": n} for code, n in error_codes],
    }
    if buckets is not None:
        out["buckets"] = [
            {
                "start": from_micros(start),
                "total": sum(counts.values()),
                "byStatus": {s: counts.get(s, 0) for s in STATUS_ORDER},
            }
            for start, counts in buckets
        ]
    return out
