"""Connecting to NATS: wait for the broker at start-up, reconnect forever afterwards."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common.settings import NatsSettings
from infraflow.common.streams import ConsumerSpec, ensure_topology

log = logging.getLogger(__name__)

_PATIENCE_S = 5.0


async def connect(
    settings: NatsSettings, name: str, *, stop: asyncio.Event | None = None
) -> Client:
    """Connect, retrying with capped backoff until the broker answers (or ``stop`` is set).

    Services never crash-loop when the broker is down: they wait here, then rely on the
    client's unlimited reconnects.
    """
    delay = 0.2
    while True:
        # nats.connect with unlimited reconnects can retry the first connection forever, so it
        # is raced against ``stop``: SIGTERM must end a service still waiting for the broker.
        attempt = asyncio.ensure_future(
            nats.connect(
                servers=settings.servers,
                name=settings.name or name,
                user=settings.user,
                password=settings.password,
                token=settings.token,
                connect_timeout=settings.connect_timeout_s,
                allow_reconnect=True,
                # bounded for the first connection, so nats-py gives up and this loop (which
                # honours ``stop``) does the waiting; unlimited once connected (set below)
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                ping_interval=10,
                max_outstanding_pings=3,
                error_cb=_on_error,
                disconnected_cb=_on_disconnected,
                reconnected_cb=_on_reconnected,
            )
        )
        waiters: set[asyncio.Future[Any]] = {attempt}
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopper is not None:
            waiters.add(stopper)
        waited = 0.0
        while True:
            done, _ = await asyncio.wait(
                waiters, timeout=_PATIENCE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                break
            waited += _PATIENCE_S
            log.warning(
                "still waiting for the broker at %s (%.0fs)", ",".join(settings.servers), waited
            )
        if stopper is not None:
            stopper.cancel()
        if attempt in done:
            try:
                nc = attempt.result()
                nc.options["max_reconnect_attempts"] = -1  # never give up once connected
                return nc
            except Exception as exc:
                log.warning(
                    "broker not reachable yet (%s); retrying in %.1fs", type(exc).__name__, delay
                )
        else:
            attempt.cancel()
            # never wait long for it: a cancellation can be lost inside asyncio.wait_for (3.11)
            await asyncio.wait({attempt}, timeout=2.0)
            raise ConnectionAbortedError("stopped while waiting for the broker")
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                raise ConnectionAbortedError("stopped while waiting for the broker")
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0) * (0.8 + 0.4 * random.random())


async def prepare(
    nc: Client,
    settings: NatsSettings,
    consumers: tuple[ConsumerSpec, ...] = (),
    *,
    stop: asyncio.Event | None = None,
) -> JetStreamContext:
    """Create the topology (retrying while JetStream is not ready) and return a context."""
    from infraflow.common.streams import CORE_CONSUMERS

    js = nc.jetstream(timeout=settings.request_timeout_s)
    delay = 0.2
    while True:
        try:
            await ensure_topology(js, settings.topology(), (*CORE_CONSUMERS, *consumers))
            return js
        except Exception as exc:
            if stop is not None and stop.is_set():
                raise
            log.warning("JetStream not ready (%s: %s); retrying", type(exc).__name__, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _on_error(exc: Exception) -> None:
    log.warning("nats error: %s: %s", type(exc).__name__, exc)


async def _on_disconnected() -> None:
    log.warning("disconnected from the broker; reconnecting")


async def _on_reconnected() -> None:
    log.info("reconnected to the broker")
