"""Watch streams through kubernetes_asyncio.watch.Watch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from infraflow.devtools.kube_emulator import EmulatorConfig, KubeEmulator
from infraflow.devtools.kube_emulator.resources import ResourceRef

from .conftest import FAST, GROUP, NS, PLURAL, VERSION, widget

MERGE = "application/merge-patch+json"
WIDGETS = ResourceRef(GROUP, VERSION, PLURAL)


async def collect(
    co: client.CustomObjectsApi,
    count: int,
    *,
    types: set[str] | None = None,
    timeout: float = 5.0,
    **kwargs: Any,
) -> list[tuple[str, dict[str, Any]]]:
    """The first ``count`` events (optionally only of ``types``) as (type, raw object)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    stream = watch.Watch()
    kwargs.setdefault("timeout_seconds", int(timeout) + 1)

    async def run() -> None:
        async for event in stream.stream(
            co.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, **kwargs
        ):
            if types is None or event["type"] in types:
                seen.append((event["type"], event["raw_object"]))
            if len(seen) >= count:
                break

    try:
        await asyncio.wait_for(run(), timeout)
    finally:
        await stream.close()
    return seen


async def test_watch_delivers_added_modified_deleted_in_order(
    co: client.CustomObjectsApi,
) -> None:
    start = await co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    task = asyncio.create_task(
        collect(co, 4, resource_version=start["metadata"]["resourceVersion"])
    )
    await asyncio.sleep(0.1)
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("w"))
    await co.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "w", {"spec": {"size": 2}}, _content_type=MERGE
    )
    await co.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, "w", {"status": {"ok": True}}, _content_type=MERGE
    )
    await co.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "w")
    events = await task
    assert [t for t, _ in events] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert versions == sorted(versions)
    assert len(set(versions)) == 4
    assert events[1][1]["spec"]["size"] == 2
    assert events[2][1]["status"] == {"ok": True}


async def test_watch_without_version_lists_current_state_then_follows(
    co: client.CustomObjectsApi,
) -> None:
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("old"))
    task = asyncio.create_task(collect(co, 2))
    await asyncio.sleep(0.1)
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("new"))
    events = await task
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "old"), ("ADDED", "new")]


async def test_watch_resumes_from_resource_version(co: client.CustomObjectsApi) -> None:
    first = await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a"))
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("b"))
    await co.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    events = await collect(co, 2, resource_version=first["metadata"]["resourceVersion"])
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]


async def test_bookmarks_arrive_with_current_resource_version(
    co: client.CustomObjectsApi,
) -> None:
    latest = await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("x"))
    events = await collect(
        co,
        2,
        types={"BOOKMARK"},
        allow_watch_bookmarks=True,
        resource_version=latest["metadata"]["resourceVersion"],
    )
    for kind, obj in events:
        assert kind == "BOOKMARK"
        assert obj["kind"] == "Widget"
        assert obj["metadata"]["resourceVersion"] == latest["metadata"]["resourceVersion"]


async def test_no_bookmarks_unless_requested(co: client.CustomObjectsApi) -> None:
    stream = watch.Watch()
    seen: list[str] = []
    async for event in stream.stream(
        co.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, timeout_seconds=1
    ):
        seen.append(event["type"])
    await stream.close()
    assert seen == []  # the stream ended by timeoutSeconds without any event


async def test_watch_from_compacted_version_gets_410(
    co: client.CustomObjectsApi, emulator: KubeEmulator
) -> None:
    first = await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("e"))
    await co.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "e", {"spec": {"size": 7}}, _content_type=MERGE
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{emulator.url}/_emulator/compact") as resp,
    ):
        assert resp.status == 200
    with pytest.raises(ApiException) as expired:
        await collect(co, 1, resource_version=first["metadata"]["resourceVersion"])
    assert expired.value.status == 410
    assert "Expired" in str(expired.value.reason)


async def test_raw_watch_error_event_on_expired_version(emulator: KubeEmulator) -> None:
    for i in range(3):
        emulator.state.store.create(WIDGETS, NS, widget(f"r{i}"))
    emulator.state.store.compact()
    url = f"{emulator.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, params={"watch": "1", "resourceVersion": "1"}) as resp,
    ):
        assert resp.status == 200
        line = await resp.content.readline()
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


