"""The resource directory: each resource's project, site and state in KV ``wf-resources``,
written when they change, so gateways can check a run start without asking for the resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from nats.js import JetStreamContext
from nats.js.errors import NoKeysError

from infraflow.common import subjects
from infraflow.common.contracts import ResourceEntry, encode, resource_key
from infraflow.common.streams import KV_RESOURCES
from infraflow.projector.core.state import ResourceState

log = logging.getLogger(__name__)

_CONCURRENCY = 256
"""Puts in flight at once (a replay catching up can change thousands of resources)."""


class ResourceDirectory:
    """Publishes a resource's entry when its project, site or state differs from what this
    projector last wrote. While the projector replays the log, only the latest entry of each
    resource is kept and written once it has caught up."""

    def __init__(self, js: JetStreamContext, *, timeout_s: float = 5.0) -> None:
        self._js = js
        self._timeout_s = timeout_s
        self._written: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._pending: dict[str, ResourceEntry] = {}
        self._flushing = asyncio.Lock()  # one writer at a time: an older entry never lands last
        self.puts = 0
        self.failures = 0

    async def publish(self, resources: Iterable[ResourceState], seq: int, *, live: bool) -> None:
        """Record the resources a batch changed (stream position ``seq``); write the entries
        whose view changed when ``live`` (caught up), else keep them for later."""
        for r in resources:
            key = resource_key(r.type, r.id)
            self._pending[key] = ResourceEntry(
                type=r.type, id=r.id, project_id=r.project_id, site=r.site, state=r.state, seq=seq
            )
        if live and self._pending:
            await self.flush()

    async def flush(self) -> None:
        """Write every pending entry whose view differs from the last one written."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        todo = [
            (key, e)
            for key, e in pending.items()
            if self._written.get(key) != (e.project_id, e.site, e.state)
        ]
        for start in range(0, len(todo), _CONCURRENCY):
            chunk = todo[start : start + _CONCURRENCY]
            results = await asyncio.gather(
                *(self._put(key, entry) for key, entry in chunk), return_exceptions=True
            )
            for (key, entry), result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    self.failures += 1
                    self._written.pop(key, None)
                    self._pending.setdefault(key, entry)  # written with the next batch
                else:
                    self.puts += 1
                    self._written[key] = (entry.project_id, entry.site, entry.state)
        if self._pending:
            log.warning("%d resource directory entries not written yet", len(self._pending))

    async def clear(self) -> None:
        """Delete every entry (the log they described is gone) and forget what was written.
        Key by key, so that gateways watching the bucket drop them too."""
        self._written.clear()
        self._pending.clear()
        try:
            kv = await self._js.key_value(KV_RESOURCES)
            try:
                keys = await kv.keys()
            except NoKeysError:
                return
            for key in keys:
                await kv.delete(key)
        except Exception as exc:  # no bucket yet: nothing to empty
            log.warning("resource directory not emptied (%s)", exc)

    async def _put(self, key: str, entry: ResourceEntry) -> None:
        await self._js.publish(
            subjects.kv_key(KV_RESOURCES, key), encode(entry), timeout=self._timeout_s
        )
