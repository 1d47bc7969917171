"""Deletion with finalizers on a generic resource."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import GROUP, NS, PLURAL, VERSION, widget

MERGE = "application/merge-patch+json"


async def test_finalizers_delay_deletion_until_removed(co: client.CustomObjectsApi) -> None:
    body = widget("f")
    body["metadata"]["finalizers"] = ["example.infraflow.dev/hold", "example.infraflow.dev/other"]
    created = await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)

    stream = watch.Watch()
    events: list[str] = []

    async def follow() -> None:
        async for event in stream.stream(
            co.list_namespaced_custom_object,
            GROUP,
            VERSION,
            NS,
            PLURAL,
            resource_version=created["metadata"]["resourceVersion"],
            timeout_seconds=5,
        ):
            events.append(event["type"])
            if event["type"] == "DELETED":
                break

    follower = asyncio.create_task(follow())
    marked = await co.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "f")
    assert marked["metadata"]["deletionTimestamp"]
    still_there = await co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "f")
    assert still_there["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]

    again = await co.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "f")
    assert again["metadata"]["resourceVersion"] == marked["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as forbidden:
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "f",
            {"metadata": {"finalizers": [*body["metadata"]["finalizers"], "new/one"]}},
            _content_type=MERGE,
        )
    assert forbidden.value.status == 422

    one_left = await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "f",
        {"metadata": {"finalizers": ["example.infraflow.dev/other"]}},
        _content_type=MERGE,
    )
    assert one_left["metadata"]["finalizers"] == ["example.infraflow.dev/other"]

    one_left["metadata"]["finalizers"] = []
    await co.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "f", one_left)
    with pytest.raises(ApiException) as gone:
        await co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "f")
    assert gone.value.status == 404

    await asyncio.wait_for(follower, 5)
    await stream.close()
    assert events == ["MODIFIED", "MODIFIED", "DELETED"]
