"""Starting and cancelling runs: idempotency keys, sealed credentials, the acknowledged command.

    claim Idempotency-Key (KV create) -> estimate duration -> seal credentials (KV put)
        -> publish StartRun, wait for the PubAck -> record the response under the key -> 202

A failure before the acknowledgement undoes what was done (credentials purged, the claim
released), so a 503 leaves nothing behind and the caller may simply retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from infraflow.common import subjects
from infraflow.common.catalog import WorkflowType
from infraflow.common.contracts import EstimateDuration, encode
from infraflow.common.contracts.base import OnBusy
from infraflow.common.errors import (
    BrokerUnavailableError,
    ConflictError,
    InfraflowError,
    ResourceBusyError,
)
from infraflow.common.ids import new_id
from infraflow.common.locks import LockEntry, lock_key
from infraflow.common.metrics import GATEWAY_RUNS_ACCEPTED
from infraflow.common.streams import KV_CREDENTIALS, KV_IDEMPOTENCY, KV_LOCKS
from infraflow.common.tasks import cancel_and_wait
from infraflow.common.vault import Vault
from infraflow.gateway.adapters.broker import Broker, UncertainPublishError
from infraflow.gateway.core import idempotency as idem
from infraflow.gateway.core.runs import (
    RunIds,
    RunPlan,
    accepted_summary,
    estimate_from_reply,
    start_command,
)

log = logging.getLogger(__name__)

_POLL_S = 0.05

Prepare = Callable[[RunIds], Awaitable[RunPlan]]
"""Builds the plan once the ids are settled: lookups, permission and state checks."""


_ESTIMATE_TTL_S = 10.0


@dataclass(frozen=True, slots=True)
class IdempotencyRequest:
    """The parts of a request that identify it for ``Idempotency-Key`` purposes."""

    key: str
    subject: str
    method: str
    path: str
    body: Any = field(repr=False)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A run-starting request's outcome: the 202's body parts, or a replay of the first one."""

    run_id: str
    location: str
    data: dict[str, Any]
    estimated_duration_ms: int
    replayed: bool = False
    status: int = 202


@dataclass(slots=True)
class _Claim:
    storage_key: str
    revision: int
    record: idem.IdempotencyRecord


