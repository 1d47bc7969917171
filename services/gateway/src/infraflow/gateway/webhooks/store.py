"""Webhook registrations in KV ``wf-webhooks`` (key = webhook id), and an in-memory mirror
kept current by a watch on the bucket, so the fan-out matches events without a lookup and
every replica sees registrations made by the others within moments."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from infraflow.common.contracts.webhooks import WebhookRecord
from infraflow.common.streams import KV_WEBHOOKS
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.adapters.kvmirror import KvMirror

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(WebhookRecord)
_encoder = msgspec.json.Encoder()


class WebhookStore:
    """Reads and writes registrations; ``all()`` answers from the mirror."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._mirror: KvMirror[WebhookRecord] = KvMirror(broker, KV_WEBHOOKS, _decoder.decode)

    # ---- writes and point reads (the bucket itself) ------------------------------------

    async def create(self, record: WebhookRecord) -> None:
        await self._broker.kv_put(KV_WEBHOOKS, record.id, _encoder.encode(record))
        self._mirror.put(record.id, record)

    async def get(self, webhook_id: str) -> WebhookRecord | None:
        entry = await self._broker.kv_get(KV_WEBHOOKS, webhook_id)
        if entry is None:
            return None
        try:
            return _decoder.decode(entry.value)
        except msgspec.ValidationError:
            log.error("webhook %s has an unreadable record; ignored", webhook_id)
            return None

    async def delete(self, webhook_id: str) -> None:
        await self._broker.kv_purge(KV_WEBHOOKS, webhook_id)
        self._mirror.pop(webhook_id)

    # ---- the mirror ------------------------------------------------------------------------

    def cached(self, webhook_id: str) -> WebhookRecord | None:
        return self._mirror.get(webhook_id)

    def records(self) -> list[WebhookRecord]:
        """Every registration, in no particular order (the fan-out's view)."""
        return self._mirror.values()

    def all(self) -> list[WebhookRecord]:
        """Every registration, newest first (ids sort by creation time)."""
        return sorted(self._mirror.values(), key=lambda w: w.id, reverse=True)

    async def loaded(self, timeout_s: float) -> bool:
        """Wait (up to ``timeout_s``) until the mirror holds the bucket's contents."""
        return await self._mirror.loaded(timeout_s)

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the mirror current until ``stop`` is set; restart the watch after errors."""
        await self._mirror.follow(stop)