@pytest.fixture
def small_history() -> EmulatorConfig:
    return EmulatorConfig(
        cluster_ready_delay=FAST.cluster_ready_delay,
        vm_ready_delay=FAST.vm_ready_delay,
        history_window=3,
        bookmark_interval=FAST.bookmark_interval,
    )


async def test_history_window_expires_old_versions(small_history: EmulatorConfig) -> None:
    async with KubeEmulator(small_history) as emu:
        store = emu.state.store
        first = store.create(WIDGETS, NS, widget("h0"))
        for i in range(1, 5):
            store.create(WIDGETS, NS, widget(f"h{i}"))
        url = f"{emu.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
        async with aiohttp.ClientSession() as http:
            params = {"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"]}
            async with http.get(url, params=params) as resp:
                assert b'"code":410' in await resp.content.readline()
            recent = str(store.current_rv - 2)
            params = {"watch": "true", "resourceVersion": recent, "timeoutSeconds": "1"}
            async with http.get(url, params=params) as resp:
                body = await resp.read()
        lines = [line for line in body.decode().splitlines() if line]
        assert [json.loads(line)["type"] for line in lines] == [
            "ADDED",
            "ADDED",
        ]  # the two events after `recent` are still in the window


async def test_label_selector_watch_sees_objects_enter_and_leave(
    co: client.CustomObjectsApi,
) -> None:
    start = await co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    task = asyncio.create_task(
        collect(
            co,
            3,
            label_selector="team=a",
            resource_version=start["metadata"]["resourceVersion"],
        )
    )
    await asyncio.sleep(0.1)
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("other"))
    await co.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, widget("mine", {"team": "a"})
    )
    for team in ("b", "a"):
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "mine",
            {"metadata": {"labels": {"team": team}}},
            _content_type=MERGE,
        )
    events = await task
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "mine"),
        ("DELETED", "mine"),
        ("ADDED", "mine"),
    ]


async def test_field_selector_watch(co: client.CustomObjectsApi) -> None:
    start = await co.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    task = asyncio.create_task(
        collect(
            co,
            1,
            field_selector="metadata.name=target",
            resource_version=start["metadata"]["resourceVersion"],
        )
    )
    await asyncio.sleep(0.1)
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("decoy"))
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("target"))
    events = await task
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "target")]


async def test_stop_ends_open_watches(co: client.CustomObjectsApi, emulator: KubeEmulator) -> None:
    task = asyncio.create_task(collect(co, 1, timeout=10.0))
    await asyncio.sleep(0.2)
    assert emulator.state.store.watch_count == 1
    loop = asyncio.get_running_loop()
    began = loop.time()
    await emulator.stop()
    assert await asyncio.wait_for(task, 5) == []  # the stream ended cleanly, no events
    assert loop.time() - began < 3.0


async def test_cluster_wide_watch_sees_all_namespaces(co: client.CustomObjectsApi) -> None:
    stream = watch.Watch()
    seen: list[tuple[str, str]] = []

    async def run() -> None:
        async for event in stream.stream(
            co.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=5
        ):
            meta = event["raw_object"]["metadata"]
            seen.append((meta["namespace"], meta["name"]))
            if len(seen) == 2:
                break

    task = asyncio.create_task(run())
    await asyncio.sleep(0.1)
    await co.create_namespaced_custom_object(GROUP, VERSION, "ns-a", PLURAL, widget("x"))
    await co.create_namespaced_custom_object(GROUP, VERSION, "ns-b", PLURAL, widget("y"))
    await asyncio.wait_for(task, 5)
    await stream.close()
    assert seen == [("ns-a", "x"), ("ns-b", "y")]


async def test_abandoned_watch_is_cleaned_up(emulator: KubeEmulator) -> None:
    url = f"{emulator.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
    async with aiohttp.ClientSession() as http:
        resp = await http.get(url, params={"watch": "true"})
        assert resp.status == 200
        await asyncio.sleep(0.1)
        assert emulator.state.store.watch_count == 1
        resp.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while emulator.state.store.watch_count and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert emulator.state.store.watch_count == 0
