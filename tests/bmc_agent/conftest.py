"""Fixtures for the bmc-agent tests: a real sushy-emulator per module, a fresh facade per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from infraflow.bmc_agent.adapters.redfish import BmcEndpoint, RedfishBmc, RedfishOptions
from infraflow.devtools.bmc_emulator import BmcEmulator, default_systems

# Fast failure on the loopback: tests never wait for sushy's production back-offs.
TEST_OPTIONS = RedfishOptions(
    connect_timeout=2.0, read_timeout=10.0, server_side_retries_delay=0.1, task_timeout=10.0
)

EndpointFor = Callable[..., BmcEndpoint]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcEmulator]:
    """``sushy-emulator --fake`` with ``default_systems()`` (three servers), one per module."""
    with BmcEmulator(default_systems(), workdir=tmp_path_factory.mktemp("bmc")) as emu:
        yield emu


@pytest.fixture
async def bmc() -> AsyncIterator[RedfishBmc]:
    """The facade under test, closed after the test."""
    async with RedfishBmc(TEST_OPTIONS) as client:
        yield client


@pytest.fixture
def endpoint_for(emulator: BmcEmulator) -> EndpointFor:
    """``endpoint_for(i)``: the endpoint of the emulator's i-th system (its system URL)."""

    def make(index: int = 0, *, password: str | None = None) -> BmcEndpoint:
        system = emulator.systems[index]
        return BmcEndpoint(
            address=emulator.system_url(system.id),
            username=emulator.username,
            password=emulator.password if password is None else password,
        )

    return make
