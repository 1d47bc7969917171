"""``/v1/projects/{project}/clusters|vms``: project scoping, validation, the upgrade rule, the
run commands, and the cache views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from nats.js import JetStreamContext

from infraflow.common.contracts import StartRun
from infraflow.common.ids import is_id, new_id

from .conftest import FakeProjector, auth, body_of, commands

MEMBER = {"roles": (), "projects": {"prj-a": "member"}}
VIEWER = {"roles": (), "projects": {"prj-a": "viewer"}}
OUTSIDER = {"roles": (), "projects": {"prj-b": "admin"}}

CLUSTER = {
    "name": "prod",
    "template": "k0s-v1-31-2",
    "credential": "aws",
    "workers": 3,
    "config": {"region": "eu"},
}
VM = {"name": "vm-1", "cpu": 2, "memoryGiB": 4, "image": "quay.io/containerdisks/fedora:40"}


def cached(
    projector: FakeProjector, kind: str = "cluster", project: str = "prj-a", **attrs: Any
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    view = {
        "id": new_id("cls" if kind == "cluster" else "vm"),
        "type": kind,
        "name": "prod",
        "state": attrs.pop("state", "ready"),
        "projectId": project,
        "attributes": {
            "phase": "Ready",
            "ready": True,
            "workers": 3,
            "template": "k0s-v1-31-2",
            "availableUpgrades": ["k0s-v1-32-0"],
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}],
            **attrs,
        },
        "lastRunId": new_id("run"),
        "createdAt": now,
        "updatedAt": now,
    }
    projector.resources[view["id"]] = view
    return view


async def only_start(js: JetStreamContext) -> StartRun:
    [published] = await commands(js)
    assert isinstance(published.command, StartRun)
    return published.command


async def test_members_create_clusters_in_their_project(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    r = await client.post("/v1/projects/prj-a/clusters", json=CLUSTER, headers=auth("u", **MEMBER))
    assert r.status_code == 202, r.text
    run = body_of(r)["data"]
    assert run["type"] == "cluster.create"
    assert is_id(run["resourceId"], "cls")
    assert run["projectId"] == "prj-a"
    command = await only_start(js)
    assert command.workflow_type == "cluster.create"
    assert command.project_id == "prj-a"
    assert command.input == {**CLUSTER, "controlPlanes": 1}


async def test_who_may_do_what(client: httpx.AsyncClient, js: JetStreamContext) -> None:
    path = "/v1/projects/prj-a/clusters"
    viewer = await client.post(path, json=CLUSTER, headers=auth("v", **VIEWER))
    assert viewer.status_code == 403
    outsider = await client.post(path, json=CLUSTER, headers=auth("o", **OUTSIDER))
    assert outsider.status_code == 404
    assert (await client.get(path, headers=auth("o", **OUTSIDER))).status_code == 404
    assert (await client.get(path, headers=auth("v", **VIEWER))).status_code == 200
    # an Atlas operator may act in any project, but the project must name a namespace
    bad = await client.post("/v1/projects/Prj_A/clusters", json=CLUSTER, headers=auth())
    assert bad.status_code == 400
    assert "project" in body_of(bad)["error"]["details"]["fields"]
    assert await commands(js) == []


async def test_bodies_are_checked_field_by_field(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    body = {
        **CLUSTER,
        "name": "-bad-",
        "workers": -1,
        "controlPlanes": 10,
        "config": {"workersNumber": 5},
        "labels": {"infraflow.dev/owner": "me"},
    }
    r = await client.post("/v1/projects/prj-a/clusters", json=body, headers=auth())
    assert r.status_code == 400
    fields = body_of(r)["error"]["details"]["fields"]
    assert set(fields) >= {
        "name",
        "workers",
        "controlPlanes",
        "config.workersNumber",
        "labels.infraflow.dev/owner",
    }
    r = await client.post(
        "/v1/projects/prj-a/vms",
        json={**VM, "cpu": 0, "memoryGiB": 0.0001, "gpus": [{"type": "x", "count": 99}]},
        headers=auth(),
    )
    assert r.status_code == 400
    assert set(body_of(r)["error"]["details"]["fields"]) >= {"cpu", "memoryGiB", "gpus[0].count"}
    assert await commands(js) == []


async def test_upgrade_outside_available_upgrades_is_409_and_starts_nothing(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    view = cached(projector)
    path = f"/v1/projects/prj-a/clusters/{view['id']}/upgrade"
    r = await client.post(path, json={"template": "k0s-v1-40-0"}, headers=auth("m", **MEMBER))
    assert r.status_code == 409
    error = body_of(r)["error"]
    assert error["code"] == "CONFLICT"
    assert error["details"]["availableUpgrades"] == ["k0s-v1-32-0"]
    assert await commands(js) == []
    r = await client.post(path, json={"template": "k0s-v1-32-0"}, headers=auth("m", **MEMBER))
    assert r.status_code == 202, r.text
    command = await only_start(js)
    assert command.workflow_type == "cluster.upgrade"
    assert command.resource_id == view["id"]
    assert command.input == {"template": "k0s-v1-32-0"}


async def test_scale_and_delete_follow_the_state_rules(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    creating = cached(projector, state="creating")
    r = await client.post(
        f"/v1/projects/prj-a/clusters/{creating['id']}/scale", json={"workers": 5}, headers=auth()
    )
    assert r.status_code == 409
    assert body_of(r)["error"]["code"] == "INVALID_STATE_TRANSITION"
    ready = cached(projector)
    r = await client.post(
        f"/v1/projects/prj-a/clusters/{ready['id']}/scale", json={"workers": 5}, headers=auth()
    )
    assert r.status_code == 202
    assert (await only_start(js)).input == {"workers": 5}
    r = await client.delete(f"/v1/projects/prj-a/clusters/{creating['id']}", headers=auth())
    assert r.status_code == 202
    deleted = cached(projector, state="deleted")
    r = await client.delete(f"/v1/projects/prj-a/clusters/{deleted['id']}", headers=auth())
    assert r.status_code == 409


async def test_resources_of_other_projects_are_not_found(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    theirs = cached(projector, project="prj-b")
    for path in (
        f"/v1/projects/prj-a/clusters/{theirs['id']}",
        f"/v1/projects/prj-b/clusters/{theirs['id']}",
    ):
        assert (await client.get(path, headers=auth("m", **MEMBER))).status_code == 404
    # an operator sees it under its own project only
    assert (
        await client.get(f"/v1/projects/prj-a/clusters/{theirs['id']}", headers=auth())
    ).status_code == 404
    r = await client.post(
        f"/v1/projects/prj-a/clusters/{theirs['id']}/scale", json={"workers": 1}, headers=auth()
    )
    assert r.status_code == 404
    assert (await client.get("/v1/projects/prj-a/clusters/nope", headers=auth())).status_code == 404
    assert await commands(js) == []


async def test_cluster_and_vm_views(client: httpx.AsyncClient, projector: FakeProjector) -> None:
    view = cached(projector, version="v1.31.2", kubernetesName="cls-x", namespace="prj-a")
    r = await client.get(f"/v1/projects/prj-a/clusters/{view['id']}", headers=auth("m", **MEMBER))
    assert r.status_code == 200
    cluster = body_of(r)["data"]
    assert cluster["phase"] == "Ready"
    assert cluster["workers"] == 3
    assert cluster["version"] == "v1.31.2"
    assert cluster["availableUpgrades"] == ["k0s-v1-32-0"]
    assert cluster["conditions"][0]["type"] == "Ready"
    assert cluster["lastRunId"] == view["lastRunId"]
    listed = body_of(await client.get("/v1/projects/prj-a/clusters", headers=auth("m", **MEMBER)))
    assert [c["id"] for c in listed["data"]] == [view["id"]]
    assert listed["meta"]["pagination"]["hasMore"] is False
    vm = cached(projector, kind="vm", phase="Running", cpu=2, memoryGiB=4, running=True)
    r = await client.get(f"/v1/projects/prj-a/vms/{vm['id']}", headers=auth("m", **MEMBER))
    data = body_of(r)["data"]
    assert (data["phase"], data["cpu"], data["memoryGiB"], data["running"]) == (
        "Running",
        2,
        4.0,
        True,
    )


async def test_vm_create_power_delete_start_runs(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    r = await client.post(
        "/v1/projects/prj-a/vms",
        json={**VM, "gpus": [{"type": "nvidia.com/A100"}], "running": False},
        headers=auth("m", **MEMBER),
    )
    assert r.status_code == 202, r.text
    command = await only_start(js)
    assert command.workflow_type == "vm.create"
    assert is_id(command.resource_id, "vm")
    assert command.input["gpus"] == [{"type": "nvidia.com/A100", "count": 1}]
    assert command.input["running"] is False
    vm = cached(projector, kind="vm")
    base = f"/v1/projects/prj-a/vms/{vm['id']}"
    bad = await client.post(f"{base}/power", json={"action": "hibernate"}, headers=auth())
    assert bad.status_code == 400
    r = await client.post(f"{base}/power", json={"action": "restart"}, headers=auth())
    assert r.status_code == 202
    assert body_of(r)["data"]["type"] == "vm.power"
    assert (await client.delete(base, headers=auth())).status_code == 202
    types = [c.command.workflow_type for c in await commands(js)]  # type: ignore[union-attr]
    assert types == ["vm.create", "vm.power", "vm.delete"]
