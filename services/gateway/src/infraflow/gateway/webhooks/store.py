"""Webhook registrations in KV ``wf-webhooks`` (key = webhook id), and an in-memory mirror
kept current by a watch on the bucket, so the fan-out matches events without a lookup and
every replica sees registrations made by the others within moments."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE

from infraflow.common.streams import KV_WEBHOOKS
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.webhooks.model import WebhookRecord

log = logging.getLogger(__name__)

_decoder = msgspec.json.Decoder(WebhookRecord)
_encoder = msgspec.json.Encoder()


class WebhookStore:
    """Reads and writes registrations; ``all()`` answers from the mirror."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._mirror: dict[str, WebhookRecord] = {}
        self._loaded = asyncio.Event()

    # ---- writes and point reads (the bucket itself) ------------------------------------

    async def create(self, record: WebhookRecord) -> None:
        await self._broker.kv_put(KV_WEBHOOKS, record.id, _encoder.encode(record))
        self._mirror[record.id] = record

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
        self._mirror.pop(webhook_id, None)

    # ---- the mirror ------------------------------------------------------------------------

    def cached(self, webhook_id: str) -> WebhookRecord | None:
        return self._mirror.get(webhook_id)

    def records(self) -> list[WebhookRecord]:
        """Every registration, in no particular order (the fan-out's view)."""
        return list(self._mirror.values())

    def all(self) -> list[WebhookRecord]:
        """Every registration, newest first (ids sort by creation time)."""
        return sorted(self._mirror.values(), key=lambda w: w.id, reverse=True)

    async def loaded(self, timeout_s: float) -> bool:
        """Wait (up to ``timeout_s``) until the mirror holds the bucket's contents."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), timeout_s)
        return self._loaded.is_set()

    async def follow(self, stop: asyncio.Event) -> None:
        """Keep the mirror current until ``stop`` is set; restart the watch after errors."""
        while not stop.is_set():
            try:
                await self._watch(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook registry watch failed (%s); restarting", type(exc).__name__)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _watch(self, stop: asyncio.Event) -> None:
        while not self._broker.is_ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
            if stop.is_set():
                return
        kv = await self._broker.jetstream().key_value(KV_WEBHOOKS)
        watcher = await kv.watchall()
        fresh: dict[str, WebhookRecord] = {}
        initial = True
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                update = asyncio.ensure_future(watcher.updates(timeout=30.0))
                await asyncio.wait({update, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not update.done():
                    update.cancel()
                    break
                try:
                    entry = update.result()
                except nats.errors.TimeoutError:
                    continue
                if entry is None:  # the end of the initial contents
                    if initial:
                        self._mirror = fresh
                        initial = False
                        self._loaded.set()
                    continue
                target = fresh if initial else self._mirror
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    target.pop(entry.key, None)
                    continue
                try:
                    target[entry.key] = _decoder.decode(entry.value)
                except msgspec.ValidationError:
                    log.error("webhook %s has an unreadable record; ignored", entry.key)
        finally:
            stopped.cancel()
            with contextlib.suppress(Exception):
                await watcher.stop()
