"""The simulated KubeVirt VirtualMachine controller and its start/stop/restart API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import NS, eventually

G, V, VMS = "kubevirt.io", "v1", "virtualmachines"
FAIL = "emulator.infraflow.dev/fail"


def vm(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {**spec, "template": {"spec": {"domain": {"devices": {}}}}},
    }


async def action(api: client.ApiClient, name: str, verb: str) -> None:
    """PUT .../virtualmachines/{name}/{verb} on the KubeVirt subresource API."""
    await api.call_api(
        "/apis/subresources.kubevirt.io/v1/namespaces/{namespace}/virtualmachines/{name}/" + verb,
        "PUT",
        path_params={"namespace": NS, "name": name},
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body={},
        response_types_map={},
        auth_settings=["BearerToken"],
    )


async def printable(co: client.CustomObjectsApi, name: str) -> str | None:
    obj = await co.get_namespaced_custom_object(G, V, NS, VMS, name)
    return (obj.get("status") or {}).get("printableStatus")


async def phases(
    co: client.CustomObjectsApi, name: str, since: str, until: str, timeout: float = 5.0
) -> list[str]:
    """Distinct printableStatus values seen by a watch from ``since`` until ``until``."""
    seen: list[str] = []
    stream = watch.Watch()

    async def run() -> None:
        async for event in stream.stream(
            co.list_namespaced_custom_object,
            G,
            V,
            NS,
            VMS,
            field_selector=f"metadata.name={name}",
            resource_version=since,
            timeout_seconds=int(timeout) + 1,
        ):
            state = (event["raw_object"].get("status") or {}).get("printableStatus")
            if state and (not seen or seen[-1] != state):
                seen.append(state)
            if state == until:
                break

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        await stream.close()
    return seen


async def test_running_vm_goes_provisioning_starting_running(
    co: client.CustomObjectsApi,
) -> None:
    created = await co.create_namespaced_custom_object(G, V, NS, VMS, vm("vm1", running=True))
    seen = await phases(co, "vm1", created["metadata"]["resourceVersion"], "Running")
    assert seen == ["Provisioning", "Starting", "Running"]
    obj = await co.get_namespaced_custom_object(G, V, NS, VMS, "vm1")
    assert obj["status"]["ready"] is True
    assert obj["status"]["created"] is True
    assert "kubevirt.io/virtualMachineControllerFinalize" in obj["metadata"]["finalizers"]


async def test_halted_vm_is_stopped_then_start_stop_restart(
    co: client.CustomObjectsApi, api: client.ApiClient
) -> None:
    await co.create_namespaced_custom_object(G, V, NS, VMS, vm("vm2", runStrategy="Halted"))
    await eventually(lambda: _is(co, "vm2", "Stopped"))

    with pytest.raises(ApiException) as not_running:
        await action(api, "vm2", "stop")
    assert not_running.value.status == 409
    with pytest.raises(ApiException) as halted_restart:
        await action(api, "vm2", "restart")
    assert halted_restart.value.status == 409

    before = await co.get_namespaced_custom_object(G, V, NS, VMS, "vm2")
    await action(api, "vm2", "start")
    after_start = await co.get_namespaced_custom_object(G, V, NS, VMS, "vm2")
    assert after_start["spec"]["runStrategy"] == "Always"
    seen = await phases(co, "vm2", before["metadata"]["resourceVersion"], "Running")
    assert seen == ["Stopped", "Provisioning", "Starting", "Running"]

    with pytest.raises(ApiException) as always_start:
        await action(api, "vm2", "start")
    assert always_start.value.status == 409

    mark = (await co.get_namespaced_custom_object(G, V, NS, VMS, "vm2"))["metadata"]
    await action(api, "vm2", "restart")
    seen = await phases(co, "vm2", mark["resourceVersion"], "Running")
    assert seen == ["Stopping", "Starting", "Running"]

    mark = (await co.get_namespaced_custom_object(G, V, NS, VMS, "vm2"))["metadata"]
    await action(api, "vm2", "stop")
    seen = await phases(co, "vm2", mark["resourceVersion"], "Stopped")
    # the spec change (runStrategy: Halted) is itself an event still showing "Running"
    assert seen == ["Running", "Stopping", "Stopped"]
    final = await co.get_namespaced_custom_object(G, V, NS, VMS, "vm2")
    assert final["spec"]["runStrategy"] == "Halted"
    assert "ready" not in final["status"]


async def test_spec_running_false_and_patch_to_true(co: client.CustomObjectsApi) -> None:
    await co.create_namespaced_custom_object(G, V, NS, VMS, vm("vm3", running=False))
    await eventually(lambda: _is(co, "vm3", "Stopped"))
    await co.patch_namespaced_custom_object(
        G,
        V,
        NS,
        VMS,
        "vm3",
        {"spec": {"running": True}},
        _content_type="application/merge-patch+json",
    )
    await eventually(lambda: _is(co, "vm3", "Running"))


async def test_manual_run_strategy_follows_requests(
    co: client.CustomObjectsApi, api: client.ApiClient
) -> None:
    await co.create_namespaced_custom_object(G, V, NS, VMS, vm("man", runStrategy="Manual"))
    await eventually(lambda: _is(co, "man", "Stopped"))
    await action(api, "man", "start")
    await eventually(lambda: _is(co, "man", "Running"))
    await action(api, "man", "stop")
    await eventually(lambda: _is(co, "man", "Stopped"))
    obj = await co.get_namespaced_custom_object(G, V, NS, VMS, "man")
    assert obj["spec"]["runStrategy"] == "Manual"


@pytest.mark.parametrize(
    ("mode", "stuck"),
    [("never-ready", "CrashLoopBackOff"), ("unschedulable", "ErrorUnschedulable")],
)
async def test_failure_modes_never_become_ready(
    co: client.CustomObjectsApi, mode: str, stuck: str
) -> None:
    await co.create_namespaced_custom_object(
        G, V, NS, VMS, vm("sick", {FAIL: mode}, runStrategy="Always")
    )
    await eventually(lambda: _is(co, "sick", stuck))
    await asyncio.sleep(0.3)
    obj = await co.get_namespaced_custom_object(G, V, NS, VMS, "sick")
    assert obj["status"]["printableStatus"] == stuck
    assert not obj["status"].get("ready")


async def test_running_and_run_strategy_are_exclusive(co: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as invalid:
        await co.create_namespaced_custom_object(
            G, V, NS, VMS, vm("both", running=True, runStrategy="Always")
        )
    assert invalid.value.status == 422


async def test_delete_holds_finalizer_while_terminating(co: client.CustomObjectsApi) -> None:
    await co.create_namespaced_custom_object(G, V, NS, VMS, vm("vm4", runStrategy="Always"))
    await eventually(lambda: _is(co, "vm4", "Running"))
    await co.delete_namespaced_custom_object(G, V, NS, VMS, "vm4")
    assert await printable(co, "vm4") in ("Running", "Terminating")

    async def gone() -> bool:
        try:
            await co.get_namespaced_custom_object(G, V, NS, VMS, "vm4")
        except ApiException as exc:
            return exc.status == 404
        return False

    await eventually(gone)


async def _is(co: client.CustomObjectsApi, name: str, wanted: str) -> bool:
    return await printable(co, name) == wanted
