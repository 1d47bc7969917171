"""bmc-agent actions and power sync against sushy-emulator and a real nats-server: the
installer's media URL, credential rotation, forced decommission, power observations per site."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.bmc_agent.adapters.credentials import CredentialStore, candidate_key
from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.errors import BmcAuthError, BmcUnreachableError
from infraflow.bmc_agent.handlers import BmcActions
from infraflow.bmc_agent.power_sync import PowerSync
from infraflow.common import streams, subjects
from infraflow.common.agent import StepContext, StepWorker
from infraflow.common.contracts import ExecuteStep, ResourceObserved
from infraflow.common.ids import new_id
from infraflow.common.jetstream import get_last
from infraflow.common.provisioning import (
    derive_callback_key,
    installer_params,
    verify_callback_token,
)
from infraflow.common.vault import Vault
from infraflow.devtools.bmc_emulator import BmcEmulator

from .conftest import TEST_OPTIONS

KEY = Vault.generate_key()
UNREACHABLE = "http://127.0.0.1:1/redfish/v1/Systems/x"


@pytest.fixture
async def bmc() -> AsyncIterator[RedfishBmc]:
    async with RedfishBmc(TEST_OPTIONS) as client:
        yield client


@pytest.fixture
async def credentials(js: JetStreamContext) -> CredentialStore:
    return await CredentialStore.open(js, Vault(KEY))


@pytest.fixture
async def actions(
    js: JetStreamContext, bmc: RedfishBmc, credentials: CredentialStore
) -> BmcActions:
    return BmcActions(
        bmc,
        credentials,
        await js.key_value(streams.KV_IDEMPOTENCY),
        poll_interval_s=0.1,
        callback_key=derive_callback_key(KEY),
        callback_base_url="https://api.example.com",
    )


@pytest.fixture
def worker(nc: Client, js: JetStreamContext) -> StepWorker:
    return StepWorker(nc, js, "bmc", ["dc1"], {})


async def seal(js: JetStreamContext, key: str, document: dict[str, Any]) -> None:
    kv = await js.key_value(streams.KV_CREDENTIALS)
    await kv.put(key, Vault(KEY).seal(document))


async def add_server(
    js: JetStreamContext, emulator: BmcEmulator, index: int, site: str = "dc1", **over: Any
) -> str:
    server_id = new_id("srv")
    system = emulator.systems[index]
    doc = {
        "address": emulator.system_url(system.id),
        "username": emulator.username,
        "password": emulator.password,
        "verifyTls": False,
        "site": site,
        **over,
    }
    await seal(js, server_id, doc)
    return server_id


def step(
    action: str,
    server_id: str,
    *,
    params: dict[str, Any] | None = None,
    run_input: dict[str, Any] | None = None,
    workflow_type: str = "server.provision",
    run_id: str | None = None,
) -> ExecuteStep:
    return ExecuteStep(
        run_id=run_id or new_id("run"),
        resource_type="server",
        resource_id=server_id,
        workflow_type=workflow_type,
        step=action,
        index=0,
        attempt=1,
        executor="bmc",
        action=action,
        site="dc1",
        params=params or {},
        input=run_input or {},
        timeout_s=30.0,
    )


async def test_insert_media_hands_the_installer_its_callback(
    js: JetStreamContext, emulator: BmcEmulator, actions: BmcActions, worker: StepWorker
) -> None:
    server_id = await add_server(js, emulator, 0)
    image = emulator.image_url()
    cmd = step(
        "insert_media", server_id, params={"installer": True}, run_input={"image": {"url": image}}
    )
    out = await actions.table()["insert_media"](StepContext(worker, cmd, None))
    assert out["media"] == image  # the output (an event) has no token
    inserted = emulator.media_image(emulator.systems[0].id)
    assert inserted is not None
    assert inserted.startswith(image + "?")
    params = installer_params(inserted)
    assert params is not None
    assert params.run_id == cmd.run_id
    assert params.callback_url == (
        f"https://api.example.com/v1/servers/{server_id}/provisioning-callback"
    )
    assert verify_callback_token([derive_callback_key(KEY)], server_id, cmd.run_id, params.token)
    assert params.token not in str(out)
    # idempotent: the same attempt again finds the same media
    await actions.table()["insert_media"](StepContext(worker, cmd, None))
    assert emulator.media_image(emulator.systems[0].id) == inserted
    await actions.table()["eject_media"](StepContext(worker, step("eject_media", server_id), None))
    assert emulator.media_image(emulator.systems[0].id) is None


async def test_rotation_checks_the_new_credentials_before_committing(
    js: JetStreamContext,
    emulator: BmcEmulator,
    actions: BmcActions,
    credentials: CredentialStore,
    worker: StepWorker,
) -> None:
    server_id = await add_server(js, emulator, 1, username="someone-else")
    table = actions.table()
    wrong = step("verify_credentials", server_id, workflow_type="server.rotate-credentials")
    await seal(js, candidate_key(server_id, wrong.run_id), {"password": "not-it"})
    with pytest.raises(BmcAuthError):
        await table["verify_credentials"](StepContext(worker, wrong, None))
    assert not await credentials.has_candidate(server_id, wrong.run_id)  # refused: discarded

    right = step("verify_credentials", server_id, workflow_type="server.rotate-credentials")
    await seal(
        js,
        candidate_key(server_id, right.run_id),
        {"username": emulator.username, "password": emulator.password},
    )
    out = await table["verify_credentials"](StepContext(worker, right, None))
    assert out["resource"]["bmc"]["username"] == emulator.username
    assert "password" not in msgspec.json.encode(out).decode().lower()
    commit = step(
        "commit_credentials",
        server_id,
        workflow_type="server.rotate-credentials",
        run_id=right.run_id,
    )
    assert (await table["commit_credentials"](StepContext(worker, commit, None)))["committed"]
    assert (await credentials.endpoint(server_id)).username == emulator.username
    assert not await credentials.has_candidate(server_id, right.run_id)
    # a repeated commit (retried attempt) is a no-op
    assert not (await table["commit_credentials"](StepContext(worker, commit, None)))["committed"]


async def test_forced_decommission_gets_past_a_dead_bmc(
    js: JetStreamContext, actions: BmcActions, credentials: CredentialStore, worker: StepWorker
) -> None:
    server_id = new_id("srv")
    await seal(js, server_id, {"address": UNREACHABLE, "username": "u", "password": "p" * 8})
    params = {"action": "force-off", "target": "Off"}
    plain = step("power", server_id, params=params, workflow_type="server.decommission")
    with pytest.raises(BmcUnreachableError):
        await actions.table()["power"](StepContext(worker, plain, None))
    forced = step(
        "power",
        server_id,
        params=params,
        workflow_type="server.decommission",
        run_input={"force": True},
    )
    out = await actions.table()["power"](StepContext(worker, forced, None))
    assert out == {"skipped": True, "reason": "BMC_UNREACHABLE"}
    # force is only for decommission
    other = step("power", server_id, params=params, run_input={"force": True})
    with pytest.raises(BmcUnreachableError):
        await actions.table()["power"](StepContext(worker, other, None))
    forget = step("forget", server_id, workflow_type="server.decommission")
    await actions.table()["forget"](StepContext(worker, forget, None))
    with pytest.raises(BmcAuthError):
        await credentials.endpoint(server_id)


async def test_power_sync_observes_the_sites_bmcs(
    js: JetStreamContext, emulator: BmcEmulator, bmc: RedfishBmc, credentials: CredentialStore
) -> None:
    here = [await add_server(js, emulator, i) for i in (0, 1)]
    elsewhere = await add_server(js, emulator, 2, site="dc2")
    dead = new_id("srv")
    await seal(
        js, dead, {"address": UNREACHABLE, "username": "u", "password": "p" * 8, "site": "dc1"}
    )
    sync = PowerSync(js, bmc, credentials, ["dc1"], interval_s=60, timeout_s=5)
    published = await sync.poll_once()
    assert sorted(o.resource_id for o in published) == sorted([*here, dead])
    by_id = {o.resource_id: o for o in published}
    for i, server_id in enumerate(here):
        state = by_id[server_id].state
        assert state["reachable"] is True
        assert state["powerState"] == emulator.power_state(emulator.systems[i].id)
        assert by_id[server_id].site == "dc1"
    assert by_id[dead].state == {
        "reachable": False,
        "error": {"code": "BMC_UNREACHABLE", "retryable": True},
    }
    stored = await get_last(js, streams.OBSERVED, subjects.observed("server", here[0]))
    assert stored is not None
    assert msgspec.json.decode(stored.data, type=ResourceObserved).resource_id == here[0]
    assert await get_last(js, streams.OBSERVED, subjects.observed("server", elsewhere)) is None
    assert (sync.polls, sync.failures) == (3, 1)
