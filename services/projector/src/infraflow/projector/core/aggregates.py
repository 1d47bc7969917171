"""Incrementally maintained metrics aggregates (pure: no I/O, no clock).

Every run contributes to a few counters, keyed by the hour, the day and "all time" of its
creation, by its project (and once more under ``ALL_PROJECTS``), its type and resource type:
one count per status, how many runs are retries, how many step attempts were retries, and,
once it completed, its duration (count, sum, min, max and one slot of a log-scale histogram).
A failed run also counts its error code.

When a batch changes a run, the store subtracts what the run contributed before the batch and
adds what it contributes after (``Deltas``), in the same transaction as the view rows, so the
aggregates always agree with the runs they summarize. A metrics query then reads O(hours + days)
rows (``plan_window``) instead of scanning runs; only the partial hours at the edges of a window
are counted from the runs themselves.

Durations land in fixed log-scale bins (``duration_bin``): exact below 32 ms, then 32 bins per
power of two, so a percentile read from the histogram is within ~1.6% of the exact one (and exact
when all durations in the bin are equal, thanks to clamping to the observed min and max).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from infraflow.projector.core.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    RunState,
)

GRAIN_ALL: Final = 0
GRAIN_DAY: Final = 1
GRAIN_HOUR: Final = 2
HOUR_US: Final = 3_600_000_000
DAY_US: Final = 24 * HOUR_US
MINUTE_US: Final = 60_000_000
END_OF_TIME: Final = 1 << 62
"""Stands for "no upper bound" in a window (µs, far beyond any real time)."""

ALL_PROJECTS: Final = "*"
"""The project key of the rollup over every project (what an unscoped caller reads)."""
NO_PROJECT: Final = ""
"""The project key of runs without a project (Atlas-only resources)."""

STATUS_COLUMNS: Final = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
"""The per-status counters, in column order."""
COUNTERS: Final = (*STATUS_COLUMNS, "retries", "step_retries", "dur_count", "dur_sum")
"""Every additive counter of an aggregate row, in column order."""
_INDEX: Final = {name: i for i, name in enumerate(COUNTERS)}
_WIDTH: Final = len(COUNTERS)
_RETRIES: Final = _INDEX["retries"]
_STEP_RETRIES: Final = _INDEX["step_retries"]
_DUR_COUNT: Final = _INDEX["dur_count"]
_DUR_SUM: Final = _INDEX["dur_sum"]

_SUB_BITS: Final = 5
_SUB: Final = 1 << _SUB_BITS

AggKey = tuple[int, int, str, str, str]
"""(grain, bucket start µs, project key, workflow type, resource type)"""


def duration_bin(ms: int) -> int:
    """The histogram bin of a duration: the value itself below 32 ms, then 32 bins per octave."""
    if ms < _SUB:
        return max(ms, 0)
    exp = ms.bit_length() - 1
    sub = (ms >> (exp - _SUB_BITS)) - _SUB
    return (exp - _SUB_BITS + 1) * _SUB + sub


def bin_bounds(b: int) -> tuple[int, int]:
    """The durations ``[low, high)`` (ms) that fall into bin ``b``."""
    if b < _SUB:
        return b, b + 1
    exp = b // _SUB + _SUB_BITS - 1
    sub = b % _SUB
    width = 1 << (exp - _SUB_BITS)
    low = (_SUB + sub) * width
    return low, low + width


def bin_value(b: int) -> int:
    """The value a bin stands for: the middle of its range (its only value below 32 ms)."""
    low, high = bin_bounds(b)
    return (low + high - 1) // 2


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one run adds to the aggregates in its current state."""

    created_at: int
    project: str
    type: str
    resource_type: str
    status: str
    retry: bool
    step_retries: int
    duration_ms: int | None
    error_code: str | None


def contribution(state: RunState) -> Contribution:
    """The run's share of the aggregates (its duration only once it completed)."""
    return Contribution(
        created_at=state.created_at,
        project=state.project_id or NO_PROJECT,
        type=state.type,
        resource_type=state.resource_type,
        status=state.status,
        retry=state.retry_of is not None,
        step_retries=step_retries(state),
        duration_ms=state.duration_ms if state.status == COMPLETED else None,
        error_code=state.error_code if state.status == FAILED else None,
    )


def step_retries(state: RunState) -> int:
    """Attempts beyond the first, over every forward and compensation step."""
    n = 0
    for steps in (state.steps, state.compensation):
        for s in steps:
            if len(s.attempts) > 1:
                n += len(s.attempts) - 1
    return n


def bucket_keys(c: Contribution) -> list[AggKey]:
    """The aggregate rows a contribution lands in: hour, day and all time, for its project and
    for the rollup over all projects."""
    hour = c.created_at - c.created_at % HOUR_US
    day = c.created_at - c.created_at % DAY_US
    t, r, p = c.type, c.resource_type, c.project
    return [
        (GRAIN_HOUR, hour, p, t, r),
        (GRAIN_DAY, day, p, t, r),
        (GRAIN_ALL, 0, p, t, r),
        (GRAIN_HOUR, hour, ALL_PROJECTS, t, r),
        (GRAIN_DAY, day, ALL_PROJECTS, t, r),
        (GRAIN_ALL, 0, ALL_PROJECTS, t, r),
    ]


