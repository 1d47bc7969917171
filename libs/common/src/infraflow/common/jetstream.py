"""JetStream building blocks the services share: a streaming pull consumer, optimistic appends
and batched direct reads.

nats-py's ``fetch()`` waits until its batch is full or its timeout expires, which adds latency to
every message under light load; ``PullConsumer`` keeps one pull request open and hands each
message to its handler the moment it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError
from nats.js.errors import NotFoundError as JsNotFoundError

from infraflow.common.errors import AppendConflictError
from infraflow.common.metrics import QUEUE_LAG

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]

_WRONG_LAST_SEQUENCE = {10071, 10164}
EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class PullConsumer:
    """Streams messages of a durable pull consumer to ``handler`` with bounded concurrency.

    The handler acks, naks or terms each message. An exception escaping it is logged and the
    message is nak'ed with a delay, so the consumer never dies of one bad message.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        handler: Handler,
        *,
        max_inflight: int = 64,
        expires_s: float = 10.0,
        heartbeat_s: float = 2.0,
        error_delay_s: float = 1.0,
    ) -> None:
        self._nc = nc
        self._stream = stream
        self._durable = durable
        self._handler = handler
        self._max_inflight = max_inflight
        self._expires_s = expires_s
        self._heartbeat_s = heartbeat_s
        self._error_delay_s = error_delay_s
        self._inflight: set[asyncio.Task[None]] = set()
        self._quota = 0
        self._last_seen = 0.0
        self._stopping = False
        self._wake = asyncio.Event()
        self._inbox = ""

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish in-flight messages and return."""
        self._inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._durable}"
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                now = time.monotonic()
                stale = now - self._last_seen > max(self._expires_s, 3 * self._heartbeat_s)
                if self._quota <= 0 or stale:
                    free = self._max_inflight - len(self._inflight)
                    if free > 0 and self._nc.is_connected:
                        req = {
                            "batch": free,
                            "expires": int(self._expires_s * 1e9),
                            "idle_heartbeat": int(self._heartbeat_s * 1e9),
                        }
                        self._quota = free
                        self._last_seen = now
                        await self._nc.publish(next_subject, json.dumps(req).encode(), self._inbox)
                self._wake.clear()
                wake = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {wake, stop_task}, timeout=self._heartbeat_s, return_when="FIRST_COMPLETED"
                )
                wake.cancel()
        finally:
            self._stopping = True
            stop_task.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self._inflight:
                await asyncio.wait(set(self._inflight))

    async def _on_msg(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None and not msg.data:
            if status == "100":  # idle heartbeat (or flow control)
                if msg.reply:
                    await self._nc.publish(msg.reply, b"")
                return
            # 404 no messages, 408 request expired, 409 leadership change/limits: re-request
            self._quota = 0
            self._wake.set()
            return
        self._quota -= 1
        if self._stopping:
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        task = asyncio.create_task(self._handle(msg))
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._quota <= 0:
            self._wake.set()

    async def _handle(self, msg: Msg) -> None:
        _observe_lag(self._durable, msg)
        try:
            await self._handler(msg)
        except Exception:
            log.exception("handler failed on %s; will be redelivered", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._error_delay_s)


def _observe_lag(durable: str, msg: Msg) -> None:
    """Queue lag: from the message's arrival in its stream until a handler takes it."""
    with contextlib.suppress(Exception):  # no metadata (not a JetStream message): no sample
        stored = msg.metadata.timestamp.timestamp()
        QUEUE_LAG.labels(durable).observe(max(0.0, time.time() - stored))


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """A message read back from a stream."""

    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]


async def append(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    expected_last_seq: int | None = None,
    scope: str | None = None,
    msg_id: str | None = None,
    timeout: float | None = None,
    extra_headers: dict[str, str] | None = None,
) -> int:
    """Append one message; with ``expected_last_seq`` the append succeeds only if the last
    message on ``scope`` (a subject filter, default ``subject``) has that sequence (0: none).
    ``extra_headers`` (e.g. the trace context) ride along.

    Raises ``AppendConflictError`` on a conflict. A retried append whose ``Nats-Msg-Id`` already
    landed is reported as success: on R1 streams the server checks the sequence before the
    duplicate window, so the last message on the scope is compared by id.
    """
    headers: dict[str, str] = dict(extra_headers or {})
    if msg_id:
        headers[Header.MSG_ID] = msg_id
    if expected_last_seq is not None:
        headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_last_seq)
        if scope and scope != subject:
            headers[EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT] = scope
    try:
        ack = await js.publish(subject, payload, headers=headers or None, timeout=timeout)
        return int(ack.seq)
    except APIError as exc:
        if exc.err_code not in _WRONG_LAST_SEQUENCE:
            raise
        actual = _actual_seq(exc.description)
        if msg_id and scope:
            last = await get_last(js, ack_stream_of(js, subject), scope)
            if last is not None and last.headers.get(Header.MSG_ID) == msg_id:
                return last.seq
        raise AppendConflictError(
            f"append to {subject} conflicted (expected {expected_last_seq}, actual {actual})",
            actual_last_seq=actual,
        ) from exc


