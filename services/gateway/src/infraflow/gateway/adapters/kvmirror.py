"""An in-memory copy of a KV bucket, kept current by a watch: reads answer from memory and
every replica sees the bucket's writes within moments."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec
import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE

from infraflow.gateway.adapters.broker import Broker

log = logging.getLogger(__name__)

T = TypeVar("T")


class KvMirror(Generic[T]):
    """The decoded values of ``bucket`` by key. ``newer(old, new)`` decides whether an update
    replaces what is held (default: always); an unreadable value is logged and skipped."""

    def __init__(
        self,
        broker: Broker,
        bucket: str,
        decode: Callable[[bytes], T],
        *,
        newer: Callable[[T, T], bool] | None = None,
    ) -> None:
        self._broker = broker
        self._bucket = bucket
        self._decode = decode
        self._newer = newer
        self._values: dict[str, T] = {}
        self._loaded = asyncio.Event()

    def get(self, key: str) -> T | None:
        return self._values.get(key)

    def values(self) -> list[T]:
        return list(self._values.values())

    def put(self, key: str, value: T) -> None:
        """Hold ``value`` at once (a write this process just made; the watch confirms it)."""
        self._values[key] = value

    def pop(self, key: str) -> None:
        self._values.pop(key, None)

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
                log.warning("watch of %s failed (%s); restarting", self._bucket, type(exc).__name__)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _watch(self, stop: asyncio.Event) -> None:
        while not self._broker.is_ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
            if stop.is_set():
                return
        kv = await self._broker.jetstream().key_value(self._bucket)
        watcher = await kv.watchall()
        fresh: dict[str, T] = {}
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
                        self._values = fresh
                        initial = False
                        self._loaded.set()
                    continue
                target = fresh if initial else self._values
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    target.pop(entry.key, None)
                    continue
                try:
                    value = self._decode(entry.value)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    log.error("%s: unreadable value at %s ignored", self._bucket, entry.key)
                    continue
                held = target.get(entry.key)
                if held is None or self._newer is None or self._newer(held, value):
                    target[entry.key] = value
        finally:
            stopped.cancel()
            with contextlib.suppress(Exception):
                await watcher.stop()
