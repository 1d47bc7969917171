"""The delivery log: every attempt appended to ``WF_WEBHOOK_DELIVERIES`` on
``wf.webhook.delivery.<webhookId>.<deliveryId>`` (kept ``webhook_log_max_age_s``, 7 days by
default), read back per webhook and folded into one entry per delivery."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from infraflow.common import subjects
from infraflow.common.contracts.webhooks import AttemptRecord
from infraflow.common.jetstream import read_subject
from infraflow.common.streams import WEBHOOK_DELIVERIES
from infraflow.gateway.adapters.broker import Broker, mapped_errors
from infraflow.gateway.webhooks.schemas import Delivery, DeliveryAttempt

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AttemptRecord)


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: list[Delivery]
    has_more: bool
    next_cursor: str | None


class DeliveryLog:
    """Appends attempts and answers ``GET /v1/webhooks/{id}/deliveries``."""

    def __init__(self, broker: Broker, timeout_s: float) -> None:
        self._broker = broker
        self._timeout_s = timeout_s

    async def record(self, attempt: AttemptRecord) -> None:
        js = self._broker.jetstream()
        subject = subjects.webhook_delivery(attempt.webhook_id, attempt.delivery_id)
        with mapped_errors("the delivery log did not acknowledge"):
            await js.publish(
                subject,
                _encoder.encode(attempt),
                stream=WEBHOOK_DELIVERIES,
                timeout=self._timeout_s,
            )

    async def page(self, webhook_id: str, page_size: int, cursor: str | None) -> DeliveryPage:
        """Deliveries newest first; ``cursor`` is the last delivery id of the previous page."""
        nc = self._broker.nats_client()
        with mapped_errors("the delivery log did not answer"):
            stored = await read_subject(
                nc,
                WEBHOOK_DELIVERIES,
                subjects.webhook_deliveries(webhook_id),
                timeout=self._timeout_s,
            )
        attempts = []
        for msg in stored:
            try:
                attempts.append(_decoder.decode(msg.data))
            except msgspec.ValidationError:
                log.warning("unreadable delivery log entry %s skipped", msg.seq)
        deliveries = fold(attempts)
        if cursor is not None:
            deliveries = [d for d in deliveries if d.id < cursor]
        page = deliveries[:page_size]
        has_more = len(deliveries) > page_size
        return DeliveryPage(page, has_more, page[-1].id if has_more and page else None)

    async def forget(self, webhook_id: str) -> None:
        """Drop a deleted webhook's log."""
        js = self._broker.jetstream()
        with mapped_errors("the delivery log did not answer"):
            await js.purge_stream(
                WEBHOOK_DELIVERIES, subject=subjects.webhook_deliveries(webhook_id)
            )


def fold(attempts: Iterable[AttemptRecord]) -> list[Delivery]:
    """One ``Delivery`` per delivery id (attempts in order), newest delivery first."""
    by_id: dict[str, list[AttemptRecord]] = {}
    for attempt in attempts:
        by_id.setdefault(attempt.delivery_id, []).append(attempt)
    out: list[Delivery] = []
    for delivery_id, items in by_id.items():
        items.sort(key=lambda a: (a.attempt, a.attempted_at))
        last = items[-1]
        out.append(
            Delivery(
                id=delivery_id,
                webhook_id=last.webhook_id,
                event=last.event,
                event_id=last.event_id,
                run_id=last.run_id,
                status=last.outcome,
                attempts=len(items),
                last_status_code=last.status_code,
                last_error=last.error,
                first_attempt_at=items[0].attempted_at,
                last_attempt_at=last.attempted_at,
                next_attempt_at=last.next_attempt_at if last.outcome == "retrying" else None,
                history=[
                    DeliveryAttempt(
                        attempt=a.attempt,
                        attempted_at=a.attempted_at,
                        outcome=a.outcome,
                        status_code=a.status_code,
                        latency_ms=a.latency_ms,
                        error=a.error,
                    )
                    for a in items
                ],
            )
        )
    out.sort(key=lambda d: d.id, reverse=True)
    return out
