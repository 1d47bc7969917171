"""Clusters and VMs end to end, over REST, through every real process and the Kubernetes API
emulator: gateway → orchestrator → k8s-agent → emulator → event log → projector cache; forced
failures run the compensations; an upgrade outside ``availableUpgrades`` is refused; a condition
changed behind Infraflow's back is noticed by the informers and corrected by a
``sync.cluster-state`` run that the projector starts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from infraflow.common.invariants import assert_well_formed
from infraflow.devtools.stack import Stack
from infraflow.k8s_agent.core.names import object_name

from .conftest import Api

pytestmark = pytest.mark.e2e

PROJECT = "prj-a"
K0 = "/apis/k0rdent.mirantis.com/v1beta1/namespaces/prj-a"
KV = "/apis/kubevirt.io/v1/namespaces/prj-a"
MERGE = {"Content-Type": "application/merge-patch+json"}
FAIL = {"emulator.infraflow.dev/fail": "never-ready"}
RESYNC_S = 4.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        base_dir=tmp_path_factory.mktemp("stack-k8s"),
        bmc_systems=0,
        extra_env={
            "INFRAFLOW_DRIFT__SETTLE_S": "0.3",
            "INFRAFLOW_DRIFT__MIN_INTERVAL_S": "1",
            "INFRAFLOW_DRIFT__RESYNC_INTERVAL_S": str(RESYNC_S),
            "INFRAFLOW_INFORMER_WATCH_TIMEOUT_S": "5",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    """An Arc admin of the project (clusters and VMs are Arc resources)."""
    return Api(stack.api_url, stack.token("arc-admin", roles=[], projects={PROJECT: "admin"}))


@pytest.fixture(scope="module")
def kube(stack: Stack) -> Iterator[httpx.Client]:
    """Straight to the emulator: set up templates, inspect objects, change them behind our back."""
    assert stack.kube_url is not None
    with httpx.Client(base_url=stack.kube_url, timeout=10) as client:
        for name in ("k0s-v1-31-2", "k0s-v1-32-0"):
            r = client.post(
                f"{K0}/clustertemplates",
                json={
                    "apiVersion": "k0rdent.mirantis.com/v1beta1",
                    "kind": "ClusterTemplate",
                    "metadata": {"name": name},
                    "spec": {},
                },
            )
            assert r.status_code in (201, 409), r.text
        yield client


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what} (last: {last!r})")


def accepted(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 202, r.text
    body = r.json()
    return body["meta"]["workflowId"], body["data"]["resourceId"]


def finished(api: Api, run_id: str, status: str = "completed") -> dict[str, Any]:
    run = api.wait_run(run_id, timeout=60)
    assert run["status"] == status, run
    assert_well_formed(api.events(run_id))
    return run


def cluster(api: Api, cid: str) -> dict[str, Any]:
    r = api.get(f"/v1/projects/{PROJECT}/clusters/{cid}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def vm(api: Api, vid: str) -> dict[str, Any]:
    r = api.get(f"/v1/projects/{PROJECT}/vms/{vid}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def cd_of(kube: httpx.Client, cid: str) -> dict[str, Any] | None:
    r = kube.get(f"{K0}/clusterdeployments/{object_name(cid)}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    obj: dict[str, Any] = r.json()
    return obj


def vm_of(kube: httpx.Client, vid: str) -> dict[str, Any] | None:
    r = kube.get(f"{KV}/virtualmachines/{object_name(vid)}")
    if r.status_code == 404:
        return None
    obj: dict[str, Any] = r.json()
    return obj


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def create_cluster(api: Api, **over: Any) -> tuple[str, str]:
    body = {
        "name": "prod",
        "template": "k0s-v1-31-2",
        "credential": "aws-cred",
        "workers": 2,
        "config": {"region": "eu-west-1"},
        **over,
    }
    return accepted(api.post(f"/v1/projects/{PROJECT}/clusters", json=body))


def runs_of(api: Api, resource_id: str) -> list[dict[str, Any]]:
    r = api.get("/v1/workflows/runs", params={"resourceId": resource_id})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["data"]
    return items


def test_cluster_create_scale_upgrade_delete(api: Api, kube: httpx.Client) -> None:
    run_id, cid = create_cluster(api)
    run = finished(api, run_id)
    assert [s["name"] for s in run["steps"]] == ["apply", "wait_ready"]
    obj = cd_of(kube, cid)
    assert obj is not None
    assert obj["spec"]["template"] == "k0s-v1-31-2"
    assert obj["spec"]["credential"] == "aws-cred"
    assert obj["spec"]["config"] == {
        "region": "eu-west-1",
        "workersNumber": 2,
        "controlPlaneNumber": 1,
    }
    assert obj["metadata"]["labels"]["infraflow.dev/resource-id"] == cid
    assert ready_condition(obj)["status"] == "True"
    assert obj["status"]["k8sVersion"] == "v1.31.2"
    cached = cluster(api, cid)
    assert cached["state"] == "ready"
    assert cached["phase"] == "Ready"
    assert cached["workers"] == 2
    assert cached["version"] == "v1.31.2"
    assert cached["availableUpgrades"] == ["k0s-v1-32-0"]
    assert cached["namespace"] == PROJECT
    assert cached["lastRunId"] == run_id
    listed = api.get(f"/v1/projects/{PROJECT}/clusters").json()["data"]
    assert cid in [c["id"] for c in listed]

    scale_id, _ = accepted(
        api.post(f"/v1/projects/{PROJECT}/clusters/{cid}/scale", json={"workers": 4})
    )
    finished(api, scale_id)
    obj = cd_of(kube, cid)
    assert obj is not None
    assert obj["spec"]["config"]["workersNumber"] == 4
    assert obj["metadata"]["generation"] == 2
    assert ready_condition(obj)["observedGeneration"] == 2
    assert ready_condition(obj)["status"] == "True"
    assert cluster(api, cid)["workers"] == 4

    before = len(runs_of(api, cid))
    refused = api.post(
        f"/v1/projects/{PROJECT}/clusters/{cid}/upgrade", json={"template": "k0s-v1-40-0"}
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["details"]["availableUpgrades"] == ["k0s-v1-32-0"]
    assert len(runs_of(api, cid)) == before  # no run was started

    up_id, _ = accepted(
        api.post(f"/v1/projects/{PROJECT}/clusters/{cid}/upgrade", json={"template": "k0s-v1-32-0"})
    )
    up = finished(api, up_id)
    assert [s["name"] for s in up["steps"]] == ["check_upgrade", "patch_template", "wait_ready"]
    obj = cd_of(kube, cid)
    assert obj is not None
    assert obj["spec"]["template"] == "k0s-v1-32-0"
    assert obj["status"]["k8sVersion"] == "v1.32.0"
    cached = cluster(api, cid)
    assert (cached["template"], cached["version"], cached["availableUpgrades"]) == (
        "k0s-v1-32-0",
        "v1.32.0",
        [],
    )

    del_id, _ = accepted(api.delete(f"/v1/projects/{PROJECT}/clusters/{cid}"))
    finished(api, del_id)
    assert cd_of(kube, cid) is None
    cached = cluster(api, cid)
    assert cached["state"] == "deleted"
    assert cached["phase"] == "Deleted"


def test_vm_create_power_delete(api: Api, kube: httpx.Client) -> None:
    body = {"name": "vm-1", "cpu": 2, "memoryGiB": 4, "image": "quay.io/containerdisks/fedora:40"}
    run_id, vid = accepted(api.post(f"/v1/projects/{PROJECT}/vms", json=body))
    finished(api, run_id)
    obj = vm_of(kube, vid)
    assert obj is not None
    assert obj["spec"]["runStrategy"] == "Always"
    domain = obj["spec"]["template"]["spec"]["domain"]
    assert domain["cpu"] == {"cores": 2}
    assert domain["memory"] == {"guest": "4Gi"}
    assert obj["status"]["printableStatus"] == "Running"
    assert obj["status"]["ready"] is True
    cached = vm(api, vid)
    assert (cached["state"], cached["phase"], cached["ready"], cached["cpu"]) == (
        "ready",
        "Running",
        True,
        2,
    )
    assert cached["memoryGiB"] == 4
    assert cached["image"] == body["image"]

    for action, printable in (("stop", "Stopped"), ("start", "Running"), ("restart", "Running")):
        power_id, _ = accepted(
            api.post(f"/v1/projects/{PROJECT}/vms/{vid}/power", json={"action": action})
        )
        finished(api, power_id)
        obj = vm_of(kube, vid)
        assert obj is not None
        assert obj["status"]["printableStatus"] == printable, action
        assert vm(api, vid)["phase"] == printable
    assert vm(api, vid)["running"] is True

    del_id, _ = accepted(api.delete(f"/v1/projects/{PROJECT}/vms/{vid}"))
    finished(api, del_id)
    assert vm_of(kube, vid) is None
    assert vm(api, vid)["state"] == "deleted"


def test_cluster_that_never_becomes_ready_is_compensated(api: Api, kube: httpx.Client) -> None:
    run_id, cid = create_cluster(api, annotations=FAIL)
    run = finished(api, run_id, "failed")
    assert run["error"]["code"] == "K8S_CLUSTER_FAILED"
    assert run["error"]["step"] == "wait_ready"
    assert [(c["name"], c["status"]) for c in run["compensation"]] == [("delete", "succeeded")]
    assert cd_of(kube, cid) is None  # the compensation deleted it
    assert cluster(api, cid)["state"] == "failed"
    # compensation outputs do not touch the cache; the informers see the object go and a
    # sync run records it
    wait_for(lambda: cluster(api, cid)["phase"] == "Deleted", timeout=3 * RESYNC_S, what="sync")


def test_vm_that_fails_to_start_is_compensated(api: Api, kube: httpx.Client) -> None:
    body = {"name": "bad", "cpu": 1, "memoryGiB": 1, "image": "x:1", "annotations": FAIL}
    run_id, vid = accepted(api.post(f"/v1/projects/{PROJECT}/vms", json=body))
    run = finished(api, run_id, "failed")
    assert run["error"]["code"] == "K8S_VM_FAILED"
    assert run["error"]["step"] == "wait_ready"
    assert [(c["name"], c["status"]) for c in run["compensation"]] == [("delete", "succeeded")]
    assert vm_of(kube, vid) is None
    assert vm(api, vid)["state"] == "failed"
    wait_for(lambda: vm(api, vid)["phase"] == "Deleted", timeout=3 * RESYNC_S, what="sync")


def test_failed_scale_restores_the_worker_count(api: Api, kube: httpx.Client) -> None:
    run_id, cid = create_cluster(api, workers=3)
    finished(api, run_id)
    name = object_name(cid)
    # from now on this cluster fails to get ready at any new generation
    r = kube.patch(
        f"{K0}/clusterdeployments/{name}",
        json={"metadata": {"annotations": FAIL}},
        headers=MERGE,
    )
    assert r.status_code == 200, r.text
    scale_id, _ = accepted(
        api.post(f"/v1/projects/{PROJECT}/clusters/{cid}/scale", json={"workers": 6})
    )
    run = finished(api, scale_id, "failed")
    assert run["error"]["code"] == "K8S_CLUSTER_FAILED"
    assert run["error"]["step"] == "wait_ready"
    assert [(c["name"], c["status"]) for c in run["compensation"]] == [
        ("restore_workers", "succeeded")
    ]
    obj = cd_of(kube, cid)
    assert obj is not None
    assert obj["spec"]["config"]["workersNumber"] == 3
    wait_for(lambda: cluster(api, cid)["workers"] == 3, timeout=3 * RESYNC_S, what="sync")


def test_drift_is_detected_and_the_cache_corrected(api: Api, kube: httpx.Client) -> None:
    run_id, cid = create_cluster(api)
    finished(api, run_id)
    assert cluster(api, cid)["phase"] == "Ready"
    name = object_name(cid)

    def sync_runs() -> list[dict[str, Any]]:
        return [r for r in runs_of(api, cid) if r["type"] == "sync.cluster-state"]

    # the Ready condition turns False behind Infraflow's back (the emulated cluster fails)
    started = time.monotonic()
    r = kube.patch(
        f"{K0}/clusterdeployments/{name}", json={"metadata": {"annotations": FAIL}}, headers=MERGE
    )
    assert r.status_code == 200, r.text
    wait_for(
        lambda: ready_condition(cd_of(kube, cid) or {})["status"] == "False", what="Ready=False"
    )
    wait_for(lambda: cluster(api, cid)["phase"] == "Failed", timeout=3 * RESYNC_S, what="cache")
    assert time.monotonic() - started < 3 * RESYNC_S
    cached = cluster(api, cid)
    assert cached["ready"] is False
    assert cached["state"] == "ready"  # the lifecycle state is not an observation
    [sync] = sync_runs()
    sync = finished(api, sync["id"])
    assert sync["triggeredBy"] == "projector"
    assert sync["input"]["reason"] == "drift"
    assert sync["input"]["differences"]["phase"] == {"cached": "Ready", "observed": "Failed"}
    assert cached["lastRunId"] == sync["id"]

    # the watch history is dropped: the informers go on (relisting if they must)
    assert kube.post("/_emulator/compact").status_code == 200
    r = kube.patch(
        f"{K0}/clusterdeployments/{name}",
        json={"metadata": {"annotations": {"emulator.infraflow.dev/fail": None}}},
        headers=MERGE,
    )
    assert r.status_code == 200, r.text
    wait_for(lambda: cluster(api, cid)["phase"] == "Ready", timeout=3 * RESYNC_S, what="back")
    assert len(sync_runs()) == 2
