"""Folding a batch of stream messages into row changes.

The store loads the current state of every run and resource a batch touches, hands them to
``fold_batch`` and writes back what changed, together with the batch's last sequence, in one
transaction. Messages at or below the last applied sequence are dropped here, so a replayed
message is harmless; undecodable ones are reported (never raised) and still advance the
position. Raw events are not copied into the read model: each run records the sequences of its
events (``RunState.seqs``) and its history is read back from the stream by sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from infraflow.common.catalog import Catalog
from infraflow.common.contracts import AnyRunEvent, decode_event
from infraflow.projector.core.resources import evolve_resource
from infraflow.projector.core.runs import evolve_run
from infraflow.projector.core.state import ResourceState, RunState

ResourceKey = tuple[str, str]
"""(resource type, resource id)"""


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message of ``WF_EVENTS`` as the follower received it."""

    seq: int
    subject: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SkippedMessage:
    """A message that was logged and skipped: not a run event this version understands, or one
    the fold failed on."""

    seq: int
    subject: str
    reason: str


@dataclass(slots=True)
class DecodedBatch:
    """The new messages of a batch, decoded, and the keys of the state they touch."""

    events: list[tuple[StreamMessage, AnyRunEvent]] = field(default_factory=list)
    skipped: list[SkippedMessage] = field(default_factory=list)
    last_seq: int = 0

    @property
    def run_ids(self) -> set[str]:
        return {e.run_id for _, e in self.events}

    @property
    def resource_keys(self) -> set[ResourceKey]:
        return {(e.resource_type, e.resource_id) for _, e in self.events}


@dataclass(slots=True)
class BatchChanges:
    """What a batch changed: the rows to upsert."""

    runs: dict[str, RunState] = field(default_factory=dict)
    resources: dict[ResourceKey, ResourceState] = field(default_factory=dict)
    events: int = 0
    """Run events folded (or attempted) in this batch."""
    orphans: int = 0
    """Events of runs whose ``run_created`` was never seen (left in the log, not folded)."""
    failed: list[SkippedMessage] = field(default_factory=list)
    """Events the fold could not apply (a bug): skipped, so one event never stalls the log."""


def decode_batch(messages: list[StreamMessage], applied_seq: int) -> DecodedBatch:
    """Decode the messages after ``applied_seq`` (earlier ones were applied already)."""
    out = DecodedBatch(last_seq=applied_seq)
    for m in messages:
        if m.seq <= out.last_seq:
            continue
        out.last_seq = m.seq
        try:
            out.events.append((m, decode_event(m.data)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            out.skipped.append(SkippedMessage(m.seq, m.subject, str(exc)))
    return out


def fold_batch(
    batch: DecodedBatch,
    runs: dict[str, RunState],
    resources: dict[ResourceKey, ResourceState],
    catalog: Catalog,
) -> BatchChanges:
    """Fold the batch's events, in stream order, into ``runs`` and ``resources`` (the current
    states of everything the batch touches, as loaded by the store; updated in place)."""
    changes = BatchChanges()
    for message, event in batch.events:
        changes.events += 1
        try:
            _fold_one(event, runs, resources, catalog, changes)
        except Exception as exc:  # a failure is data: report it, never stall the follower
            changes.failed.append(SkippedMessage(message.seq, message.subject, f"fold: {exc!r}"))
        run = runs.get(event.run_id)
        if run is not None and (not run.seqs or run.seqs[-1] < message.seq):
            run.seqs.append(message.seq)  # the history keeps even an event the fold failed on
            changes.runs[run.id] = run
    return changes


def _fold_one(
    event: AnyRunEvent,
    runs: dict[str, RunState],
    resources: dict[ResourceKey, ResourceState],
    catalog: Catalog,
    changes: BatchChanges,
) -> None:
    run = evolve_run(runs.get(event.run_id), event)
    if run is None:
        changes.orphans += 1
        return
    runs[run.id] = run
    changes.runs[run.id] = run
    key = (event.resource_type, event.resource_id)
    before = resources.get(key)
    revision = before.revision if before is not None else 0
    resource = evolve_resource(before, event, run, catalog.get(run.type))
    if resource is not None and (resource is not before or resource.revision != revision):
        resources[key] = resource
        changes.resources[key] = resource
