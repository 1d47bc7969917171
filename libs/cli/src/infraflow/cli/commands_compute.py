"""``infraflow clusters|vms|metrics``: a project's clusters and VMs, and the run metrics."""

from __future__ import annotations

from typing import Any, Final

import click

from infraflow.cli.app import (
    Context,
    json_option,
    list_items,
    list_options,
    pass_context,
    show_accepted,
    show_item,
    wait_option,
)
from infraflow.cli.output import console, metrics_view, print_json

CLUSTER_COLUMNS: Final = (
    "id",
    "name",
    "state",
    "phase",
    "workers",
    "version",
    "template",
    "lastRunId",
)
VM_COLUMNS: Final = ("id", "name", "state", "phase", "cpu", "memoryGiB", "image", "lastRunId")
VM_POWER_ACTIONS: Final = ("start", "stop", "restart")

project_option = click.option(
    "--project",
    "-p",
    envvar="INFRAFLOW_PROJECT",
    required=True,
    help="The project (env INFRAFLOW_PROJECT).",
)


# ---- clusters ----------------------------------------------------------------------------


@click.group()
def clusters() -> None:
    """Kubernetes clusters of a project (k0rdent ClusterDeployments)."""


@clusters.command("list")
@project_option
@list_options
@pass_context
def list_clusters(ctx: Context, project: str, limit: int, everything: bool, as_json: bool) -> None:
    """List the project's clusters."""
    list_items(
        ctx,
        f"/v1/projects/{project}/clusters",
        {},
        title="Clusters",
        columns=CLUSTER_COLUMNS,
        limit=limit,
        everything=everything,
        as_json=as_json,
    )


@clusters.command("get")
@project_option
@click.argument("cluster_id")
@json_option
@pass_context
def get_cluster(ctx: Context, project: str, cluster_id: str, as_json: bool) -> None:
    """Show one cluster: phase, conditions, workers, version, available upgrades."""
    show_item(ctx, f"/v1/projects/{project}/clusters/{cluster_id}", as_json)


