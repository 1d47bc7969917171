"""Prometheus metrics: counters, gauges and histograms with labels, rendered in the text
exposition format (0.0.4) that every service serves on ``/metrics``.

    RUNS_FINISHED.labels(type="server.lifecycle", status="completed").inc()
    STEP_DURATION.labels(executor="bmc", action="power", outcome="succeeded").observe(1.2)
    body = REGISTRY.render()

``REGISTRY`` is the process's registry: non-HTTP services serve it on the ops port (the runtime
adds it to ``/metrics``), the gateway on its API port. The metric families the services share
are defined here, once, because dashboards and the autoscalers depend on their names (see
docs/operations.md). Why not ``prometheus-client``: the services need only this much (no
multiprocess mode, no push gateway, no default process collectors), and a small typed module
keeps ``mypy --strict`` and the dependency list as they are.

Updates may come from any thread (the projector writes from a worker thread); each family
guards its values with a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeVar

from nats.js import JetStreamContext

from infraflow.common.contracts import RunCreated, RunEvent, StepScheduled
from infraflow.common.streams import ConsumerSpec

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]

DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; suits message handling and short steps."""
LONG_BUCKETS: Final = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Seconds; suits steps and runs that talk to BMCs and clusters."""


class _Family:
    """One metric name with its label names and a value (or values) per label combination."""

    kind: Kind

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, values: Sequence[str], named: dict[str, str]) -> LabelValues:
        if named:
            if values:
                raise ValueError("label values either by position or by name")
            if set(named) != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(named)}")
            return tuple(str(named[n]) for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        return tuple(str(v) for v in values)

    def samples(self) -> list[tuple[str, LabelValues, float, tuple[str, str] | None]]:
        """(metric name, label values, value, extra label) for rendering."""
        raise NotImplementedError

    def render(self) -> str:
        lines = [
            f"# HELP {self.name} {_escape_help(self.documentation)}",
            f"# TYPE {self.name} {self.kind}",
        ]
        for name, values, value, extra in self.samples():
            pairs = list(zip(self.labelnames, values, strict=True))
            if extra is not None:
                pairs.append(extra)
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
            lines.append(
                f"{name}{{{labels}}} {_number(value)}" if labels else f"{name} {_number(value)}"
            )
        return "\n".join(lines) + "\n"


class Counter(_Family):
    """A value that only goes up (restarts reset it; Prometheus' ``rate`` copes)."""

    kind: Kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._values: dict[LabelValues, float] = {}

    def labels(self, *values: str, **named: str) -> _CounterChild:
        return _CounterChild(self, self._key(values, named))

    def inc(self, amount: float = 1.0) -> None:
        """Increment the unlabelled counter."""
        _CounterChild(self, self._key((), {})).inc(amount)

    def value(self, *values: str, **named: str) -> float:
        with self._lock:
            return self._values.get(self._key(values, named), 0.0)

    def samples(self) -> list[tuple[str, LabelValues, float, tuple[str, str] | None]]:
        with self._lock:
            return [(self.name, k, v, None) for k, v in sorted(self._values.items())]


class _CounterChild:
    def __init__(self, family: Counter, key: LabelValues) -> None:
        self._family, self._key = family, key

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._family._lock:
            values = self._family._values
            values[self._key] = values.get(self._key, 0.0) + amount


class Gauge(_Family):
    """A value that goes up and down; set directly or read from a function at scrape time."""

    kind: Kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._values: dict[LabelValues, float] = {}
        self._functions: dict[LabelValues, Callable[[], float]] = {}

    def labels(self, *values: str, **named: str) -> _GaugeChild:
        return _GaugeChild(self, self._key(values, named))

    def set(self, value: float) -> None:
        """Set the unlabelled gauge."""
        self.labels().set(value)

    def set_function(self, function: Callable[[], float], *values: str, **named: str) -> None:
        """Compute the value when scraped (e.g. a lag from two positions)."""
        with self._lock:
            self._functions[self._key(values, named)] = function

    def value(self, *values: str, **named: str) -> float:
        key = self._key(values, named)
        with self._lock:
            function = self._functions.get(key)
            if function is None:
                return self._values.get(key, 0.0)
        return float(function())

    def samples(self) -> list[tuple[str, LabelValues, float, tuple[str, str] | None]]:
        with self._lock:
            values = dict(self._values)
            functions = dict(self._functions)
        for key, function in functions.items():
            try:
                values[key] = float(function())
            except Exception:  # a failing reader must not break the whole scrape
                log.exception("metric %s could not be read", self.name)
                values.pop(key, None)
        return [(self.name, k, v, None) for k, v in sorted(values.items())]


class _GaugeChild:
    def __init__(self, family: Gauge, key: LabelValues) -> None:
        self._family, self._key = family, key

    def set(self, value: float) -> None:
        with self._family._lock:
            self._family._values[self._key] = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._family._lock:
            values = self._family._values
            values[self._key] = values.get(self._key, 0.0) + amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


@dataclass
class _Buckets:
    counts: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(_Family):
    """Observations counted into cumulative ``le`` buckets, with their sum and count."""

    kind: Kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket")
        self.bounds = (*bounds, math.inf)
        self._values: dict[LabelValues, _Buckets] = {}

    def labels(self, *values: str, **named: str) -> _HistogramChild:
        return _HistogramChild(self, self._key(values, named))

    def observe(self, value: float) -> None:
        """Observe into the unlabelled histogram."""
        self.labels().observe(value)

    def count(self, *values: str, **named: str) -> int:
        with self._lock:
            b = self._values.get(self._key(values, named))
            return b.count if b else 0

    def samples(self) -> list[tuple[str, LabelValues, float, tuple[str, str] | None]]:
        out: list[tuple[str, LabelValues, float, tuple[str, str] | None]] = []
        with self._lock:
            items = sorted(
                (k, _Buckets(list(v.counts), v.total, v.count)) for k, v in self._values.items()
            )
        for key, b in items:
            running = 0
            for bound, n in zip(self.bounds, b.counts, strict=True):
                running += n
                out.append((f"{self.name}_bucket", key, float(running), ("le", _number(bound))))
            out.append((f"{self.name}_sum", key, b.total, None))
            out.append((f"{self.name}_count", key, float(b.count), None))
        return out


class _HistogramChild:
    def __init__(self, family: Histogram, key: LabelValues) -> None:
        self._family, self._key = family, key

    def observe(self, value: float) -> None:
        family = self._family
        index = next(i for i, bound in enumerate(family.bounds) if value <= bound)
        with family._lock:
            b = family._values.get(self._key)
            if b is None:
                b = family._values[self._key] = _Buckets([0] * len(family.bounds))
            b.counts[index] += 1
            b.total += value
            b.count += 1


_F = TypeVar("_F", bound=_Family)


class Registry:
    """The metric families of a process, rendered together for ``/metrics``."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, documentation, labelnames))

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(name, documentation, labelnames, buckets))

    def _add(self, family: _F) -> _F:
        with self._lock:
            existing = self._families.get(family.name)
            if existing is not None:
                # the same definition twice (a module imported again) gets the same family
                if type(existing) is type(family) and existing.labelnames == family.labelnames:
                    return existing
                raise ValueError(f"metric {family.name} is already defined differently")
            self._families[family.name] = family
            return family

    def render(self) -> str:
        """Every family in the text exposition format, sorted by name."""
        with self._lock:
            families = sorted(self._families.values(), key=lambda f: f.name)
        return "".join(f.render() for f in families)


REGISTRY: Final = Registry()
CONTENT_TYPE: Final = "text/plain; version=0.0.4"

# ---- the shared metric families -------------------------------------------------------------

RUNS_CREATED: Final = REGISTRY.counter(
    "infraflow_runs_created_total", "Runs the orchestrator accepted (run_created)", ["type"]
)
RUNS_STARTED: Final = REGISTRY.counter(
    "infraflow_runs_started_total", "Runs that started executing (run_started)", ["type"]
)
RUNS_FINISHED: Final = REGISTRY.counter(
    "infraflow_runs_finished_total",
    "Runs that ended, by terminal status (completed, failed, cancelled)",
    ["type", "status"],
)
RUN_DURATION: Final = REGISTRY.histogram(
    "infraflow_run_duration_seconds",
    "From run_created to the terminal event",
    ["type", "status"],
    LONG_BUCKETS,
)
STEP_RETRIES: Final = REGISTRY.counter(
    "infraflow_step_retries_total",
    "Step attempts after the first (attempt > 1 scheduled), forward or compensation",
    ["type", "step"],
)
LOCK_WAITS: Final = REGISTRY.counter(
    "infraflow_lock_waits_total",
    "Runs queued behind another run holding their resource (run_queued)",
    ["type"],
)
RUN_START_DELAY: Final = REGISTRY.histogram(
    "infraflow_run_start_delay_seconds",
    "From run_created to run_started: the wait for the resource lock",
    ["type"],
    LONG_BUCKETS,
)
STEP_DURATION: Final = REGISTRY.histogram(
    "infraflow_step_duration_seconds",
    "Time an agent spent executing one step attempt",
    ["executor", "action", "outcome"],
    LONG_BUCKETS,
)
QUEUE_LAG: Final = REGISTRY.histogram(
    "infraflow_consumer_delivery_lag_seconds",
    "From a message's arrival in its stream to its handling (queue lag)",
    ["consumer"],
)
CONSUMER_PENDING: Final = REGISTRY.gauge(
    "infraflow_consumer_pending_messages",
    "Messages of a durable consumer not yet delivered (the autoscalers' backlog signal)",
    ["stream", "consumer"],
)
CONSUMER_ACK_PENDING: Final = REGISTRY.gauge(
    "infraflow_consumer_ack_pending_messages",
    "Messages of a durable consumer delivered but not yet acknowledged",
    ["stream", "consumer"],
)
WEBHOOK_DELIVERIES: Final = REGISTRY.counter(
    "infraflow_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, failed, gave_up)",
    ["outcome"],
)
GATEWAY_RUNS_ACCEPTED: Final = REGISTRY.counter(
    "infraflow_gateway_runs_accepted_total",
    "Runs the gateway answered 202 for (the command was acknowledged by JetStream)",
    ["type"],
)
HTTP_RESPONSES: Final = REGISTRY.counter(
    "infraflow_http_responses_total",
    "HTTP responses by method, route template and status",
    ["method", "route", "status"],
)
PROJECTOR_LAG: Final = REGISTRY.gauge(
    "infraflow_projector_lag_messages",
    "Events in WF_EVENTS this projector replica has not applied yet",
)

_TERMINAL: Final = {
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}


def observe_run_event(event: RunEvent, created: RunCreated | None) -> None:
    """Count one event the orchestrator appended; ``created`` is the run's ``run_created``."""
    if created is None:
        return
    kind = created.workflow_type
    name = event.name
    if name == "run_created":
        RUNS_CREATED.labels(kind).inc()
    elif name == "run_started":
        RUNS_STARTED.labels(kind).inc()
        RUN_START_DELAY.labels(kind).observe(_seconds(created.time, event.time))
    elif name == "run_queued":
        LOCK_WAITS.labels(kind).inc()
    elif name in _TERMINAL:
        status = _TERMINAL[name]
        RUNS_FINISHED.labels(kind, status).inc()
        RUN_DURATION.labels(kind, status).observe(_seconds(created.time, event.time))
    elif isinstance(event, StepScheduled) and event.attempt > 1:
        STEP_RETRIES.labels(kind, event.step).inc()


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


# ---- consumer backlog ----------------------------------------------------------------------


async def watch_consumers(
    js: JetStreamContext,
    specs: Iterable[ConsumerSpec],
    stop: asyncio.Event,
    *,
    interval_s: float = 5.0,
) -> None:
    """Read the durable consumers' backlog every ``interval_s`` until ``stop`` is set.

    Every replica of a service reports the same numbers (they are the consumer's, not the
    replica's): aggregate with ``max by (consumer)``, never ``sum``.
    """
    specs = list(specs)
    while not stop.is_set():
        for spec in specs:
            try:
                info = await js.consumer_info(spec.stream, spec.durable)
            except Exception as exc:  # the broker may be away; the next round tries again
                log.debug("consumer info of %s failed: %s", spec.durable, exc)
                continue
            CONSUMER_PENDING.labels(spec.stream, spec.durable).set(float(info.num_pending or 0))
            CONSUMER_ACK_PENDING.labels(spec.stream, spec.durable).set(
                float(info.num_ack_pending or 0)
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def start_consumer_watch(
    js: JetStreamContext,
    specs: Iterable[ConsumerSpec],
    stop: asyncio.Event,
    *,
    interval_s: float = 5.0,
) -> asyncio.Task[None]:
    """``watch_consumers`` as a task (keep the reference; it ends when ``stop`` is set)."""
    return asyncio.create_task(
        watch_consumers(js, specs, stop, interval_s=interval_s), name="consumer-watch"
    )


def track_stream_lag(
    js: JetStreamContext,
    stream: str,
    applied: Callable[[], int],
    stop: asyncio.Event,
    *,
    gauge: Gauge = PROJECTOR_LAG,
    interval_s: float = 2.0,
) -> asyncio.Task[None]:
    """Make ``gauge`` read ``last sequence of stream - applied()`` when scraped; the stream's
    end is read every ``interval_s`` (a task that ends when ``stop`` is set)."""
    last = [0]
    gauge.set_function(lambda: float(max(0, last[0] - applied())))

    async def poll() -> None:
        while not stop.is_set():
            try:
                info = await js.stream_info(stream)
                last[0] = int(info.state.last_seq)
            except Exception as exc:  # the broker may be away; keep the last known end
                log.debug("stream info of %s failed: %s", stream, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    return asyncio.create_task(poll(), name=f"lag-{stream}")


# ---- reading the format back (tests, tools) --------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One line of a scrape."""

    name: str
    labels: dict[str, str]
    value: float


def parse_text(text: str) -> list[Sample]:
    """The samples of a text-format scrape (comments skipped)."""
    out: list[Sample] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            body, value = rest.rsplit("}", 1)
            labels = _parse_labels(body)
        else:
            name, value = line.split(None, 1)
            labels = {}
        out.append(Sample(name, labels, float(value.split()[0])))
    return out


def value_of(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _parse_labels(body: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    i = 0
    while i < len(body):
        eq = body.index("=", i)
        key = body[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # past '="'
        value = []
        while body[j] != '"':
            if body[j] == "\\":
                j += 1
                value.append({"n": "\n"}.get(body[j], body[j]))
            else:
                value.append(body[j])
            j += 1
        labels[key] = "".join(value)
        i = j + 1
    return labels


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)
