"""The step-execution protocol every agent follows, so an agent is just a table of actions.

For each ``ExecuteStep`` (shared durable consumer per executor and site):
1. skip it (``CANCELLED``) if the run was asked to stop before the step began;
2. append ``step_started``; run the action, sending heartbeats on ``wf.heartbeat.<runId>``
   and keeping the message in progress; a ``CancelNotice`` cancels the action at its next await;
3. append ``step_succeeded`` (the action's output) or ``step_failed`` (``code``, ``retryable``);
4. ack. Fact appends carry deterministic message ids, so a redelivered command that runs again
   does not duplicate facts within the stream's duplicate window.

Actions must be idempotent (check-then-act against the real system): a step runs at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from infraflow.common import streams, subjects
from infraflow.common.contracts import (
    CancelNotice,
    ErrorInfo,
    ExecuteStep,
    RunEvent,
    StepFailed,
    StepHeartbeat,
    StepScheduled,
    StepStarted,
    StepSucceeded,
    encode,
)
from infraflow.common.errors import AppendConflictError, InfraflowError
from infraflow.common.ids import new_id
from infraflow.common.jetstream import PullConsumer, StoredMsg, StreamReader, append
from infraflow.common.logs import adopt_trace, run_id_var, step_var, trace_headers
from infraflow.common.metrics import STEP_DURATION, start_consumer_watch
from infraflow.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_step_decoder = msgspec.json.Decoder(ExecuteStep)
_cancel_decoder = msgspec.json.Decoder(CancelNotice)
_scheduled_decoder = msgspec.json.Decoder(StepScheduled)


class StepError(InfraflowError):
    """An action failed in a way the workflow should know about (``code``, ``retryable``)."""

    code = "STEP_FAILED"


class StepCancelledError(StepError):
    code = "CANCELLED"
    retryable = False


class StepContext:
    """What an action gets: its command, heartbeats, and whether it was asked to stop."""

    def __init__(self, worker: StepWorker, cmd: ExecuteStep, msg: Msg | None) -> None:
        self.command = cmd
        self.cancelled = asyncio.Event()
        self._worker = worker
        self._msg = msg

    @property
    def input(self) -> dict[str, Any]:
        return self.command.input

    @property
    def params(self) -> dict[str, Any]:
        return self.command.params

    async def heartbeat(self, progress: float | None = None, message: str | None = None) -> None:
        """Tell the orchestrator the step is alive (and optionally how far it got)."""
        c = self.command
        hb = StepHeartbeat(
            run_id=c.run_id,
            resource_type=c.resource_type,
            resource_id=c.resource_id,
            index=c.index,
            attempt=c.attempt,
            phase=c.phase,
            step=c.step,
            time=datetime.now(UTC),
            progress=progress,
            message=message,
        )
        with contextlib.suppress(Exception):
            await self._worker.nc.publish(subjects.heartbeat(c.run_id), encode(hb))
            if self._msg is not None:
                await self._msg.in_progress()

    def check_cancelled(self) -> None:
        """Raise at a safe point if the run was asked to stop."""
        if self.cancelled.is_set():
            raise StepCancelledError("the run was cancelled")


Action = Callable[[StepContext], Coroutine[Any, Any, dict[str, Any]]]


class StepWorker:
    """Runs the actions of one executor (``bmc``, ``k8s``) for the configured sites."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        executor: str,
        sites: list[str],
        actions: Mapping[str, Action],
        *,
        worker_name: str | None = None,
        max_inflight: int = 32,
        default_heartbeat_s: float = 10.0,
        shutdown_grace_s: float = 20.0,
    ) -> None:
        self.nc = nc
        self.js = js
        self.executor = executor
        self.sites = sites
        self.actions = dict(actions)
        self.worker_name = worker_name or f"{executor}-agent@{socket.gethostname()}"
        self.max_inflight = max_inflight
        self.default_heartbeat_s = default_heartbeat_s
        self.shutdown_grace_s = shutdown_grace_s
        self._shutting_down = False
        self._running: dict[str, set[StepContext]] = {}
        self._active: set[str] = set()
        self._reader = StreamReader(nc)
        self._keepalive_s = default_heartbeat_s
        """How often a running step renews its message (below the consumer's ack wait)."""
        self.completed = 0
        self.failed = 0
        self.verdict_reads = 0
        """Attempts checked by reading the run back (a redelivery, or the run moved on)."""

    async def run(self, stop: asyncio.Event) -> None:
        cancel_sub = await self.nc.subscribe(subjects.CANCELS_ALL, cb=self._on_cancel)
        for site in self.sites:
            # renew in-flight messages well within the consumer's real ack wait
            with contextlib.suppress(Exception):
                info = await self.js.consumer_info(
                    streams.STEPS, streams.agent_consumer(self.executor, site).durable
                )
                if info.config.ack_wait:
                    self._keepalive_s = min(self._keepalive_s, float(info.config.ack_wait) / 3)
        consumers = [
            PullConsumer(
                self.nc,
                streams.STEPS,
                streams.agent_consumer(self.executor, site).durable,
                self.handle_step,
                max_inflight=self.max_inflight,
            )
            for site in self.sites
        ]

        async def grace() -> None:
            await stop.wait()
            deadline = asyncio.get_running_loop().time() + self.shutdown_grace_s
            while self._running and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            # whatever is still running goes back to the stream for another agent
            self._shutting_down = True
            for contexts in list(self._running.values()):
                for ctx in contexts:
                    ctx.cancelled.set()

        grace_task = asyncio.create_task(grace())
        backlog = [streams.agent_consumer(self.executor, site) for site in self.sites]
        watch = start_consumer_watch(self.js, backlog, stop)
        try:
            await asyncio.gather(*(c.run(stop) for c in consumers))
        finally:
            grace_task.cancel()
            watch.cancel()
            with contextlib.suppress(Exception):
                await cancel_sub.unsubscribe()

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            notice = _cancel_decoder.decode(msg.data)
        except msgspec.ValidationError:
            return
        for ctx in self._running.get(notice.run_id, ()):
            c = ctx.command
            if notice.matches(c.phase, c.index, c.attempt):
                ctx.cancelled.set()

    async def handle_step(self, msg: Msg) -> None:
        try:
            cmd = _step_decoder.decode(msg.data)
        except msgspec.ValidationError:
            log.error("undecodable step command on %s; dropped", msg.subject)
            await msg.term()
            return
        if cmd.attempt_id in self._active:
            # a redelivery of an attempt this process is still running (its ack deadline passed
            # under load): the running one acks the message when it finishes; never run twice
            await msg.in_progress()
            return
        run_token = run_id_var.set(cmd.run_id)
        step_token = step_var.set(f"{cmd.step}#{cmd.attempt}")
        adopt_trace(msg.headers)  # this message's task only: the trace of the step command
        self._active.add(cmd.attempt_id)
        try:
            if await self._execute(cmd, msg):
                await msg.ack()
            else:
                await msg.nak()  # interrupted by shutdown: another agent runs it again
        finally:
            self._active.discard(cmd.attempt_id)
            run_id_var.reset(run_token)
            step_var.reset(step_token)

    async def execute(self, cmd: ExecuteStep) -> bool:
        """Run one command without a broker message (tests, tools)."""
        return await self._execute(cmd, None)

    async def _execute(self, cmd: ExecuteStep, msg: Msg | None) -> bool:
        """Run the attempt and record its outcome; False if shutdown interrupted it."""
        started = await self._start_if_current(cmd, msg)
        if started is None:
            verdict = await self._still_wanted(cmd)
            if verdict == "cancelled":
                await self._fact(cmd, StepFailed, error=_cancelled_error(cmd))
                return True
            if verdict == "stale":
                log.info("attempt %s is no longer current; not executed again", cmd.attempt_id)
                return True
            started = await self._fact(cmd, StepStarted, worker=self.worker_name)
        ctx = StepContext(self, cmd, msg)
        self._running.setdefault(cmd.run_id, set()).add(ctx)
        began, outcome = time.monotonic(), "failed"
        try:
            output = await self._run_action(ctx)
        except StepCancelledError as exc:
            if self._shutting_down:
                outcome = "interrupted"
                return False
            outcome = "cancelled"
            self.failed += 1
            await self._result(cmd, started, StepFailed, error=_error(exc, cmd))
        except StepError as exc:
            self.failed += 1
            await self._result(cmd, started, StepFailed, error=_error(exc, cmd))
        except InfraflowError as exc:
            self.failed += 1
            await self._result(cmd, started, StepFailed, error=_error(exc, cmd))
        except Exception as exc:
            self.failed += 1
            log.exception("action %s failed unexpectedly", cmd.action)
            err = ErrorInfo(
                code="AGENT_ERROR",
                message=f"{type(exc).__name__} in {self.executor} agent",
                retryable=True,
                step=cmd.step,
            )
            await self._result(cmd, started, StepFailed, error=err)
        else:
            outcome = "succeeded"
            self.completed += 1
            await self._result(cmd, started, StepSucceeded, output=output)
        finally:
            elapsed = time.monotonic() - began
            STEP_DURATION.labels(self.executor, cmd.action, outcome).observe(elapsed)
            log.info("step %s attempt %d %s in %.3fs", cmd.step, cmd.attempt, outcome, elapsed)
            running = self._running.get(cmd.run_id)
            if running is not None:
                running.discard(ctx)
                if not running:
                    del self._running[cmd.run_id]
        return True

    async def _run_action(self, ctx: StepContext) -> dict[str, Any]:
        cmd = ctx.command
        action = self.actions.get(cmd.action)
        if action is None:
            raise StepError(
                f"{self.executor} agent has no action {cmd.action!r}", code="UNKNOWN_ACTION"
            )
        interval = min(cmd.heartbeat_interval_s or self.default_heartbeat_s, self._keepalive_s)
        task: asyncio.Task[dict[str, Any]] = asyncio.create_task(action(ctx))
        cancel_wait = asyncio.create_task(ctx.cancelled.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {task, cancel_wait}, timeout=interval, return_when="FIRST_COMPLETED"
                )
                if task in done:
                    return task.result()
                if cancel_wait in done:
                    # give the action a moment to reach a safe point by itself, then stop it
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(task), timeout=2.0)
                    if task.done():
                        return task.result()
                    await cancel_and_wait(task)
                    raise StepCancelledError("the run was cancelled while the step was running")
                await ctx.heartbeat()
        finally:
            cancel_wait.cancel()
            if not task.done():
                task.cancel()

    async def _still_wanted(self, cmd: ExecuteStep) -> str:
        """Whether to run a delivered command: ``run``, ``cancelled`` (the run was asked to stop
        before a forward step began) or ``stale`` (the run moved past this attempt: it was
        resolved, or a newer attempt was scheduled, or the run ended — a redelivery after a crash
        must not repeat its effect). One batched read of the run's last events decides."""

        self.verdict_reads += 1

        def subject(name: str) -> str:
            return subjects.event(cmd.resource_type, cmd.resource_id, cmd.run_id, name)

        names = (
            "step_scheduled",
            "step_succeeded",
            "step_failed",
            "step_timed_out",
            "run_cancel_requested",
            "run_completed",
            "run_failed",
            "run_cancelled",
        )
        last = await self._reader.last_of(streams.EVENTS, [subject(n) for n in names])
        return attempt_verdict(cmd, {n: last.get(subject(n)) for n in names})

    async def _start_if_current(self, cmd: ExecuteStep, msg: Msg | None) -> int | None:
        """On a first delivery, append ``step_started`` expecting the run's sequence at dispatch
        (``after_seq``). If it holds, nothing happened to the run since the orchestrator chose
        this attempt, so it is current: no read of the run's events is needed. The sequence of
        ``step_started``, or None when the full check must decide (a redelivery, or the run
        moved on)."""
        if cmd.after_seq is None or (msg is not None and msg.metadata.num_delivered > 1):
            return None
        try:
            return await self._fact(cmd, StepStarted, expect=cmd.after_seq, worker=self.worker_name)
        except AppendConflictError:
            return None

    async def _result(
        self,
        cmd: ExecuteStep,
        started_seq: int,
        kind: type[StepSucceeded] | type[StepFailed],
        **fields: Any,
    ) -> None:
        """Append the attempt's result, expecting ``step_started`` to be the run's last event:
        the stored expectation lets the orchestrator fold the result onto the state it holds
        without reading the run back. Anything appended meanwhile (a cancel request, a timeout)
        only costs that shortcut: the result is then appended without the expectation."""
        try:
            await self._fact(cmd, kind, expect=started_seq, **fields)
        except AppendConflictError:
            await self._fact(cmd, kind, **fields)

    async def _fact(
        self,
        cmd: ExecuteStep,
        kind: type[StepStarted] | type[StepSucceeded] | type[StepFailed],
        *,
        expect: int | None = None,
        **fields: Any,
    ) -> int:
        """Append a fact of the attempt; with ``expect``, only if the run's last event has that
        sequence (AppendConflictError otherwise). Returns the fact's stream sequence."""
        factory: Any = kind  # each fact type takes the attempt fields below
        event: RunEvent = factory(
            event_id=new_id("evt"),
            run_id=cmd.run_id,
            resource_type=cmd.resource_type,
            resource_id=cmd.resource_id,
            time=datetime.now(UTC),
            causation_id=cmd.attempt_id,
            step=cmd.step,
            index=cmd.index,
            attempt=cmd.attempt,
            phase=cmd.phase,
            **fields,
        )
        name = event.name
        return await append(
            self.js,
            subjects.event(cmd.resource_type, cmd.resource_id, cmd.run_id, name),
            encode(event),
            expected_last_seq=expect,
            scope=subjects.run_events(cmd.resource_type, cmd.resource_id, cmd.run_id),
            msg_id=f"{cmd.attempt_id}:{'started' if name == 'step_started' else 'result'}",
            extra_headers=trace_headers(),
        )