@clusters.command("create")
@project_option
@click.option("--name", required=True)
@click.option("--template", required=True, help="ClusterTemplate in the project's namespace.")
@click.option("--credential", required=True, help="k0rdent Credential name.")
@click.option("--workers", type=click.IntRange(min=0), required=True)
@click.option("--control-planes", type=click.IntRange(min=1))
@wait_option
@json_option
@pass_context
def create_cluster(
    ctx: Context,
    project: str,
    name: str,
    template: str,
    credential: str,
    workers: int,
    control_planes: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Create a cluster (cluster.create)."""
    body: dict[str, Any] = {
        "name": name,
        "template": template,
        "credential": credential,
        "workers": workers,
    }
    if control_planes is not None:
        body["controlPlanes"] = control_planes
    reply = ctx.client().post(f"/v1/projects/{project}/clusters", body)
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


@clusters.command("scale")
@project_option
@click.argument("cluster_id")
@click.option("--workers", type=click.IntRange(min=0), required=True)
@wait_option
@json_option
@pass_context
def scale(
    ctx: Context, project: str, cluster_id: str, workers: int, wait: bool, as_json: bool
) -> None:
    """Change the worker count (cluster.scale)."""
    path = f"/v1/projects/{project}/clusters/{cluster_id}/scale"
    show_accepted(ctx, ctx.client().post(path, {"workers": workers}), as_json=as_json, wait=wait)


@clusters.command("upgrade")
@project_option
@click.argument("cluster_id")
@click.option("--template", required=True, help="One of the cluster's available upgrades.")
@wait_option
@json_option
@pass_context
def upgrade(
    ctx: Context, project: str, cluster_id: str, template: str, wait: bool, as_json: bool
) -> None:
    """Move to another ClusterTemplate (cluster.upgrade)."""
    path = f"/v1/projects/{project}/clusters/{cluster_id}/upgrade"
    show_accepted(ctx, ctx.client().post(path, {"template": template}), as_json=as_json, wait=wait)


@clusters.command("delete")
@project_option
@click.argument("cluster_id")
@click.confirmation_option(prompt="Delete this cluster?")
@wait_option
@json_option
@pass_context
def delete_cluster(ctx: Context, project: str, cluster_id: str, wait: bool, as_json: bool) -> None:
    """Delete a cluster (cluster.delete); asks first unless --yes."""
    reply = ctx.client().delete(f"/v1/projects/{project}/clusters/{cluster_id}")
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


# ---- VMs ---------------------------------------------------------------------------------


@click.group()
def vms() -> None:
    """Virtual machines of a project (KubeVirt VirtualMachines)."""


@vms.command("list")
@project_option
@list_options
@pass_context
def list_vms(ctx: Context, project: str, limit: int, everything: bool, as_json: bool) -> None:
    """List the project's VMs."""
    list_items(
        ctx,
        f"/v1/projects/{project}/vms",
        {},
        title="VMs",
        columns=VM_COLUMNS,
        limit=limit,
        everything=everything,
        as_json=as_json,
    )


@vms.command("get")
@project_option
@click.argument("vm_id")
@json_option
@pass_context
def get_vm(ctx: Context, project: str, vm_id: str, as_json: bool) -> None:
    """Show one VM."""
    show_item(ctx, f"/v1/projects/{project}/vms/{vm_id}", as_json)


@vms.command("create")
@project_option
@click.option("--name", required=True)
@click.option("--cpu", type=click.IntRange(min=1), required=True)
@click.option("--memory-gib", type=click.FloatRange(min=0.125), required=True)
@click.option("--image", required=True, help="Container disk image.")
@click.option("--gpu", "gpus", multiple=True, metavar="TYPE[:COUNT]", help="Repeatable.")
@click.option("--stopped", is_flag=True, help="Create it without starting it.")
@wait_option
@json_option
@pass_context
def create_vm(
    ctx: Context,
    project: str,
    name: str,
    cpu: int,
    memory_gib: float,
    image: str,
    gpus: tuple[str, ...],
    stopped: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Create a VM (vm.create)."""
    body: dict[str, Any] = {"name": name, "cpu": cpu, "memoryGiB": memory_gib, "image": image}
    if gpus:
        body["gpus"] = [_gpu(g) for g in gpus]
    if stopped:
        body["running"] = False
    reply = ctx.client().post(f"/v1/projects/{project}/vms", body)
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


def _gpu(text: str) -> dict[str, Any]:
    kind, _, count = text.partition(":")
    if not kind or (count and not count.isdigit()):
        raise click.BadParameter(f"{text!r} is not TYPE[:COUNT]", param_hint="--gpu")
    return {"type": kind, "count": int(count or 1)}


@vms.command("power")
@project_option
@click.argument("vm_id")
@click.argument("action", type=click.Choice(VM_POWER_ACTIONS))
@wait_option
@json_option
@pass_context
def power_vm(
    ctx: Context, project: str, vm_id: str, action: str, wait: bool, as_json: bool
) -> None:
    """Start, stop or restart a VM (vm.power)."""
    path = f"/v1/projects/{project}/vms/{vm_id}/power"
    show_accepted(ctx, ctx.client().post(path, {"action": action}), as_json=as_json, wait=wait)


@vms.command("delete")
@project_option
@click.argument("vm_id")
@click.confirmation_option(prompt="Delete this VM?")
@wait_option
@json_option
@pass_context
def delete_vm(ctx: Context, project: str, vm_id: str, wait: bool, as_json: bool) -> None:
    """Delete a VM (vm.delete); asks first unless --yes."""
    reply = ctx.client().delete(f"/v1/projects/{project}/vms/{vm_id}")
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


# ---- metrics -----------------------------------------------------------------------------


@click.command()
@click.option("--since", help="ISO 8601 date or date-time.")
@click.option("--until", help="ISO 8601 date or date-time.")
@click.option("--type", "type_", help="Workflow types, comma-separated.")
@click.option("--resource-type", help="server, cluster or vm.")
@click.option("--bucket", type=click.Choice(["minute", "hour", "day"]), help="Runs per bucket.")
@json_option
@pass_context
def metrics(
    ctx: Context,
    since: str | None,
    until: str | None,
    type_: str | None,
    resource_type: str | None,
    bucket: str | None,
    as_json: bool,
) -> None:
    """Run metrics: totals, success rate, durations per type, errors, runs per bucket."""
    data = (
        ctx.client()
        .get(
            "/v1/workflows/metrics",
            since=since,
            until=until,
            type=type_,
            resourceType=resource_type,
            bucket=bucket,
        )
        .data
    )
    if as_json:
        print_json(data)
        return
    out = console()
    for part in metrics_view(data):
        out.print(part)
