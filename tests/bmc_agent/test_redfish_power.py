"""power(), power_state(), wait_power(): actions change the emulator's state, idempotently."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infraflow.bmc_agent.adapters.redfish import BmcEndpoint, PowerState, RedfishBmc
from infraflow.bmc_agent.errors import BmcActionRejectedError, BmcTimeoutError
from infraflow.devtools.bmc_emulator import BmcEmulator, default_systems

_CASES = 24  # default_systems(): every third server is On, the rest Off


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcEmulator]:
    """One system per test case, so cases never see each other's power state."""
    systems = default_systems(_CASES)
    with BmcEmulator(systems, workdir=tmp_path_factory.mktemp("bmc-power")) as emu:
        yield emu


_used: set[str] = set()


def _fresh_system(emulator: BmcEmulator, initial: str) -> tuple[str, BmcEndpoint]:
    """A system no other test used whose power state is ``initial``."""
    system = next(s for s in emulator.systems if s.id not in _used and s.power == initial)
    _used.add(system.id)
    assert emulator.power_state(system.id) == initial
    ep = BmcEndpoint(emulator.system_url(system.id), emulator.username, emulator.password)
    return system.id, ep


def _resets(emulator: BmcEmulator, system_id: str) -> int:
    path = f"/redfish/v1/Systems/{system_id}/Actions/ComputerSystem.Reset"
    return sum(1 for r in emulator.requests() if r.method == "POST" and r.path == path)


@pytest.mark.parametrize(
    ("action", "initial", "final"),
    [
        ("on", "Off", "On"),
        ("off", "On", "Off"),
        ("shutdown", "On", "Off"),
        ("force-off", "On", "Off"),
        ("reboot", "On", "On"),
        ("force-reboot", "On", "On"),
        ("reboot", "Off", "On"),
    ],
)
async def test_power_action_reaches_its_state(
    bmc: RedfishBmc, emulator: BmcEmulator, action: str, initial: str, final: str
) -> None:
    system_id, ep = _fresh_system(emulator, initial)

    await bmc.power(ep, action)
    reached = await bmc.wait_power(ep, final, timeout=10, interval=0.2)

    assert reached == final
    assert emulator.power_state(system_id) == final
    assert _resets(emulator, system_id) >= 1


@pytest.mark.parametrize(
    ("action", "state"),
    [("on", "On"), ("off", "Off"), ("force-off", "Off"), ("shutdown", "Off")],
)
async def test_power_action_in_its_state_is_a_no_op(
    bmc: RedfishBmc, emulator: BmcEmulator, action: str, state: str
) -> None:
    system_id, ep = _fresh_system(emulator, state)
    before = _resets(emulator, system_id)

    await bmc.power(ep, action)
    await bmc.power(ep, action)

    assert _resets(emulator, system_id) == before
    assert await bmc.power_state(ep) == state


async def test_wait_power_times_out_retryably_and_reports_polls(
    bmc: RedfishBmc, emulator: BmcEmulator
) -> None:
    _, ep = _fresh_system(emulator, "Off")
    seen: list[PowerState] = []

    async def heartbeat(state: PowerState) -> None:
        seen.append(state)

    with pytest.raises(BmcTimeoutError) as caught:
        await bmc.wait_power(ep, "On", timeout=0.6, interval=0.1, on_poll=heartbeat)

    assert caught.value.retryable is True
    assert caught.value.details["lastState"] == "Off"
    assert len(seen) >= 3
    assert set(seen) == {"Off"}


async def test_drift_behind_the_agents_back_is_observed(
    bmc: RedfishBmc, emulator: BmcEmulator
) -> None:
    system_id, ep = _fresh_system(emulator, "On")
    assert await bmc.power_state(ep) == "On"

    emulator.set_power(system_id, "ForceOff")

    assert await bmc.wait_power(ep, "off", timeout=10, interval=0.2) == "Off"


async def test_unknown_action_is_rejected(bmc: RedfishBmc, emulator: BmcEmulator) -> None:
    ep = BmcEndpoint(emulator.url, emulator.username, emulator.password)

    with pytest.raises(BmcActionRejectedError, match="unknown power action"):
        await bmc.power(ep, "hibernate")
