"""Per-resource run locks with FIFO wait queues, in the ``wf-locks`` KV bucket.

One key per busy resource (``<type>.<id>``) holding ``{"holder": runId, "queue": [runIds]}``;
every change is a compare-and-set on the key's revision, so concurrent orchestrators agree.
The key is deleted when the last run releases it.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from infraflow.common.locks import LockEntry, lock_key
from infraflow.common.streams import KV_LOCKS

_MAX_CAS_TRIES = 50


class ResourceLocks:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> ResourceLocks:
        return cls(await js.key_value(KV_LOCKS))

    async def _get(self, key: str) -> tuple[LockEntry | None, int | None]:
        try:
            e = await self._kv.get(key)
        except KeyNotFoundError:  # also KeyDeletedError
            return None, None
        return LockEntry.decode(e.value), e.revision

    async def acquire(
        self, resource_type: str, resource_id: str, run_id: str, *, fail_if_busy: bool
    ) -> str | None:
        """None when ``run_id`` holds the lock; otherwise the current holder (and, unless
        ``fail_if_busy``, ``run_id`` is in the FIFO queue behind it)."""
        key = lock_key(resource_type, resource_id)
        for _ in range(_MAX_CAS_TRIES):
            entry, rev = await self._get(key)
            try:
                if entry is None:
                    await self._kv.create(key, LockEntry(run_id).encode())
                    return None
                if entry.holder == run_id:
                    return None
                if run_id in entry.queue or fail_if_busy:
                    return entry.holder
                entry.queue.append(run_id)
                await self._kv.update(key, entry.encode(), last=rev)
                return entry.holder
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"lock {key} too contended")

    async def release(self, resource_type: str, resource_id: str, run_id: str) -> str | None:
        """Give up the lock or the place in the queue; returns the run that now holds it (to be
        woken), if the lock was handed over."""
        key = lock_key(resource_type, resource_id)
        for _ in range(_MAX_CAS_TRIES):
            entry, rev = await self._get(key)
            try:
                if entry is None:
                    return None
                if entry.holder != run_id:
                    if run_id in entry.queue:
                        entry.queue.remove(run_id)
                        await self._kv.update(key, entry.encode(), last=rev)
                    return None
                if not entry.queue:
                    await self._kv.delete(key, last=rev)
                    return None
                nxt = LockEntry(entry.queue[0], entry.queue[1:])
                await self._kv.update(key, nxt.encode(), last=rev)
                return nxt.holder
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"lock {key} too contended")

    async def held(self) -> list[tuple[str, str, LockEntry]]:
        """Every held lock as (resource type, resource id, entry)."""
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return []
        out = []
        for key in keys:
            entry, _ = await self._get(key)
            if entry is not None:
                rtype, _, rid = key.partition(".")
                out.append((rtype, rid, entry))
        return out
