"""The ``infraflow`` command: the root group, its settings, error reporting and exit codes.

The API's URL and token come from ``--url``/``--token`` or ``INFRAFLOW_URL``/``INFRAFLOW_TOKEN``.
Exit codes: 0 success, 1 the watched run failed, 2 usage error, 3 the watched run was
cancelled, 4 the API refused the request (its code and message are printed), 5 the API could
not be reached, 124 ``--timeout`` ran out while watching.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import click
import httpx

from infraflow.cli.client import ApiClient, ApiError, CliError, Reply
from infraflow.cli.output import console, print_json, record_grid, resources_table
from infraflow.cli.watch import EXIT_BY_STATUS, view_for, watch_run

DEFAULT_URL: Final = "http://127.0.0.1:8080"
_EPILOG = (
    "Exit codes: 0 ok, 1 run failed, 2 usage, 3 run cancelled, 4 API error, 5 API unreachable, "
    "124 timed out. Environment: INFRAFLOW_URL, INFRAFLOW_TOKEN."
)


@dataclass
class Context:
    """What every command gets: where the API is and how to authenticate."""

    url: str
    token: str | None
    timeout_s: float = 15.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False)
    """Where requests go instead of the network (tests: ``httpx.MockTransport``)."""
    _client: ApiClient | None = field(default=None, init=False, repr=False)

    def client(self) -> ApiClient:
        """The API client, made on first use."""
        if self._client is None:
            self._client = ApiClient(
                self.url, self.token, timeout_s=self.timeout_s, transport=self.transport
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _Root(click.Group):
    """Reports ``CliError``s (the API's code and message) and exits with their code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            report(exc)
            ctx.exit(exc.exit_code)


def report(exc: CliError) -> None:
    """Print an error on stderr: ``Error: CODE: message`` plus field errors and details."""
    err = console(stderr=True)
    if isinstance(exc, ApiError):
        err.print(f"[bold red]Error:[/] {exc.code}: {exc.message}", markup=True, highlight=False)
        details = dict(exc.details)
        fields = details.pop("fields", None)
        if isinstance(fields, Mapping):
            for name, message in fields.items():
                err.print(f"  {name}: {message}", markup=False)
        for key, value in details.items():
            err.print(f"  {key}: {value}", markup=False)
        if exc.request_id:
            err.print(f"  (HTTP {exc.status}, request {exc.request_id})", markup=False)
    else:
        err.print(f"[bold red]Error:[/] {exc.message}", markup=True, highlight=False)


@click.group(cls=_Root, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="INFRAFLOW_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Base URL of the Infraflow API (env INFRAFLOW_URL).",
)
@click.option(
    "--token",
    envvar="INFRAFLOW_TOKEN",
    help="Bearer token (env INFRAFLOW_TOKEN).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Seconds to wait for each API request.",
)
@click.version_option(package_name="infraflow-cli", prog_name="infraflow")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None, timeout_s: float) -> None:
    """Operate Infraflow: runs, servers, clusters, VMs and metrics."""
    if not isinstance(ctx.obj, Context):  # tests may hand in their own (a mock transport)
        ctx.obj = Context(url=url, token=token, timeout_s=timeout_s)
    ctx.call_on_close(ctx.obj.close)


pass_context = click.make_pass_decorator(Context)


def json_option(function: Any) -> Any:
    """``--json``: print the API's data as JSON instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's data).")(
        function
    )


def wait_option(function: Any) -> Any:
    """``--wait``: follow the started run to its end (exit code by its outcome)."""
    return click.option(
        "--wait", is_flag=True, help="Watch the run to its end; the exit code tells how it ended."
    )(function)


def show_accepted(ctx: Context, reply: Reply, *, as_json: bool, wait: bool) -> None:
    """A 202: the run that was started, then (with ``--wait``) its progress to the end."""
    run_id = str(reply.meta.get("workflowId") or (reply.data or {}).get("id"))
    if as_json and not wait:
        print_json(reply.data)
        return
    out = console()
    if not as_json:
        data = reply.data or {}
        out.print(
            f"Accepted {run_id} ({data.get('type')} on {data.get('resourceType')} "
            f"{data.get('resourceId') or '-'}); follow it with: infraflow runs watch {run_id}",
            markup=False,
        )
    if wait:
        finish_watch(ctx, run_id, as_json=as_json, timeout_s=None)


def finish_watch(ctx: Context, run_id: str, *, as_json: bool, timeout_s: float | None) -> None:
    """Watch a run to its end and exit with the code of its outcome."""
    client = ctx.client()
    if as_json:
        run = watch_run(client, run_id, _Quiet(), timeout_s=timeout_s)
        print_json(run)
    else:
        run = watch_run(client, run_id, view_for(console()), timeout_s=timeout_s)
    code = EXIT_BY_STATUS.get(str(run.get("status")), 1)
    if code:
        click.get_current_context().exit(code)


class _Quiet:
    """A view that shows nothing (``--json``: only the final run is printed)."""

    def start(self, run: Mapping[str, Any]) -> None:
        pass

    def event(self, item: Any) -> None:
        pass

    def update(self, run: Mapping[str, Any]) -> None:
        pass

    def finish(self, run: Mapping[str, Any]) -> None:
        pass


def list_items(
    ctx: Context,
    path: str,
    params: dict[str, Any],
    *,
    title: str,
    columns: tuple[str, ...],
    limit: int,
    everything: bool,
    as_json: bool,
) -> None:
    """A paginated list of resources as a table (or JSON)."""
    query = {k: v for k, v in params.items() if v}
    query["pageSize"] = 500 if everything else min(limit, 500)
    items = list(ctx.client().pages(path, query, None if everything else limit))
    if as_json:
        print_json(items)
    else:
        console().print(resources_table(title, items, columns))


def show_item(ctx: Context, path: str, as_json: bool) -> None:
    """One resource, field by field (or JSON)."""
    data = ctx.client().get(path).data
    if as_json:
        print_json(data)
    else:
        console().print(record_grid(data))


def list_options(function: Any) -> Any:
    """``--limit``, ``--all`` and ``--json`` of a list command."""
    function = click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)(
        function
    )
    function = click.option("--all", "everything", is_flag=True, help="Every item (all pages).")(
        function
    )
    return json_option(function)


def _register_commands() -> None:
    from infraflow.cli.commands_compute import clusters, metrics, vms
    from infraflow.cli.commands_runs import runs
    from infraflow.cli.commands_servers import servers

    for command in (runs, servers, clusters, vms, metrics):
        cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="infraflow"))


if __name__ == "__main__":
    main()
