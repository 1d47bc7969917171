"""connect(): reach the BMC, check credentials, find the system, read what it is."""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Iterator

import pytest

from infraflow.bmc_agent.adapters.redfish import BmcEndpoint, RedfishBmc
from infraflow.bmc_agent.errors import (
    BmcAuthError,
    BmcError,
    BmcResourceMissingError,
    BmcUnreachableError,
)
from infraflow.devtools.bmc_emulator import BmcEmulator, FakeSystem, default_systems, free_port

from .conftest import TEST_OPTIONS, EndpointFor


@pytest.mark.parametrize("index", [0, 1, 2])
async def test_connect_reads_identity_and_power(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor, index: int
) -> None:
    fake = emulator.systems[index]

    info = await bmc.connect(endpoint_for(index))

    assert info.system_id == fake.id
    assert info.system_url == emulator.system_url(fake.id)
    assert (info.manufacturer, info.model, info.serial) == (
        fake.manufacturer,
        fake.model,
        fake.serial,
    )
    assert info.name == fake.name
    assert info.uuid == fake.id
    assert info.bios_version == fake.bios_version
    assert info.power_state == emulator.power_state(fake.id) == fake.power
    assert info.to_dict()["powerState"] == fake.power


async def test_system_name_alias_resolves_to_the_canonical_url(
    bmc: RedfishBmc, emulator: BmcEmulator
) -> None:
    fake = emulator.systems[0]
    ep = BmcEndpoint(emulator.system_url(fake.name), emulator.username, emulator.password)

    info = await bmc.connect(ep)  # the fake driver answers 307 to /Systems/<uuid>

    assert info.system_url == emulator.system_url(fake.id)


async def test_root_url_with_several_systems_asks_for_the_system_url(
    bmc: RedfishBmc, emulator: BmcEmulator
) -> None:
    ep = BmcEndpoint(emulator.url, emulator.username, emulator.password)

    with pytest.raises(BmcResourceMissingError, match="3 systems") as caught:
        await bmc.connect(ep)

    assert caught.value.retryable is False
    assert len(caught.value.details["systems"]) == 3


@pytest.fixture(scope="module")
def single_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcEmulator]:
    """A BMC with exactly one system, running the plain ``sushy-emulator`` (no overlay)."""
    lone = FakeSystem(id="6f1b7a34-0d2c-4e5f-8a9b-0c1d2e3f4a5b", name="lonely", power="On")
    with BmcEmulator([lone], overlay=False, workdir=tmp_path_factory.mktemp("bmc-single")) as emu:
        yield emu


@pytest.mark.parametrize("suffix", ["", "/", "/redfish/v1", "/redfish/v1/"])
async def test_root_url_with_one_system_picks_it(
    bmc: RedfishBmc, single_emulator: BmcEmulator, suffix: str
) -> None:
    ep = BmcEndpoint(
        single_emulator.url + suffix, single_emulator.username, single_emulator.password
    )

    info = await bmc.connect(ep)

    assert info.system_url == single_emulator.system_url("6f1b7a34-0d2c-4e5f-8a9b-0c1d2e3f4a5b")
    assert info.power_state == "On"


async def test_stock_emulator_has_no_model_or_serial(
    bmc: RedfishBmc, single_emulator: BmcEmulator
) -> None:
    ep = BmcEndpoint(single_emulator.url, single_emulator.username, single_emulator.password)

    info = await bmc.connect(ep)
    inventory = await bmc.inventory(ep)

    assert (info.manufacturer, info.model, info.serial) == ("Sushy Emulator", None, None)
    assert inventory.cpu is None
    assert inventory.memory_gib is None
    assert {"cpu", "memory", "drives"} <= set(inventory.unavailable)