@dataclass(slots=True)
class Deltas:
    """Changes to the aggregate rows accumulated over a batch (zero changes are dropped)."""

    counts: dict[AggKey, list[int]] = field(default_factory=dict)
    extremes: dict[AggKey, tuple[int, int]] = field(default_factory=dict)
    """(min, max) of the durations added per row; min/max only ever widen."""
    durations: dict[tuple[AggKey, int], int] = field(default_factory=dict)
    errors: dict[tuple[AggKey, str], int] = field(default_factory=dict)

    def add(self, c: Contribution, sign: int) -> None:
        """Add (``sign`` 1) or remove (``sign`` -1) one run's contribution."""
        status = _INDEX[c.status]
        retry = sign * int(c.retry)
        step = sign * c.step_retries
        duration = c.duration_ms
        dbin = duration_bin(duration) if duration is not None else 0
        counts, durations, errors = self.counts, self.durations, self.errors
        for key in bucket_keys(c):
            row = counts.get(key)
            if row is None:
                row = counts[key] = [0] * _WIDTH
            row[status] += sign
            row[_RETRIES] += retry
            row[_STEP_RETRIES] += step
            if duration is not None:
                row[_DUR_COUNT] += sign
                row[_DUR_SUM] += sign * duration
                dkey = (key, dbin)
                durations[dkey] = durations.get(dkey, 0) + sign
                if sign > 0:
                    low, high = self.extremes.get(key, (duration, duration))
                    self.extremes[key] = (min(low, duration), max(high, duration))
            if c.error_code is not None:
                ekey = (key, c.error_code)
                errors[ekey] = errors.get(ekey, 0) + sign

    def change(self, before: Contribution | None, after: Contribution) -> None:
        """Replace a run's old contribution (None: a new run) by its new one."""
        if before == after:
            return
        if before is not None:
            self.add(before, -1)
        self.add(after, 1)

    def compact(self) -> Deltas:
        """The same deltas without rows that did not change."""
        return Deltas(
            counts={k: v for k, v in self.counts.items() if any(v)},
            extremes=self.extremes,
            durations={k: v for k, v in self.durations.items() if v},
            errors={k: v for k, v in self.errors.items() if v},
        )


def batch_deltas(before: Mapping[str, Contribution], after: Iterable[RunState]) -> Deltas:
    """The aggregate changes of a batch: ``before`` holds the contributions of the runs as they
    were loaded (absent: new runs), ``after`` the runs the batch changed."""
    deltas = Deltas()
    for state in after:
        deltas.change(before.get(state.id), contribution(state))
    return deltas.compact()


# ---- windows ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """How to read a window of creation times: aggregate ranges plus raw edges.

    ``spans`` are ``(grain, start, end)``: aggregate rows of that grain with ``start`` in
    ``[start, end)``; ``edges`` are ``[start, end)`` ranges of creation times to count from the
    runs themselves (the partial hours at either end).
    """

    spans: tuple[tuple[int, int, int], ...]
    edges: tuple[tuple[int, int], ...]


def _ceil(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _floor(value: int, unit: int) -> int:
    return value - value % unit


def plan_window(since: int | None, until: int | None, *, finest: int = GRAIN_DAY) -> WindowPlan:
    """Split ``[since, until)`` into whole days, whole hours and raw edges.

    ``finest`` = ``GRAIN_HOUR`` keeps hours (for an hourly series: no day rows); the default
    uses day rows wherever a whole day fits. Without bounds the "all time" rows answer.
    """
    if since is None and until is None and finest == GRAIN_DAY:
        return WindowPlan(spans=((GRAIN_ALL, 0, 1),), edges=())
    lo = 0 if since is None else since
    hi = END_OF_TIME if until is None else until
    if hi <= lo:
        return WindowPlan(spans=(), edges=())
    h0, h1 = _ceil(lo, HOUR_US), _floor(hi, HOUR_US)
    if h0 >= h1:
        return WindowPlan(spans=(), edges=((lo, hi),))
    edges = tuple(e for e in ((lo, h0), (h1, hi)) if e[0] < e[1])
    spans: list[tuple[int, int, int]] = []
    d0, d1 = _ceil(h0, DAY_US), _floor(h1, DAY_US)
    if finest == GRAIN_DAY and d0 < d1:
        spans += [(GRAIN_HOUR, h0, d0), (GRAIN_DAY, d0, d1), (GRAIN_HOUR, d1, h1)]
    else:
        spans.append((GRAIN_HOUR, h0, h1))
    return WindowPlan(spans=tuple(s for s in spans if s[1] < s[2]), edges=edges)


# ---- reading ------------------------------------------------------------------------------


def percentile_from_histogram(
    histogram: Mapping[int, int], p: float, low: int, high: int
) -> int | None:
    """Nearest-rank percentile (``p`` in 0..100) over binned durations, as the bin's value
    clamped to the observed ``[low, high]``; None when empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= rank:
            return min(max(bin_value(b), low), high)
    return high


def duration_summary(
    histogram: Mapping[int, int], count: int, total_ms: int, low: int | None, high: int | None
) -> dict[str, int | None]:
    """avg, p50, p95, p99 and max of the completed runs' durations (all None when none)."""
    if count <= 0 or low is None or high is None:
        return {"avg": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "avg": round(total_ms / count),
        "p50": percentile_from_histogram(histogram, 50, low, high),
        "p95": percentile_from_histogram(histogram, 95, low, high),
        "p99": percentile_from_histogram(histogram, 99, low, high),
        "max": high,
    }
