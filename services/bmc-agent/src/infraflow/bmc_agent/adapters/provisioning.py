"""The ``wf-provisioning`` bucket as the bmc-agent uses it: installer callbacks and per-site
provisioning slots.

Callbacks: the gateway creates ``callback.<runId>`` (first callback wins). A waiting step reads
the key when it starts (the callback may have come first), then waits for a nudge from a
headers-only ordered consumer on the bucket's ``callback.*`` subjects, re-reading the key every
``poll_s`` in case a nudge was lost (a reconnect). Nothing is kept in memory that a restart
would lose: the key is the truth. ``wait.<runId>`` records when the run began waiting, so a
retried attempt keeps the original deadline.

Slots: ``slot.<site>.<n>`` for ``n < cap``, each created by the run that takes it and deleted
(compare-and-set) when that run gives it back. A slot whose holder run has ended (a terminal
event is in ``WF_EVENTS``) is taken over, so a run that died without releasing its slot
cannot leak it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from infraflow.common import streams, subjects
from infraflow.common.contracts import encode
from infraflow.common.jetstream import get_last
from infraflow.common.provisioning import (
    ProvisioningCallback,
    ProvisioningSlot,
    callback_key,
    slot_key,
)

log = logging.getLogger(__name__)

_callback_decoder = msgspec.json.Decoder(ProvisioningCallback)
_slot_decoder = msgspec.json.Decoder(ProvisioningSlot)
_TERMINAL = ("run_completed", "run_failed", "run_cancelled")

HolderOver = Callable[[ProvisioningSlot], Awaitable[bool]]


class ProvisioningStore:
    """Callbacks and slots in the ``wf-provisioning`` bucket (see the module docstring)."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, *, poll_s: float = 5.0) -> None:
        self._js = js
        self._kv = kv
        self.poll_s = poll_s
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._sub: Subscription | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, *, poll_s: float = 5.0) -> ProvisioningStore:
        return cls(js, await js.key_value(streams.KV_PROVISIONING), poll_s=poll_s)

    # ---- callbacks --------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to new callback keys (nudges for waiting steps)."""
        subject = subjects.kv_key(streams.KV_PROVISIONING, "callback.*")
        try:
            self._sub = await self._js.subscribe(
                subject,
                cb=self._on_callback,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                headers_only=True,
                config=ConsumerConfig(description="bmc-agent callback nudges"),
            )
        except Exception:  # the poll still finds every callback, only later
            log.warning("no callback nudges (subscription failed); polling only", exc_info=True)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_callback(self, msg: Msg) -> None:
        run_id = msg.subject.rsplit(".", 1)[-1]
        for event in self._waiters.get(run_id, ()):
            event.set()

    async def callback(self, run_id: str) -> ProvisioningCallback | None:
        """The run's recorded callback, if the installer called."""
        try:
            entry = await self._kv.get(callback_key(run_id))
        except KeyNotFoundError:
            return None
        try:
            return _callback_decoder.decode(entry.value or b"")
        except msgspec.ValidationError:
            log.warning("undecodable callback record of run %s", run_id)
            return None

    async def wait_for_callback(self, run_id: str, timeout: float) -> None:
        """Return when a callback for ``run_id`` may have arrived, or after ``timeout``."""
        event = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(timeout, self.poll_s))
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[run_id]

    async def wait_started(self, run_id: str, now: datetime) -> datetime:
        """When the run began waiting for its callback (``now`` if this is the first time)."""
        key = f"wait.{subjects.token(run_id)}"
        try:
            await self._kv.create(key, now.isoformat().encode())
            return now
        except KeyWrongLastSequenceError:
            entry = await self._kv.get(key)
            return datetime.fromisoformat((entry.value or b"").decode())

    # ---- slots ------------------------------------------------------------------------------

    async def acquire(
        self, slot: ProvisioningSlot, cap: int, holder_over: HolderOver
    ) -> int | None:
        """Take one of the site's ``cap`` slots for ``slot.run_id`` (idempotent: a slot it
        already holds is returned); None when all are held by live runs."""
        entries: list[tuple[int, int | None, ProvisioningSlot | None]] = []
        for index in range(cap):
            revision, holder = await self._slot(slot.site, index)
            if holder is not None and holder.run_id == slot.run_id:
                return index
            entries.append((index, revision, holder))
        value = encode(slot)
        for index, _, holder in entries:
            if holder is None:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await self._kv.create(slot_key(slot.site, index), value)
                    return index
        for index, revision, holder in entries:
            if holder is not None and revision is not None and await holder_over(holder):
                with contextlib.suppress(KeyWrongLastSequenceError):
                    await self._kv.update(slot_key(slot.site, index), value, last=revision)
                    log.info(
                        "took over slot %d of %s from ended run %s", index, slot.site, holder.run_id
                    )
                    return index
        return None

    async def release(self, site: str, run_id: str, scan: int) -> int | None:
        """Give back the slot ``run_id`` holds among the first ``scan`` of ``site``."""
        for index in range(scan):
            revision, holder = await self._slot(site, index)
            if holder is not None and holder.run_id == run_id and revision is not None:
                with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError):
                    await self._kv.delete(slot_key(site, index), last=revision)
                return index
        return None

    async def holders(self, site: str, scan: int) -> list[str]:
        """Runs holding the site's first ``scan`` slots (tests, metrics)."""
        out = []
        for index in range(scan):
            _, holder = await self._slot(site, index)
            if holder is not None:
                out.append(holder.run_id)
        return out

    async def _slot(self, site: str, index: int) -> tuple[int | None, ProvisioningSlot | None]:
        try:
            entry = await self._kv.get(slot_key(site, index))
        except KeyNotFoundError:
            return None, None
        if not entry.value:
            return None, None
        try:
            return int(entry.revision or 0), _slot_decoder.decode(entry.value)
        except msgspec.ValidationError:
            return int(entry.revision or 0), None

    async def run_ended(self, slot: ProvisioningSlot) -> bool:
        """Whether the run holding ``slot`` has a terminal event in the log."""
        for name in _TERMINAL:
            subject = subjects.event(slot.resource_type, slot.resource_id, slot.run_id, name)
            if await get_last(self._js, streams.EVENTS, subject) is not None:
                return True
        return False
