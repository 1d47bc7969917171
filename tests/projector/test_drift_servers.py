"""Power sync drift for servers: the server rule, the per-site breaker, and the projector pausing
a site's automatic syncs while most of its BMCs cannot be observed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import ResourceObserved, encode
from infraflow.common.ids import new_id
from infraflow.devtools.nats_server import NatsServer
from infraflow.projector.core import drift
from infraflow.projector.core.state import ResourceState

from .support import RunHistory, publish, register_input, running, settings_for, wait_applied
from .test_drift import start_commands, until

RULE = drift.RULES["server"]
DOWN = {"reachable": False, "error": {"code": "BMC_UNREACHABLE", "retryable": True}}


def cached(**over: Any) -> ResourceState:
    values: dict[str, Any] = {
        "id": new_id("srv"),
        "type": "server",
        "state": "provisioned",
        "site": "dc1",
        "attributes": {"powerState": "On", "health": "OK", "vendor": "Acme"},
        "observed_at": 1_000,
        "created_at": 500,
    }
    values.update(over)
    return ResourceState(**values)


def seen(resource: ResourceState, at: int = 2_000, **state: Any) -> drift.Observation:
    return drift.Observation(
        resource_type="server",
        resource_id=resource.id,
        observed_at=at,
        state={"reachable": True, "powerState": "On", "health": "OK", **state},
        site=resource.site,
    )


def test_power_and_health_are_compared_when_the_bmc_answered() -> None:
    r = cached()
    assert drift.assess(RULE, seen(r), r).verdict == "in_sync"
    off = drift.assess(RULE, seen(r, powerState="Off"), r)
    assert off.verdict == "drift"
    assert off.differences == {"powerState": {"cached": "On", "observed": "Off"}}
    assert drift.assess(RULE, seen(r, health="Critical"), r).verdict == "drift"
    # not facts about the server: a transition, an unknown value, a BMC that did not answer
    for state in ({"powerState": "PoweringOff"}, {"powerState": "Unknown"}, DOWN):
        assert drift.assess(RULE, seen(r, **state), r).verdict == "in_sync", state
    assert drift.assess(
        RULE, seen(r, powerState="Off"), cached(state="decommissioned")
    ).verdict == ("settled")
    # a power run is changing it: not drift, the run updates the cache
    busy = cached(active_run_id=new_id("run"))
    assert drift.assess(RULE, seen(busy, powerState="Off"), busy).verdict == "busy"
    # observed before the cache learned the current power state (e.g. from a power run)
    assert drift.assess(RULE, seen(r, at=999, powerState="Off"), r).verdict == "stale"


def test_the_breaker_opens_when_most_of_a_site_fails() -> None:
    breaker = drift.SiteBreaker(ratio=0.5, min_resources=2, window=100)
    servers = [cached() for _ in range(3)]
    other_site = cached(site="dc2")
    breaker.record(RULE, seen(servers[0], at=10, **DOWN))
    assert not breaker.is_open("server", "dc1", now=10)  # one server is not "most of a site"
    breaker.record(RULE, seen(servers[1], at=10, **DOWN))
    breaker.record(RULE, seen(servers[2], at=10))
    assert breaker.health("server", "dc1", now=10) == (2, 3)
    assert breaker.is_open("server", "dc1", now=10)
    breaker.record(RULE, seen(other_site, at=10))
    assert not breaker.is_open("server", "dc2", now=10)  # sites are independent
    breaker.record(RULE, seen(servers[1], at=20))  # one comes back: 1 of 3
    assert not breaker.is_open("server", "dc1", now=20)
    breaker.record(RULE, seen(servers[1], at=30, **DOWN))
    assert breaker.is_open("server", "dc1", now=30)
    # observations age out of the window: nothing recent, nothing to judge
    assert not breaker.is_open("server", "dc1", now=500)


async def observe(js: JetStreamContext, sid: str, at: datetime, **state: Any) -> None:
    observation = ResourceObserved(
        resource_type="server",
        resource_id=sid,
        observed_at=at,
        source="test",
        site="dc1",
        state={"reachable": True, "powerState": "On", **state},
    )
    await js.publish(subjects.observed("server", sid), encode(observation))


async def test_a_failing_site_pauses_automatic_syncs_until_it_recovers(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    ids = [new_id("srv") for _ in range(3)]
    last = 0
    for sid in ids:
        reg = RunHistory("server.register", resource_id=sid, input=register_input(sid[-6:]))
        last = await publish(js, reg.happy({0: {"resource": {"powerState": "On"}}}).events)
    settings = settings_for(
        nats_server.url,
        tmp_path / "p.db",
        drift={"settle_s": 0.05, "min_interval_s": 60, "resync_interval_s": 3600},
    )
    async with running(settings, nc, js) as projector:
        await wait_applied(projector, last)
        now = datetime.now(UTC)
        await observe(js, ids[1], now, **DOWN)
        await observe(js, ids[2], now, **DOWN)
        await observe(js, ids[0], now, powerState="Off")  # drift, but the site is failing
        await until(lambda: _paused(projector))
        await asyncio.sleep(0.3)
        assert await start_commands(js) == []

        later = now + timedelta(seconds=1)
        await observe(js, ids[1], later)
        await observe(js, ids[2], later)  # the BMCs answer again
        await observe(js, ids[0], later, powerState="Off")
        [run] = await until(lambda: start_commands(js))
        assert (run.workflow_type, run.resource_id, run.site) == (
            "sync.server-state",
            ids[0],
            "dc1",
        )
        assert run.input["differences"] == {"powerState": {"cached": "On", "observed": "Off"}}
        assert "infraflow_projector_sync_paused_total 1" in projector.drift.prometheus()


async def _paused(projector: Any) -> bool:
    return bool(projector.drift.stats.paused)
