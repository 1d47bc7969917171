"""What the commands print: rich tables and panels for people, plain JSON for programs
(``--json`` prints the API's ``data`` and nothing else, so it always parses)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_STYLES: Final = {
    "pending": "yellow",
    "running": "cyan",
    "completed": "green",
    "succeeded": "green",
    "skipped": "dim",
    "failed": "bold red",
    "cancelled": "magenta",
    "timed_out": "red",
}
_WIDE: Final = 160
"""Table width when stdout is not a terminal (pipes, CI logs): wide enough for ids."""


def console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr), wide when not attached to a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(
        file=stream,
        width=None if stream.isatty() else _WIDE,
        highlight=False,
        soft_wrap=False,
    )


def print_json(data: Any) -> None:
    """The API's data as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def status_text(status: Any) -> Text:
    value = str(status or "-")
    return Text(value, style=STATUS_STYLES.get(value, ""))


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z``) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def short_time(value: Any) -> str:
    parsed = parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S") if parsed else "-"


def duration(ms: Any) -> str:
    """Milliseconds as ``850ms``, ``12.3s``, ``4m05s`` or ``2h03m``."""
    if not isinstance(ms, int | float) or ms < 0:
        return "-"
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress_of(run: Mapping[str, Any]) -> str:
    progress = run.get("progress") or {}
    return f"{progress.get('completedSteps', 0)}/{progress.get('totalSteps', 0)}"


def runs_table(runs: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title="Runs", title_justify="left")
    for name in ("ID", "TYPE", "STATUS", "RESOURCE", "STEPS", "CREATED", "DURATION", "BY"):
        table.add_column(name, no_wrap=name in ("ID", "RESOURCE", "CREATED"))
    for run in runs:
        table.add_row(
            str(run.get("id")),
            str(run.get("type")),
            status_text(run.get("status")),
            f"{run.get('resourceType')} {run.get('resourceId') or '-'}",
            progress_of(run),
            short_time(run.get("createdAt")),
            duration(run.get("durationMs")),
            str(run.get("triggeredBy") or "-"),
        )
    return table


def run_detail(run: Mapping[str, Any]) -> list[Any]:
    """A run: a summary grid, its steps (with attempts), compensation and error."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: Sequence[tuple[str, Any]] = (
        ("Run", run.get("id")),
        ("Type", run.get("type")),
        ("Status", status_text(run.get("status"))),
        ("Resource", f"{run.get('resourceType')} {run.get('resourceId') or '-'}"),
        ("Progress", f"{progress_of(run)}  {(run.get('progress') or {}).get('currentStep') or ''}"),
        ("Triggered by", run.get("triggeredBy")),
        ("Created", short_time(run.get("createdAt"))),
        ("Started", short_time(run.get("startedAt"))),
        ("Completed", short_time(run.get("completedAt"))),
        ("Duration", duration(run.get("durationMs"))),
        ("Estimate", duration(run.get("estimatedDuration"))),
        ("Retry of", run.get("retryOf") or "-"),
        ("From step", run.get("fromStep") or "-"),
        ("Retries", ", ".join(run.get("retries") or []) or "-"),
    )
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, Text) else str(value))
    parts: list[Any] = [grid]
    for title, steps in (("Steps", run.get("steps")), ("Compensation", run.get("compensation"))):
        if steps:
            parts.append(steps_table(title, steps))
    error = run.get("error")
    if isinstance(error, Mapping):
        parts.append(
            Text(
                f"Error: {error.get('code')} at step {error.get('step') or '-'}: "
                f"{error.get('message')}",
                style="bold red",
            )
        )
    return parts


def steps_table(title: str, steps: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("#", "STEP", "STATUS", "ATTEMPTS", "DURATION", "ERROR"):
        table.add_column(name)
    for step in steps:
        attempts = step.get("attempts") or []
        error = step.get("error") or (attempts[-1].get("error") if attempts else None) or {}
        table.add_row(
            str(step.get("index", "")),
            str(step.get("name")),
            status_text(step.get("status")),
            str(len(attempts)),
            duration(step.get("durationMs")),
            f"{error.get('code')}: {error.get('message')}" if error else "",
        )
    return table


def events_table(items: Iterable[Any]) -> Table:
    table = Table(title="Events", title_justify="left")
    for name in ("SEQ", "TIME", "EVENT", "DETAIL"):
        table.add_column(name, no_wrap=name != "DETAIL")
    for item in items:
        table.add_row(
            str(item.seq),
            short_time(item.event.get("time")),
            item.name,
            describe_event(item.event) or "",
        )
    return table


def describe_event(event: Mapping[str, Any]) -> str:
    """One line about an event (what a person watching a run wants to know)."""
    name = str(event.get("event") or "")
    step = event.get("step")
    attempt = event.get("attempt")
    compensating = event.get("phase") == "compensation"
    where = f"{'undo ' if compensating else ''}{step} (attempt {attempt})" if step else ""
    error = event.get("error") or {}
    match name:
        case "step_scheduled" | "step_started" | "step_succeeded":
            return f"{name.removeprefix('step_')} {where}"
        case "step_failed":
            again = " (will retry)" if error.get("retryable") else ""
            return f"failed {where}: {error.get('code')}: {error.get('message')}{again}"
        case "step_timed_out":
            return f"timed out {where} ({event.get('timeout')})"
        case "step_skipped":
            return f"skipped {step} (output kept from {event.get('fromRun')})"
        case "run_queued":
            return f"queued behind {event.get('waitingFor')}"
        case "compensation_started":
            return "compensating: " + ", ".join(event.get("steps") or [])
        case "run_cancel_requested":
            hard = " (terminate)" if event.get("terminate") else ""
            return f"cancel requested by {event.get('requestedBy')}{hard}"
        case "run_failed":
            return f"failed: {error.get('code')}: {error.get('message')}"
        case _:
            return name.removeprefix("run_").replace("_", " ")


def resources_table(
    title: str, items: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> Table:
    """A table of servers, clusters or VMs: ``columns`` are fields (camelCase) of the items."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(_header(column), no_wrap=column in ("id", "lastRunId"))
    for item in items:
        table.add_row(
            *(
                status_text(item.get(c)) if c in ("state", "phase") else _cell(item.get(c))
                for c in columns
            )
        )
    return table


