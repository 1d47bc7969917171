"""Level-triggered controller loop on top of the store's event listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..config import EmulatorConfig
from ..resources import ResourceRef
from ..store import Obj, ObjectStore, WatchEvent, now_rfc3339

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""``(namespace, name)`` of a reconciled object."""

FAIL_ANNOTATION = "emulator.infraflow.dev/fail"
"""Annotation that switches an object into an emulated failure mode."""


class Controller:
    """Reconciles objects of :attr:`ref` whenever they change or a timer fires.

    Reconciles run from the event loop (``call_soon``), never inside a store write, and
    are coalesced per object. Subclasses implement :meth:`reconcile` (synchronous: all
    store operations are synchronous) and may override :meth:`handle_event`.
    """

    ref: ResourceRef

    def __init__(self, store: ObjectStore, config: EmulatorConfig) -> None:
        self.store = store
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: set[Key] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        store.add_listener(self._on_event)

    @property
    def running(self) -> bool:
        """Whether the controller reacts to events."""
        return self._loop is not None

    def start(self) -> None:
        """Start reacting to events (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        for namespace, name in self._existing_keys():
            self.enqueue((namespace, name))

    def stop(self) -> None:
        """Stop reacting and cancel pending timers."""
        self._loop = None
        self.reset()

    def reset(self) -> None:
        """Cancel timers and forget per-object memory."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._scheduled.clear()

    def _existing_keys(self) -> list[Key]:
        return [
            (o["metadata"]["namespace"], o["metadata"]["name"])
            for o in self.store.list_objects(self.ref, None)
        ]

    def _on_event(self, event: WatchEvent) -> None:
        if self._loop is not None:
            self.handle_event(event)

    def handle_event(self, event: WatchEvent) -> None:
        """React to a committed write; by default reconcile changed objects of :attr:`ref`."""
        if event.ref != self.ref:
            return
        if event.type == "DELETED":
            self.forget(str(event.object["metadata"].get("uid", "")))
        else:
            self.enqueue((event.namespace, event.name))

    def forget(self, uid: str) -> None:
        """Drop memory about a removed object (override to clean per-uid state)."""

    def enqueue(self, key: Key) -> None:
        """Reconcile ``key`` soon (coalesced)."""
        if self._loop is None or key in self._scheduled:
            return
        self._scheduled.add(key)
        self._loop.call_soon(self._run, key)

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` after ``delay`` seconds unless the controller stops."""
        if self._loop is None:
            return
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(holder[0])
            if self._loop is not None:
                callback(*args)

        handle = self._loop.call_later(delay, fire)
        holder.append(handle)
        self._timers.add(handle)

    def _run(self, key: Key) -> None:
        self._scheduled.discard(key)
        obj = self.store.peek(self.ref, *key)
        if obj is None:
            return
        try:
            self.reconcile(key, obj)
        except Exception:
            log.exception("%s reconcile of %s/%s failed", type(self).__name__, *key)

    def reconcile(self, key: Key, obj: Obj) -> None:
        """Drive ``obj`` (read-only snapshot) towards its desired state."""
        raise NotImplementedError

    # helpers ---------------------------------------------------------------------
    def write(self, key: Key, change: Callable[[Obj], None]) -> Obj | None:
        """Commit ``change`` to the current object (no-op writes emit nothing)."""
        return self.store.mutate(self.ref, key[0], key[1], change)

    def add_finalizer(self, key: Key, finalizer: str) -> None:
        """Append ``finalizer`` to the object's finalizers."""

        def change(obj: Obj) -> None:
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if finalizer not in finalizers:
                finalizers.append(finalizer)

        self.write(key, change)

    def remove_finalizer(self, key: Key, finalizer: str) -> None:
        """Remove ``finalizer``; the store deletes the object if it was the last one."""

        def change(obj: Obj) -> None:
            finalizers = obj["metadata"].get("finalizers", [])
            obj["metadata"]["finalizers"] = [f for f in finalizers if f != finalizer]

        self.write(key, change)


def failure_mode(obj: Obj) -> str | None:
    """The value of the failure annotation, if any."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(FAIL_ANNOTATION)
    return str(value) if value else None


def set_condition(
    status: dict[str, Any],
    type_: str,
    state: bool,
    reason: str,
    message: str,
    observed_generation: int | None = None,
) -> None:
    """Upsert a ``metav1.Condition`` in ``status['conditions']``.

    ``lastTransitionTime`` only changes when the condition's status flips.
    """
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    value = "True" if state else "False"
    existing = next((c for c in conditions if c.get("type") == type_), None)
    condition: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_rfc3339(),
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    if existing is None:
        conditions.append(condition)
        return
    if existing.get("status") == value:
        condition["lastTransitionTime"] = existing.get(
            "lastTransitionTime", condition["lastTransitionTime"]
        )
    existing.clear()
    existing.update(condition)
