"""Generic CRUD semantics through kubernetes-asyncio's CustomObjectsApi."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import GROUP, NS, PLURAL, VERSION, widget

MERGE = "application/merge-patch+json"


def status_of(exc: ApiException) -> dict[str, Any]:
    """The ``kind: Status`` body of a failed call."""
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


async def create(co: client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    return await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


async def get(co: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return await co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


async def merge(co: client.CustomObjectsApi, name: str, patch: Any) -> dict[str, Any]:
    return await co.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, name, patch, _content_type=MERGE
    )


async def test_create_get_list_and_server_fields(co: client.CustomObjectsApi) -> None:
    created = await create(co, widget("a", {"app": "x"}))
    meta = created["metadata"]
    assert meta["name"] == "a"
    assert meta["namespace"] == NS
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert await get(co, "a") == created

    second = await create(co, widget("b"))
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    listed = await co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert listed["kind"] == "WidgetList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    assert listed["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    everywhere = await co.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert len(everywhere["items"]) == 2
    other_ns = await co.list_namespaced_custom_object(GROUP, VERSION, "other", PLURAL)
    assert other_ns["items"] == []


async def test_not_found_and_already_exists(co: client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as missing:
        await get(co, "nope")
    assert missing.value.status == 404
    assert status_of(missing.value)["reason"] == "NotFound"

    await create(co, widget("dup"))
    with pytest.raises(ApiException) as dup:
        await create(co, widget("dup"))
    assert dup.value.status == 409
    body = status_of(dup.value)
    assert body["reason"] == "AlreadyExists"
    assert "already exists" in body["message"]


async def test_create_rejects_bad_bodies(co: client.CustomObjectsApi) -> None:
    bad_name = widget("Not_A_Name")
    with pytest.raises(ApiException) as invalid:
        await create(co, bad_name)
    assert invalid.value.status == 422
    assert status_of(invalid.value)["reason"] == "Invalid"

    wrong_version = widget("x") | {"apiVersion": f"{GROUP}/v2"}
    with pytest.raises(ApiException) as bad:
        await create(co, wrong_version)
    assert bad.value.status == 400

    generated = widget("") | {"metadata": {"generateName": "gen-"}}
    obj = await create(co, generated)
    assert obj["metadata"]["name"].startswith("gen-")
    assert len(obj["metadata"]["name"]) == len("gen-") + 5


async def test_replace_with_stale_resource_version_conflicts(co: client.CustomObjectsApi) -> None:
    first = await create(co, widget("r", size=1))
    first["spec"]["size"] = 2
    updated = await co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "r", first)
    assert updated["spec"]["size"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])

    first["spec"]["size"] = 3  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        await co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "r", first)
    assert stale.value.status == 409
    assert status_of(stale.value)["reason"] == "Conflict"

    del first["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as unconditional:
        await co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "r", first)
    assert unconditional.value.status == 422  # custom resources need a resourceVersion on PUT
    assert (await get(co, "r"))["spec"]["size"] == 2


async def test_merge_patch_semantics_and_stale_version(co: client.CustomObjectsApi) -> None:
    created = await create(co, widget("m", size=1, color="red", nested={"a": 1, "b": 2}))
    patched = await merge(co, "m", {"spec": {"color": None, "nested": {"b": None, "c": 3}}})
    assert patched["spec"] == {"size": 1, "nested": {"a": 1, "c": 3}}

    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    with pytest.raises(ApiException) as conflict:
        await merge(co, "m", stale | {"spec": {"size": 5}})
    assert conflict.value.status == 409
    assert status_of(conflict.value)["reason"] == "Conflict"

    current = {"metadata": {"resourceVersion": patched["metadata"]["resourceVersion"]}}
    ok = await merge(co, "m", current | {"spec": {"size": 5}})
    assert ok["spec"]["size"] == 5

    labelled = await merge(co, "m", {"metadata": {"labels": {"tier": "gold"}}})
    assert labelled["metadata"]["labels"] == {"tier": "gold"}
    unlabelled = await merge(co, "m", {"metadata": {"labels": {"tier": None}}})
    assert "tier" not in (unlabelled["metadata"].get("labels") or {})


async def test_json_patch_and_unsupported_patch_types(co: client.CustomObjectsApi) -> None:
    await create(co, widget("j", size=1, items=["a"]))
    ops = [
        {"op": "test", "path": "/spec/size", "value": 1},
        {"op": "replace", "path": "/spec/size", "value": 2},
        {"op": "add", "path": "/spec/items/-", "value": "b"},
    ]
    patched = await co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "j", ops)
    assert patched["spec"] == {"size": 2, "items": ["a", "b"]}

    failing = [{"op": "test", "path": "/spec/size", "value": 99}]
    with pytest.raises(ApiException) as invalid:
        await co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "j", failing)
    assert invalid.value.status == 422

    # kubernetes-asyncio labels a dict body as a JSON patch unless told otherwise; a real
    # apiserver answers 400 to that, and so does the emulator.
    with pytest.raises(ApiException) as wrong_shape:
        await co.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "j", {"spec": {}})
    assert wrong_shape.value.status == 400

    with pytest.raises(ApiException) as strategic:
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "j",
            {"spec": {"size": 3}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert strategic.value.status == 415
    assert status_of(strategic.value)["reason"] == "UnsupportedMediaType"


async def test_status_subresource_is_separate(co: client.CustomObjectsApi) -> None:
    created = await create(co, widget("s") | {"status": {"phase": "ignored-on-create"}})
    assert "status" not in created

    with_status = await co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "s",
        {"status": {"phase": "Ready"}, "spec": {"size": 9}},
        _content_type=MERGE,
    )
    assert with_status["status"] == {"phase": "Ready"}
    assert with_status["spec"] == {"size": 1}  # spec changes via /status are ignored
    assert with_status["metadata"]["generation"] == 1

    main = await merge(co, "s", {"status": {"phase": "Hacked"}, "spec": {"size": 2}})
    assert main["status"] == {"phase": "Ready"}  # status changes via the main resource too
    assert main["spec"]["size"] == 2

    main["status"] = {"phase": "Done"}
    replaced = await co.replace_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "s", main
    )
    assert replaced["status"] == {"phase": "Done"}
    fetched = await co.get_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "s")
    assert fetched["status"] == {"phase": "Done"}

    replaced["status"] = {"phase": "stale"}
    with pytest.raises(ApiException) as stale:
        await co.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "s", main)
    assert stale.value.status == 409


async def test_generation_bumps_on_spec_changes_only(co: client.CustomObjectsApi) -> None:
    created = await create(co, widget("g", size=1))
    assert created["metadata"]["generation"] == 1
    meta_only = await merge(co, "g", {"metadata": {"annotations": {"note": "x"}}})
    assert meta_only["metadata"]["generation"] == 1
    status_only = await co.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "g", {"status": {"ok": True}}, _content_type=MERGE
    )
    assert status_only["metadata"]["generation"] == 1
    spec = await merge(co, "g", {"spec": {"size": 2}})
    assert spec["metadata"]["generation"] == 2
    noop = await merge(co, "g", {"spec": {"size": 2}})
    assert noop["metadata"]["generation"] == 2
    assert noop["metadata"]["resourceVersion"] == spec["metadata"]["resourceVersion"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["w1", "w2"]),
        ("app==web,tier=front", ["w1"]),
        ("app!=web", ["d1", "n1"]),
        ("tier in (front,back)", ["d1", "w1", "w2"]),
        ("tier notin (front)", ["d1", "n1", "w2"]),
        ("tier", ["d1", "w1", "w2"]),
        ("!tier", ["n1"]),
        ("app=web,!tier", []),
    ],
)
async def test_label_selectors(
    co: client.CustomObjectsApi, selector: str, expected: list[str]
) -> None:
    await create(co, widget("w1", {"app": "web", "tier": "front"}))
    await create(co, widget("w2", {"app": "web", "tier": "back"}))
    await create(co, widget("d1", {"app": "db", "tier": "back"}))
    await create(co, widget("n1", {}))
    listed = await co.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, label_selector=selector
    )
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == expected


async def test_field_selector_limit_and_bad_selector(co: client.CustomObjectsApi) -> None:
    for name in ("f1", "f2", "f3"):
        await create(co, widget(name))
    one = await co.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, field_selector="metadata.name=f2"
    )
    assert [i["metadata"]["name"] for i in one["items"]] == ["f2"]

    page = await co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, limit=2)
    assert [i["metadata"]["name"] for i in page["items"]] == ["f1", "f2"]
    assert page["metadata"]["remainingItemCount"] == 1
    rest = await co.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, limit=2, _continue=page["metadata"]["continue"]
    )
    assert [i["metadata"]["name"] for i in rest["items"]] == ["f3"]
    assert "continue" not in rest["metadata"]

    with pytest.raises(ApiException) as bad:
        await co.list_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, label_selector="app in (a"
        )
    assert bad.value.status == 400
    with pytest.raises(ApiException) as unsupported:
        await co.list_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, field_selector="spec.size=1"
        )
    assert unsupported.value.status == 400


async def test_delete_without_finalizers_and_preconditions(co: client.CustomObjectsApi) -> None:
    created = await create(co, widget("d"))
    with pytest.raises(ApiException) as pre:
        await co.delete_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "d",
            body={"preconditions": {"resourceVersion": "999999"}},
        )
    assert pre.value.status == 409
    gone = await co.delete_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "d", propagation_policy="Foreground"
    )
    assert gone["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(ApiException) as missing:
        await get(co, "d")
    assert missing.value.status == 404


async def test_discovery_documents(api: client.ApiClient) -> None:
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"
    groups = await client.ApisApi(api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {"k0rdent.mirantis.com", "kubevirt.io", "subresources.kubevirt.io"} <= names
    resources = await client.CustomObjectsApi(api).get_api_resources(
        "k0rdent.mirantis.com", "v1beta1"
    )
    by_name = {r.name: r for r in resources.resources}
    assert by_name["clusterdeployments"].kind == "ClusterDeployment"
    assert by_name["clusterdeployments"].namespaced is True
    assert "clusterdeployments/status" in by_name
    core = await client.CoreApi(api).get_api_versions()
    assert core.versions == ["v1"]
