"""Well-formedness of a run's event history — the checker every end-to-end test applies.

Rules (each violation is reported as a sentence):
* it starts with ``run_created``, which appears once; event ids are unique;
* at most one terminal event; after it only late agent facts may appear (a step that finished
  after the orchestrator stopped waiting for it is still a true fact);
* ``run_started`` before any step; every fact names an attempt that was scheduled before it;
* per step and phase, attempts are numbered 1, 2, 3… and a new attempt is scheduled only once
  the previous one was resolved (succeeded, failed or timed out);
* an attempt's first resolution decides it: no step succeeds twice;
* when the run ended, every scheduled attempt was resolved — except the one in flight when the
  run was terminated, or cancelled with a step still running;
* a completed run succeeded or skipped every step, in order.
"""

from __future__ import annotations

from collections.abc import Sequence

from infraflow.common.contracts import (
    AGENT_FACTS,
    TERMINAL_EVENTS,
    RunCancelled,
    RunCreated,
    RunEvent,
    StepFailed,
    StepScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    StepTimedOut,
)

_RESOLUTIONS = ("step_succeeded", "step_failed", "step_timed_out")


class MalformedHistoryError(AssertionError):
    pass


def violations(events: Sequence[RunEvent]) -> list[str]:
    """Every rule the history breaks (empty when it is well formed)."""
    out: list[str] = []
    if not events:
        return ["no events"]
    if not isinstance(events[0], RunCreated):
        out.append(f"first event is {events[0].name}, not run_created")
    ids = [e.event_id for e in events]
    if len(set(ids)) != len(ids):
        out.append("duplicate event ids")
    run_ids = {e.run_id for e in events}
    if len(run_ids) != 1:
        out.append(f"events of several runs: {sorted(run_ids)}")

    created = sum(1 for e in events if e.name == "run_created")
    if created != 1:
        out.append(f"{created} run_created events")
    terminal_at: int | None = None
    started = False
    # (phase, index) -> last attempt number scheduled, and attempt -> resolution
    last_attempt: dict[tuple[str, int], int] = {}
    resolved: dict[tuple[str, int, int], str] = {}
    begun: set[tuple[str, int, int]] = set()
    successes: dict[tuple[str, int], int] = {}
    skipped: list[int] = []
    forward_done: list[int] = []

    for pos, e in enumerate(events):
        if terminal_at is not None and e.name not in AGENT_FACTS:
            out.append(f"{e.name} at position {pos} after the terminal event")
            continue
        if e.name in TERMINAL_EVENTS:
            if terminal_at is not None:
                out.append("more than one terminal event")
            terminal_at = pos
            continue
        if e.name == "run_started":
            started = True
        if isinstance(e, StepSkipped):
            if not started:
                out.append("step_skipped before run_started")
            skipped.append(e.index)
            continue
        if isinstance(e, StepScheduled):
            if not started:
                out.append(f"step {e.step} scheduled before run_started")
            key = (e.phase, e.index)
            prev = last_attempt.get(key, 0)
            if e.attempt != prev + 1:
                out.append(f"{e.step} ({e.phase}) attempt {e.attempt} follows attempt {prev}")
            for ph, ix, at in list(_open(last_attempt, resolved)):
                if (ph, ix, at) != (e.phase, e.index, e.attempt):
                    out.append(
                        f"{e.step} scheduled while attempt {at} of step #{ix} ({ph}) unresolved"
                    )
            last_attempt[key] = e.attempt
            continue
        if isinstance(e, (StepStarted, StepSucceeded, StepFailed, StepTimedOut)):
            akey = (e.phase, e.index, e.attempt)
            if last_attempt.get((e.phase, e.index), 0) < e.attempt:
                out.append(f"{e.name} for {e.step} attempt {e.attempt} that was never scheduled")
                continue
            if isinstance(e, StepStarted):
                begun.add(akey)
                continue
            first = akey not in resolved
            if isinstance(e, StepSucceeded) and akey not in begun:
                out.append(f"{e.step} attempt {e.attempt} succeeded without step_started")
            if first:
                resolved[akey] = e.name
                if isinstance(e, StepSucceeded):
                    skey = (e.phase, e.index)
                    successes[skey] = successes.get(skey, 0) + 1
                    if successes[skey] > 1:
                        out.append(f"{e.step} ({e.phase}) succeeded twice")
                    if e.phase == "forward":
                        forward_done.append(e.index)
            elif e.name == "step_timed_out":
                out.append(f"{e.step} attempt {e.attempt} timed out after it was resolved")

    if terminal_at is not None:
        final = events[terminal_at]
        unresolved = list(_open(last_attempt, resolved))
        tolerated = isinstance(final, RunCancelled) or final.name == "run_failed"
        if unresolved and not (tolerated and len(unresolved) == 1):
            out.append(f"attempts unresolved at the end: {unresolved}")
        if final.name == "run_completed":
            created_ev = events[0]
            n = len(created_ev.steps) if isinstance(created_ev, RunCreated) else 0
            order = sorted(skipped) + forward_done
            if sorted(order) != list(range(n)) or order != sorted(order):
                out.append(f"completed run did not run every step once in order: {order} of {n}")
    return out


def _open(
    last_attempt: dict[tuple[str, int], int], resolved: dict[tuple[str, int, int], str]
) -> list[tuple[str, int, int]]:
    return [(ph, ix, at) for (ph, ix), at in last_attempt.items() if (ph, ix, at) not in resolved]


def assert_well_formed(events: Sequence[RunEvent]) -> None:
    problems = violations(events)
    if problems:
        names = ", ".join(e.name for e in events)
        raise MalformedHistoryError("; ".join(problems) + f" — history: {names}")
