"""Informers against the emulator: list + watch publish the cache's view of every managed
object, deletions are published as ``gone``, and a watch that gets 410 relists and goes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from infraflow.common.contracts import ResourceObserved
from infraflow.common.ids import new_id
from infraflow.devtools.kube_emulator import EmulatorConfig, KubeEmulator
from infraflow.k8s_agent.adapters.kube import KubeApi
from infraflow.k8s_agent.core import clusters, vms
from infraflow.k8s_agent.informers import CLUSTERS, VMS, Informer

from .conftest import PROJECT, eventually


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # no bookmarks during a test: an informer's version only moves with its own events
    return EmulatorConfig(
        cluster_ready_delay=0.2, cluster_delete_delay=0.2, vm_ready_delay=0.2, bookmark_interval=60
    )


class Published:
    def __init__(self) -> None:
        self.items: list[ResourceObserved] = []

    async def __call__(self, observation: ResourceObserved) -> None:
        self.items.append(observation)

    def of(self, rid: str) -> list[ResourceObserved]:
        return [o for o in self.items if o.resource_id == rid]

    def last(self, rid: str) -> ResourceObserved | None:
        found = self.of(rid)
        return found[-1] if found else None


@pytest.fixture
async def running(kube: KubeApi) -> AsyncIterator[tuple[Informer, Published]]:
    published = Published()
    informer = Informer(kube, CLUSTERS, published, watch_timeout_s=1.0, retry_delay_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    try:
        yield informer, published
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def create_cluster(kube: KubeApi, rid: str | None = None) -> str:
    rid = rid or new_id("cls")
    spec = clusters.cluster_spec_from_input(
        {"name": "c", "template": "k0s-v1-31-2", "credential": "cred", "workers": 1}
    )
    await kube.create(
        clusters.CLUSTER_DEPLOYMENTS,
        PROJECT,
        clusters.cluster_manifest(rid, PROJECT, PROJECT, spec, "run_t"),
    )
    return rid


def phase_of(published: Published, rid: str) -> Any:
    async def check() -> Any:
        last = published.last(rid)
        return last.state.get("phase") if last is not None else None

    return check


async def test_lists_then_watches_and_publishes_changes_and_gone(
    kube: KubeApi, running: tuple[Informer, Published]
) -> None:
    before = await create_cluster(kube)  # exists before the informer lists
    informer, published = running
    await asyncio.wait_for(informer.stats.synced.wait(), 5)
    assert informer.stats.lists == 1
    after = await create_cluster(kube)
    for rid in (before, after):
        await eventually(lambda r=rid: _is(phase_of(published, r), "Ready"))
    ready = published.last(after)
    assert ready is not None
    assert ready.resource_type == "cluster"
    assert ready.state["workers"] == 1
    assert ready.state["version"] == "v1.31.2"
    assert not ready.gone
    count = len(published.of(after))
    # a change the cache does not care about (an unrelated annotation) is not published
    name = clusters.names.object_name(after)
    await kube.merge_patch(
        clusters.CLUSTER_DEPLOYMENTS, PROJECT, name, {"metadata": {"annotations": {"a": "b"}}}
    )
    await asyncio.sleep(0.3)
    assert len(published.of(after)) == count
    await kube.delete(clusters.CLUSTER_DEPLOYMENTS, PROJECT, name)

    async def gone() -> bool:
        last = published.last(after)
        return last is not None and last.gone

    await eventually(gone)
    last = published.last(after)
    assert last is not None
    assert last.state["phase"] == "Deleted"


async def _is(check: Any, want: str) -> bool:
    return bool(await check() == want)


async def test_expired_watch_relists_and_goes_on(
    kube: KubeApi, emulator: KubeEmulator, running: tuple[Informer, Published]
) -> None:
    informer, published = running
    first = await create_cluster(kube)
    await eventually(lambda: _is(phase_of(published, first), "Ready"))
    # other writes move the server's version past the informer's; then history is dropped
    spec = vms.vm_spec_from_input({"name": "v", "cpu": 1, "memoryGiB": 1, "image": "x:1"})
    vm_id = new_id("vm")
    await kube.create(
        vms.VIRTUAL_MACHINES, PROJECT, vms.vm_manifest(vm_id, PROJECT, PROJECT, spec, "r")
    )
    await asyncio.sleep(0.1)
    emulator.state.store.compact()

    async def relisted() -> bool:
        return informer.stats.expired >= 1 and informer.stats.lists >= 2

    await eventually(relisted, timeout=10)
    second = await create_cluster(kube)  # and it goes on watching
    await eventually(lambda: _is(phase_of(published, second), "Ready"))
    assert informer.stats.errors == 0


async def test_vm_informer_publishes_printable_status(kube: KubeApi) -> None:
    published = Published()
    informer = Informer(kube, VMS, published, watch_timeout_s=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    try:
        spec = vms.vm_spec_from_input({"name": "v", "cpu": 1, "memoryGiB": 1, "image": "x:1"})
        rid = new_id("vm")
        await kube.create(
            vms.VIRTUAL_MACHINES, PROJECT, vms.vm_manifest(rid, PROJECT, PROJECT, spec, "r")
        )
        await eventually(lambda: _is(phase_of(published, rid), "Running"))
        phases = [o.state["phase"] for o in published.of(rid)]
        assert phases[-1] == "Running"
        assert "Provisioning" in phases or "Starting" in phases
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_failed_publish_is_retried_by_the_relist(kube: KubeApi) -> None:
    published = Published()
    failures = [RuntimeError("broker down")]

    async def flaky(observation: ResourceObserved) -> None:
        if failures:
            raise failures.pop()
        await published(observation)

    informer = Informer(kube, CLUSTERS, flaky, watch_timeout_s=1.0, retry_delay_s=0.05)
    rid = await create_cluster(kube)
    stop = asyncio.Event()
    task = asyncio.create_task(informer.run(stop))
    try:
        await eventually(lambda: _is(phase_of(published, rid), "Ready"))
        assert informer.stats.errors == 1
        assert informer.stats.lists >= 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
