"""The tracked follower of ``WF_EVENTS``: an ephemeral, ordered pull consumer that it manages.

The consumer starts at ``last_applied_seq + 1`` (never at zero on a restart), has no acks
(the tracked position in SQLite is the only cursor), lives in memory and vanishes on its own
after ``inactive_threshold`` once nobody pulls. The follower keeps one pull request open,
buffers what arrives and hands everything buffered to ``apply`` as one batch, so batches grow
with the backlog during catch-up. While events arrive faster than ``busy_rate`` a second,
batches start at most every ``min_interval_s``: a steady stream of events is applied in a
hundred transactions a second instead of one per event or two, at the cost of that much
freshness. Below that rate every batch is applied at once, so a quiet system's read model
stays as fresh as it can be.

Ordering is checked like nats' ordered consumers do: a gap in the consumer sequence, a
deleted consumer, a "no responders" answer or heartbeats going silent (broker restart,
reconnect) all end the consumer; a new one is created from the tracked position. Buffered but
unapplied messages are dropped then, since they will be delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from infraflow.common import streams, subjects
from infraflow.projector.core.batch import StreamMessage
from infraflow.projector.errors import ConsumerLostError

log = logging.getLogger(__name__)

Apply = Callable[[list[StreamMessage]], Awaitable[int]]
"""Applies a batch and returns the new last applied sequence."""


class AppliedPosition:
    """The last applied stream sequence, as the event loop sees it; readers can wait on it."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq
        self._changed = asyncio.Event()

    def advance(self, seq: int) -> None:
        if seq <= self.seq:
            return
        self.seq = seq
        self._changed.set()
        self._changed = asyncio.Event()

    def reset(self, seq: int = 0) -> None:
        self.seq = seq

    async def wait_for(self, seq: int, timeout: float) -> bool:
        """Wait until ``seq`` is applied (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while self.seq < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True


class RunWatchers:
    """Wakes the long polls waiting for new events of particular runs."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def notify(self, run_ids: Iterable[str]) -> None:
        """The follower applied events of these runs."""
        if not self._waiting:
            return
        for run_id in run_ids:
            for event in self._waiting.get(run_id, ()):
                event.set()

    async def wait(self, run_id: str, timeout: float) -> bool:
        """Wait until events of ``run_id`` are applied (True) or ``timeout`` passed (False)."""
        event = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return event.is_set()
        finally:
            waiting = self._waiting.get(run_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[run_id]

    @property
    def waiting(self) -> int:
        """How many long polls are waiting right now."""
        return sum(len(w) for w in self._waiting.values())


@dataclass(slots=True)
class FollowerStats:
    """Counters for logs, ``/metrics`` and tests."""

    received: int = 0
    batches: int = 0
    consumers: int = 0
    start_seqs: list[int] = field(default_factory=list)
    """The start sequence of every consumer created, in order."""


class EventFollower:
    """Follows ``WF_EVENTS`` from the tracked position and applies it in batches."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        apply: Apply,
        position: AppliedPosition,
        *,
        replica: str,
        batch_size: int = 1000,
        max_buffered: int = 20_000,
        heartbeat_s: float = 1.0,
        expires_s: float = 10.0,
        inactive_threshold_s: float = 60.0,
        retry_delay_s: float = 0.5,
        min_interval_s: float = 0.0,
        busy_rate: float = 0.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self._apply = apply
        self.position = position
        self._replica = replica
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._heartbeat_s = heartbeat_s
        self._expires_s = max(expires_s, 2 * heartbeat_s)
        self._inactive_threshold_s = inactive_threshold_s
        self._retry_delay_s = retry_delay_s
        self._min_interval_s = min_interval_s
        self._busy_rate = busy_rate
        self._rate = 0.0
        self._rate_since = time.monotonic()
        self._rate_count = 0
        self.stats = FollowerStats()
        self._buffer: list[StreamMessage] = []
        self._wake = asyncio.Event()
        self._consumer = ""
        self._inbox = ""
        self._quota = 0
        self._dseq = 0
        self._pending: int | None = None
        self._lost: str | None = None
        self._last_seen = 0.0
        self._applying = False

    @property
    def at_end(self) -> bool:
        """True when nothing is known to follow what is being applied (the stream's end as
        last reported): applying it catches up."""
        return self._pending == 0 and not self._buffer

    @property
    def caught_up(self) -> bool:
        """True once everything the stream held when last asked has been applied."""
        return self._pending == 0 and not self._buffer and not self._applying

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until ``stop`` is set; the batch being applied then is finished first."""
        delay = self._retry_delay_s
        while not stop.is_set():
            try:
                await self._follow(stop)
                delay = self._retry_delay_s
            except ConsumerLostError as exc:
                log.info("follower consumer ended (%s); resuming at %d", exc, self.position.seq + 1)
                with contextlib.suppress(TimeoutError):  # never spin on a flapping consumer
                    await asyncio.wait_for(stop.wait(), self._retry_delay_s / 4)
            except Exception as exc:
                log.warning("follower failed (%s: %s); retrying", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _follow(self, stop: asyncio.Event) -> None:
        start = self.position.seq + 1
        info = await self._js.add_consumer(
            streams.EVENTS,
            ConsumerConfig(
                description=f"projector {self._replica}",
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.NONE,
                filter_subject=subjects.EVENTS_ALL,
                inactive_threshold=self._inactive_threshold_s,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        self._consumer = str(info.name)
        self.stats.consumers += 1
        self.stats.start_seqs.append(start)
        self._buffer, self._quota, self._dseq, self._lost = [], 0, 0, None
        self._pending = None
        self._inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        log.info("following %s from sequence %d (consumer %s)", streams.EVENTS, start, info.name)
        try:
            await self._pull()
            started = 0.0
            while not stop.is_set():
                if not self._buffer:
                    await self._idle(stop)
                if self._lost:
                    raise ConsumerLostError(self._lost)
                if self._buffer:
                    await self._linger(started, stop)
                    batch, self._buffer = self._buffer, []
                    self._applying = True
                    started = time.monotonic()
                    try:
                        self.position.advance(await self._apply(batch))
                    finally:
                        self._applying = False
                    self.stats.batches += 1
                if self._quota <= 0:
                    await self._pull()
                await self._check_alive()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._js.delete_consumer(streams.EVENTS, self._consumer), 1)

    async def _linger(self, last_start: float, stop: asyncio.Event) -> None:
        """When busy, let a small batch grow until ``min_interval_s`` has passed since the
        last one started."""
        if self._rate < self._busy_rate:
            return
        wait = last_start + self._min_interval_s - time.monotonic()
        if wait <= 0 or len(self._buffer) >= self._batch_size:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(
                waits, timeout=self._heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()

    async def _pull(self) -> None:
        """Open a pull request unless one is open or too much is waiting to be applied."""
        if self._quota > 0 or len(self._buffer) >= self._max_buffered:
            return
        if not self._nc.is_connected:
            return
        request = {
            "batch": self._batch_size,
            "expires": int(self._expires_s * 1e9),
            "idle_heartbeat": int(self._heartbeat_s * 1e9),
        }
        self._quota = self._batch_size
        self._last_seen = time.monotonic()
        await self._nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{streams.EVENTS}.{self._consumer}",
            json.dumps(request).encode(),
            reply=self._inbox,
        )

    async def _check_alive(self) -> None:
        """A silent open request means the consumer or the connection is gone."""
        if self._quota <= 0 or time.monotonic() - self._last_seen < 3 * self._heartbeat_s:
            return
        if not self._nc.is_connected:
            return  # the client reconnects; judge once it has
        try:
            await self._js.consumer_info(streams.EVENTS, self._consumer)
        except NotFoundError as exc:
            raise ConsumerLostError("consumer no longer exists") from exc
        self._quota = 0  # the request was lost (e.g. across a reconnect): ask again
        await self._pull()

    async def _on_msg(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status is not None and not msg.data:
            self._on_status(status, headers.get("Description", "") if headers else "")
            return
        self._count_rate()
        sseq, dseq, pending = _sequences(msg.reply)
        if dseq != self._dseq + 1:
            self._lost = f"consumer sequence gap: expected {self._dseq + 1}, got {dseq}"
            self._wake.set()
            return
        self._dseq = dseq
        self._pending = pending
        self._buffer.append(StreamMessage(sseq, msg.subject, msg.data))
        self.stats.received += 1
        self._quota -= 1
        if self._quota <= 0:
            await self._pull()  # keep the next batch coming while this one is applied
        self._wake.set()

    def _count_rate(self) -> None:
        """Events received per second, measured over windows of half a second or more."""
        self._rate_count += 1
        elapsed = self._last_seen - self._rate_since
        if elapsed >= 0.5:
            self._rate = self._rate_count / elapsed
            self._rate_since, self._rate_count = self._last_seen, 0

    def _on_status(self, status: str, description: str) -> None:
        if status == "100":  # idle heartbeat
            return
        if status in {"404", "408"}:  # request done: nothing (more) to deliver right now
            self._pending = 0
        elif status == "503" or (status == "409" and "deleted" in description.lower()):
            self._lost = f"{status} {description}".strip()
        else:  # 409 leadership change, max waiting, ...: just ask again
            log.debug("pull request ended: %s %s", status, description)
        self._quota = 0
        self._wake.set()


def _sequences(reply: str) -> tuple[int, int, int]:
    """(stream seq, consumer seq, pending) from a JetStream ack subject (v1 or v2 layout)."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    # $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>...
    return int(tokens[7]), int(tokens[8]), int(tokens[10])
