"""sushy is synchronous: the facade must keep the event loop free while BMCs answer."""

from __future__ import annotations

import asyncio
import threading

from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.devtools.bmc_emulator import BmcEmulator

from .conftest import EndpointFor


async def test_parallel_calls_do_not_block_the_loop(
    bmc: RedfishBmc, emulator: BmcEmulator, endpoint_for: EndpointFor
) -> None:
    ticks = 0
    loop_thread = threading.get_ident()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    calls = [bmc.power_state(endpoint_for(i % 3)) for i in range(10)]
    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        states = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)
    finally:
        tick_task.cancel()

    assert states == [emulator.systems[i % 3].power for i in range(10)]
    # A facade that ran sushy on the loop would let the ticker run only after all calls.
    assert ticks >= 3
    assert threading.get_ident() == loop_thread


async def test_parallel_calls_to_different_operations(
    bmc: RedfishBmc, endpoint_for: EndpointFor
) -> None:
    ep = endpoint_for(0)

    info, inventory, override, media = await asyncio.gather(
        bmc.connect(ep), bmc.inventory(ep), bmc.boot_override(ep), bmc.media(ep)
    )

    assert info.system_id
    assert inventory.nics
    assert override.target
    assert media.device_id == "Cd"
