"""``GET /v1/workflows/metrics`` against a real projector: every value checked against numbers
computed by hand from the runs the test wrote (windows that cut hours and span whole days, so
raw edges, hour rows and day rows all contribute)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from projector.support import RunHistory, publish, running, settings_for, wait_applied

from infraflow.devtools.nats_server import NatsServer
from infraflow.gateway.app import create_app
from infraflow.gateway.settings import GatewaySettings
from infraflow.projector.app import Projector

from .conftest import auth, body_of, serve, started

D = datetime(2026, 3, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    type: str
    at: datetime
    status: str
    duration_ms: int = 0
    code: str | None = None
    project: str | None = None
    retry_of: int | None = None
    failed_attempts: int = 0


SPECS = [
    Spec("server.inspect", D + timedelta(hours=10, minutes=5), "completed", 10),
    Spec("server.inspect", D + timedelta(hours=10, minutes=20), "completed", 20, failed_attempts=1),
    Spec("server.inspect", D + timedelta(hours=10, minutes=50), "failed", 5, "BMC_AUTH_FAILED"),
    Spec("server.inspect", D + timedelta(hours=11, minutes=10), "completed", 30),
    Spec("server.inspect", D + timedelta(hours=12), "completed", 25, retry_of=2),
    Spec("server.inspect", D + timedelta(hours=13, minutes=40), "completed", 40, project="prj-a"),
    Spec("server.inspect", D + timedelta(days=1, hours=9), "completed", 50),
    Spec("server.inspect", D + timedelta(days=1, hours=15, minutes=30), "completed", 60),
    Spec("server.inspect", D + timedelta(days=1, hours=16), "failed", 7, "BMC_UNREACHABLE"),
    Spec("server.lifecycle", D + timedelta(days=1, hours=12), "failed", 9, "BMC_AUTH_FAILED"),
    Spec("vm.power", D + timedelta(hours=10, minutes=30), "completed", 1000, project="prj-a"),
    Spec("vm.power", D + timedelta(hours=14), "cancelled", 3, project="prj-a"),
    Spec("vm.power", D + timedelta(days=1, hours=10), "running", project="prj-b"),
    Spec("vm.power", D + timedelta(days=2, hours=8), "pending", project="prj-a"),
    Spec("vm.power", D + timedelta(days=2, hours=9, minutes=15), "completed", 2000),
    Spec("vm.power", D + timedelta(days=2, hours=9, minutes=20), "completed", 3000),
    Spec("vm.power", D + timedelta(days=2, hours=9, minutes=40), "completed", 5000),
    Spec("vm.power", D + timedelta(days=2, hours=11), "completed", 8000),
]
RESOURCE_TYPES = {"server.inspect": "server", "server.lifecycle": "server", "vm.power": "vm"}


def history(spec: Spec, retry_of: str | None) -> RunHistory:
    h = RunHistory(
        spec.type,
        resource_type=RESOURCE_TYPES[spec.type],
        resource_id="vm_1" if spec.type == "vm.power" else "srv_1",
        project_id=spec.project,
        at=spec.at,
        retry_of=retry_of,
    )
    h.created()
    if spec.status == "pending":
        return h
    h.time = spec.at + timedelta(microseconds=100)
    h.started()
    for attempt in range(1, spec.failed_attempts + 1):  # failed attempts, then one that works
        h.time = spec.at + timedelta(microseconds=200 + attempt)
        h.scheduled(0, attempt)
        h.step_failed(0, attempt)
        h.scheduled(0, attempt + 1)
        h.succeeded(0, attempt + 1)
    end = spec.at + timedelta(milliseconds=spec.duration_ms)
    if spec.status == "running":
        return h
    h.time = end
    if spec.status == "completed":
        h.completed()
    elif spec.status == "failed":
        assert spec.code is not None
        h.failed(spec.code)
    else:
        h.cancelled()
    return h


@pytest.fixture
async def api(
    nats_server: NatsServer,
    nc: Client,
    js: JetStreamContext,
    tmp_path: Path,
    settings: GatewaySettings,
) -> AsyncIterator[httpx.AsyncClient]:
    projector = running(settings_for(nats_server.url, tmp_path / "m.db"), nc, js)
    async with projector as p, serve(create_app(settings)) as client:
        await started(client)
        await load(p, js)
        yield client


async def load(p: Projector, js: JetStreamContext) -> None:
    ids: list[str] = []
    events = []
    for spec in SPECS:
        h = history(spec, ids[spec.retry_of] if spec.retry_of is not None else None)
        ids.append(h.run_id)
        events += h.events
    await wait_applied(p, await publish(js, events))


async def metrics(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/workflows/metrics", params=params, headers=auth())
    assert response.status_code == 200, response.text
    data: dict[str, Any] = body_of(response)["data"]
    return data


def by_status(specs: list[Spec]) -> dict[str, int]:
    out = dict.fromkeys(("pending", "running", "completed", "failed", "cancelled"), 0)
    for s in specs:
        out[s.status] += 1
    return out


def nearest_rank(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def check(data: dict[str, Any], specs: list[Spec]) -> None:
    """Every number of a metrics answer, recomputed from ``specs``."""
    counts = by_status(specs)
    finished = counts["completed"] + counts["failed"] + counts["cancelled"]
    assert data["total"] == len(specs)
    assert data["byStatus"] == counts
    assert data["successRate"] == (round(counts["completed"] / finished, 4) if finished else None)
    assert data["retries"] == sum(s.retry_of is not None for s in specs)
    assert data["stepRetries"] == sum(s.failed_attempts for s in specs)
    types = sorted({s.type for s in specs})
    assert list(data["byType"]) == types
    for t in types:
        mine = [s for s in specs if s.type == t]
        entry = data["byType"][t]
        assert entry["count"] == len(mine)
        assert entry["byStatus"] == by_status(mine)
        durations = [s.duration_ms for s in mine if s.status == "completed"]
        stats = entry["durationMs"]
        if not durations:
            assert stats == {"avg": None, "p50": None, "p95": None, "p99": None, "max": None}
            continue
        assert stats["avg"] == round(sum(durations) / len(durations))
        assert stats["max"] == max(durations)
        for p in (50, 95, 99):
            exact = nearest_rank(durations, p)
            if exact < 64:  # exact bins below 64 ms
                assert stats[f"p{p}"] == exact, (t, p)
            else:  # log-scale bins: within 1/64 of the exact value
                assert abs(stats[f"p{p}"] - exact) <= exact / 64, (t, p, stats, exact)
    codes: dict[str, int] = {}
    for s in specs:
        if s.status == "failed" and s.code:
            codes[s.code] = codes.get(s.code, 0) + 1
    ranked = sorted(codes.items(), key=lambda c: (-c[1], c[0]))
    assert data["topErrorCodes"] == [{"code": c, "count": n} for c, n in ranked]


def within(since: datetime | None, until: datetime | None) -> list[Spec]:
    return [
        s for s in SPECS if (since is None or s.at >= since) and (until is None or s.at < until)
    ]


async def test_totals_rates_durations_retries_and_errors(api: httpx.AsyncClient) -> None:
    data = await metrics(api)
    check(data, SPECS)
    assert data["inFlight"] == 2
    assert data["byType"]["server.inspect"]["durationMs"] == {
        "avg": 34,  # (10 + 20 + 30 + 25 + 40 + 50 + 60) / 7
        "p50": 30,
        "p95": 60,
        "p99": 60,
        "max": 60,
    }
    assert data["byType"]["server.inspect"]["successRate"] == round(7 / 9, 4)
    vm = data["byType"]["vm.power"]["durationMs"]
    assert (vm["avg"], vm["max"]) == (3800, 8000)  # (1000 + 2000 + 3000 + 5000 + 8000) / 5
    assert vm["p50"] == 2975  # 3000's bin: [2944, 3008)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (D + timedelta(hours=10, minutes=15), D + timedelta(days=2, hours=9, minutes=30)),
        (D + timedelta(hours=10, minutes=15), D + timedelta(hours=13, minutes=45)),
        (D + timedelta(hours=10, minutes=1), D + timedelta(hours=10, minutes=40)),
        (D + timedelta(days=1), D + timedelta(days=2)),
        (None, D + timedelta(days=1, hours=12)),
        (D + timedelta(hours=11), None),
    ],
)
async def test_windows_cut_hours_and_span_days(
    api: httpx.AsyncClient, since: datetime | None, until: datetime | None
) -> None:
    params = {}
    if since is not None:
        params["since"] = since.isoformat()
    if until is not None:
        params["until"] = until.isoformat()
    data = await metrics(api, **params)
    check(data, within(since, until))
    assert data["inFlight"] == 2  # in flight now, whenever created


async def test_type_resource_type_and_tenancy_filters(api: httpx.AsyncClient) -> None:
    check(await metrics(api, type="server.inspect,server.lifecycle"), SPECS[:10])
    check(await metrics(api, resourceType="vm"), SPECS[10:])
    data = await metrics(api, resourceType="vm", type="server.inspect")
    assert data["total"] == 0
    assert data["byType"] == {}
    arc = auth(sub="tenant", roles=(), projects={"prj-a": "member"})
    response = await api.get("/v1/workflows/metrics", headers=arc)
    data = body_of(response)["data"]
    check(data, [s for s in SPECS if s.project == "prj-a"])
    assert data["inFlight"] == 1  # prj-b's running run is not theirs


async def test_runs_per_bucket(api: httpx.AsyncClient) -> None:
    since, until = D + timedelta(hours=10, minutes=15), D + timedelta(days=2, hours=10)
    day = await metrics(api, since=since.isoformat(), until=until.isoformat(), bucket="day")
    expected: dict[datetime, list[Spec]] = {}
    for s in within(since, until):
        expected.setdefault(s.at.replace(hour=0, minute=0), []).append(s)
    got = {datetime.fromisoformat(b["start"]): b for b in day["buckets"]}
    assert sorted(got) == sorted(expected)
    for start, specs in expected.items():
        assert got[start]["total"] == len(specs)
        assert got[start]["byStatus"] == by_status(specs)

    hour = await metrics(api, until=(D + timedelta(days=1)).isoformat(), bucket="hour")
    hours: dict[datetime, int] = {}
    for s in within(None, D + timedelta(days=1)):
        key = s.at.replace(minute=0)
        hours[key] = hours.get(key, 0) + 1
    assert {datetime.fromisoformat(b["start"]): b["total"] for b in hour["buckets"]} == hours

    minute = await metrics(
        api,
        since=(D + timedelta(hours=10)).isoformat(),
        until=(D + timedelta(hours=11)).isoformat(),
        bucket="minute",
    )
    assert [(b["start"][11:16], b["total"]) for b in minute["buckets"]] == [
        ("10:05", 1),
        ("10:20", 1),
        ("10:30", 1),
        ("10:50", 1),
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"bucket": "fortnight"}, "bucket"),
        ({"bucket": "minute", "since": "2026-03-01", "until": "2026-03-05"}, "bucket"),
        ({"bucket": "minute"}, "bucket"),
        ({"since": "2026-03-05", "until": "2026-03-01"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"type": "server.teleport"}, "type"),
        ({"resourceType": "toaster"}, "resourceType"),
    ],
)
async def test_metrics_validation(
    api: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await api.get("/v1/workflows/metrics", params=params, headers=auth())
    assert response.status_code == 400
    error = body_of(response)["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["details"]["fields"]