def record_grid(item: Mapping[str, Any]) -> Table:
    """Every field of one resource, one per row (nested values as compact JSON)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in item.items():
        grid.add_row(_header(key).capitalize(), _cell(value))
    return grid


def metrics_view(data: Mapping[str, Any]) -> list[Any]:
    """Totals, success rate, durations per type, error codes and (if asked) buckets."""
    by_status = data.get("byStatus") or {}
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Runs", str(data.get("total", 0)))
    summary.add_row("In flight", str(data.get("inFlight", 0)))
    summary.add_row("Success rate", percent(data.get("successRate")))
    summary.add_row("Retries", str(data.get("retries", 0)))
    summary.add_row("By status", "  ".join(f"{k} {v}" for k, v in by_status.items()))
    types = Table(title="By type", title_justify="left")
    for name in ("TYPE", "RUNS", "SUCCESS", "P50", "P95", "P99", "MAX", "RETRIES"):
        types.add_column(name)
    for name, t in sorted((data.get("byType") or {}).items()):
        d = t.get("durationMs") or {}
        types.add_row(
            name,
            str(t.get("count", 0)),
            percent(t.get("successRate")),
            *(duration(d.get(k)) for k in ("p50", "p95", "p99", "max")),
            str(t.get("retries", 0)),
        )
    parts: list[Any] = [summary, types]
    codes = data.get("topErrorCodes") or []
    if codes:
        errors = Table(title="Top error codes", title_justify="left")
        errors.add_column("CODE")
        errors.add_column("RUNS")
        for entry in codes:
            errors.add_row(str(entry.get("code")), str(entry.get("count")))
        parts.append(errors)
    buckets = data.get("buckets")
    if buckets:
        parts.append(buckets_chart(buckets))
    return parts


def buckets_chart(buckets: Sequence[Mapping[str, Any]], width: int = 40) -> Table:
    """Runs per bucket as horizontal bars, coloured by status."""
    table = Table(title="Runs per bucket", title_justify="left")
    table.add_column("START", no_wrap=True)
    table.add_column("RUNS")
    table.add_column("")
    peak = max((int(b.get("total") or 0) for b in buckets), default=0) or 1
    for bucket in buckets:
        bar = Text()
        for status, count in (bucket.get("byStatus") or {}).items():
            cells = round(int(count) * width / peak)
            bar.append("█" * cells, style=STATUS_STYLES.get(status, ""))
        table.add_row(short_time(bucket.get("start")), str(bucket.get("total", 0)), bar)
    return table


def percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def _header(name: str) -> str:
    out = "".join(f" {c}" if c.isupper() else c for c in name)
    return out.upper()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
