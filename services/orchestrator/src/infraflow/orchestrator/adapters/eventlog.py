"""The run's event log in ``WF_EVENTS``: load (batched direct reads of only what is new), fold,
and append decisions with optimistic concurrency on the run's subject."""

from __future__ import annotations

import logging
from collections import OrderedDict

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common import streams, subjects
from infraflow.common.contracts import RunEvent, decode_event, encode
from infraflow.common.jetstream import StreamReader, append
from infraflow.common.metrics import observe_run_event
from infraflow.orchestrator.core import RunState, evolve, initial

log = logging.getLogger(__name__)


_LOGGED = frozenset(
    {"run_created", "run_queued", "run_started", "run_completed", "run_failed", "run_cancelled"}
)
"""Run lifecycle events the orchestrator logs (the run id comes from the log context)."""


class RunLog:
    """Folded run states, cached with the stream sequence they reflect."""

    def __init__(self, nc: Client, js: JetStreamContext, *, cache_size: int = 20_000) -> None:
        self._nc = nc
        self._js = js
        self._reader = StreamReader(nc)
        self._cache: OrderedDict[str, tuple[RunState, int]] = OrderedDict()
        self._cache_size = cache_size
        self.appends = 0
        self.conflicts = 0
        self.loads = 0
        self.follows = 0

    async def current(
        self, resource_type: str, resource_id: str, run_id: str, *, through: int | None = None
    ) -> tuple[RunState, int]:
        """The run's state and the sequence of its last event (0: no events).

        With ``through``, a cached state that already reflects that sequence is returned without
        reading the stream (``through=0``: a new run, the empty state): events after it can only
        have been written by someone else, and the next append (which expects the returned
        sequence) would conflict and reload."""
        cached = self._cache.get(run_id)
        if cached is not None and through is not None and cached[1] >= through:
            self._cache.move_to_end(run_id)
            return cached
        if cached is None and through == 0:  # a run known to be new: nothing to read
            return initial(run_id, resource_type, resource_id), 0
        state, seq = cached if cached else (initial(run_id, resource_type, resource_id), 0)
        msgs = await self._reader.read(
            streams.EVENTS,
            subjects.run_events(resource_type, resource_id, run_id),
            after_seq=seq,
        )
        self.loads += 1
        for m in msgs:
            try:
                state = evolve(state, decode_event(m.data))
            except msgspec.ValidationError:
                log.error("undecodable event at seq %d on %s; skipped", m.seq, m.subject)
            seq = m.seq
        self._remember(run_id, state, seq)
        return state, seq

    async def append(self, state: RunState, seq: int, events: tuple[RunEvent, ...]) -> int:
        """Append ``events`` in order, each expecting the previous; raises AppendConflictError."""
        scope = subjects.run_events(state.resource_type, state.resource_id, state.run_id)
        try:
            for e in events:
                seq = await append(
                    self._js,
                    subjects.event(e.resource_type, e.resource_id, e.run_id, e.name),
                    encode(e),
                    expected_last_seq=seq,
                    scope=scope,
                    msg_id=e.event_id,
                )
                state = evolve(state, e)
                self.appends += 1
                observe_run_event(e, state.created)
                if e.name in _LOGGED:
                    log.info("%s (%s %s)", e.name, e.resource_type, e.resource_id)
        except Exception:
            self.conflicts += 1
            self._cache.pop(state.run_id, None)
            raise
        self._remember(state.run_id, state, seq)
        return seq

    def follow(self, run_id: str, event: RunEvent, seq: int, prev_seq: int) -> bool:
        """Fold ``event`` (stored at ``seq``) onto the cached state if it was appended expecting
        ``prev_seq`` and that is the cached sequence: the stream proved nothing came between.
        True when the cache reflects ``seq`` afterwards."""
        hit = self._cache.get(run_id)
        if hit is None:
            return False
        state, cached_seq = hit
        if cached_seq >= seq:
            return True
        if cached_seq != prev_seq:
            return False
        self.follows += 1
        self._remember(run_id, evolve(state, event), seq)
        return True

    def cached(self, run_id: str) -> RunState | None:
        """The cached state (it may lack the newest events), or None."""
        hit = self._cache.get(run_id)
        return hit[0] if hit else None

    def forget(self, run_id: str) -> None:
        self._cache.pop(run_id, None)

    def _remember(self, run_id: str, state: RunState, seq: int) -> None:
        self._cache[run_id] = (state, seq)
        self._cache.move_to_end(run_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
