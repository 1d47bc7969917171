"""Property tests: random workflows run in random worlds, fed to the decider as the shell would.

A *world* is a simulated shell around the pure decider: it appends each decision's events to
the run's log, then carries out its effects — dispatches go to simulated agents, timers wait
in a timer table, locks live in a FIFO lock with (maybe) another holder. Hypothesis picks what
happens next:

* deliver any pending input (so independent inputs are reordered), or redeliver one already
  handled (duplicates);
* let an agent move an attempt on: it starts, then succeeds, fails (retryable, fatal, or with a
  code its policy refuses to retry), hangs until its timeout, reports late after a timeout, or
  is never picked up; agents append duplicate facts, heartbeat, and stop at cancel notices;
* fire any armed timer (the clock jumps to its due time);
* cancel or terminate at chosen moments; the other lock holder lets go;
* *crash*: take a decision but drop its effects; the input is then redelivered, with a
  ``Recover``, as the shell does. ``Recover`` also arrives on its own (the lock sweeper).

After the chaos the world calms down (inputs in order, agents succeed, timers fire in time
order) and the run must reach a terminal state within a bounded number of inputs.

Checked all along: the history stays well formed (``invariants.violations``), each decision's
state is ``fold`` of the history, and feeding the decision's input again — or any input handled
earlier — to the settled state yields no new events. At the end: a completed run succeeded each
step exactly once and in order; a cancelled or failed run compensated exactly the steps that
completed (or may have, having timed out) and declare a compensation, in reverse order; the run
holds no lock and waits in no queue.

Two more properties hunt known bugs and fail today (see the ``BUG`` tests in test_decider.py):
a run-wide cancel notice must never go out while a compensation step runs, and nothing may pull
an attempt's heartbeat deadline earlier than a heartbeat pushed it.

Runs are derandomized (the same examples every time); a failure prints the world's trace and a
``@reproduce_failure`` blob. Set ``INFRAFLOW_PROPERTY_EXAMPLES`` for a longer soak and
``INFRAFLOW_PROPERTY_RANDOM=1`` to explore new examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from infraflow.common.catalog import DEFAULT_CATALOG, Catalog, RetryPolicy, StepSpec, WorkflowType
from infraflow.common.contracts import (
    CancelRun,
    CompensationStarted,
    ErrorInfo,
    ExecuteStep,
    RunCancelled,
    RunCancelRequested,
    RunEvent,
    RunFailed,
    RunTimer,
    StartRun,
    StepFailed,
    StepScheduled,
    StepStarted,
    StepSucceeded,
    StepTimedOut,
)
from infraflow.common.contracts.base import OnBusy
from infraflow.common.invariants import violations
from infraflow.orchestrator.core import (
    AcquireLock,
    ArmTimer,
    Cancel,
    CancelTimer,
    Context,
    Decision,
    Dispatch,
    Effect,
    FactAppended,
    Heartbeat,
    Input,
    LockBusy,
    LockGranted,
    NotifyCancel,
    Recover,
    ReleaseLock,
    RunState,
    Start,
    TimerFired,
    decide,
    evolve,
    fold,
    initial,
)
from infraflow.orchestrator.core.state import failed_compensations

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUN = "run_p"
OTHER = "run_other"
NOPE = "NOPE"
"""An error code some generated retry policies refuse to retry."""

_EXAMPLES = int(os.environ.get("INFRAFLOW_PROPERTY_EXAMPLES", "0"))
_RANDOM = os.environ.get("INFRAFLOW_PROPERTY_RANDOM") == "1"

T = TypeVar("T")


def _settings(examples: int, *, shrink: bool = True) -> settings:
    phases = (Phase.explicit, Phase.reuse, Phase.generate) + ((Phase.shrink,) if shrink else ())
    return settings(
        max_examples=_EXAMPLES or examples,
        deadline=None,
        derandomize=not _RANDOM,
        print_blob=True,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---- random workflows -----------------------------------------------------------------------

policies = st.builds(
    RetryPolicy,
    initial_interval_s=st.sampled_from([0.5, 2.0, 10.0]),
    backoff_coefficient=st.sampled_from([1.0, 2.0, 3.0]),
    max_interval_s=st.sampled_from([1.0, 20.0, 60.0]),
    max_attempts=st.integers(1, 4),
    non_retryable_codes=st.sampled_from([frozenset(), frozenset({NOPE})]),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
)
timeouts = st.sampled_from([5.0, 30.0, 120.0])
heartbeat_timeouts = st.sampled_from([None, None, 4.0, 15.0])


@st.composite
def step_specs(draw: st.DrawFn, name: str, heartbeats: bool) -> StepSpec:
    hb = draw(st.sampled_from([4.0, 15.0]) if heartbeats else heartbeat_timeouts)
    return StepSpec(
        name=name,
        executor="test",
        action=f"do_{name}",
        timeout_s=draw(timeouts),
        heartbeat_timeout_s=hb,
        retry=draw(policies),
    )


@st.composite
def workflows(draw: st.DrawFn, heartbeats: bool = False, compensable: bool = False) -> WorkflowType:
    """1 to 5 steps, some with a compensation, each with its own timeouts and retry policy
    (``compensable``: 2 to 5 steps, all with a compensation)."""
    steps: list[StepSpec] = []
    for i in range(draw(st.integers(2 if compensable else 1, 5))):
        undo = step_specs(f"undo{i}", heartbeats)
        comp = draw(undo if compensable else st.none() | undo)
        s = draw(step_specs(f"s{i}", heartbeats))
        steps.append(StepSpec(**{**_fields(s), "compensation": comp}))
    return WorkflowType(
        name="prop.wf",
        trigger="test",
        description="generated",
        resource_type="server",
        steps=tuple(steps),
        mutating=draw(st.sampled_from([True, True, True, False])),
    )


def _fields(s: StepSpec) -> dict[str, Any]:
    return {f: getattr(s, f) for f in s.__struct_fields__}


# ---- the simulated world --------------------------------------------------------------------

Script = Literal["ok", "retryable", "fatal", "nope", "hang", "late", "lost"]
_KIND: tuple[Script, ...] = ("ok", "ok", "ok", "ok", "ok", "retryable", "late", "hang")
_FLAKY: tuple[Script, ...] = (
    "ok",
    "ok",
    "ok",
    "retryable",
    "fatal",
    "nope",
    "hang",
    "late",
    "lost",
)
_HOSTILE: tuple[Script, ...] = ("retryable", "retryable", "fatal", "nope", "hang", "lost", "late")


@dataclass(frozen=True)
class Mood:
    """How agents treat the attempts they are given, forward and compensating; once the world
    calms down forward attempts succeed and compensations do ``calm_compensation``."""

    forward: tuple[Script, ...]
    compensation: tuple[Script, ...]
    calm_compensation: Script = "ok"


MOODS: dict[str, Mood] = {
    "kind": Mood(_KIND, _KIND),
    "flaky": Mood(_FLAKY, _FLAKY),
    "hostile": Mood(_HOSTILE, _HOSTILE),
    # forward steps succeed until one fails for good; undoing keeps failing, even when calm
    "saga": Mood(("ok", "ok", "ok", "ok", "fatal"), (*_HOSTILE, "ok"), "retryable"),
}


@dataclass
class Task:
    """A simulated agent working on one dispatched attempt."""

    cmd: ExecuteStep
    script: Script
    ignores_cancel: bool
    stage: Literal["queued", "running", "done"] = "queued"
    told_to_stop: bool = False
    last_fact: RunEvent | None = None


@dataclass
class Lock:
    """The resource lock as ``adapters.locks.ResourceLocks`` keeps it: a holder and a FIFO."""

    holder: str | None = None
    queue: list[str] = field(default_factory=list)

    def acquire(self, run: str, fail_if_busy: bool) -> str | None:
        if self.holder is None:
            self.holder = run
            return None
        if self.holder == run:
            return None
        if run not in self.queue and not fail_if_busy:
            self.queue.append(run)
        return self.holder

    def release(self, run: str) -> str | None:
        if self.holder != run:
            if run in self.queue:
                self.queue.remove(run)
            return None
        self.holder = self.queue.pop(0) if self.queue else None
        return self.holder


class Dice:
    """The world's randomness: a list of small numbers drawn once by hypothesis (fast to
    generate, and it shrinks towards fewer, smaller choices — the first option of each)."""

    def __init__(self, rolls: list[int]) -> None:
        self.rolls = rolls
        self.used = 0

    @property
    def left(self) -> bool:
        return self.used < len(self.rolls)

    def roll(self, n: int) -> int:
        """A number in ``range(n)``."""
        if not self.left:
            return 0
        self.used += 1
        return self.rolls[self.used - 1] % n

    def pick(self, options: Sequence[T]) -> T:
        return options[self.roll(len(options))]


class World:
    """The shell, the agents, the timers and the lock around one run."""

    def __init__(
        self, wf: WorkflowType, on_busy: OnBusy, other_holds_lock: bool, mood: str = "flaky"
    ) -> None:
        self.wf = wf
        self.mood = MOODS[mood]
        self.catalog: Catalog = DEFAULT_CATALOG.with_types([wf])
        self.history: list[RunEvent] = []
        self.state: RunState = initial(RUN, "server", "srv_1")
        self.now = T0
        self.inbox: list[Input] = []
        self.handled: list[Input] = []
        self.timers: dict[str, RunTimer] = {}
        self.tasks: dict[str, Task] = {}
        self.lock = Lock(holder=OTHER if other_holds_lock else None)
        self.calm = False
        self.dice = Dice([])
        self.trace: list[str] = []
        self.decisions = 0
        self._decision_ids = 0
        self._fact_ids = 0
        # what the bug-hunting properties look at
        self.compensation_notices: list[str] = []
        self.heartbeat_regressions: list[str] = []
        self.inbox.append(Start(self.start_command(on_busy)))

    # -- commands -------------------------------------------------------------------------

    def start_command(self, on_busy: OnBusy) -> StartRun:
        return StartRun(
            run_id=RUN,
            resource_type="server",
            resource_id="srv_1",
            workflow_type=self.wf.name,
            input={"k": "v"},
            triggered_by="usr_prop",
            on_busy=on_busy,
        )

    def cancel_command(self, terminate: bool) -> CancelRun:
        return CancelRun(
            run_id=RUN,
            resource_type="server",
            resource_id="srv_1",
            requested_by="usr_prop",
            terminate=terminate,
        )

    # -- the log ----------------------------------------------------------------------------

    def append(self, events: tuple[RunEvent, ...] | list[RunEvent]) -> None:
        for e in events:
            self.history.append(e)
            self.state = evolve(self.state, e)
        problems = violations(self.history)
        assert problems == [], f"history broke the invariants: {problems}"

    def _new_decision_id(self) -> str:
        self._decision_ids += 1
        return f"evt_d{self._decision_ids:05d}"

    def context(self, new_id: Callable[[], str] | None = None) -> Context:
        return Context(now=self.now, new_id=new_id or self._new_decision_id, catalog=self.catalog)

    # -- the shell ----------------------------------------------------------------------------

    def handle(self, inp: Input, *, crash: bool = False, earlier: int | None = None) -> None:
        """Decide on ``inp``, append the decision, then run its effects (unless we crash)."""
        before = self.state
        decision = decide(before, inp, self.context())
        self.trace.append(f"{'CRASH ' if crash else ''}{_describe(inp)} -> {_names(decision)}")
        if decision.retry_later:
            assert decision.events == ()
            self.inbox.append(inp)  # nak'd: redelivered later
            return
        self.decisions += 1
        self.append(decision.events)
        # self.state is the history folded event by event
        assert decision.state == self.state, "the decision's state is not fold(history)"
        self._check_idempotent(decision, inp, earlier)
        self._observe(decision)
        self.handled.append(inp)
        if crash:
            self.inbox.extend([inp, Recover()])  # not acked: redelivered, with a Recover
            return
        self.run_effects(decision.effects)

    def _check_idempotent(self, decision: Decision, inp: Input, earlier: int | None) -> None:
        def no_new_events(again: Input) -> None:
            d = decide(decision.state, again, self.context(lambda: "evt_again"))
            assert d.events == (), f"re-feeding {_describe(again)} decided {_names(d)}"

        no_new_events(inp)
        no_new_events(Recover())
        if earlier is not None and self.handled:
            no_new_events(self.handled[earlier % len(self.handled)])

    def _observe(self, decision: Decision) -> None:
        cur = decision.state.current
        for e in decision.effects:
            if (
                isinstance(e, NotifyCancel)
                and e.attempt is None
                and not e.terminate
                and cur is not None
                and cur.phase == "compensation"
                and cur.in_flight
            ):
                self.compensation_notices.append(
                    f"run-wide cancel notice while compensation {cur.step}#{cur.attempt} runs"
                )

    def run_effects(self, effects: tuple[Effect, ...]) -> None:
        for e in effects:
            match e:
                case Dispatch():
                    self.dispatch(e.command)
                case ArmTimer():
                    old = self.timers.get(e.name)
                    if e.timer.kind == "heartbeat" and old is not None and e.timer.due < old.due:
                        self.heartbeat_regressions.append(
                            f"{e.name} moved from {old.due - T0} to {e.timer.due - T0} "
                            f"at {self.now - T0}"
                        )
                    self.timers[e.name] = e.timer
                case CancelTimer():
                    self.timers.pop(e.name, None)
                case AcquireLock():
                    holder = self.lock.acquire(e.run_id, e.fail_if_busy)
                    self.inbox.append(LockGranted() if holder is None else LockBusy(holder))
                case ReleaseLock():
                    self.lock.release(e.run_id)  # the next holder is another run
                case NotifyCancel():
                    for t in self.tasks.values():
                        if t.stage != "running" or t.ignores_cancel:
                            continue
                        c = t.cmd
                        if e.attempt is None or e.attempt == (c.phase, c.index, c.attempt):
                            t.told_to_stop = True

    # -- agents -------------------------------------------------------------------------------

    def dispatch(self, cmd: ExecuteStep) -> None:
        if cmd.attempt_id in self.tasks:
            return  # the broker deduplicates the republished command
        undo = cmd.phase == "compensation"
        if self.calm:
            script: Script = self.mood.calm_compensation if undo else "ok"
            ignores = False
        else:
            script = self.dice.pick(self.mood.compensation if undo else self.mood.forward)
            ignores = self.dice.roll(3) == 0
        self.tasks[cmd.attempt_id] = Task(cmd, script, ignores)

    def can_progress(self, t: Task) -> bool:
        if t.stage == "queued":
            return t.script != "lost" or self._cancel_requested(t)
        if t.stage == "running":
            if t.told_to_stop or t.script in ("ok", "retryable", "fatal", "nope"):
                return True
            return t.script == "late" and self._timed_out(t)
        return False

    def _cancel_requested(self, t: Task) -> bool:
        return t.cmd.phase == "forward" and any(
            isinstance(e, RunCancelRequested) for e in self.history
        )

    def _timed_out(self, t: Task) -> bool:
        c = t.cmd
        return any(
            isinstance(e, StepTimedOut)
            and (e.phase, e.index, e.attempt) == (c.phase, c.index, c.attempt)
            for e in self.history
        )

    def progress(self, t: Task) -> None:
        """The agent does the next thing for attempt ``t`` and appends the fact."""
        if t.stage == "queued":
            if self._cancel_requested(t):  # asked to stop before it began: skip it
                self.report(t, StepFailed, error=_error("CANCELLED", False))
                t.stage = "done"
            else:
                self.report(t, StepStarted, worker="agent-1")
                t.stage = "running"
            return
        assert t.stage == "running"
        t.stage = "done"
        if t.told_to_stop:
            self.report(t, StepFailed, error=_error("CANCELLED", False))
        elif t.script in ("ok", "late"):
            self.report(t, StepSucceeded, output={"step": t.cmd.step, "attempt": t.cmd.attempt})
        elif t.script == "retryable":
            self.report(t, StepFailed, error=_error("FLAKY", True))
        elif t.script == "fatal":
            self.report(t, StepFailed, error=_error("FATAL", False))
        else:
            self.report(t, StepFailed, error=_error(NOPE, True))

    def report(self, t: Task, kind: type[RunEvent], **fields: Any) -> None:
        self._fact_ids += 1
        c = t.cmd
        factory: Any = kind
        fact: RunEvent = factory(
            event_id=f"evt_a{self._fact_ids:05d}",
            run_id=c.run_id,
            resource_type=c.resource_type,
            resource_id=c.resource_id,
            time=self.now,
            step=c.step,
            index=c.index,
            attempt=c.attempt,
            phase=c.phase,
            **fields,
        )
        t.last_fact = fact
        self.trace.append(f"agent {c.step}#{c.attempt}: {fact.name}")
        self.append([fact])
        self.inbox.append(FactAppended(fact))

    def duplicate_fact(self, t: Task) -> None:
        """An agent appends its last fact again (a retried publish)."""
        assert t.last_fact is not None
        self._fact_ids += 1
        fact = _with_id(t.last_fact, f"evt_a{self._fact_ids:05d}")
        self.trace.append(f"agent {t.cmd.step}#{t.cmd.attempt}: {fact.name} again")
        self.append([fact])
        self.inbox.append(FactAppended(fact))

    def heartbeat(self, t: Task) -> None:
        c = t.cmd
        self.trace.append(f"agent {c.step}#{c.attempt}: heartbeat")
        self.inbox.append(Heartbeat(c.index, c.attempt, c.phase))

    # -- time and the lock ------------------------------------------------------------------

    def fire(self, name: str) -> None:
        timer = self.timers.pop(name)
        self.now = max(self.now, timer.due)
        self.trace.append(f"timer {name} fires at {self.now - T0}")
        self.inbox.append(TimerFired(timer))

    def other_lets_go(self) -> None:
        nxt = self.lock.release(OTHER)
        self.trace.append(f"{OTHER} releases the lock to {nxt}")
        if nxt == RUN:
            self.inbox.append(Recover())  # ResumeRun

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # -- hypothesis ---------------------------------------------------------------------------

    def chaos(self, dice: Dice, cancels: list[tuple[int, bool]]) -> None:
        """Random things happen until the dice run out; cancels arrive at the chosen moments."""
        self.dice = dice
        n = 0
        while dice.left:
            for moment, terminate in cancels:
                if moment == n:
                    self.trace.append(f"{'terminate' if terminate else 'cancel'} sent")
                    self.inbox.append(Cancel(self.cancel_command(terminate)))
            n += 1
            if not self._one_random_thing(dice):
                return

    def _one_random_thing(self, dice: Dice) -> bool:
        movable = [t for t in self.tasks.values() if self.can_progress(t)]
        beating = [
            t for t in self.tasks.values() if t.stage == "running" and t.cmd.heartbeat_interval_s
        ]
        repeated = [t for t in self.tasks.values() if t.last_fact is not None]
        kinds: list[str] = []
        if self.inbox:
            kinds += ["deliver", "deliver", "deliver", "crash"]
        if self.handled:
            kinds += ["redeliver", "recover"]
        if movable:
            kinds += ["agent", "agent", "agent"]
        if beating:
            kinds += ["heartbeat", "heartbeat"]
        if repeated:
            kinds += ["duplicate fact"]
        if self.timers:
            kinds += ["timer", "timer"]
        if self.lock.holder == OTHER:
            kinds += ["other lets go"]
        if not kinds:
            return False
        kind = dice.pick(kinds)
        earlier = dice.roll(1000)
        if kind in ("deliver", "crash"):
            i = dice.roll(len(self.inbox))
            self.handle(self.inbox.pop(i), crash=kind == "crash", earlier=earlier)
        elif kind == "redeliver":
            self.handle(self.handled[earlier % len(self.handled)], earlier=earlier)
        elif kind == "recover":
            self.handle(Recover(), earlier=earlier)
        elif kind == "agent":
            self.tick(dice.pick([0.0, 1.0, 3.0]))
            self.progress(dice.pick(movable))
        elif kind == "heartbeat":
            self.tick(dice.pick([1.0, 3.0]))
            self.heartbeat(dice.pick(beating))
        elif kind == "duplicate fact":
            self.duplicate_fact(dice.pick(repeated))
        elif kind == "timer":
            self.fire(dice.pick(sorted(self.timers)))
        else:
            self.other_lets_go()
        return True

    def settle(self, budget: int) -> int:
        """The world calms down: inputs in order, new attempts succeed, timers fire in time
        order, the other holder lets go. Returns how many inputs it took to go quiet."""
        self.calm = True
        self.trace.append("--- calm ---")
        handled = 0
        for _ in range(budget * 4):
            if self.inbox:
                self.handle(self.inbox.pop(0))
                handled += 1
                continue
            movable = [t for t in self.tasks.values() if self.can_progress(t)]
            if movable:
                self.progress(movable[0])
            elif self.lock.holder == OTHER:
                self.other_lets_go()
            elif self.timers:
                self.fire(min(self.timers, key=lambda n: (self.timers[n].due, n)))
            else:
                return handled
        raise AssertionError(f"the world did not go quiet: {self.state.status}")


def _error(code: str, retryable: bool) -> ErrorInfo:
    return ErrorInfo(code=code, message=code.lower(), retryable=retryable)


def _with_id(e: RunEvent, event_id: str) -> RunEvent:
    fields = {f: getattr(e, f) for f in e.__struct_fields__}
    fields["event_id"] = event_id
    factory: Any = type(e)
    event: RunEvent = factory(**fields)
    return event


def _names(d: Decision) -> str:
    return ", ".join(e.name for e in d.events) or "-"


def _describe(inp: Input) -> str:
    match inp:
        case FactAppended():
            e: Any = inp.event
            return f"fact {e.name} {e.step}#{e.attempt}"
        case TimerFired():
            t = inp.timer
            return f"timer {t.kind} {t.phase[0]}{t.index}#{t.attempt}"
        case Cancel():
            return "terminate" if inp.command.terminate else "cancel"
        case Heartbeat():
            return f"heartbeat {inp.phase[0]}{inp.index}#{inp.attempt}"
        case _:
            return type(inp).__name__


# ---- expectations from the history ------------------------------------------------------------


def attempts_budget(wf: WorkflowType) -> int:
    n = 0
    for s in wf.steps:
        n += s.retry.max_attempts
        if s.compensation is not None:
            n += s.compensation.retry.max_attempts
    return n


def first_resolutions(history: list[RunEvent]) -> dict[tuple[str, int, int], RunEvent]:
    out: dict[tuple[str, int, int], RunEvent] = {}
    for e in history:
        if isinstance(e, (StepSucceeded, StepFailed, StepTimedOut)):
            out.setdefault((e.phase, e.index, e.attempt), e)
    return out


def check_outcome(world: World) -> None:
    """What the run's end says about the steps it ran and the compensations it chose."""
    wf, history = world.wf, world.history
    terminal = [e for e in history if e.name in ("run_completed", "run_failed", "run_cancelled")]
    assert len(terminal) == 1
    final = terminal[0]
    resolutions = first_resolutions(history)
    ended_at = history.index(final)

    if final.name == "run_completed":
        succeeded = [
            e.index
            for e in history[:ended_at]
            if isinstance(e, StepSucceeded)
            and e.phase == "forward"
            and resolutions[(e.phase, e.index, e.attempt)] is e
        ]
        assert succeeded == list(range(len(wf.steps))), succeeded
        assert not any(e.name == "compensation_started" for e in history)
        return

    terminated = isinstance(final, RunCancelled) and final.terminated
    comp = next((e for e in history if isinstance(e, CompensationStarted)), None)
    begun_at = history.index(comp) if comp is not None else ended_at
    touched = {
        e.index
        for e in history[:begun_at]
        if isinstance(e, (StepSucceeded, StepTimedOut))
        and e.phase == "forward"
        and resolutions[(e.phase, e.index, e.attempt)] is e
    }
    expected = sorted((i for i in touched if wf.steps[i].compensation is not None), reverse=True)
    scheduled_comps: list[int] = []
    for e in history[:ended_at]:
        if (
            isinstance(e, StepScheduled)
            and e.phase == "compensation"
            and e.index not in scheduled_comps
        ):
            scheduled_comps.append(e.index)
    if comp is None:
        if not terminated:
            assert expected == [], f"nothing compensated, yet {expected} completed"
        assert scheduled_comps == []
        return
    assert comp.indices == expected
    assert comp.steps == [wf.steps[i].compensation.name for i in expected]  # type: ignore[union-attr]
    if terminated:
        assert scheduled_comps == expected[: len(scheduled_comps)]
        return
    assert scheduled_comps == expected, "compensation did not run in reverse order"
    undone = {  # a compensation that succeeded only after it was given up still counts as given up
        e.index
        for e in history[:ended_at]
        if isinstance(e, StepSucceeded)
        and e.phase == "compensation"
        and resolutions[(e.phase, e.index, e.attempt)] is e
    }
    given_up = [wf.steps[i].compensation.name for i in expected if i not in undone]  # type: ignore[union-attr]
    assert isinstance(final, (RunFailed, RunCancelled))
    assert final.compensated == (not given_up)
    if isinstance(final, RunFailed) and given_up:
        assert final.error.details is not None
        assert final.error.details["failedCompensations"] == given_up


