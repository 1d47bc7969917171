"""The metrics registry: the text exposition format, labels, histograms, scrape-time gauges,
and reading a scrape back."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from infraflow.common.contracts import RunCompleted, RunCreated, RunStarted, StepScheduled
from infraflow.common.metrics import (
    RUN_DURATION,
    RUNS_FINISHED,
    RUNS_STARTED,
    STEP_RETRIES,
    Registry,
    observe_run_event,
    parse_text,
    value_of,
)


def test_counters_and_gauges_render_in_the_text_format() -> None:
    r = Registry()
    runs = r.counter("x_runs_total", "Runs\nby type", ["type", "status"])
    runs.labels("a.b", "completed").inc()
    runs.labels(type="a.b", status="completed").inc(2)
    runs.labels('we"ird\\', "failed").inc()
    depth = r.gauge("x_depth", "Depth")
    depth.set(3)
    text = r.render()
    assert text.splitlines()[:2] == ["# HELP x_depth Depth", "# TYPE x_depth gauge"]
    assert "# HELP x_runs_total Runs\\nby type" in text
    assert 'x_runs_total{type="a.b",status="completed"} 3' in text
    assert 'x_runs_total{type="we\\"ird\\\\",status="failed"} 1' in text
    samples = parse_text(text)
    assert value_of(samples, "x_runs_total", status="completed") == 3
    assert value_of(samples, "x_runs_total", type='we"ird\\') == 1
    assert value_of(samples, "x_depth") == 3


def test_histograms_are_cumulative_with_sum_and_count() -> None:
    r = Registry()
    h = r.histogram("x_seconds", "Durations", ["step"], buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 0.5, 7.0):
        h.labels("s").observe(v)
    samples = parse_text(r.render())
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.1": 1, "1": 3, "+Inf": 4}
    assert value_of(samples, "x_seconds_count", step="s") == 4
    assert math.isclose(value_of(samples, "x_seconds_sum", step="s"), 8.05)
    assert h.count("s") == 4


def test_gauges_read_at_scrape_time_and_a_failing_reader_drops_only_its_sample() -> None:
    r = Registry()
    lag = r.gauge("x_lag", "Lag")
    position = [10]
    lag.set_function(lambda: 15 - position[0])
    assert value_of(parse_text(r.render()), "x_lag") == 5
    position[0] = 15
    assert value_of(parse_text(r.render()), "x_lag") == 0
    broken = r.gauge("x_broken", "Broken")
    broken.set_function(lambda: 1 / 0)
    samples = parse_text(r.render())
    assert [s.name for s in samples] == ["x_lag"]


def test_labels_are_checked_and_definitions_are_unique() -> None:
    r = Registry()
    c = r.counter("x_total", "X", ["a"])
    with pytest.raises(ValueError, match="takes labels"):
        c.labels("1", "2")
    with pytest.raises(ValueError, match="takes labels"):
        c.labels(b="1")
    with pytest.raises(ValueError, match="only goes up"):
        c.labels("1").inc(-1)
    assert r.counter("x_total", "X again", ["a"]) is c
    with pytest.raises(ValueError, match="defined differently"):
        r.gauge("x_total", "X", ["a"])


def test_run_events_are_counted_by_type_and_status() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    common = {"run_id": "run_m", "resource_type": "server", "resource_id": "srv_m"}
    created = RunCreated(
        event_id="evt_1",
        time=t0,
        workflow_type="metrics.test",
        input={},
        triggered_by="t",
        steps=["a"],
        **common,
    )
    before = (
        RUNS_STARTED.value("metrics.test"),
        RUNS_FINISHED.value("metrics.test", "completed"),
        RUN_DURATION.count("metrics.test", "completed"),
        STEP_RETRIES.value("metrics.test", "a"),
    )
    observe_run_event(RunStarted(event_id="evt_2", time=t0, **common), created)
    for attempt in (1, 2):
        scheduled = StepScheduled(
            event_id=f"evt_s{attempt}",
            time=t0,
            step="a",
            index=0,
            attempt=attempt,
            executor="test",
            action="noop",
            site="default",
            timeout_s=1.0,
            **common,
        )
        observe_run_event(scheduled, created)
    done = RunCompleted(event_id="evt_3", time=t0 + timedelta(seconds=3), **common)
    observe_run_event(done, created)
    after = (
        RUNS_STARTED.value("metrics.test"),
        RUNS_FINISHED.value("metrics.test", "completed"),
        RUN_DURATION.count("metrics.test", "completed"),
        STEP_RETRIES.value("metrics.test", "a"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]
