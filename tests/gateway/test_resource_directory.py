"""The resource directory at the gateway: a run start is checked against the mirrored
``wf-resources`` entry without a query; an entry that would refuse, or that the caller may not
see, is confirmed by the read model first."""

from __future__ import annotations

import asyncio
import time

import httpx
from nats.js import JetStreamContext

from infraflow.common.contracts import GetResource, ResourceEntry, StartRun, encode, resource_key
from infraflow.common.ids import new_id
from infraflow.common.streams import KV_RESOURCES

from .conftest import ARC, FakeProjector, auth, commands


async def put_entry(js: JetStreamContext, entry: ResourceEntry) -> None:
    kv = await js.key_value(KV_RESOURCES)
    await kv.put(resource_key(entry.type, entry.id), encode(entry))


async def inspect_until(
    client: httpx.AsyncClient, server_id: str, status: int, **headers: str
) -> httpx.Response:
    """POST inspect until the answer is ``status`` (the mirror follows the bucket within
    moments); the last response."""
    deadline = time.monotonic() + 10
    while True:
        response = await client.post(f"/v1/servers/{server_id}/inspect", headers=headers or auth())
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_a_run_start_is_checked_against_the_directory_without_a_query(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server_id = new_id("srv")  # unknown to the read model: only the directory knows it
    await put_entry(
        js,
        ResourceEntry(
            type="server", id=server_id, project_id="prj-a", site="dc7", state="available", seq=9
        ),
    )
    response = await inspect_until(client, server_id, 202)
    assert response.status_code == 202, response.text
    queries = len(projector.of(GetResource))
    again = await client.post(f"/v1/servers/{server_id}/inspect", headers=auth())
    assert again.status_code == 202, again.text
    assert len(projector.of(GetResource)) == queries  # answered from the directory alone
    published = await commands(js)
    assert len(published) == 2
    for p in published:
        command = p.command
        assert isinstance(command, StartRun)
        assert (command.resource_id, command.site, command.project_id) == (
            server_id,
            "dc7",
            "prj-a",
        )


async def test_an_entry_behind_the_read_model_never_refuses(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server(state="available", project_id="prj-a")
    # the directory still shows the state of a run that has ended meanwhile
    await put_entry(
        js,
        ResourceEntry(type="server", id=server["id"], project_id="prj-a", state="provisioning"),
    )
    await asyncio.sleep(0.3)  # let the mirror take it
    queries = len(projector.of(GetResource))
    response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=auth())
    assert response.status_code == 202, response.text
    assert len(projector.of(GetResource)) == queries + 1  # confirmed by the read model

    # and a refusal the read model agrees with is still a 409
    projector.resources[server["id"]]["state"] = "provisioning"
    response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=auth())
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "INVALID_STATE_TRANSITION"


async def test_an_entry_of_a_project_the_caller_cannot_see_is_not_trusted(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server_id = new_id("srv")
    await put_entry(
        js,
        ResourceEntry(type="server", id=server_id, project_id="prj-b", state="available"),
    )
    await asyncio.sleep(0.3)
    tenant = auth("arc-user", roles=ARC["roles"], projects=ARC["projects"])  # prj-a only
    response = await client.post(
        f"/v1/servers/{server_id}/power", json={"action": "on"}, headers=tenant
    )
    assert response.status_code == 404, response.text
    assert any(q.resource_id == server_id for q in projector.of(GetResource))
    assert await commands(js) == []
