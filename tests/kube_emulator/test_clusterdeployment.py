"""The simulated k0rdent ClusterDeployment controller."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from infraflow.devtools.kube_emulator.controllers.clusterdeployment import (
    DEFAULT_K8S_VERSION,
    FINALIZER,
    k8s_version_for,
    upgrades_by_name,
)

from .conftest import NS, eventually

G, V, CDS, TEMPLATES = "k0rdent.mirantis.com", "v1beta1", "clusterdeployments", "clustertemplates"
MERGE = "application/merge-patch+json"


def deployment(name: str, template: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "ClusterDeployment",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {"template": template, "credential": "cred", **extra},
    }


def template(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "ClusterTemplate",
        "metadata": {"name": name},
        "spec": {"helm": {"chartRef": {"kind": "HelmChart", "name": name}}},
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond
    return None


async def get_cd(co: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return await co.get_namespaced_custom_object(G, V, NS, CDS, name)


async def ready_for_generation(
    co: client.CustomObjectsApi, name: str, generation: int
) -> dict[str, Any] | None:
    obj = await get_cd(co, name)
    ready = condition(obj, "Ready")
    if ready and ready["status"] == "True" and ready["observedGeneration"] == generation:
        return obj
    return None


def ready_reason(obj: dict[str, Any]) -> str | None:
    ready = condition(obj, "Ready")
    return f"{ready['reason']}@{ready.get('observedGeneration')}" if ready else None


async def follow(
    co: client.CustomObjectsApi,
    name: str,
    since: str,
    done: Callable[[str, dict[str, Any]], bool],
    timeout: float = 5.0,
) -> list[tuple[str, dict[str, Any]]]:
    """Watch one ClusterDeployment from ``since`` until ``done(type, obj)``; return events."""
    events: list[tuple[str, dict[str, Any]]] = []
    stream = watch.Watch()

    async def run() -> None:
        async for event in stream.stream(
            co.list_namespaced_custom_object,
            G,
            V,
            NS,
            CDS,
            field_selector=f"metadata.name={name}",
            resource_version=since,
            timeout_seconds=int(timeout) + 1,
        ):
            events.append((event["type"], event["raw_object"]))
            if done(event["type"], event["raw_object"]):
                return

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        await stream.close()
    return events


def reasons(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Distinct successive Ready reasons (``reason@observedGeneration``) seen in ``events``."""
    out: list[str] = []
    for _, obj in events:
        reason = ready_reason(obj)
        if reason and (not out or out[-1] != reason):
            out.append(reason)
    return out