def attempt_verdict(cmd: ExecuteStep, last: Mapping[str, StoredMsg | None]) -> str:
    """Pure decision for ``_still_wanted`` from the run's last event of each kind."""
    ours = (cmd.phase, cmd.index, cmd.attempt)
    scheduled = last.get("step_scheduled")
    if scheduled is not None:
        try:
            ev = _scheduled_decoder.decode(scheduled.data)
            if (ev.phase, ev.index, ev.attempt) != ours:
                return "stale"  # the orchestrator scheduled a newer attempt: ours was resolved
        except msgspec.ValidationError:
            pass
    result_id = f"{cmd.attempt_id}:result"
    for name in ("step_succeeded", "step_failed"):
        m = last.get(name)
        if m is not None and m.headers.get("Nats-Msg-Id") == result_id:
            return "stale"  # already reported (the ack was lost)
    timed_out = last.get("step_timed_out")
    if timed_out is not None and scheduled is not None and timed_out.seq > scheduled.seq:
        return "stale"  # the orchestrator gave up on this attempt
    if any(last.get(n) is not None for n in ("run_completed", "run_failed", "run_cancelled")):
        return "stale"
    if last.get("run_cancel_requested") is not None and cmd.phase == "forward":
        return "cancelled"
    return "run"


def _cancelled_error(cmd: ExecuteStep) -> ErrorInfo:
    return ErrorInfo(
        code="CANCELLED", message="the run was cancelled", retryable=False, step=cmd.step
    )


def _error(exc: InfraflowError, cmd: ExecuteStep) -> ErrorInfo:
    return ErrorInfo(
        code=exc.code,
        message=exc.message,
        retryable=exc.retryable,
        step=cmd.step,
        details=exc.details or None,
    )
