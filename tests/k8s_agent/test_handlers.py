"""The k8s-agent's actions against the emulator: outputs, idempotency, failures, compensation."""

from __future__ import annotations

from typing import Any

import pytest

from infraflow.common.agent import StepError
from infraflow.common.ids import new_id
from infraflow.k8s_agent.core import clusters, names, vms
from infraflow.k8s_agent.handlers import K8sActions

from .conftest import PROJECT, step

CD, VM = clusters.CLUSTER_DEPLOYMENTS, vms.VIRTUAL_MACHINES
FAIL = {"emulator.infraflow.dev/fail": "never-ready"}


def cluster_input(**over: Any) -> dict[str, Any]:
    return {
        "name": "prod",
        "template": "k0s-v1-31-2",
        "credential": "cred",
        "workers": 2,
        "controlPlanes": 1,
        **over,
    }


async def template(actions: K8sActions, name: str) -> None:
    await actions.kube.create(
        clusters.names.ApiRef(CD.group, CD.version, "clustertemplates", "ClusterTemplate"),
        PROJECT,
        {
            "apiVersion": CD.api_version,
            "kind": "ClusterTemplate",
            "metadata": {"name": name},
            "spec": {},
        },
    )


async def live(actions: K8sActions, ref: Any, rid: str) -> dict[str, Any] | None:
    return await actions.kube.get(ref, PROJECT, names.object_name(rid))


async def test_cluster_create_scale_upgrade_delete(actions: K8sActions) -> None:
    for t in ("k0s-v1-31-2", "k0s-v1-32-0"):
        await template(actions, t)
    rid, run = new_id("cls"), new_id("run")
    applied = await actions.apply_cluster(
        step("apply_cluster", rid, run_input=cluster_input(), run_id=run)
    )
    again = await actions.apply_cluster(
        step("apply_cluster", rid, run_input=cluster_input(), run_id=run)
    )
    assert again["uid"] == applied["uid"]  # create-or-get: one object per resource id
    assert applied["namespace"] == PROJECT
    ready = await actions.wait_cluster_ready(step("wait_cluster_ready", rid))
    resource = ready["resource"]
    assert resource["phase"] == "Ready"
    assert resource["workers"] == 2
    assert resource["version"] == "v1.31.2"
    assert resource["availableUpgrades"] == ["k0s-v1-32-0"]

    scale_run = new_id("run")
    scaled = await actions.scale_cluster(
        step("scale_cluster", rid, run_input={"workers": 5}, run_id=scale_run)
    )
    assert scaled["previousWorkers"] == 2
    repeat = await actions.scale_cluster(
        step("scale_cluster", rid, run_input={"workers": 5}, run_id=scale_run)
    )
    assert repeat["previousWorkers"] == 2  # a retried attempt keeps the original count
    assert repeat["generation"] == scaled["generation"]  # and does not patch again
    ready = await actions.wait_cluster_ready(step("wait_cluster_ready", rid))
    assert ready["resource"]["workers"] == 5
    assert ready["resource"]["generation"] == scaled["generation"]
    # compensation puts the count back, from the forward step's output or the object
    await actions.restore_cluster_scale(
        step("restore_cluster_scale", rid, run_id=scale_run, outputs={})
    )
    obj = await live(actions, CD, rid)
    assert obj is not None
    assert clusters.workers_of(obj) == 2

    with pytest.raises(StepError) as refused:
        await actions.check_cluster_upgrade(
            step("check_cluster_upgrade", rid, run_input={"template": "k0s-v1-40-0"})
        )
    assert refused.value.code == "UPGRADE_NOT_AVAILABLE"
    assert refused.value.details["availableUpgrades"] == ["k0s-v1-32-0"]
    await actions.check_cluster_upgrade(
        step("check_cluster_upgrade", rid, run_input={"template": "k0s-v1-32-0"})
    )
    upgraded = await actions.upgrade_cluster(
        step("upgrade_cluster", rid, run_input={"template": "k0s-v1-32-0"})
    )
    assert upgraded["previousTemplate"] == "k0s-v1-31-2"
    ready = await actions.wait_cluster_ready(step("wait_cluster_ready", rid))
    assert ready["resource"]["template"] == "k0s-v1-32-0"
    assert ready["resource"]["version"] == "v1.32.0"

    observed = await actions.observe_clusters(step("observe_clusters", rid))
    assert observed["exists"]
    assert observed["resource"]["phase"] == "Ready"
    await actions.delete_cluster(step("delete_cluster", rid))
    await actions.delete_cluster(step("delete_cluster", rid))  # deleting twice is fine
    gone = await actions.wait_cluster_gone(step("wait_cluster_gone", rid))
    assert gone["resource"]["phase"] == "Deleted"
    assert await live(actions, CD, rid) is None
    observed = await actions.observe_clusters(step("observe_clusters", rid))
    assert observed == {"exists": False, "observed": gone["resource"], "resource": gone["resource"]}


async def test_cluster_that_never_becomes_ready_fails_without_retry(actions: K8sActions) -> None:
    rid = new_id("cls")
    await actions.apply_cluster(
        step("apply_cluster", rid, run_input=cluster_input(annotations=FAIL))
    )
    with pytest.raises(StepError) as failed:
        await actions.wait_cluster_ready(step("wait_cluster_ready", rid))
    assert failed.value.code == "K8S_CLUSTER_FAILED"
    assert failed.value.retryable is False
    # the compensation deletes it and waits until it is gone
    await actions.delete_cluster(step("delete_cluster", rid, params={"wait": True}))
    assert await live(actions, CD, rid) is None


