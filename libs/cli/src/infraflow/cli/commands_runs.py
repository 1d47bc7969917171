"""``infraflow runs``: list, get, events, watch, retry, cancel, and the bulk actions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import click

from infraflow.cli.app import (
    Context,
    finish_watch,
    json_option,
    pass_context,
    show_accepted,
    wait_option,
)
from infraflow.cli.client import RunEventItem
from infraflow.cli.output import (
    console,
    describe_event,
    events_table,
    print_json,
    run_detail,
    runs_table,
)

STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
_FILTERS: Final = (
    ("type_", "type", "--type", "Workflow types, comma-separated (e.g. server.provision)."),
    ("status", "status", "--status", "Statuses, comma-separated: " + ", ".join(STATUSES) + "."),
    ("resource_type", "resourceType", "--resource-type", "server, cluster or vm."),
    ("resource_id", "resourceId", "--resource-id", "Resource ids, comma-separated."),
    ("triggered_by", "triggeredBy", "--triggered-by", "Who started them (user ids)."),
    ("project", "projectId", "--project", "Project ids, comma-separated."),
    ("since", "since", "--since", "Started at or after (ISO 8601 date or date-time)."),
    ("until", "until", "--until", "Started before or at (ISO 8601 date or date-time)."),
)


def run_filters(function: Callable[..., Any]) -> Callable[..., Any]:
    """The filters of ``GET /v1/workflows/runs`` as options."""
    for name, _, flag, text in reversed(_FILTERS):
        function = click.option(flag, name, metavar="VALUES", help=text)(function)
    return function


def filter_values(options: dict[str, Any]) -> dict[str, str]:
    """The given filter options under their API names."""
    return {api: options[name] for name, api, _, _ in _FILTERS if options.get(name)}


@click.group()
def runs() -> None:
    """Workflow runs: list, inspect, follow, retry and cancel them."""


@runs.command("list")
@run_filters
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--all", "everything", is_flag=True, help="Every matching run (all pages).")
@json_option
@pass_context
def list_runs(ctx: Context, /, limit: int, everything: bool, as_json: bool, **filters: Any) -> None:
    """List runs, newest first."""
    params = {**filter_values(filters), "pageSize": min(limit, 500) if not everything else 500}
    items = list(ctx.client().pages("/v1/workflows/runs", params, None if everything else limit))
    if as_json:
        print_json(items)
    else:
        console().print(runs_table(items))


@runs.command("get")
@click.argument("run_id")
@click.option("--events", "with_events", is_flag=True, help="Also show the event history.")
@json_option
@pass_context
def get_run(ctx: Context, run_id: str, with_events: bool, as_json: bool) -> None:
    """Show one run: status, progress, steps with attempts, compensation and error."""
    client = ctx.client()
    run = client.get(f"/v1/workflows/runs/{run_id}").data
    events = client.run_events(run_id) if with_events else []
    if as_json:
        if with_events:
            run = {**run, "events": [{"seq": e.seq, "event": e.event} for e in events]}
        print_json(run)
        return
    out = console()
    for part in run_detail(run):
        out.print(part)
    if with_events:
        out.print(events_table(events))


@runs.command("events")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the run ends.")
@json_option
@pass_context
def run_events(ctx: Context, run_id: str, follow: bool, as_json: bool) -> None:
    """The run's event history (its audit trail), oldest first."""
    client = ctx.client()
    if not follow:
        items = client.run_events(run_id)
        if as_json:
            print_json([{"seq": e.seq, "event": e.event} for e in items])
        else:
            console().print(events_table(items))
        return
    client.get(f"/v1/workflows/runs/{run_id}")  # 404 before following
    out = console()
    for item in client.follow_events(run_id):
        if item is None:
            continue
        if as_json:  # one JSON document per line
            click.echo(_compact({"seq": item.seq, "event": item.event}))
        else:
            out.print(_event_line(item), markup=False)


def _event_line(item: RunEventItem) -> str:
    return f"{item.seq:>6}  {str(item.event.get('time', ''))[:23]}  {describe_event(item.event)}"


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@runs.command("watch")
@click.argument("run_id")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds (exit 124).",
)
@json_option
@pass_context
def watch(ctx: Context, run_id: str, timeout_s: float | None, as_json: bool) -> None:
    """Follow a run live: progress bar, current step and ETA, until it ends.

    Exits 0 if the run completed, 1 if it failed, 3 if it was cancelled."""
    finish_watch(ctx, run_id, as_json=as_json, timeout_s=timeout_s)