class RunLauncher:
    """Turns a ``RunPlan`` into an acknowledged ``StartRun`` (and cancels runs)."""

    def __init__(
        self,
        broker: Broker,
        vault: Vault,
        *,
        fingerprint_secret: bytes,
        estimate_timeout_s: float,
        idempotency_wait_s: float,
        idempotency_stale_s: float,
    ) -> None:
        self._broker = broker
        self._vault = vault
        self._fingerprint_secret = fingerprint_secret
        self._estimate_timeout_s = estimate_timeout_s
        self._estimates: dict[str, tuple[float, int]] = {}
        self._wait_s = idempotency_wait_s
        self._stale_ms = int(idempotency_stale_s * 1000)
        self._cleanups: set[asyncio.Task[None]] = set()

    async def start(
        self,
        prepare: Prepare,
        *,
        ids: RunIds,
        triggered_by: str,
        request_id: str,
        idempotency: IdempotencyRequest | None = None,
        on_busy: OnBusy = "queue",
    ) -> Accepted:
        """Start a run: ``prepare`` turns the ids into a plan (lookups, state and permission
        checks); with an idempotency key this happens at most once per key and body, and a
        repeat gets the first response back."""
        self._broker.require_available()
        if on_busy == "fail":
            prepare = _failing_fast(prepare, self._busy_holder)
        if idempotency is None:
            return await self._launch(await prepare(ids), triggered_by, request_id)
        body_hash = idem.body_fingerprint(self._fingerprint_secret, idempotency.body)
        key = idem.storage_key(
            idempotency.subject, idempotency.method, idempotency.path, idempotency.key
        )
        outcome = await self._claim(key, body_hash, ids)
        if isinstance(outcome, Accepted):
            return outcome
        claim = outcome
        try:
            plan = await prepare(RunIds(claim.record.run_id, claim.record.resource_id))
            accepted = await self._launch(plan, triggered_by, request_id)
        except UncertainPublishError:
            # The run may exist: keep the claim (it names the run id), so a retry with the same
            # key re-sends the same command, which the stream deduplicates, never a second run.
            raise
        except BaseException:
            await self._undo(self._broker.kv_delete(KV_IDEMPOTENCY, key, claim.revision))
            raise
        done = msgspec.structs.replace(
            claim.record,
            state="done",
            status=accepted.status,
            body={"data": accepted.data, "estimatedDuration": accepted.estimated_duration_ms},
            location=accepted.location,
        )
        try:
            await self._broker.kv_update(
                KV_IDEMPOTENCY, key, idem.encode_record(done), claim.revision
            )
        except InfraflowError:
            # The run is accepted; a retry after the claim went stale reuses the same run id.
            log.warning("could not record the response of idempotent run %s", plan.run_id)
        return accepted

    async def _claim(self, key: str, body_hash: str, ids: RunIds) -> _Claim | Accepted:
        """Claim ``key`` or return the first response stored under it."""
        deadline = time.monotonic() + self._wait_s
        while True:
            record = idem.IdempotencyRecord(
                state="pending",
                body_hash=body_hash,
                run_id=ids.run_id,
                resource_id=ids.resource_id,
                created_at_ms=_now_ms(),
            )
            encoded = idem.encode_record(record)
            revision = await self._broker.kv_create(KV_IDEMPOTENCY, key, encoded)
            if revision is not None:
                return _Claim(key, revision, record)
            entry = await self._broker.kv_get(KV_IDEMPOTENCY, key)
            if entry is None:
                continue  # released in between: try to claim it again
            existing = idem.decode_record(entry.value)
            if existing.body_hash != body_hash:
                raise ConflictError(
                    "this Idempotency-Key was already used with a different request body"
                )
            if existing.state == "done":
                return _replay(existing)
            if existing.is_stale(_now_ms(), self._stale_ms):
                taken = msgspec.structs.replace(existing, created_at_ms=_now_ms())
                revision = await self._broker.kv_update(
                    KV_IDEMPOTENCY, key, idem.encode_record(taken), entry.revision
                )
                if revision is not None:
                    log.warning("took over a stale idempotency claim for run %s", taken.run_id)
                    return _Claim(key, revision, taken)
                continue
            if time.monotonic() >= deadline:
                raise ConflictError(
                    "a request with this Idempotency-Key is still in progress; retry shortly",
                    details={"runId": existing.run_id},
                )
            await asyncio.sleep(_POLL_S)

    async def _busy_holder(self, plan: RunPlan) -> str | None:
        """The run holding ``plan``'s resource, if another mutating run does."""
        if not plan.workflow.mutating or plan.creates_resource:
            return None
        entry = await self._broker.kv_get(KV_LOCKS, lock_key(plan.resource_type, plan.resource_id))
        lock = LockEntry.decode(entry.value) if entry is not None else None
        return lock.holder if lock is not None and lock.holder != plan.run_id else None

    async def _launch(self, plan: RunPlan, triggered_by: str, request_id: str) -> Accepted:
        self._broker.require_available()
        estimate = await self.estimate(plan.workflow)
        sealed = False
        try:
            if plan.credentials is not None:
                token = self._vault.seal(plan.credentials)
                sealed = True  # a timed-out put may still have landed: undo covers it too
                await self._broker.kv_put(KV_CREDENTIALS, plan.resource_id, token)
            command = start_command(
                plan,
                triggered_by=triggered_by,
                request_id=request_id,
                estimate_ms=estimate,
                now=datetime.now(UTC),
            )
            await self._broker.publish_command(
                subjects.command("start", plan.run_id), encode(command), msg_id=plan.run_id
            )
        except BaseException:
            if sealed:
                await self._undo(self._forget_credentials(plan.resource_id))
            raise
        GATEWAY_RUNS_ACCEPTED.labels(plan.workflow.name).inc()
        log.info(
            "accepted run %s (%s) on %s %s",
            plan.run_id,
            plan.workflow.name,
            plan.resource_type,
            plan.resource_id,
            extra={"runId": plan.run_id},
        )
        summary = msgspec.to_builtins(accepted_summary(command, plan.workflow))
        return Accepted(
            run_id=plan.run_id,
            location=f"/v1/workflows/runs/{plan.run_id}",
            data=summary,
            estimated_duration_ms=estimate,
        )

    async def estimate(self, workflow: WorkflowType) -> int:
        """The projector's estimate (from past runs), else the catalog's. An estimate is a hint
        for progress bars: it is reused for ``_ESTIMATE_TTL_S``, not asked for on every 202."""
        now = time.monotonic()
        cached = self._estimates.get(workflow.name)
        if cached is not None and now - cached[0] < _ESTIMATE_TTL_S:
            return cached[1]
        try:
            reply = await self._broker.ask(
                EstimateDuration(workflow_type=workflow.name, resource_type=workflow.resource_type),
                timeout_s=self._estimate_timeout_s,
            )
        except InfraflowError:
            return workflow.estimate_ms
        value = estimate_from_reply(reply.data) or workflow.estimate_ms
        self._estimates[workflow.name] = (now, value)
        return value

    async def cancel(self, subject: str, payload: bytes, run_id: str) -> None:
        """Publish a ``CancelRun``; every request is its own command (a unique message id)."""
        msg_id = f"{run_id}:cancel:{new_id('evt')}"
        await self._broker.publish_command(subject, payload, msg_id=msg_id)

    async def _forget_credentials(self, server_id: str) -> None:
        """Purge sealed credentials; if the broker is gone, keep trying in the background."""
        try:
            await self._broker.kv_purge(KV_CREDENTIALS, server_id)
        except BrokerUnavailableError:
            log.warning("credentials of %s not removed yet; retrying in the background", server_id)
            task = asyncio.create_task(self._purge_later(server_id))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _purge_later(self, server_id: str) -> None:
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                await self._broker.kv_purge(KV_CREDENTIALS, server_id)
                log.info("removed the credentials of %s after a failed registration", server_id)
                return
            except BrokerUnavailableError:
                delay = min(delay * 2, 10.0)

    async def _undo(self, action: Awaitable[None]) -> None:
        """Run a compensating action even if the request was cancelled meanwhile."""
        try:
            await asyncio.shield(asyncio.ensure_future(action))
        except (InfraflowError, asyncio.CancelledError):
            log.warning("could not undo a step of a failed request", exc_info=True)

    async def close(self) -> None:
        """Stop background clean-ups at shutdown."""
        if self._cleanups:
            log.warning("%d credential clean-up(s) still pending at shutdown", len(self._cleanups))
        await cancel_and_wait(list(self._cleanups))


def _failing_fast(
    prepare: Prepare, holder_of: Callable[[RunPlan], Awaitable[str | None]]
) -> Prepare:
    """Wrap ``prepare``: a busy resource is ``409 RESOURCE_BUSY`` naming the holder, and the run
    is started with ``on_busy="fail"`` so that a race lost later still fails fast."""

    async def wrapped(ids: RunIds) -> RunPlan:
        plan = await prepare(ids)
        holder = await holder_of(plan)
        if holder is not None:
            raise ResourceBusyError(
                f"{plan.resource_type} {plan.resource_id} is busy with run {holder}",
                details={"runId": holder},
            )
        return dataclasses.replace(plan, on_busy="fail")

    return wrapped


def _replay(record: idem.IdempotencyRecord) -> Accepted:
    body = record.body or {}
    return Accepted(
        run_id=record.run_id,
        location=record.location or f"/v1/workflows/runs/{record.run_id}",
        data=body.get("data") or {},
        estimated_duration_ms=int(body.get("estimatedDuration") or 0),
        replayed=True,
        status=record.status or 202,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
