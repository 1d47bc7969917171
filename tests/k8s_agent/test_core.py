"""The k8s-agent's pure core: names, manifests, readiness, upgrades, power rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infraflow.common.ids import ALPHABET, BODY_LENGTH, new_id
from infraflow.k8s_agent.adapters.kube import ERROR_BY_STATUS, error_for
from infraflow.k8s_agent.core import clusters, names, vms
from infraflow.k8s_agent.errors import (
    K8sConflictError,
    K8sError,
    K8sForbiddenError,
    K8sGoneError,
    K8sInvalidError,
    K8sNotFoundError,
    K8sUnavailableError,
)


@given(st.sampled_from(["cls", "vm"]), st.text(alphabet=ALPHABET, min_size=26, max_size=26))
def test_object_names_are_dns_labels_and_reversible(prefix: str, body: str) -> None:
    rid = f"{prefix}_{body}"
    name = names.object_name(rid)
    assert names.is_dns_label(name)
    assert len(name) <= 63
    assert names.resource_id_of(name) == rid


def test_names_differ_for_ids_differing_only_in_case() -> None:
    a, b = "cls_" + "a" * BODY_LENGTH, "cls_" + "A" * BODY_LENGTH
    assert names.object_name(a) != names.object_name(b)


@pytest.mark.parametrize("bad", ["srv_" + "a" * 26, "cls_short", "cls-" + "a" * 26, ""])
def test_object_name_rejects_other_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="not a cluster or VM id"):
        names.object_name(bad)


def test_foreign_names_map_to_no_resource() -> None:
    assert names.resource_id_of("my-cluster") is None
    assert names.resource_id_of("cls-" + "z" * 30) is None  # out of range


def test_namespace_is_the_project_id_as_a_dns_label() -> None:
    assert names.namespace_for("prj-a") == "prj-a"
    assert names.namespace_for("a1", prefix="arc-") == "arc-a1"
    for bad in (None, "", "Prj", "prj_a", "-x", "x" * 64):
        with pytest.raises(ValueError, match=r"project|DNS-1123"):
            names.namespace_for(bad)


def cluster_input(**over: Any) -> dict[str, Any]:
    return {
        "name": "prod",
        "template": "k0s-v1-31-2",
        "credential": "aws-cred",
        "workers": 3,
        "controlPlanes": 3,
        "config": {"region": "eu-west-1", "workersNumber": 99},
        **over,
    }


def test_cluster_manifest_carries_template_credential_counts_and_identity() -> None:
    rid = new_id("cls")
    spec = clusters.cluster_spec_from_input(cluster_input(labels={"team": "a"}))
    m = clusters.cluster_manifest(rid, "prj-a", "prj-a", spec, "run_1")
    assert m["apiVersion"] == "k0rdent.mirantis.com/v1beta1"
    assert m["kind"] == "ClusterDeployment"
    assert m["metadata"]["name"] == names.object_name(rid)
    assert m["metadata"]["namespace"] == "prj-a"
    assert m["metadata"]["labels"][names.RESOURCE_ID_LABEL] == rid
    assert m["metadata"]["labels"]["team"] == "a"
    assert m["metadata"]["annotations"][names.DISPLAY_NAME_ANNOTATION] == "prod"
    assert m["spec"]["template"] == "k0s-v1-31-2"
    assert m["spec"]["credential"] == "aws-cred"
    # the explicit counts win over the same keys in config
    assert m["spec"]["config"] == {
        "region": "eu-west-1",
        "workersNumber": 3,
        "controlPlaneNumber": 3,
    }


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"workers": -1}, "workers"),
        ({"workers": True}, "workers"),
        ({"controlPlanes": 0}, "controlPlanes"),
        ({"template": ""}, "template"),
        ({"config": []}, "config"),
        ({"labels": {"infraflow.dev/x": "1"}}, "reserved"),
    ],
)
def test_cluster_input_is_checked(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clusters.cluster_spec_from_input(cluster_input(**over))


def cd(
    *,
    generation: int = 1,
    ready: str | None = "True",
    reason: str = "Succeeded",
    cond_gen: int | None = None,
    deleting: bool = False,
    **status: Any,
) -> dict[str, Any]:
    conditions = []
    if ready is not None:
        conditions.append(
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "observedGeneration": generation if cond_gen is None else cond_gen,
            }
        )
    meta: dict[str, Any] = {"name": "x", "namespace": "p", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"template": "k0s-v1-31-2", "config": {"workersNumber": 2}},
        "status": {"conditions": conditions, "observedGeneration": generation, **status},
    }


def test_cluster_phases() -> None:
    assert clusters.cluster_phase(cd()) == "Ready"
    assert clusters.cluster_phase(cd(generation=2, cond_gen=1)) == "Progressing"  # stale Ready
    assert clusters.cluster_phase(cd(ready="False", reason="Progressing")) == "Progressing"
    assert clusters.cluster_phase(cd(ready="False", reason="Failed")) == "Failed"
    assert clusters.cluster_phase(cd(ready="False", reason="Failed", generation=2, cond_gen=1)) == (
        "Progressing"
    )
    assert clusters.cluster_phase(cd(ready="False", reason="Other")) == "NotReady"
    assert clusters.cluster_phase(cd(ready=None)) == "Progressing"
    assert clusters.cluster_phase(cd(deleting=True)) == "Deleting"
    assert clusters.cluster_phase(None) == "Deleted"
    assert clusters.failure_message(cd(ready="False", reason="Failed")) is not None
    assert clusters.failure_message(cd()) is None


def test_scale_patch_records_the_count_before_this_run_once() -> None:
    obj = cd()
    obj["metadata"]["resourceVersion"] = "7"
    patch = clusters.scale_patch(obj, 5, "run_a")
    assert patch["metadata"]["resourceVersion"] == "7"
    assert patch["spec"] == {"config": {"workersNumber": 5}}
    # the object after the patch, as a retried attempt of the same run would read it
    obj["metadata"]["annotations"] = patch["metadata"]["annotations"]
    obj["spec"]["config"]["workersNumber"] = 5
    assert clusters.previous_workers(obj, "run_a") == 2
    assert clusters.previous_workers(obj, "run_b") == 5


def test_upgrade_rule() -> None:
    obj = cd(availableUpgrades=["k0s-v1-32-0"])
    assert clusters.upgrade_allowed(obj, "k0s-v1-32-0")
    assert clusters.upgrade_allowed(obj, "k0s-v1-31-2")  # already there: a repeated step
    assert not clusters.upgrade_allowed(obj, "k0s-v1-33-0")


def test_observed_cluster_is_what_the_cache_shows() -> None:
    view = clusters.observed_cluster(cd(k8sVersion="v1.31.2", availableUpgrades=["b"]))
    assert view["phase"] == "Ready"
    assert view["ready"] is True
    assert view["workers"] == 2
    assert view["version"] == "v1.31.2"
    assert view["availableUpgrades"] == ["b"]
    assert clusters.observed_cluster(None) == {"phase": "Deleted", "ready": False}


def vm_input(**over: Any) -> dict[str, Any]:
    return {"name": "vm1", "cpu": 2, "memoryGiB": 1.5, "image": "quay.io/x/y:1", **over}


def test_vm_manifest() -> None:
    rid = new_id("vm")
    spec = vms.vm_spec_from_input(vm_input(gpus=[{"type": "nvidia.com/A100", "count": 2}]))
    m = vms.vm_manifest(rid, "prj-a", "prj-a", spec, "run_1")
    assert m["apiVersion"] == "kubevirt.io/v1"
    assert m["spec"]["runStrategy"] == "Always"
    domain = m["spec"]["template"]["spec"]["domain"]
    assert domain["cpu"] == {"cores": 2}
    assert domain["memory"] == {"guest": "1536Mi"}
    assert [g["deviceName"] for g in domain["devices"]["gpus"]] == ["nvidia.com/A100"] * 2
    volumes = m["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "rootdisk", "containerDisk": {"image": "quay.io/x/y:1"}}]
    halted = vms.vm_manifest(rid, "p", "p", vms.vm_spec_from_input(vm_input(running=False)), "r")
    assert halted["spec"]["runStrategy"] == "Halted"
    assert vms.memory_quantity(4) == "4Gi"


@pytest.mark.parametrize(
    "over",
    [{"cpu": 0}, {"memoryGiB": 0}, {"image": ""}, {"gpus": [{"count": 1}]}, {"running": "yes"}],
)
def test_vm_input_is_checked(over: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"cpu|memoryGiB|image|GPU|running"):
        vms.vm_spec_from_input(vm_input(**over))


def vm(printable: str, *, ready: bool = False, strategy: str = "Always", moved: str = "") -> Any:
    conditions = [{"type": "Ready", "status": "True" if ready else "False", "reason": "x"}]
    if moved:
        conditions[0]["lastTransitionTime"] = moved
    return {
        "metadata": {"name": "v", "namespace": "p", "generation": 1},
        "spec": {"runStrategy": strategy},
        "status": {"printableStatus": printable, "ready": ready, "conditions": conditions},
    }


def test_vm_power_rules() -> None:
    assert not vms.power_needed(vm("Running", ready=True), "start")
    assert vms.power_needed(vm("Stopped", strategy="Halted"), "start")
    assert vms.power_needed(vm("Running", ready=True), "stop")
    assert not vms.power_needed(vm("Stopped", strategy="Halted"), "stop")
    assert vms.reached(vm("Stopped", strategy="Halted"), "stop")
    assert vms.reached(vm("Running", ready=True), "start")
    since = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    assert not vms.reached(
        vm("Running", ready=True, moved="2026-01-01T12:00:00Z"), "restart", since
    )
    assert vms.reached(vm("Running", ready=True, moved="2026-01-01T12:00:02Z"), "restart", since)
    assert vms.failure_message(vm("CrashLoopBackOff")) is not None
    assert vms.failure_message(vm("Starting")) is None
    assert vms.target_status("stop") == "Stopped"
    assert vms.target_status("restart") == "Running"


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, K8sInvalidError, False),
        (401, K8sForbiddenError, False),
        (403, K8sForbiddenError, False),
        (404, K8sNotFoundError, False),
        (409, K8sConflictError, True),
        (410, K8sGoneError, True),
        (422, K8sInvalidError, False),
        (500, K8sUnavailableError, True),
        (503, K8sUnavailableError, True),
        (0, K8sUnavailableError, True),
        (418, K8sError, False),
    ],
)
def test_api_statuses_map_to_coded_errors(status: int, kind: type, retryable: bool) -> None:
    err = error_for(status, b'{"kind":"Status","reason":"Why","message":"because"}', "get x")
    assert type(err) is kind
    assert err.retryable is retryable
    assert "because" in err.message
    assert set(ERROR_BY_STATUS) >= {400, 403, 404, 409, 410, 422}
