"""A large, realistic event log generated fast, and the read-side measurements taken over it.

``generate`` yields the events of N runs in stream order (runs spread over ``days`` up to
``now``, their events interleaved by time): a mix of workflow types with catalog step names,
~80% completed (some after a failed attempt), failures with error codes (some retried as new
linked runs), cancellations, and runs still pending or running. Payloads are built as plain
dicts and JSON-encoded by msgspec (no contract structs), ~10x faster than ``RunHistory``; the
scale test checks that the projector decodes every one of them.

``Truth`` keeps what a test needs to check answers: the runs by id with their filter values.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from infraflow.common.catalog import DEFAULT_CATALOG
from infraflow.common.ids import new_id

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_encode = msgspec.json.Encoder().encode
_event_numbers = itertools.count(1)

TYPE_WEIGHTS: Final = {
    "server.lifecycle": 20,
    "server.inspect": 10,
    "sync.server-state": 18,
    "server.register": 4,
    "server.provision": 1,
    "server.decommission": 1,
    "server.rotate-credentials": 1,
    "cluster.create": 2,
    "cluster.scale": 4,
    "cluster.upgrade": 1,
    "cluster.delete": 1,
    "sync.cluster-state": 10,
    "vm.create": 8,
    "vm.power": 14,
    "vm.delete": 5,
}
STATUS_WEIGHTS: Final = {
    "completed": 80,
    "failed": 8,
    "cancelled": 4,
    "running": 5,
    "pending": 3,
}
ERROR_CODES: Final = {
    "BMC_UNREACHABLE": 40,
    "BMC_AUTH_FAILED": 15,
    "STEP_TIMEOUT": 20,
    "K8S_CONFLICT": 10,
    "QUOTA_EXCEEDED": 10,
    "IMAGE_CHECKSUM_MISMATCH": 5,
}


@dataclass(frozen=True, slots=True)
class Workload:
    """What to generate."""

    runs: int
    days: int = 30
    projects: int = 40
    users: int = 300
    servers: int = 20_000
    clusters: int = 2_000
    vms: int = 30_000
    seed: int = 7
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class RunFacts:
    """The filter values of one generated run."""

    id: str
    type: str
    status: str
    resource_type: str
    resource_id: str
    project_id: str | None
    triggered_by: str
    created_us: int


@dataclass(slots=True)
class Truth:
    """What was generated, for checking answers."""

    runs: dict[str, RunFacts] = field(default_factory=dict)
    events: int = 0


def _time(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class _Pools:
    def __init__(self, w: Workload, rng: random.Random) -> None:
        self.projects = [f"prj_{i:03d}" for i in range(w.projects)]
        self.users = [f"usr_{i:04d}" for i in range(w.users)]
        self.resources: dict[str, list[tuple[str, str | None, str]]] = {}
        for rtype, prefix, n in (
            ("server", "srv", w.servers),
            ("cluster", "cls", w.clusters),
            ("vm", "vm", w.vms),
        ):
            pool = []
            for i in range(n):
                rid = new_id(prefix, now_ms=1_700_000_000_000 + i, entropy=rng.getrandbits(64))
                # half the servers are Atlas-only (no project); clusters and VMs always have one
                project = (
                    None if rtype == "server" and rng.random() < 0.5 else rng.choice(self.projects)
                )
                pool.append((rid, project, f"dc{i % 3 + 1}"))
            self.resources[rtype] = pool


class _Run:
    """Builds one run's events (subject, payload, time µs)."""

    def __init__(
        self, rid: str, wtype: str, rtype: str, res: tuple[str, str | None, str], user: str
    ) -> None:
        self.id, self.type, self.rtype = rid, wtype, rtype
        self.res_id, self.project, self.site = res
        self.user = user
        self.out: list[tuple[int, str, bytes]] = []
        self.n = 0

    def emit(self, name: str, at: int, **fields: Any) -> None:
        self.n += 1
        body = {
            "event": name,
            "eventId": new_id("evt", now_ms=at // 1000, entropy=next(_event_numbers)),
            "runId": self.id,
            "resourceType": self.rtype,
            "resourceId": self.res_id,
            "time": _time(at),
            **fields,
        }
        subject = f"wf.events.{self.rtype}.{self.res_id}.{self.id}.{name}"
        self.out.append((at, subject, _encode(body)))

    def step(self, name: str, index: int, attempt: int, at: int, executor: str) -> None:
        self.emit(
            "step_scheduled",
            at,
            step=name,
            index=index,
            attempt=attempt,
            executor=executor,
            action=name,
            site=self.site,
            timeoutS=600.0,
        )
        self.emit("step_started", at + 20_000, step=name, index=index, attempt=attempt, worker="w1")


def _history(
    run: _Run, steps: list[str], status: str, created: int, duration_us: int, rng: random.Random
) -> None:
    executor = "k8s" if run.rtype in ("cluster", "vm") else "bmc"
    run.emit(
        "run_created",
        created,
        workflowType=run.type,
        input={"reason": "scale test", "requestedBy": run.user},
        triggeredBy=run.user,
        steps=steps,
        projectId=run.project,
        site=run.site,
        estimatedDurationMs=5000,
    )
    if status == "pending":
        return
    run.emit("run_started", created + 5_000)
    per_step = max(1_000, (duration_us - 10_000) // max(1, len(steps)))
    at = created + 10_000
    last = len(steps) if status == "completed" else rng.randrange(len(steps))
    for i, name in enumerate(steps[: last + 1] if status != "completed" else steps):
        attempt = 1
        if status == "completed" and rng.random() < 0.1:  # one failed attempt, then success
            run.step(name, i, 1, at, executor)
            run.emit(
                "step_failed",
                at + per_step // 4,
                step=name,
                index=i,
                attempt=1,
                error={"code": "BMC_UNREACHABLE", "message": "retry", "retryable": True},
            )
            attempt = 2
            at += per_step // 2
        run.step(name, i, attempt, at, executor)
        if i == last and status != "completed":
            break
        run.emit(
            "step_succeeded",
            at + per_step - 1,
            step=name,
            index=i,
            attempt=attempt,
            output={"resource": {"observed": True}} if i == len(steps) - 1 else {},
        )
        at += per_step
    end = created + duration_us
    if status == "completed":
        run.emit("run_completed", end, output={"ok": True})
    elif status == "failed":
        code = rng.choices(list(ERROR_CODES), weights=list(ERROR_CODES.values()))[0]
        error = {"code": code, "message": "gave up", "retryable": False, "step": steps[last]}
        run.emit("step_failed", end - 1, step=steps[last], index=last, attempt=1, error=error)
        run.emit("run_failed", end, error=error)
    elif status == "cancelled":
        run.emit("run_cancel_requested", end - 2, requestedBy=run.user)
        run.emit("run_cancelled", end, requestedBy=run.user)


def generate(w: Workload, truth: Truth | None = None) -> Iterator[tuple[str, bytes]]:
    """(subject, payload) of every event, in stream (time) order."""
    rng = random.Random(w.seed)
    pools = _Pools(w, rng)
    catalog = {t.name: t for t in DEFAULT_CATALOG.types()}
    types = list(TYPE_WEIGHTS)
    type_weights = list(TYPE_WEIGHTS.values())
    statuses = list(STATUS_WEIGHTS)
    status_weights = list(STATUS_WEIGHTS.values())
    now_us = int((w.now - _EPOCH) / timedelta(microseconds=1))
    start_us = now_us - w.days * 86_400_000_000
    created = sorted(rng.randrange(start_us, now_us - 600_000_000) for _ in range(w.runs))
    failed: list[tuple[str, str, str, tuple[str, str | None, str], str]] = []
    pending: list[tuple[int, int, str, bytes]] = []  # (time, tie, subject, payload)
    tie = 0
    for at in created:
        wtype = rng.choices(types, weights=type_weights)[0]
        retry_of = None
        if failed and rng.random() < 0.02:  # a retry of an earlier failed run
            retry_of, wtype, rtype, res, user = failed.pop(rng.randrange(len(failed)))
        else:
            rtype = catalog[wtype].resource_type
            res = rng.choice(pools.resources[rtype])
            user = rng.choice(pools.users)
        steps = [s.name for s in catalog[wtype].steps]
        status = rng.choices(statuses, weights=status_weights)[0]
        if status in ("pending", "running") and at < now_us - 3_600_000_000:
            status = "completed"  # only the last hour's runs may still be in flight
        estimate = catalog[wtype].estimate_ms * 1000
        duration = max(20_000, int(estimate * rng.lognormvariate(0, 0.4)))
        run_id = new_id("run", now_ms=at // 1000 - rng.randrange(50), entropy=rng.getrandbits(64))
        run = _Run(run_id, wtype, rtype, res, user)
        _history(run, steps, status, at, duration, rng)
        if retry_of is not None:
            first = run.out[0]
            body = msgspec.json.decode(first[2])
            body["retryOf"] = retry_of
            run.out[0] = (first[0], first[1], _encode(body))
        if status == "failed":
            failed.append((run_id, wtype, rtype, res, user))
        if truth is not None:
            truth.runs[run_id] = RunFacts(run_id, wtype, status, rtype, res[0], res[1], user, at)
            truth.events += len(run.out)
        while pending and pending[0][0] <= at:
            _, _, subject, payload = heapq.heappop(pending)
            yield subject, payload
        for t, subject, payload in run.out:
            tie += 1
            heapq.heappush(pending, (t, tie, subject, payload))
    while pending:
        _, _, subject, payload = heapq.heappop(pending)
        yield subject, payload
