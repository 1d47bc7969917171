"""Fixtures: a fresh emulator on a free loopback port and a kubernetes-asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from infraflow.devtools.kube_emulator import EmulatorConfig, KubeEmulator

FAST = EmulatorConfig(
    cluster_ready_delay=0.2,
    cluster_delete_delay=0.2,
    vm_ready_delay=0.2,
    history_window=1000,
    bookmark_interval=0.2,
)

GROUP, VERSION, PLURAL = "example.infraflow.dev", "v1", "widgets"
NS = "default"


def widget(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A generic custom object (no controller watches this resource)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec or {"size": 1},
    }


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns a truthy value; return it or fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s (last value: {last!r})")


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Settings for the emulator fixture; override in a test module to change them."""
    return FAST


@pytest.fixture
async def emulator(emulator_config: EmulatorConfig) -> AsyncIterator[KubeEmulator]:
    """An emulator on a free 127.0.0.1 port, stopped after the test."""
    emu = KubeEmulator(emulator_config)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def api(emulator: KubeEmulator, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    """A kubernetes-asyncio ApiClient configured from a kubeconfig written by the helper."""
    path = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    async with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def co(api: client.ApiClient) -> client.CustomObjectsApi:
    """CustomObjectsApi on the emulator."""
    return client.CustomObjectsApi(api)
