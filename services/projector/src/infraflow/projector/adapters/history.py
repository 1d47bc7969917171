"""A run's history, read back from ``WF_EVENTS`` (the read model keeps no copy of raw events).

The read model records the stream sequence of every event it folded into a run
(``RunState.seqs``); the history is fetched by those sequences with direct gets
(``$JS.API.DIRECT.GET``), sent together and answered by any stream replica with direct get on.
Events the follower has not applied yet (the projector lags the stream a little) are found with
``next_by_subj`` on the run's own subject filter, starting after the applied position, so the
server only searches the unapplied tail of the stream. Events go out verbatim: the original
JSON, never re-encoded.

Why not a batched ``next_by_subj`` from the run's first event: its end-of-batch reply counts the
messages still pending on the filter, which makes the server walk every later block of the
stream; at millions of events that costs tens of milliseconds per query.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from infraflow.common import streams, subjects

CONCURRENT_GETS: Final = 64
_API: Final = f"$JS.API.DIRECT.GET.{streams.EVENTS}"


class HistoryReadError(Exception):
    """The stream did not answer a direct get as expected."""


def run_filter(resource_type: str | None, resource_id: str | None, run_id: str) -> str:
    """The subject filter of one run's events (wildcards where the resource is unknown)."""
    if resource_type and resource_id:
        try:
            return subjects.run_events(resource_type, resource_id, run_id)
        except ValueError:
            pass
    return f"wf.events.*.*.{subjects.token(run_id)}.*"


def _message(msg: Msg) -> tuple[int, bytes] | None:
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise HistoryReadError(f"direct get: {status} {headers.get('Description')}")
    return int(headers["Nats-Sequence"]), msg.data


async def read_by_seqs(
    nc: Client, seqs: Sequence[int], *, timeout: float = 5.0
) -> list[tuple[int, bytes]]:
    """The events at ``seqs`` (a purged or expired one is left out), in the given order."""
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(seqs), CONCURRENT_GETS):
        chunk = seqs[i : i + CONCURRENT_GETS]
        try:
            replies = await asyncio.gather(
                *(nc.request(_API, json.dumps({"seq": s}).encode(), timeout=timeout) for s in chunk)
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise HistoryReadError(f"direct get failed: {exc!r}") from exc
        out += [m for m in map(_message, replies) if m is not None]
    return out


async def read_tail(
    nc: Client, subject_filter: str, *, after_seq: int, limit: int, timeout: float = 5.0
) -> list[tuple[int, bytes]]:
    """Up to ``limit`` events on ``subject_filter`` after ``after_seq``, one at a time (meant
    for the few events a lagging follower has not applied yet)."""
    out: list[tuple[int, bytes]] = []
    seq = after_seq + 1
    while len(out) < limit:
        request = json.dumps({"seq": seq, "next_by_subj": subject_filter}).encode()
        try:
            reply = await nc.request(_API, request, timeout=timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise HistoryReadError(f"direct get failed: {exc!r}") from exc
        found = _message(reply)
        if found is None:
            break
        out.append(found)
        seq = found[0] + 1
    return out
