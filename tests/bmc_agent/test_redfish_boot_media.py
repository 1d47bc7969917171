"""Boot override and virtual media: they change the emulator's state and are idempotent."""

from __future__ import annotations

import pytest

from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.errors import BmcActionRejectedError
from infraflow.devtools.bmc_emulator import BmcEmulator

from .conftest import EndpointFor


def _posts(emulator: BmcEmulator, system_id: str, action: str) -> int:
    suffix = f"/Systems/{system_id}/VirtualMedia/Cd/Actions/VirtualMedia.{action}"
    return sum(1 for r in emulator.requests() if r.method == "POST" and r.path.endswith(suffix))


@pytest.mark.parametrize(("device", "redfish"), [("cd", "Cd"), ("pxe", "Pxe"), ("hdd", "Hdd")])
async def test_boot_once_sets_the_override(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor, device: str, redfish: str
) -> None:
    ep = endpoint_for(0)

    await bmc.set_boot_once(ep, device)

    assert emulator.boot_override(emulator.systems[0].id)[0] == redfish
    assert (await bmc.boot_override(ep)).target == device


async def test_clear_boot_override_goes_back_to_disk_and_is_idempotent(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    ep = endpoint_for(1)
    await bmc.set_boot_once(ep, "cd")
    assert (await bmc.boot_override(ep)).target == "cd"

    await bmc.clear_boot_override(ep)
    await bmc.clear_boot_override(ep)

    override = await bmc.boot_override(ep)
    # The fake driver ignores BootSourceOverrideEnabled (always "Continuous"), so "cleared"
    # shows as the disk target there; a real BMC reports "disabled".
    assert override.target == "hdd"
    assert override.to_dict() == {"target": "hdd", "enabled": "continuous", "mode": "UEFI"}


async def test_unknown_boot_device_is_rejected(bmc: RedfishBmc, endpoint_for: EndpointFor) -> None:
    with pytest.raises(BmcActionRejectedError, match="unknown boot device"):
        await bmc.set_boot_once(endpoint_for(0), "floppy")


async def test_insert_and_eject_media_are_idempotent(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    system_id = emulator.systems[2].id
    ep = endpoint_for(2)
    image = emulator.image_url("installer.iso")
    assert (await bmc.media(ep)).inserted is False

    await bmc.insert_media(ep, image)
    await bmc.insert_media(ep, image)

    assert _posts(emulator, system_id, "InsertMedia") == 1
    vm = emulator.virtual_media(system_id)
    assert (vm["Inserted"], vm["Image"]) == (True, image)
    state = await bmc.media(ep)
    assert (state.device_id, state.inserted, state.image) == ("Cd", True, image)
    assert set(state.media_types) >= {"CD", "DVD"}

    await bmc.eject_media(ep)
    await bmc.eject_media(ep)

    assert _posts(emulator, system_id, "EjectMedia") == 1
    assert emulator.virtual_media(system_id)["Inserted"] is False
    assert (await bmc.media(ep)).image is None


async def test_inserting_another_image_ejects_the_first(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    emulator.images["rescue.iso"] = b"RESCUE" * 1000
    system_id = emulator.systems[1].id
    ep = endpoint_for(1)

    await bmc.insert_media(ep, emulator.image_url("installer.iso"))
    await bmc.insert_media(ep, emulator.image_url("rescue.iso"))

    assert emulator.virtual_media(system_id)["Image"] == emulator.image_url("rescue.iso")
    assert _posts(emulator, system_id, "EjectMedia") == 1
    await bmc.eject_media(ep)


async def test_image_the_bmc_cannot_fetch_is_rejected(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    with pytest.raises(BmcActionRejectedError) as caught:
        await bmc.insert_media(endpoint_for(0), emulator.image_url("missing.iso"))

    assert caught.value.retryable is False
    assert caught.value.details["httpStatus"] == 400
