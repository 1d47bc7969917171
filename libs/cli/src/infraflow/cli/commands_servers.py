"""``infraflow servers``: the server cache and the server workflows."""

from __future__ import annotations

from pathlib import Path
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

SERVER_COLUMNS: Final = (
    "id",
    "name",
    "state",
    "powerState",
    "site",
    "vendor",
    "model",
    "lastRunId",
)
POWER_ACTIONS: Final = ("on", "off", "reboot", "shutdown", "force-off", "force-reboot")


# ---- servers -----------------------------------------------------------------------------


@click.group()
def servers() -> None:
    """Bare metal servers: register, inspect, provision, power, decommission."""


@servers.command("list")
@click.option("--state", help="States, comma-separated (e.g. available,provisioned).")
@click.option("--site", help="Sites, comma-separated.")
@click.option("--project", help="Project ids, comma-separated.")
@list_options
@pass_context
def list_servers(
    ctx: Context,
    state: str | None,
    site: str | None,
    project: str | None,
    limit: int,
    everything: bool,
    as_json: bool,
) -> None:
    """List servers from the cache."""
    params = {"state": state, "site": site, "projectId": project}
    list_items(
        ctx,
        "/v1/servers",
        params,
        title="Servers",
        columns=SERVER_COLUMNS,
        limit=limit,
        everything=everything,
        as_json=as_json,
    )


@servers.command("get")
@click.argument("server_id")
@json_option
@pass_context
def get_server(ctx: Context, server_id: str, as_json: bool) -> None:
    """Show one server: state, power, hardware, health, last run."""
    show_item(ctx, f"/v1/servers/{server_id}", as_json)


@servers.command("register")
@click.option("--name", required=True, help="1-63 letters, digits or '-'.")
@click.option("--bmc-address", required=True, help="http(s) URL of the Redfish service.")
@click.option("--bmc-username", required=True)
@click.option(
    "--bmc-password",
    envvar="INFRAFLOW_BMC_PASSWORD",
    prompt=True,
    hide_input=True,
    help="Asked for if not given (env INFRAFLOW_BMC_PASSWORD).",
)
@click.option("--insecure", is_flag=True, help="Do not verify the BMC's TLS certificate.")
@click.option("--site")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@wait_option
@json_option
@pass_context
def register(
    ctx: Context,
    name: str,
    bmc_address: str,
    bmc_username: str,
    bmc_password: str,
    insecure: bool,
    site: str | None,
    tags: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Register a server (server.register)."""
    body: dict[str, Any] = {
        "name": name,
        "bmc": {
            "address": bmc_address,
            "username": bmc_username,
            "password": bmc_password,
            "verifyTls": not insecure,
        },
    }
    if site:
        body["site"] = site
    if tags:
        body["tags"] = dict(_pair(t) for t in tags)
    reply = ctx.client().post("/v1/servers", body)
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--tag")
    return key, value


@servers.command("inspect")
@click.argument("server_id")
@wait_option
@json_option
@pass_context
def inspect(ctx: Context, server_id: str, wait: bool, as_json: bool) -> None:
    """Inspect the hardware (server.inspect)."""
    reply = ctx.client().post(f"/v1/servers/{server_id}/inspect")
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


@servers.command("provision")
@click.argument("server_id")
@click.option("--image-url", required=True, help="The installer image (http/https).")
@click.option("--checksum")
@click.option("--checksum-type", type=click.Choice(["md5", "sha256", "sha512"]))
@click.option("--user-data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--callback-timeout", type=click.FloatRange(min=1), help="Seconds.")
@wait_option
@json_option
@pass_context
def provision(
    ctx: Context,
    server_id: str,
    image_url: str,
    checksum: str | None,
    checksum_type: str | None,
    user_data: Path | None,
    callback_timeout: float | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Install an OS from virtual media (server.provision)."""
    image: dict[str, Any] = {"url": image_url}
    if checksum:
        image.update(checksum=checksum, checksumType=checksum_type)
    body: dict[str, Any] = {"image": image}
    if user_data is not None:
        body["userData"] = user_data.read_text(encoding="utf-8")
    if callback_timeout is not None:
        body["callbackTimeoutS"] = callback_timeout
    reply = ctx.client().post(f"/v1/servers/{server_id}/provision", body)
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


@servers.command("power")
@click.argument("server_id")
@click.argument("action", type=click.Choice(POWER_ACTIONS))
@wait_option
@json_option
@pass_context
def power(ctx: Context, server_id: str, action: str, wait: bool, as_json: bool) -> None:
    """A power action (server.lifecycle)."""
    reply = ctx.client().post(f"/v1/servers/{server_id}/power", {"action": action})
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


@servers.command("sync")
@click.argument("server_id")
@wait_option
@json_option
@pass_context
def sync(ctx: Context, server_id: str, wait: bool, as_json: bool) -> None:
    """Observe power and health now (sync.server-state)."""
    reply = ctx.client().post(f"/v1/servers/{server_id}/sync")
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


@servers.command("decommission")
@click.argument("server_id")
@click.option("--force", is_flag=True, help="Even if the BMC cannot be reached.")
@click.confirmation_option(prompt="Decommission this server? It cannot be undone.")
@wait_option
@json_option
@pass_context
def decommission(ctx: Context, server_id: str, force: bool, wait: bool, as_json: bool) -> None:
    """Decommission a server (server.decommission); asks first unless --yes."""
    reply = ctx.client().delete(f"/v1/servers/{server_id}", force="true" if force else None)
    show_accepted(ctx, reply, as_json=as_json, wait=wait)