def check_no_forward_work_after_cancel(history: list[RunEvent]) -> None:
    asked = False
    terminate = False
    for e in history:
        if isinstance(e, RunCancelRequested):
            asked, terminate = True, terminate or e.terminate
        elif isinstance(e, StepScheduled):
            assert not (asked and e.phase == "forward"), "a forward step scheduled after cancel"
            assert not terminate, "a step scheduled after terminate"


# ---- the properties -----------------------------------------------------------------------------


def run_world(
    data: st.DataObject,
    wf: WorkflowType,
    *,
    max_steps: int = 100,
    max_cancels: int = 2,
    moods: Sequence[str] = tuple(MOODS),
) -> World:
    on_busy: OnBusy = data.draw(st.sampled_from(["queue", "queue", "fail"]), label="on_busy")
    other = data.draw(st.booleans(), label="another run holds the lock")
    mood = data.draw(st.sampled_from(moods), label="mood")
    cancels = data.draw(
        st.lists(st.tuples(st.integers(0, max_steps), st.booleans()), max_size=max_cancels),
        label="cancels (moment, terminate)",
    )
    size = data.draw(st.integers(max_steps // 2, 4 * max_steps), label="dice")
    dice = Dice(list(data.draw(st.binary(min_size=size, max_size=size), label="rolls")))
    world = World(wf, on_busy, other, mood)
    try:
        world.chaos(dice, cancels)
        budget = 20 + len(world.inbox) + 12 * attempts_budget(wf)
        handled = world.settle(budget)
        assert world.state.terminal, f"run not terminal once the world calmed: {world.state}"
        assert handled <= budget, f"{handled} inputs to finish (bound {budget})"
    except BaseException:
        note("\n".join(world.trace))
        raise
    return world


def check_world(world: World) -> None:
    """Everything a finished world must satisfy (the trace is printed when it does not)."""
    event(f"ended: {world.state.status}")
    event(f"decisions: {min(world.decisions // 25 * 25, 100)}+")
    comp = world.state.compensation
    if comp is not None:
        event(f"compensated ({comp.cause}), given up: {bool(failed_compensations(world.state))}")
    try:
        assert violations(world.history) == []
        assert fold(initial(RUN, "server", "srv_1"), world.history) == world.state
        check_outcome(world)
        check_no_forward_work_after_cancel(world.history)
        if world.wf.mutating:
            assert world.lock.holder != RUN, "a finished run still holds its lock"
            assert RUN not in world.lock.queue, "a finished run still waits in the queue"
    except BaseException:
        note("\n".join(world.trace))
        raise


@_settings(300)
@given(wf=workflows(), data=st.data())
def test_random_worlds_keep_the_invariants(wf: WorkflowType, data: st.DataObject) -> None:
    check_world(run_world(data, wf))


@_settings(200)
@given(wf=workflows(compensable=True), data=st.data())
def test_random_sagas_compensate_what_they_did(wf: WorkflowType, data: st.DataObject) -> None:
    """The same, in worlds built to compensate: every step can be undone, forward steps
    mostly succeed until one fails, compensation steps mostly fail."""
    check_world(run_world(data, wf, moods=("saga", "saga", "hostile")))


@_settings(200)
@given(wf=workflows(heartbeats=True), data=st.data())
def test_cancel_notices_never_target_a_running_compensation(
    wf: WorkflowType, data: st.DataObject
) -> None:
    """A (non-terminate) cancel is finished *by* compensation; agents stop whatever step of the
    run a run-wide notice matches, so the decider must not send one while compensating.
    Fails today: see test_decider.py::test_scheduling_a_compensation_after_cancel_…"""
    world = run_world(data, wf, max_steps=40)

    assert world.compensation_notices == [], "\n".join(world.trace)


@_settings(200)
@given(wf=workflows(heartbeats=True), data=st.data())
def test_heartbeat_deadlines_never_move_earlier(wf: WorkflowType, data: st.DataObject) -> None:
    """Heartbeats push an attempt's heartbeat deadline out; nothing may pull it back in (a
    deadline moved into the past times a healthy step out). Fails today: see
    test_decider.py::test_recover_does_not_pull_the_heartbeat_deadline_into_the_past."""
    world = run_world(data, wf, max_steps=40, max_cancels=0)

    assert world.heartbeat_regressions == [], "\n".join(world.trace)


def test_a_calm_world_completes_every_generated_workflow_shape() -> None:
    """Sanity check of the driver itself: with nothing going wrong, the run completes."""
    steps = tuple(
        StepSpec(name=f"s{i}", executor="test", action="do", heartbeat_timeout_s=4.0)
        for i in range(3)
    )
    wf = WorkflowType(
        name="prop.wf", trigger="t", description="d", resource_type="server", steps=steps
    )
    world = World(wf, "queue", other_holds_lock=True)
    world.settle(100)

    assert world.history[-1].name == "run_completed"
    assert [e.name for e in world.history].count("step_scheduled") == 3
    assert world.lock.holder is None