async def test_bad_input_and_foreign_names_are_not_retryable(actions: K8sActions) -> None:
    rid = new_id("cls")
    with pytest.raises(StepError) as bad:
        await actions.apply_cluster(step("apply_cluster", rid, run_input={"name": "x"}))
    assert bad.value.code == "VALIDATION_ERROR"
    assert not bad.value.retryable
    with pytest.raises(StepError) as no_project:
        await actions.apply_cluster(
            step("apply_cluster", rid, run_input=cluster_input(), project=None)
        )
    assert no_project.value.code == "VALIDATION_ERROR"
    # an object of the derived name that someone else created is not taken over
    other = clusters.cluster_manifest(
        new_id("cls"), PROJECT, PROJECT, clusters.cluster_spec_from_input(cluster_input()), "r"
    )
    other["metadata"]["name"] = names.object_name(rid)
    await actions.kube.create(CD, PROJECT, other)
    with pytest.raises(StepError) as taken:
        await actions.apply_cluster(step("apply_cluster", rid, run_input=cluster_input()))
    assert taken.value.code == "K8S_NAME_TAKEN"


def vm_input(**over: Any) -> dict[str, Any]:
    return {"name": "vm1", "cpu": 2, "memoryGiB": 4, "image": "quay.io/containerdisks/x:1", **over}


async def test_vm_create_power_delete(actions: K8sActions) -> None:
    rid, run = new_id("vm"), new_id("run")
    first = await actions.apply_vm(step("apply_vm", rid, run_input=vm_input(), run_id=run))
    again = await actions.apply_vm(step("apply_vm", rid, run_input=vm_input(), run_id=run))
    assert first["uid"] == again["uid"]
    ctx = step("wait_vm_ready", rid)
    ready = await actions.wait_vm_ready(ctx)
    assert ready["resource"]["phase"] == "Running"
    assert ready["resource"]["ready"] is True
    assert ready["resource"]["cpu"] == 2
    assert ready["resource"]["memoryGiB"] == 4
    assert ctx.heartbeats  # progress was reported while waiting

    # start of a running VM: nothing to do
    started = await actions.power_vm(step("power_vm", rid, run_input={"action": "start"}))
    assert started["issued"] is False
    stop = step("power_vm", rid, run_input={"action": "stop"})
    assert (await actions.power_vm(stop))["issued"] is True
    assert (await actions.power_vm(stop))["issued"] is False  # a repeat does nothing
    stopped = await actions.wait_vm_status(
        step("wait_vm_status", rid, run_input={"action": "stop"})
    )
    assert stopped["resource"]["phase"] == "Stopped"
    assert stopped["resource"]["running"] is False
    with pytest.raises(StepError) as not_running:
        await actions.power_vm(step("power_vm", rid, run_input={"action": "restart"}))
    assert not_running.value.code == "VM_NOT_RUNNING"
    await actions.power_vm(step("power_vm", rid, run_input={"action": "start"}))
    await actions.wait_vm_status(step("wait_vm_status", rid, run_input={"action": "start"}))

    restart_run = new_id("run")
    restart = step("power_vm", rid, run_input={"action": "restart"}, run_id=restart_run)
    issued = await actions.power_vm(restart)
    assert issued["issued"] is True
    repeat = await actions.power_vm(
        step("power_vm", rid, run_input={"action": "restart"}, run_id=restart_run)
    )
    assert repeat["issued"] is False  # a redelivered step does not restart twice
    back = await actions.wait_vm_status(
        step(
            "wait_vm_status",
            rid,
            run_input={"action": "restart"},
            outputs={"power_action": issued},
        )
    )
    assert back["resource"]["phase"] == "Running"

    await actions.delete_vm(step("delete_vm", rid))
    gone = await actions.wait_vm_gone(step("wait_vm_gone", rid))
    assert gone["resource"]["phase"] == "Deleted"


async def test_vm_created_halted_is_ready_when_stopped(actions: K8sActions) -> None:
    rid = new_id("vm")
    await actions.apply_vm(step("apply_vm", rid, run_input=vm_input(running=False)))
    ready = await actions.wait_vm_ready(step("wait_vm_ready", rid))
    assert ready["resource"]["phase"] == "Stopped"


async def test_vm_that_fails_to_start(actions: K8sActions) -> None:
    rid = new_id("vm")
    await actions.apply_vm(step("apply_vm", rid, run_input=vm_input(annotations=FAIL)))
    with pytest.raises(StepError) as failed:
        await actions.wait_vm_ready(step("wait_vm_ready", rid))
    assert failed.value.code == "K8S_VM_FAILED"
    assert failed.value.retryable is False
    await actions.delete_vm(step("delete_vm", rid, params={"wait": True}))
    assert await live(actions, VM, rid) is None


async def test_a_wait_that_runs_out_of_time_is_retryable(actions: K8sActions) -> None:
    rid = new_id("cls")
    slow = cluster_input()
    await actions.apply_cluster(step("apply_cluster", rid, run_input=slow))
    # the emulator needs 0.2 s to make it Ready; the step has 0.1 s (0.6 s less the margin)
    with pytest.raises(StepError) as late:
        await actions.wait_cluster_ready(step("wait_cluster_ready", rid, timeout_s=0.6))
    assert late.value.code == "K8S_TIMEOUT"
    assert late.value.retryable is True