async def test_wrong_password_is_an_auth_error(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    with pytest.raises(BmcAuthError) as caught:
        await bmc.connect(endpoint_for(0, password="Not-The-Password-42"))

    assert caught.value.code == "BMC_AUTH_FAILED"
    assert caught.value.retryable is False
    assert caught.value.details["httpStatus"] == 401
    assert any(r.status == 401 for r in emulator.requests())  # the emulator enforced it


async def test_unreachable_bmc_fails_fast_and_retryable(bmc: RedfishBmc) -> None:
    ep = BmcEndpoint(f"http://127.0.0.1:{free_port()}", "admin", "whatever-secret")
    started = time.monotonic()

    with pytest.raises(BmcUnreachableError) as caught:
        await bmc.connect(ep)

    assert time.monotonic() - started < 3.0
    assert caught.value.retryable is True
    assert caught.value.code == "BMC_UNREACHABLE"


async def test_unknown_system_is_resource_missing(bmc: RedfishBmc, emulator: BmcEmulator) -> None:
    ep = BmcEndpoint(emulator.system_url("no-such-system"), emulator.username, emulator.password)

    with pytest.raises(BmcResourceMissingError) as caught:
        await bmc.connect(ep)

    assert caught.value.details["httpStatus"] == 404
    assert caught.value.retryable is False


async def test_address_that_is_not_a_system_url_is_resource_missing(
    bmc: RedfishBmc, emulator: BmcEmulator
) -> None:
    ep = BmcEndpoint(emulator.url + "/redfish/v1/Managers", emulator.username, emulator.password)

    with pytest.raises(BmcResourceMissingError, match="neither a BMC root URL"):
        await bmc.connect(ep)


def test_endpoint_refuses_credentials_in_the_url_and_hides_the_password() -> None:
    with pytest.raises(ValueError, match="must not embed credentials") as caught:
        BmcEndpoint("https://root:hunter2secret@bmc.example", "root", "hunter2secret")
    assert "hunter2secret" not in str(caught.value)

    ep = BmcEndpoint("https://bmc.example", "root", "hunter2secret")
    assert "hunter2secret" not in repr(ep)


def _all_text(exc: BaseException) -> str:
    """Everything an operator could see of an error: str, repr, details, the whole chain."""
    return "\n".join(
        [str(exc), repr(exc), repr(getattr(exc, "details", None)), *traceback.format_exception(exc)]
    )


async def test_password_never_appears_in_errors_or_logs(
    bmc: RedfishBmc, emulator: BmcEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = emulator.password
    wrong = "Wr0ng-" + secret[::-1]
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [
        BmcEndpoint(emulator.system_url(emulator.systems[0].id), emulator.username, wrong),
        BmcEndpoint(emulator.system_url("missing"), emulator.username, secret),
        BmcEndpoint(emulator.url, emulator.username, secret),  # several systems
        BmcEndpoint(closed, emulator.username, secret),
        BmcEndpoint(emulator.url + "/nowhere", emulator.username, secret),
    ]
    errors: list[BmcError] = []
    for ep in cases:
        with pytest.raises(BmcError) as caught:
            await bmc.connect(ep)
        errors.append(caught.value)
    ok = BmcEndpoint(emulator.system_url(emulator.systems[0].id), emulator.username, secret)
    await bmc.inventory(ok)

    assert len({type(e) for e in errors}) == 3
    for error in errors:
        text = _all_text(error)
        assert secret not in text
        assert wrong not in text
    assert secret not in caplog.text
    assert wrong not in caplog.text


async def test_changed_password_replaces_the_cached_session(
    bmc: RedfishBmc, endpoint_for: EndpointFor
) -> None:
    await bmc.connect(endpoint_for(1))

    with pytest.raises(BmcAuthError):
        await bmc.connect(endpoint_for(1, password="rotated-but-wrong"))

    assert (await bmc.connect(endpoint_for(1))).system_id


async def test_emulator_stops_its_process(tmp_path_factory: pytest.TempPathFactory) -> None:
    emu = BmcEmulator(default_systems(1), workdir=tmp_path_factory.mktemp("bmc-stop"))
    async with emu:
        pid = emu.pid
        assert pid is not None
        async with RedfishBmc(TEST_OPTIONS) as client:
            ep = BmcEndpoint(emu.url, emu.username, emu.password)
            assert (await client.connect(ep)).model == "PowerEdge R650"

    assert emu.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
