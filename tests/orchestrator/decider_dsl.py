"""Given/when/then for the pure decider: past events in, one input, new events and effects out.

    g = Given("test.saga").running()           # past decisions, produced by the decider itself
    g.reported(g.started_fact(0))              # an agent's fact: appended, then decided on
    then = g.when(g.succeeded_fact(0, output={"a": 1}))   # appended, then decided on: now
    assert then.names == ["step_scheduled"]
    assert then.effect(ArmTimer, name="timeout-f1-1").timer.due == at(120)

Every ``when`` (and every decision taken while building the given) checks the two things any
decision must keep: the history stays well formed (``invariants.violations``) and the decision's
state is exactly ``fold`` of the history. Time is a fixed clock (``T0`` plus offsets) and ids
come from counters, so expected values are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from infraflow.common.catalog import DEFAULT_CATALOG, Catalog, RetryPolicy, StepSpec, WorkflowType
from infraflow.common.contracts import (
    CancelRun,
    ErrorInfo,
    Phase,
    RunEvent,
    RunTimer,
    StartRun,
    StepFailed,
    StepStarted,
    StepSucceeded,
)
from infraflow.common.contracts.base import OnBusy
from infraflow.common.contracts.commands import TimerKind
from infraflow.common.invariants import violations
from infraflow.orchestrator.core import (
    Context,
    Decision,
    Effect,
    FactAppended,
    Input,
    LockGranted,
    RunState,
    Start,
    TimerFired,
    decide,
    fold,
    initial,
    timer_name,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUN = "run_1"
RESOURCE_TYPE = "server"
RESOURCE_ID = "srv_1"

E = TypeVar("E")
Ev = TypeVar("Ev", bound=RunEvent)


def at(seconds: float) -> datetime:
    """A point on the test clock, ``seconds`` after ``T0``."""
    return T0 + timedelta(seconds=seconds)


class Ids:
    """Deterministic ``new_id``: ``<prefix>_0001``, ``<prefix>_0002``…"""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.prefix}_{self.n:04d}"


# ---- test workflow types -------------------------------------------------------------------

FLAT = RetryPolicy(
    initial_interval_s=5.0, backoff_coefficient=2.0, max_interval_s=8.0, max_attempts=3, jitter=0.0
)
"""No jitter: delays of exactly 5 s, then 8 s (10 s capped)."""
JITTERY = RetryPolicy(
    initial_interval_s=2.0,
    backoff_coefficient=2.0,
    max_interval_s=60.0,
    max_attempts=4,
    jitter=0.1,
    non_retryable_codes=frozenset({"BAD_INPUT"}),
)
ONCE = RetryPolicy(max_attempts=1, jitter=0.0)
TWICE = RetryPolicy(initial_interval_s=3.0, max_attempts=2, jitter=0.0)


def spec(
    name: str,
    *,
    timeout_s: float = 30.0,
    heartbeat_timeout_s: float | None = None,
    retry: RetryPolicy = FLAT,
    compensation: StepSpec | None = None,
    executable: bool = True,
    params: dict[str, Any] | None = None,
) -> StepSpec:
    return StepSpec(
        name=name,
        executor="test",
        action=f"do_{name}",
        timeout_s=timeout_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        retry=retry,
        compensation=compensation,
        executable=executable,
        params=params or {},
    )


def workflow(name: str, *steps: StepSpec, mutating: bool = True) -> WorkflowType:
    return WorkflowType(
        name=name,
        trigger="test",
        description=name,
        resource_type=RESOURCE_TYPE,
        steps=steps,
        mutating=mutating,
    )


SAGA = workflow(
    "test.saga",
    spec("a", compensation=spec("undo_a", retry=TWICE), params={"p": 1}),
    spec(
        "b",
        timeout_s=120.0,
        heartbeat_timeout_s=20.0,
        compensation=spec("undo_b", retry=TWICE, heartbeat_timeout_s=15.0),
    ),
    spec("c", retry=JITTERY),
)
"""a and b can be undone (b also heartbeats), c cannot; c retries with jitter."""
PLAIN = workflow("test.plain", spec("x"), spec("y"))
"""Two steps, nothing to compensate."""
SOLO = workflow("test.solo", spec("only", retry=ONCE))
READ = workflow("test.read", spec("look"), mutating=False)
DRAFT = workflow("test.draft", spec("ready"), spec("later", executable=False))
DRAFT_UNDO = workflow(
    "test.draft-undo", spec("ready", compensation=spec("unready", executable=False))
)
"""Declared but not executable: a step, or only a compensation, has no executor yet."""
THREE = workflow("test.three", spec("p"), spec("q"), spec("r", retry=ONCE))
"""Three steps without compensation, for retry-from-step."""

CATALOG = DEFAULT_CATALOG.with_types([SAGA, PLAIN, SOLO, READ, DRAFT, DRAFT_UNDO, THREE])


# ---- given ----------------------------------------------------------------------------------


@dataclass
class Given:
    """A run's past: its events, built from past decisions and agents' facts."""

    workflow_type: str
    catalog: Catalog = CATALOG
    run_id: str = RUN
    resource_type: str = RESOURCE_TYPE
    resource_id: str = RESOURCE_ID
    clock: datetime = T0
    events: list[RunEvent] = field(default_factory=list)
    facts: Ids = field(default_factory=lambda: Ids("evt_fact"))
    decisions: Ids = field(default_factory=lambda: Ids("evt_past"))
    news: Ids = field(default_factory=lambda: Ids("evt_new"))

    # -- clock ---------------------------------------------------------------------------

    def at(self, seconds: float) -> Given:
        """Move the clock to ``T0 + seconds`` (it never goes back)."""
        moved = at(seconds)
        assert moved >= self.clock, "the test clock only moves forward"
        self.clock = moved
        return self

    # -- what the decider sees -----------------------------------------------------------

    @property
    def state(self) -> RunState:
        return fold(initial(self.run_id, self.resource_type, self.resource_id), self.events)

    @property
    def wf(self) -> WorkflowType:
        return self.catalog[self.workflow_type]

    def context(self, new_id: Callable[[], str] | None = None) -> Context:
        return Context(now=self.clock, new_id=new_id or Ids("evt_new"), catalog=self.catalog)

    # -- commands and inputs -------------------------------------------------------------

    def start_command(
        self,
        *,
        workflow_type: str | None = None,
        on_busy: OnBusy = "queue",
        site: str | None = None,
        input: dict[str, Any] | None = None,
        retry_of: str | None = None,
        from_step: str | None = None,
        project_id: str | None = "prj_1",
    ) -> StartRun:
        return StartRun(
            run_id=self.run_id,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            workflow_type=workflow_type or self.workflow_type,
            input=input if input is not None else {"target": "On"},
            triggered_by="usr_tester",
            project_id=project_id,
            site=site,
            on_busy=on_busy,
            request_id="req_1",
            retry_of=retry_of,
            from_step=from_step,
        )

    def cancel_command(self, *, terminate: bool = False, by: str = "usr_op") -> CancelRun:
        return CancelRun(
            run_id=self.run_id,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            requested_by=by,
            reason="test",
            terminate=terminate,
        )

    def timer(
        self,
        kind: TimerKind,
        index: int,
        attempt: int = 1,
        phase: Phase = "forward",
        due: datetime | None = None,
    ) -> RunTimer:
        return RunTimer(
            run_id=self.run_id,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            kind=kind,
            index=index,
            attempt=attempt,
            phase=phase,
            due=due or self.clock,
        )

    # -- agents' facts (built, not yet appended) -----------------------------------------

    def _attempt(self, index: int, attempt: int, phase: Phase) -> dict[str, Any]:
        step = self.wf.steps[index]
        if phase == "compensation":
            assert step.compensation is not None
            step = step.compensation
        return {
            "event_id": self.facts(),
            "run_id": self.run_id,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "time": self.clock,
            "step": step.name,
            "index": index,
            "attempt": attempt,
            "phase": phase,
        }

    def started_fact(self, index: int, attempt: int = 1, phase: Phase = "forward") -> StepStarted:
        return StepStarted(**self._attempt(index, attempt, phase), worker="agent-1")

    def succeeded_fact(
        self,
        index: int,
        attempt: int = 1,
        phase: Phase = "forward",
        output: dict[str, Any] | None = None,
    ) -> StepSucceeded:
        return StepSucceeded(**self._attempt(index, attempt, phase), output=output or {})

    def failed_fact(
        self,
        index: int,
        attempt: int = 1,
        phase: Phase = "forward",
        *,
        code: str = "FLAKY",
        retryable: bool = True,
    ) -> StepFailed:
        error = ErrorInfo(code=code, message=f"{code} happened", retryable=retryable)
        return StepFailed(**self._attempt(index, attempt, phase), error=error)

    # -- building the past ---------------------------------------------------------------

    def decided(self, inp: Input | RunEvent) -> Given:
        """The decider handled ``inp`` in the past (a fact is appended first)."""
        _, decision = self._decide(inp, self.context(self.decisions))
        assert not decision.retry_later, f"{inp!r} arrived too early"
        self.events.extend(decision.events)
        return self

    def reported(self, *facts: RunEvent) -> Given:
        """Agents appended ``facts`` and the decider handled each of them."""
        for f in facts:
            self.decided(f)
        return self

    def appended(self, *facts: RunEvent) -> Given:
        """Agents appended ``facts``; the decider has not handled them yet."""
        self.events.extend(facts)
        return self

    def created(self, **start: Any) -> Given:
        """The start command was handled (a mutating run now waits for its lock)."""
        original = start.pop("original", None)
        return self.decided(Start(self.start_command(**start), original))

    def running(self, **start: Any) -> Given:
        """Created and holding its lock: the first step is scheduled."""
        self.created(**start)
        if self.wf.mutating:
            self.decided(LockGranted())
        return self

    def step_ok(
        self,
        index: int,
        attempt: int = 1,
        phase: Phase = "forward",
        output: dict[str, Any] | None = None,
    ) -> Given:
        """The attempt started and succeeded, and the decider moved on."""
        return self.reported(
            self.started_fact(index, attempt, phase),
            self.succeeded_fact(index, attempt, phase, output),
        )

    def step_failed(
        self,
        index: int,
        attempt: int = 1,
        phase: Phase = "forward",
        *,
        code: str = "FLAKY",
        retryable: bool = True,
    ) -> Given:
        return self.reported(
            self.started_fact(index, attempt, phase),
            self.failed_fact(index, attempt, phase, code=code, retryable=retryable),
        )

    def fired(
        self, kind: TimerKind, index: int, attempt: int = 1, phase: Phase = "forward"
    ) -> Given:
        return self.decided(self.timer_fired(kind, index, attempt, phase))

    def timer_fired(
        self, kind: TimerKind, index: int, attempt: int = 1, phase: Phase = "forward"
    ) -> TimerFired:
        return TimerFired(self.timer(kind, index, attempt, phase))

    # -- when ------------------------------------------------------------------------------

    def when(self, inp: Input | RunEvent, *, ids: Ids | None = None) -> Then:
        """Decide on ``inp`` now; a fact is appended to the log first, as an agent would."""
        before, decision = self._decide(inp, self.context(ids or self.news))
        return Then(before=before, decision=decision, now=self.clock, given=self)

    def _decide(self, inp: Input | RunEvent, ctx: Context) -> tuple[list[RunEvent], Decision]:
        if isinstance(inp, RunEvent):
            self.events.append(inp)
            inp = FactAppended(inp)
        before = list(self.events)
        state = self.state
        decision = decide(state, inp, ctx)
        history = before + list(decision.events)
        if history:
            problems = violations(history)
            assert problems == [], f"history broke the invariants: {problems}"
        expected = fold(initial(self.run_id, self.resource_type, self.resource_id), history)
        assert decision.state == expected, "the decision's state is not fold(history)"
        return before, decision


# ---- then -----------------------------------------------------------------------------------


@dataclass
class Then:
    """What one decision produced."""

    before: list[RunEvent]
    decision: Decision
    now: datetime
    given: Given

    @property
    def events(self) -> tuple[RunEvent, ...]:
        return self.decision.events

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.decision.events]

    @property
    def effects(self) -> tuple[Effect, ...]:
        return self.decision.effects

    @property
    def state(self) -> RunState:
        return self.decision.state

    @property
    def history(self) -> list[RunEvent]:
        return self.before + list(self.decision.events)

    def event(self, kind: type[Ev], **where: Any) -> Ev:
        """The one new event of type ``kind`` (whose fields equal ``where``)."""
        found = [
            e
            for e in self.decision.events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in where.items())
        ]
        assert len(found) == 1, f"expected one {kind.__name__} {where}, got {self.names}"
        return found[0]

    def effects_of(self, kind: type[E], **where: Any) -> list[E]:
        return [
            e
            for e in self.decision.effects
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in where.items())
        ]

    def effect(self, kind: type[E], **where: Any) -> E:
        """The one effect of type ``kind`` (whose fields equal ``where``)."""
        found = self.effects_of(kind, **where)
        assert len(found) == 1, f"expected one {kind.__name__} {where}, got {self.effects}"
        return found[0]

    def nothing(self) -> None:
        """No new events and no effects."""
        assert self.decision.events == (), self.names
        assert self.decision.effects == (), self.decision.effects

    def then(self) -> Given:
        """Keep the new events as the past of the next ``when``."""
        self.given.events.extend(self.decision.events)
        return self.given


def timer_names(effects: tuple[Effect, ...], kind: type[Any]) -> set[str]:
    """Names of the timers in ``effects`` of type ``ArmTimer`` or ``CancelTimer``."""
    return {e.name for e in effects if isinstance(e, kind)}


__all__ = [
    "CATALOG",
    "DRAFT",
    "DRAFT_UNDO",
    "FLAT",
    "JITTERY",
    "ONCE",
    "PLAIN",
    "READ",
    "RUN",
    "SAGA",
    "SOLO",
    "T0",
    "THREE",
    "TWICE",
    "Given",
    "Ids",
    "Then",
    "at",
    "spec",
    "timer_name",
    "timer_names",
    "workflow",
]
