"""Shared fixtures: every test gets its own broker on a free loopback port, stopped afterwards."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common.streams import Topology, ensure_topology
from infraflow.devtools.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_topology(context, Topology())
    return context


def _processes_under(base: str) -> list[tuple[int, str]]:
    """Live processes whose command line or environment mentions ``base`` (the test temp root)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (entry / "environ").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z" and (base in cmd or base in env):
            found.append((int(entry.name), cmd[:200]))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every server, emulator and service a test starts must be stopped by the end."""
    base = str(tmp_path_factory.getbasetemp())
    yield
    deadline = time.monotonic() + 10
    left = _processes_under(base)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _processes_under(base)
    assert not left, f"processes left behind by the tests: {left}"