async def test_becomes_ready_after_delay_with_observed_generation(
    co: client.CustomObjectsApi,
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    created = await co.create_namespaced_custom_object(
        G, V, NS, CDS, deployment("c1", "k0s-v1-31-2")
    )
    events = await follow(
        co,
        "c1",
        created["metadata"]["resourceVersion"],
        lambda _, o: ready_reason(o) == "Succeeded@1",
    )
    assert loop.time() - began >= 0.2
    assert reasons(events) == ["Progressing@1", "Succeeded@1"]
    assert FINALIZER in events[0][1]["metadata"]["finalizers"]  # added before any status
    ready = await get_cd(co, "c1")
    assert condition(ready, "Ready")["status"] == "True"
    assert ready["status"]["observedGeneration"] == 1
    assert ready["status"]["k8sVersion"] == "v1.31.2"
    assert ready["status"]["availableUpgrades"] == []

    secret = await client.CoreV1Api(co.api_client).read_namespaced_secret("c1-kubeconfig", NS)
    kubeconfig = json.loads(base64.b64decode(secret.data["value"]))
    assert kubeconfig["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")


async def test_spec_change_goes_progressing_then_ready_for_new_generation(
    co: client.CustomObjectsApi,
) -> None:
    await co.create_namespaced_custom_object(G, V, NS, CDS, deployment("c2", "k0s-v1-31-2"))
    await eventually(lambda: ready_for_generation(co, "c2", 1))
    patched = await co.patch_namespaced_custom_object(
        G, V, NS, CDS, "c2", {"spec": {"template": "k0s-v1-32-0"}}, _content_type=MERGE
    )
    assert patched["metadata"]["generation"] == 2
    events = await follow(
        co,
        "c2",
        patched["metadata"]["resourceVersion"],
        lambda _, o: ready_reason(o) == "Succeeded@2",
    )
    assert reasons(events) == ["Progressing@2", "Succeeded@2"]
    ready = await get_cd(co, "c2")
    assert ready["status"]["observedGeneration"] == 2
    assert ready["status"]["k8sVersion"] == "v1.32.0"


async def test_available_upgrades_follow_cluster_templates(co: client.CustomObjectsApi) -> None:
    for name in ("k0s-v1-31-2", "k0s-v1-31-5", "k0s-v1-32-0", "aws-v1-33-0", "k0s-v1-30-9"):
        await co.create_namespaced_custom_object(G, V, NS, TEMPLATES, template(name))
    await co.create_namespaced_custom_object(G, V, NS, CDS, deployment("c3", "k0s-v1-31-2"))
    ready = await eventually(lambda: ready_for_generation(co, "c3", 1))
    assert ready["status"]["availableUpgrades"] == ["k0s-v1-31-5", "k0s-v1-32-0"]

    await co.create_namespaced_custom_object(G, V, NS, TEMPLATES, template("k0s-v1-33-1"))

    async def recomputed() -> bool:
        upgrades = (await get_cd(co, "c3"))["status"]["availableUpgrades"]
        return upgrades == ["k0s-v1-31-5", "k0s-v1-32-0", "k0s-v1-33-1"]

    await eventually(recomputed)


async def test_cluster_template_chain_overrides_naming_rule(co: client.CustomObjectsApi) -> None:
    chain = {
        "apiVersion": f"{G}/{V}",
        "kind": "ClusterTemplateChain",
        "metadata": {"name": "chain"},
        "spec": {
            "supportedTemplates": [
                {"name": "tpl-a", "availableUpgrades": [{"name": "tpl-b"}]},
                {"name": "tpl-b"},
            ]
        },
    }
    await co.create_namespaced_custom_object(G, V, NS, "clustertemplatechains", chain)
    await co.create_namespaced_custom_object(G, V, NS, CDS, deployment("c4", "tpl-a"))
    ready = await eventually(lambda: ready_for_generation(co, "c4", 1))
    assert ready["status"]["availableUpgrades"] == ["tpl-b"]
    assert ready["status"]["k8sVersion"] == DEFAULT_K8S_VERSION


@pytest.mark.parametrize("how", ["config", "annotation"])
async def test_failure_mode_never_ready(co: client.CustomObjectsApi, how: str) -> None:
    if how == "config":
        body = deployment("bad", "k0s-v1-31-2", config={"emulatorFail": "never-ready"})
    else:
        body = deployment(
            "bad",
            "k0s-v1-31-2",
            metadata={"annotations": {"emulator.infraflow.dev/fail": "never-ready"}},
        )
    await co.create_namespaced_custom_object(G, V, NS, CDS, body)

    async def failed() -> dict[str, Any] | None:
        obj = await get_cd(co, "bad")
        ready = condition(obj, "Ready")
        return obj if ready and ready["reason"] == "Failed" else None

    obj = await eventually(failed)
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert ready["message"]
    await asyncio.sleep(0.4)  # well past the ready delay: still failed
    assert condition(await get_cd(co, "bad"), "Ready")["status"] == "False"


async def test_delete_sets_deleting_then_removes_finalizer(co: client.CustomObjectsApi) -> None:
    await co.create_namespaced_custom_object(G, V, NS, CDS, deployment("c5", "k0s-v1-31-2"))
    ready = await eventually(lambda: ready_for_generation(co, "c5", 1))
    loop = asyncio.get_running_loop()
    began = loop.time()
    marked = await co.delete_namespaced_custom_object(G, V, NS, CDS, "c5")
    assert marked["metadata"]["deletionTimestamp"]
    events = await follow(
        co, "c5", ready["metadata"]["resourceVersion"], lambda kind, _: kind == "DELETED"
    )
    assert loop.time() - began >= 0.2
    assert [kind for kind, _ in events][-1] == "DELETED"
    deleting = [condition(o, "Deleting") for _, o in events]
    assert any(c and c["status"] == "True" for c in deleting)
    assert reasons(events)[-1] == "Deleting@1"
    with pytest.raises(ApiException) as gone:
        await get_cd(co, "c5")
    assert gone.value.status == 404
    with pytest.raises(ApiException) as secret:
        await client.CoreV1Api(co.api_client).read_namespaced_secret("c5-kubeconfig", NS)
    assert secret.value.status == 404


def test_version_rules() -> None:
    assert k8s_version_for("k0s-v1-31-2", None) == "v1.31.2"
    assert k8s_version_for("aws-standalone-cp-0-1-0", None) == DEFAULT_K8S_VERSION
    assert k8s_version_for("x", {"status": {"k8sVersion": "v1.29.9"}}) == "v1.29.9"
    names = ["aws-cp-0-1-0", "aws-cp-0-2-0", "aws-cp-0-10-0", "aws-cpx-1-0-0", "other"]
    assert upgrades_by_name("aws-cp-0-1-0", names) == ["aws-cp-0-2-0", "aws-cp-0-10-0"]
    assert upgrades_by_name("plain", names) == []
