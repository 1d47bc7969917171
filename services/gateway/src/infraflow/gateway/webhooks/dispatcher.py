"""The gateway's webhook dispatcher: two durable consumers, shared by every gateway replica.

* fan-out (``gateway-webhook-events`` on ``WF_EVENTS``, the five mapped events only): finds the
  webhooks that want the event (mirror of ``wf-webhooks``), learns the run's type and project
  from its ``run_created`` (a direct get of the last message on that subject, cached), and
  publishes one ``DeliveryJob`` per webhook with ``Nats-Msg-Id = <webhookId>:<eventId>``, so a
  redelivered event makes no second job. Events older than a webhook are not sent to it.
* delivery (``gateway-webhook-delivery`` on ``WF_WEBHOOK_JOBS``): one signed POST per message;
  2xx acks, anything else records the attempt and naks with the backoff as delay, until
  ``max_attempts``. Every attempt is appended to the delivery log. At least once: a crash
  after a POST but before the ack repeats it, with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from infraflow.common import subjects
from infraflow.common.contracts import RunCreated, RunEvent, decode_event
from infraflow.common.contracts.webhooks import AttemptRecord, DeliveryJob, Outcome, WebhookRecord
from infraflow.common.jetstream import PullConsumer, get_last
from infraflow.common.metrics import WEBHOOK_DELIVERIES
from infraflow.common.streams import (
    EVENTS,
    WEBHOOK_DELIVERY,
    WEBHOOK_EVENTS,
    WEBHOOK_JOBS,
    ConsumerSpec,
    ensure_consumer,
)
from infraflow.common.tasks import cancel_and_wait
from infraflow.common.vault import Vault, VaultError
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.core.request_ids import format_timestamp
from infraflow.gateway.settings import WebhookSettings
from infraflow.gateway.webhooks import model
from infraflow.gateway.webhooks.deliveries import DeliveryLog
from infraflow.gateway.webhooks.model import RunInfo
from infraflow.gateway.webhooks.sender import AttemptResult, WebhookSender
from infraflow.gateway.webhooks.store import WebhookStore

log = logging.getLogger(__name__)

_RUN_CACHE: Final = 10_000
_job_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(DeliveryJob)


class WebhookDispatcher:
    """Runs the fan-out and the deliveries until stopped."""

    def __init__(
        self,
        broker: Broker,
        store: WebhookStore,
        log_: DeliveryLog,
        sender: WebhookSender,
        vault: Vault,
        settings: WebhookSettings,
        *,
        publish_timeout_s: float = 2.0,
    ) -> None:
        self._broker = broker
        self._store = store
        self._log = log_
        self._sender = sender
        self._vault = vault
        self._settings = settings
        self._publish_timeout_s = publish_timeout_s
        self._runs: OrderedDict[str, RunInfo] = OrderedDict()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=10)
            if done and not self._task.cancelled() and self._task.exception() is not None:
                log.error(
                    "the webhook dispatcher ended with an error", exc_info=self._task.exception()
                )
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        if not await self._ready():
            return
        nc = self._broker.nats_client()
        js = self._broker.jetstream()
        for spec in (WEBHOOK_EVENTS, WEBHOOK_DELIVERY):
            await _ensure(js, spec, self._stop)
        fan_out = PullConsumer(nc, EVENTS, WEBHOOK_EVENTS.durable, self.on_event, max_inflight=64)
        deliver = PullConsumer(
            nc,
            WEBHOOK_JOBS,
            WEBHOOK_DELIVERY.durable,
            self.on_job,
            max_inflight=self._settings.concurrency,
        )
        log.info("webhook dispatcher running")
        await asyncio.gather(fan_out.run(self._stop), deliver.run(self._stop))

    async def _ready(self) -> bool:
        while not self._broker.is_ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)
            if self._stop.is_set():
                return False
        while not await self._store.loaded(1.0):
            if self._stop.is_set():
                return False
        return True

    # ---- fan-out -----------------------------------------------------------------------

    async def on_event(self, msg: Msg) -> None:
        """One run event: a job per webhook that wants it."""
        rtype, rid, run_id, name = subjects.parse_event(msg.subject)
        event_name = model.EVENT_BY_RUN_EVENT.get(name)
        candidates = [
            w
            for w in self._store.records()
            if event_name is not None and (model.ALL_EVENTS in w.events or event_name in w.events)
        ]
        if not candidates or event_name is None:
            await msg.ack()
            return
        try:
            event = decode_event(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.error("unreadable event on %s skipped by the webhook fan-out", msg.subject)
            await msg.ack()
            return
        run = await self._run_info(rtype, rid, run_id)
        timestamp = format_timestamp(event.time)
        body = msgspec.json.encode(model.payload(event_name, event, run, timestamp)).decode()
        for webhook in candidates:
            if webhook.created_at > event.time or not model.wants(
                webhook, event_name, run.workflow_type, run.project_id
            ):
                continue
            await self._enqueue(webhook, event, event_name, body)
        await msg.ack()

    async def _enqueue(
        self, webhook: WebhookRecord, event: RunEvent, event_name: str, body: str
    ) -> None:
        job = DeliveryJob(
            delivery_id=model.delivery_id(webhook.id, event),
            webhook_id=webhook.id,
            event=event_name,
            event_id=event.event_id,
            run_id=event.run_id,
            body=body,
        )
        await self._broker.jetstream().publish(
            subjects.webhook_job(webhook.id),
            _job_encoder.encode(job),
            stream=WEBHOOK_JOBS,
            timeout=self._publish_timeout_s,
            headers={"Nats-Msg-Id": f"{webhook.id}:{event.event_id}"},
        )

    async def _run_info(self, rtype: str, rid: str, run_id: str) -> RunInfo:
        cached = self._runs.get(run_id)
        if cached is not None:
            self._runs.move_to_end(run_id)
            return cached
        stored = await get_last(
            self._broker.jetstream(), EVENTS, subjects.event(rtype, rid, run_id, "run_created")
        )
        info = RunInfo()
        if stored is not None:
            created = decode_event(stored.data)
            if isinstance(created, RunCreated):
                info = RunInfo(
                    workflow_type=created.workflow_type,
                    project_id=created.project_id,
                    triggered_by=created.triggered_by,
                )
        self._runs[run_id] = info
        while len(self._runs) > _RUN_CACHE:
            self._runs.popitem(last=False)
        return info

    # ---- delivery ------------------------------------------------------------------------

    async def on_job(self, msg: Msg) -> None:
        """One attempt of one delivery."""
        try:
            job = _job_decoder.decode(msg.data)
        except msgspec.ValidationError:
            log.error("malformed webhook job on %s dropped", msg.subject)
            await msg.term()
            return
        webhook = self._store.cached(job.webhook_id) or await self._store.get(job.webhook_id)
        if webhook is None:  # deleted since: nothing to deliver to
            await msg.ack()
            return
        attempt = max(1, int(msg.metadata.num_delivered or 1))
        result = await self.attempt(webhook, job.delivery_id, job.body.encode())
        now = datetime.now(UTC)
        if result.delivered:
            outcome: Outcome = "delivered"
            delay = None
        elif attempt >= self._settings.max_attempts:
            outcome, delay = "failed", None
        else:
            outcome = "retrying"
            delay = model.backoff_s(
                attempt,
                self._settings.initial_backoff_s,
                self._settings.backoff_coefficient,
                self._settings.max_backoff_s,
            )
        WEBHOOK_DELIVERIES.labels(
            {"delivered": "delivered", "retrying": "failed", "failed": "gave_up"}[outcome]
        ).inc()
        await self._log.record(
            AttemptRecord(
                delivery_id=job.delivery_id,
                webhook_id=job.webhook_id,
                event=job.event,
                event_id=job.event_id,
                run_id=job.run_id,
                attempt=attempt,
                attempted_at=now,
                outcome=outcome,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
                next_attempt_at=now + timedelta(seconds=delay) if delay is not None else None,
            )
        )
        if delay is None:
            if outcome == "failed":
                log.warning(
                    "webhook %s delivery %s given up after %d attempts (%s)",
                    job.webhook_id,
                    job.delivery_id,
                    attempt,
                    result.error,
                )
            await msg.ack()
        else:
            await msg.nak(delay=delay)

    async def attempt(self, webhook: WebhookRecord, delivery_id: str, body: bytes) -> AttemptResult:
        """One signed POST to ``webhook`` (the test ping uses it too)."""
        try:
            secret = self._vault.open(webhook.sealed_secret.encode())["secret"]
        except VaultError:
            log.error("webhook %s: its signing secret cannot be opened", webhook.id)
            return AttemptResult(None, 0, "the signing secret cannot be opened (key rotation?)")
        return await self._sender.send(webhook.url, str(secret), delivery_id, body)


async def _ensure(js: JetStreamContext, spec: ConsumerSpec, stop: asyncio.Event) -> None:
    """Create the consumer, retrying while JetStream is not ready."""
    delay = 0.2
    while True:
        try:
            await ensure_consumer(js, spec)
            return
        except Exception as exc:
            if stop.is_set():
                raise
            log.warning("webhook consumer %s not ready (%s)", spec.durable, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
