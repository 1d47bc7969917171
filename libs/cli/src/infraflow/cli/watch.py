"""``runs watch``: follow a run until it ends, showing its progress, current step and ETA.

The run's events drive the display (streamed over SSE where the gateway can, else polled);
after each one the run is read again for its progress. On a terminal a rich progress bar is
redrawn in place; elsewhere (pipes, CI logs) each change is one line. The exit code tells how
the run ended: 0 completed, 1 failed, 3 cancelled (124 if ``--timeout`` ran out first).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from infraflow.cli.client import TERMINAL_STATUSES, ApiClient, CliError, RunEventItem
from infraflow.cli.output import describe_event, duration, parse_time, status_text

EXIT_COMPLETED: Final = 0
EXIT_FAILED: Final = 1
EXIT_CANCELLED: Final = 3
EXIT_TIMEOUT: Final = 124
EXIT_BY_STATUS: Final = {
    "completed": EXIT_COMPLETED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}
_SETTLE_S: Final = 10.0
"""After the terminal event, how long the read model may take to show the final status."""


class WatchTimeoutError(CliError):
    exit_code = EXIT_TIMEOUT


class View(Protocol):
    """How a watched run is shown."""

    def start(self, run: Mapping[str, Any]) -> None: ...
    def event(self, item: RunEventItem) -> None: ...
    def update(self, run: Mapping[str, Any]) -> None: ...
    def finish(self, run: Mapping[str, Any]) -> None: ...


def eta_seconds(run: Mapping[str, Any], now: datetime) -> float | None:
    """Time left: the run's estimate minus the time it has run; once past the estimate, the
    time per completed step so far times the steps left. ``None`` when unknown or ended."""
    if run.get("status") in TERMINAL_STATUSES:
        return 0.0
    started = parse_time(run.get("startedAt"))
    if started is None:
        estimate = run.get("estimatedDuration")
        return estimate / 1000 if isinstance(estimate, int | float) and estimate > 0 else None
    elapsed = max(0.0, (now - started).total_seconds())
    estimate = run.get("estimatedDuration")
    if isinstance(estimate, int | float) and estimate / 1000 > elapsed:
        return estimate / 1000 - elapsed
    progress = run.get("progress") or {}
    done, total = int(progress.get("completedSteps") or 0), int(progress.get("totalSteps") or 0)
    if done and total > done:
        return elapsed / done * (total - done)
    return None


def format_eta(seconds: float | None) -> str:
    return "?" if seconds is None else duration(seconds * 1000)


def watch_run(
    client: ApiClient, run_id: str, view: View, *, timeout_s: float | None = None
) -> dict[str, Any]:
    """Follow ``run_id`` until it ends; returns the final run."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    run: dict[str, Any] = client.get(f"/v1/workflows/runs/{run_id}").data
    view.start(run)
    if run.get("status") not in TERMINAL_STATUSES:
        for item in client.follow_events(run_id):
            if item is not None:
                view.event(item)
            run = client.get(f"/v1/workflows/runs/{run_id}").data
            view.update(run)
            if deadline is not None and time.monotonic() > deadline:
                raise WatchTimeoutError(f"run {run_id} is still {run.get('status')}")
        run = _settled(client, run_id, run)
    view.finish(run)
    return run


def _settled(client: ApiClient, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
    """The run once the read model shows its terminal status (it trails the log a little)."""
    deadline = time.monotonic() + _SETTLE_S
    while run.get("status") not in TERMINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(0.1)
        run = client.get(f"/v1/workflows/runs/{run_id}").data
    return run


def outcome_line(run: Mapping[str, Any]) -> Text:
    """The last line: how the run ended."""
    text = Text(f"{run.get('id')} ")
    text.append_text(status_text(run.get("status")))
    text.append(f" after {duration(run.get('durationMs'))}")
    error = run.get("error")
    if isinstance(error, Mapping) and run.get("status") != "completed":
        text.append(
            f": {error.get('code')} at step {error.get('step') or '-'}: {error.get('message')}"
        )
    return text


def _header(run: Mapping[str, Any]) -> str:
    return (
        f"Watching {run.get('id')}: {run.get('type')} on {run.get('resourceType')} "
        f"{run.get('resourceId') or '-'} (estimate {duration(run.get('estimatedDuration'))})"
    )


def _counts(run: Mapping[str, Any]) -> tuple[int, int, str]:
    progress = run.get("progress") or {}
    total = int(progress.get("totalSteps") or 0)
    done = int(progress.get("completedSteps") or 0)
    return done, total, str(progress.get("currentStep") or "-")


class LineView:
    """One line per change: for pipes and logs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: tuple[Any, ...] = ()

    def start(self, run: Mapping[str, Any]) -> None:
        self.console.print(_header(run))
        self.update(run)

    def event(self, item: RunEventItem) -> None:
        self.console.print(f"  {item.event.get('time', '')[11:23]}  {describe_event(item.event)}")

    def update(self, run: Mapping[str, Any]) -> None:
        done, total, step = _counts(run)
        state = (run.get("status"), done, total, step)
        if state == self._last:
            return
        self._last = state
        percent = int(done * 100 / total) if total else 0
        eta = format_eta(eta_seconds(run, datetime.now(UTC)))
        self.console.print(
            f"[{done}/{total}] {percent:3d}% {run.get('status')} · step {step} · ETA {eta}"
        )

    def finish(self, run: Mapping[str, Any]) -> None:
        self.update(run)
        self.console.print(outcome_line(run))


class _EtaColumn(ProgressColumn):
    """ETA from the run's estimate (recomputed at every refresh)."""

    def render(self, task: Task) -> Text:
        run = task.fields.get("run") or {}
        return Text(f"ETA {format_eta(eta_seconds(run, datetime.now(UTC)))}", style="cyan")


class LiveView:
    """A progress bar redrawn in place, with events printed above it: for terminals."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[status]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("step [cyan]{task.fields[step]}"),
            _EtaColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: Any = None

    def start(self, run: Mapping[str, Any]) -> None:
        self.console.print(_header(run))
        done, total, step = _counts(run)
        self.progress.start()
        self._task = self.progress.add_task(
            "run", total=total or None, completed=done, status=run.get("status"), step=step, run=run
        )

    def event(self, item: RunEventItem) -> None:
        self.progress.console.print(f"  {describe_event(item.event)}", style="dim")

    def update(self, run: Mapping[str, Any]) -> None:
        done, total, step = _counts(run)
        self.progress.update(
            self._task,
            total=total or None,
            completed=done,
            status=run.get("status"),
            step=step,
            run=run,
        )

    def finish(self, run: Mapping[str, Any]) -> None:
        self.update(run)
        self.progress.stop()
        self.console.print(outcome_line(run))


def view_for(console: Console) -> View:
    """A live bar on a terminal, lines otherwise."""
    return LiveView(console) if console.is_terminal else LineView(console)