@runs.command("retry")
@click.argument("run_id")
@click.option("--from-step", help="Skip the steps before this one (they keep their outputs).")
@click.option("--fail-if-busy", is_flag=True, help="409 instead of queueing behind another run.")
@wait_option
@json_option
@pass_context
def retry(
    ctx: Context,
    run_id: str,
    from_step: str | None,
    fail_if_busy: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Retry a failed or cancelled run as a new run."""
    reply = ctx.client().post(
        f"/v1/workflows/runs/{run_id}/retry",
        {"fromStep": from_step} if from_step else {},
        onBusy="fail" if fail_if_busy else None,
    )
    show_accepted(ctx, reply, as_json=as_json, wait=wait)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", help="Why (recorded in the run's events).")
@click.option("--terminate", is_flag=True, help="Hard stop without compensation (admins).")
@wait_option
@json_option
@pass_context
def cancel(
    ctx: Context, run_id: str, reason: str | None, terminate: bool, wait: bool, as_json: bool
) -> None:
    """Cancel a pending or running run (its compensation runs unless --terminate)."""
    body: dict[str, Any] = {"terminate": terminate}
    if reason:
        body["reason"] = reason
    reply = ctx.client().post(f"/v1/workflows/runs/{run_id}/cancel", body)
    if as_json and not wait:
        print_json(reply.data)
        return
    if not as_json:
        console().print(f"Cancel requested for {run_id}", markup=False)
    if wait:
        finish_watch(ctx, run_id, as_json=as_json, timeout_s=None)


def _bulk(
    ctx: Context,
    action: str,
    body: dict[str, Any],
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Dry run first (the count), then (if confirmed) the real call: one line per run."""
    client = ctx.client()
    path = f"/v1/workflows/runs:{action}"
    preview = client.post(path, {**body, "dryRun": True}).data
    out = console()
    if dry_run:
        print_json(preview) if as_json else _show_preview(preview, action)
        return
    if not preview.get("runIds"):
        if as_json:
            print_json({**preview, "dryRun": False, "results": []})
        else:
            out.print(f"No run matches: nothing to {action}.")
        return
    if not yes:
        _show_preview(preview, action)
        click.confirm(f"{action.capitalize()} {len(preview['runIds'])} run(s)?", abort=True)
    result = client.post(path, body).data
    if as_json:
        print_json(result)
        return
    for item in result.get("results") or []:
        if item.get("success"):
            meta = item.get("meta") or {}
            target = meta.get("workflowId")
            extra = f" -> {target}" if target and target != item["runId"] else ""
            out.print(f"{item['runId']}  {item['status']} accepted{extra}", markup=False)
        else:
            error = item.get("error") or {}
            out.print(
                f"{item['runId']}  {item['status']} {error.get('code')}: {error.get('message')}",
                markup=False,
            )
    more = " (more runs match: run it again)" if result.get("hasMore") else ""
    out.print(f"{result.get('accepted')} accepted, {result.get('failed')} refused{more}")


def _show_preview(preview: dict[str, Any], action: str) -> None:
    exact = "" if preview.get("matchedExact", True) else "at least "
    console().print(
        f"{exact}{preview.get('matched')} run(s) match; a {action} acts on "
        f"{len(preview.get('runIds') or [])} (limit {preview.get('limit')}): "
        + " ".join(preview.get("runIds") or []),
        markup=False,
    )


def _bulk_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("--dry-run", is_flag=True, help="Only count and list the runs.")(
        function
    )
    function = click.option("--limit", type=click.IntRange(min=1), help="At most this many runs.")(
        function
    )
    function = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(
        function
    )
    return run_filters(function)


@runs.command("bulk-retry")
@_bulk_options
@click.option("--from-step", help="Skip the steps before this one in every run.")
@json_option
@pass_context
def bulk_retry(
    ctx: Context,
    /,
    dry_run: bool,
    limit: int | None,
    yes: bool,
    from_step: str | None,
    as_json: bool,
    **filters: Any,
) -> None:
    """Retry every failed or cancelled run the filters select (a dry run counts them first)."""
    body: dict[str, Any] = {"filter": filter_values(filters)}
    if limit:
        body["limit"] = limit
    if from_step:
        body["fromStep"] = from_step
    _bulk(ctx, "retry", body, dry_run=dry_run, yes=yes, as_json=as_json)


@runs.command("bulk-cancel")
@_bulk_options
@click.option("--reason", help="Why (recorded in each run's events).")
@click.option("--terminate", is_flag=True, help="Hard stop without compensation (admins).")
@json_option
@pass_context
def bulk_cancel(
    ctx: Context,
    /,
    dry_run: bool,
    limit: int | None,
    yes: bool,
    reason: str | None,
    terminate: bool,
    as_json: bool,
    **filters: Any,
) -> None:
    """Cancel every pending or running run the filters select (a dry run counts them first)."""
    body: dict[str, Any] = {"filter": filter_values(filters), "terminate": terminate}
    if limit:
        body["limit"] = limit
    if reason:
        body["reason"] = reason
    _bulk(ctx, "cancel", body, dry_run=dry_run, yes=yes, as_json=as_json)
