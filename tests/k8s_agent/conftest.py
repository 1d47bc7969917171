"""k8s-agent fixtures: a Kubernetes API emulator on a free loopback port, the agent's client
configured from a kubeconfig, and a step context double for calling actions directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from infraflow.common.agent import StepCancelledError
from infraflow.common.contracts import ExecuteStep
from infraflow.common.ids import new_id
from infraflow.devtools.kube_emulator import EmulatorConfig, KubeEmulator
from infraflow.k8s_agent.adapters.kube import KubeApi
from infraflow.k8s_agent.handlers import K8sActions

FAST = EmulatorConfig(
    cluster_ready_delay=0.2,
    cluster_delete_delay=0.2,
    vm_ready_delay=0.2,
    history_window=1000,
    bookmark_interval=0.2,
)
PROJECT = "prj-a"


class FakeContext:
    """What an action sees of ``StepContext``: the command, heartbeats, cancellation."""

    def __init__(self, command: ExecuteStep) -> None:
        self.command = command
        self.cancelled = asyncio.Event()
        self.heartbeats: list[str | None] = []

    @property
    def input(self) -> dict[str, Any]:
        return self.command.input

    @property
    def params(self) -> dict[str, Any]:
        return self.command.params

    async def heartbeat(self, progress: float | None = None, message: str | None = None) -> None:
        self.heartbeats.append(message)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise StepCancelledError("the run was cancelled")


def step(
    action: str,
    resource_id: str,
    *,
    run_input: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    run_id: str | None = None,
    project: str | None = PROJECT,
    timeout_s: float = 20.0,
    resource_type: str | None = None,
) -> FakeContext:
    kind = resource_type or ("cluster" if resource_id.startswith("cls_") else "vm")
    return FakeContext(
        ExecuteStep(
            run_id=run_id or new_id("run"),
            resource_type=kind,
            resource_id=resource_id,
            workflow_type=f"{kind}.test",
            step=action,
            index=0,
            attempt=1,
            executor="k8s",
            action=action,
            site="default",
            params=params or {},
            input=run_input or {},
            outputs=outputs or {},
            project_id=project,
            timeout_s=timeout_s,
        )
    )


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02
) -> Any:
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
    return FAST


@pytest.fixture
async def emulator(emulator_config: EmulatorConfig) -> AsyncIterator[KubeEmulator]:
    emu = KubeEmulator(emulator_config)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def kube(emulator: KubeEmulator, tmp_path: Path) -> AsyncIterator[KubeApi]:
    """The agent's client, configured from a kubeconfig file written for the emulator."""
    path = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    api = await KubeApi.connect(str(path), request_timeout_s=5.0)
    async with api:
        yield api


@pytest.fixture
def actions(kube: KubeApi) -> K8sActions:
    return K8sActions(kube, watch_timeout_s=5.0, wait_margin_s=0.5)