def ack_stream_of(js: JetStreamContext, subject: str) -> str:
    """The stream that holds ``subject`` (by our naming convention)."""
    from infraflow.common import streams

    if subject.startswith("wf.events."):
        return streams.EVENTS
    if subject.startswith("wf.cmd."):
        return streams.COMMANDS
    if subject.startswith("wf.step."):
        return streams.STEPS
    if subject.startswith("wf.timer."):
        return streams.TIMERS
    if subject.startswith("infra.observed."):
        return streams.OBSERVED
    raise ValueError(f"no stream for {subject!r}")


def _actual_seq(description: str | None) -> int | None:
    if description and ":" in description:
        try:
            return int(description.rsplit(":", 1)[1].strip())
        except ValueError:
            return None
    return None


async def get_last(js: JetStreamContext, stream: str, subject: str) -> StoredMsg | None:
    """The last message on ``subject`` (wildcards allowed) via direct get, or None."""
    try:
        raw = await js.get_last_msg(stream, subject, direct=True)
    except JsNotFoundError:
        return None
    return StoredMsg(
        subject=raw.subject or subject,
        seq=int(raw.seq or 0),
        data=raw.data or b"",
        headers=dict(raw.headers or {}),
    )


class StreamReader:
    """Batched direct reads over one long-lived inbox subscription (``read_subject`` makes and
    drops a subscription per call; a hot path such as loading runs should not)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._counter = 0
        self._sub: Any = None

    async def _ensure(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject.rsplit(".", 1)[1])
        if queue is not None:
            queue.put_nowait(msg)

    async def read(
        self,
        stream: str,
        subject: str,
        *,
        after_seq: int = 0,
        batch: int = 256,
        timeout: float = 5.0,
    ) -> list[StoredMsg]:
        """All messages on ``subject`` after ``after_seq``, in order."""
        await self._ensure()
        out: list[StoredMsg] = []
        seq = after_seq + 1
        api = f"$JS.API.DIRECT.GET.{stream}"
        while True:
            self._counter += 1
            token = str(self._counter)
            queue: asyncio.Queue[Msg] = asyncio.Queue()
            self._queues[token] = queue
            try:
                req = {"seq": seq, "next_by_subj": subject, "batch": batch}
                await self._nc.publish(
                    api, json.dumps(req).encode(), reply=f"{self._prefix}.{token}"
                )
                got, pending = 0, 0
                while True:
                    m = await asyncio.wait_for(queue.get(), timeout)
                    hdrs: dict[str, Any] = dict(m.headers or {})
                    status = hdrs.get("Status")
                    if status == "204":
                        pending = int(hdrs.get("Nats-Num-Pending", "0") or 0)
                        break
                    if status == "404":
                        break
                    if status:
                        raise RuntimeError(f"direct get failed: {status} {hdrs.get('Description')}")
                    s = int(hdrs["Nats-Sequence"])
                    out.append(StoredMsg(hdrs.get("Nats-Subject", subject), s, m.data, hdrs))
                    seq = s + 1
                    got += 1
            finally:
                self._queues.pop(token, None)
            if got < batch or pending == 0:
                return out

    async def last_of(
        self, stream: str, subjects_: list[str], *, timeout: float = 5.0
    ) -> dict[str, StoredMsg]:
        """The last message on each of ``subjects_`` (those that have one), in one request."""
        await self._ensure()
        self._counter += 1
        token = str(self._counter)
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._queues[token] = queue
        out: dict[str, StoredMsg] = {}
        try:
            req = {"multi_last": subjects_, "batch": len(subjects_)}
            await self._nc.publish(
                f"$JS.API.DIRECT.GET.{stream}",
                json.dumps(req).encode(),
                reply=f"{self._prefix}.{token}",
            )
            while True:
                m = await asyncio.wait_for(queue.get(), timeout)
                hdrs: dict[str, Any] = dict(m.headers or {})
                status = hdrs.get("Status")
                if status in ("204", "404"):
                    return out
                if status:
                    raise RuntimeError(f"direct get failed: {status} {hdrs.get('Description')}")
                subject = hdrs.get("Nats-Subject", "")
                out[subject] = StoredMsg(subject, int(hdrs["Nats-Sequence"]), m.data, hdrs)
        finally:
            self._queues.pop(token, None)


async def read_subject(
    nc: Client,
    stream: str,
    subject: str,
    *,
    after_seq: int = 0,
    batch: int = 256,
    timeout: float = 5.0,
) -> list[StoredMsg]:
    """All messages on ``subject`` (a filter) after ``after_seq``, in order, using batched direct
    gets (one request per ``batch`` messages)."""
    out: list[StoredMsg] = []
    seq = after_seq + 1
    api = f"$JS.API.DIRECT.GET.{stream}"
    while True:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            req = {"seq": seq, "next_by_subj": subject, "batch": batch}
            await nc.publish(api, json.dumps(req).encode(), reply=inbox)
            got = 0
            pending = 0
            while True:
                m = await sub.next_msg(timeout=timeout)
                hdrs: dict[str, Any] = dict(m.headers or {})
                status = hdrs.get("Status")
                if status == "204":  # end of batch
                    pending = int(hdrs.get("Nats-Num-Pending", "0") or 0)
                    break
                if status == "404":
                    break
                if status:
                    raise RuntimeError(f"direct get failed: {status} {hdrs.get('Description')}")
                s = int(hdrs["Nats-Sequence"])
                out.append(StoredMsg(hdrs.get("Nats-Subject", subject), s, m.data, hdrs))
                seq = s + 1
                got += 1
        finally:
            await sub.unsubscribe()
        if got < batch or pending == 0:
            return out
