"""inventory(): what the BMC exposes, with absent parts as unknown rather than errors."""

from __future__ import annotations

import json

from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.devtools.bmc_emulator import BmcEmulator

from .conftest import EndpointFor


async def test_inventory_reads_what_the_fake_driver_exposes(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    fake = emulator.systems[0]

    inv = await bmc.inventory(endpoint_for(0))

    assert inv.cpu is not None
    assert (inv.cpu.count, inv.cpu.model, inv.cpu.cores) == (
        fake.cpus,
        fake.cpu_model,
        fake.cpu_cores,
    )
    assert inv.memory_gib == fake.memory_gib
    assert inv.drives is not None
    assert [d.capacity_bytes for d in inv.drives] == [d.capacity_bytes for d in fake.drives]
    assert [d.protocol for d in inv.drives] == [d.protocol for d in fake.drives]
    assert inv.nics is not None
    assert [n.mac for n in inv.nics] == list(fake.macs)


async def test_absent_parts_are_unknown_not_errors(
    bmc: RedfishBmc, endpoint_for: EndpointFor
) -> None:
    # The fake driver has no Processors (so no GPU list), Volumes fail, no PCIeDevices; the
    # third default system has no storage configured at all (Storage answers 500).
    inv = await bmc.inventory(endpoint_for(2))

    assert inv.gpus is None
    assert inv.volumes is None
    assert inv.pcie_devices is None
    assert inv.drives is None
    assert set(inv.unavailable) == {"gpus", "drives", "volumes", "pcieDevices"}
    assert inv.cpu is not None
    assert inv.nics


async def test_inventory_is_json_with_camel_case_keys(
    bmc: RedfishBmc, endpoint_for: EndpointFor
) -> None:
    inv = await bmc.inventory(endpoint_for(1))

    wire = json.loads(json.dumps(inv.to_dict()))

    assert set(wire) == {
        "cpu",
        "memoryGib",
        "drives",
        "volumes",
        "nics",
        "gpus",
        "pcieDevices",
        "unavailable",
    }
    assert wire["drives"][0]["capacityBytes"] > 0
    assert wire["nics"][0]["mac"].startswith("52:54:00")
