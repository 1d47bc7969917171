"""Pure arithmetic behind the metrics and duration-estimate queries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from infraflow.projector.core.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_FLIGHT_STATUSES,
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


def in_flight(status_counts: Sequence[tuple[str, int]]) -> int:
    """Runs pending or running right now."""
    return sum(n for status, n in status_counts if status in IN_FLIGHT_STATUSES)


def _by_status() -> dict[str, int]:
    return dict.fromkeys(STATUS_ORDER, 0)


def metrics_view(
    aggregates: Sequence[tuple[str, str, int, int]],
    completed_durations: Mapping[str, Sequence[int]],
    *,
    in_flight: int,
    error_codes: Sequence[tuple[str, int]],
    buckets: Sequence[tuple[int, str, int]] | None = None,
) -> dict[str, Any]:
    """The metrics answer from (type, status, count, retries) aggregates, the ascending
    durations of completed runs by type, the top error codes and optional time buckets."""
    totals = _by_status()
    by_type: dict[str, dict[str, Any]] = {}
    for rtype, status, count, retries in aggregates:
        totals[status] = totals.get(status, 0) + count
        entry = by_type.setdefault(rtype, {"count": 0, "byStatus": _by_status(), "retries": 0})
        entry["count"] += count
        entry["byStatus"][status] = entry["byStatus"].get(status, 0) + count
        entry["retries"] += retries
    for rtype, entry in by_type.items():
        counts = entry["byStatus"]
        entry["successRate"] = success_rate(counts[COMPLETED], counts[FAILED], counts[CANCELLED])
        entry["durationMs"] = duration_stats(completed_durations.get(rtype, ()))
    out: dict[str, Any] = {
        "total": sum(totals.values()),
        "byStatus": totals,
        "successRate": success_rate(totals[COMPLETED], totals[FAILED], totals[CANCELLED]),
        "inFlight": in_flight,
        "byType": dict(sorted(by_type.items())),
        "topErrorCodes": [{"code": code, "count": n} for code, n in error_codes],
    }
    if buckets is not None:
        series: dict[int, dict[str, int]] = {}
        for start, status, count in buckets:
            series.setdefault(start, _by_status())[status] = count
        out["buckets"] = [
            {"start": from_micros(start), "total": sum(c.values()), "byStatus": c}
            for start, c in sorted(series.items())
        ]
    return out
