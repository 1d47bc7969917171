"""Watch events, subscriptions and timestamps shared by the store and its consumers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceRef

Obj = dict[str, Any]
"""A Kubernetes object as decoded JSON."""


def now_rfc3339() -> str:
    """The current UTC time in the second-precision RFC 3339 form Kubernetes uses."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One committed change. ``object`` and ``old`` are shared and must not be mutated."""

    type: str
    ref: ResourceRef
    namespace: str
    name: str
    rv: int
    object: Obj
    old: Obj | None = None


class Subscription:
    """A live feed of events for one resource (optionally one namespace)."""

    def __init__(self, ref: ResourceRef, namespace: str | None) -> None:
        self.ref = ref
        self.namespace = namespace
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()

    def wants(self, event: WatchEvent) -> bool:
        """Whether ``event`` belongs to this subscription's resource and namespace."""
        return event.ref == self.ref and self.namespace in (None, event.namespace)

    def close(self) -> None:
        """Signal the consumer that no more events will come."""
        self.queue.put_nowait(None)
