"""In-memory object store with Kubernetes write semantics and an event history.

One global, monotonically increasing ``resourceVersion`` counts every write; each write
produces exactly one watch event, kept in a bounded history so watches can resume from a
``resourceVersion`` until it falls out of the window (then they get ``410 Expired``).
Re-exports :class:`WatchEvent`, :class:`Subscription`, ``Obj`` and :func:`now_rfc3339`
from :mod:`.events`.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from . import errors
from .events import Obj, Subscription, WatchEvent, now_rfc3339
from .patch import JSON_PATCH, MERGE_PATCH, PatchError, json_patch, merge_patch
from .resources import ResourceRef, ResourceRegistry

log = logging.getLogger(__name__)

Listener = Callable[[WatchEvent], None]
Validator = Callable[[Obj], list[tuple[str, str]]]

_SERVER_FIELDS = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _meta(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _content(obj: Obj, *, has_status: bool) -> Obj:
    skip = {"metadata", "status"} if has_status else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


def _without_rv(obj: Obj) -> Obj:
    meta = {k: v for k, v in _meta(obj).items() if k not in ("resourceVersion", "generation")}
    return {**obj, "metadata": meta}


def _normalise(obj: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    if "finalizers" in meta and not meta["finalizers"]:
        del meta["finalizers"]


class ObjectStore:
    """All objects of all resources, keyed by resource, namespace and name."""

    def __init__(self, registry: ResourceRegistry, history_window: int) -> None:
        self.registry = registry
        self._objects: dict[ResourceRef, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._history: deque[WatchEvent] = deque(maxlen=history_window)
        self._compacted_rv = 0
        self._subscriptions: set[Subscription] = set()
        self._listeners: list[Listener] = []
        self._validators: dict[ResourceRef, list[Validator]] = {}

    # ------------------------------------------------------------------ bookkeeping
    @property
    def current_rv(self) -> int:
        """The resourceVersion of the latest write."""
        return self._rv

    @property
    def compacted_rv(self) -> int:
        """Watches must start at or after this resourceVersion."""
        return self._compacted_rv

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` synchronously after every committed write."""
        self._listeners.append(listener)

    def add_validator(self, ref: ResourceRef, validator: Validator) -> None:
        """Check objects of ``ref`` on create and update; causes become ``422 Invalid``."""
        self._validators.setdefault(ref, []).append(validator)

    def compact(self) -> int:
        """Drop the whole event history; return the new compaction resourceVersion."""
        self._history.clear()
        self._compacted_rv = self._rv
        return self._rv

    def reset(self) -> None:
        """Remove all objects, history and subscriptions; resourceVersion keeps counting."""
        self._objects.clear()
        self.compact()
        self.close_subscriptions()
        self.registry.reset()

    def close_subscriptions(self) -> None:
        """End every live subscription (used on shutdown and reset)."""
        for sub in list(self._subscriptions):
            sub.close()
        self._subscriptions.clear()

    @property
    def watch_count(self) -> int:
        """Number of live subscriptions."""
        return len(self._subscriptions)

    def counts(self) -> dict[str, int]:
        """Number of stored objects per ``plural.group``."""
        return {ref.qualified: len(objs) for ref, objs in sorted(self._objects.items()) if objs}

    def dump(self) -> list[Obj]:
        """Copies of every stored object."""
        return [
            copy.deepcopy(o) for _, objs in sorted(self._objects.items()) for o in objs.values()
        ]

    # ------------------------------------------------------------------ reads
    def peek(self, ref: ResourceRef, namespace: str, name: str) -> Obj | None:
        """The stored object itself (read-only!) or ``None``."""
        return self._objects.get(ref, {}).get((namespace, name))

    def get(self, ref: ResourceRef, namespace: str, name: str) -> Obj:
        """A copy of one object; ``404`` when missing."""
        return copy.deepcopy(self._require(ref, namespace, name))

    def list_objects(
        self,
        ref: ResourceRef,
        namespace: str | None,
        predicate: Callable[[Obj], bool] | None = None,
        after: tuple[str, str] | None = None,
    ) -> list[Obj]:
        """Copies of the matching objects sorted by namespace and name.

        ``after`` skips every object whose ``(namespace, name)`` is not greater than it.
        """
        items: list[Obj] = []
        for key, obj in sorted(self._objects.get(ref, {}).items()):
            if namespace is not None and key[0] != namespace:
                continue
            if after is not None and key <= after:
                continue
            if predicate is None or predicate(obj):
                items.append(copy.deepcopy(obj))
        return items

    def _require(self, ref: ResourceRef, namespace: str, name: str) -> Obj:
        obj = self.peek(ref, namespace, name)
        if obj is None:
            raise errors.not_found(ref, name)
        return obj

    # ------------------------------------------------------------------ writes
    def create(self, ref: ResourceRef, namespace: str, body: Any) -> Obj:
        """Create an object (``201`` semantics); ``409 AlreadyExists`` on a taken name."""
        self._check_body(ref, namespace, body, name=None)
        kind = body["kind"]
        obj: Obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise errors.invalid(
                    ref, kind, "", [("metadata.name", "Required value: name or generateName")]
                )
            name = prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        if len(name) > 253 or not _NAME_RE.match(name):
            raise errors.invalid(
                ref,
                kind,
                name,
                [("metadata.name", f"Invalid value: {name!r}: must be an RFC 1123 subdomain")],
            )
        if self.peek(ref, namespace, name) is not None:
            raise errors.already_exists(ref, name)
        for field in (*_SERVER_FIELDS, "resourceVersion"):
            meta.pop(field, None)
        meta.update(
            name=name,
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=now_rfc3339(),
            generation=1,
        )
        if self.registry.has_status(ref):
            obj.pop("status", None)
        _normalise(obj)
        self._validate(ref, obj)
        self.registry.register(ref, kind)
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        self._objects.setdefault(ref, {})[(namespace, name)] = obj
        self._emit("ADDED", ref, namespace, name, rv, obj, None)
        return copy.deepcopy(obj)

    def replace(
        self, ref: ResourceRef, namespace: str, name: str, body: Any, *, status: bool
    ) -> Obj:
        """PUT semantics: ``metadata.resourceVersion`` is required and must be current."""
        old = self._require(ref, namespace, name)
        self._check_body(ref, namespace, body, name=name)
        requested = _meta(body).get("resourceVersion")
        if not requested:
            raise errors.invalid(
                ref,
                old["kind"],
                name,
                [
                    (
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if str(requested) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(ref, name)
        return self._commit(ref, namespace, name, old, self._prepare(ref, old, body, status))

    def patch(
        self,
        ref: ResourceRef,
        namespace: str,
        name: str,
        body: Any,
        content_type: str,
        *,
        status: bool,
    ) -> Obj:
        """PATCH with a JSON merge patch or a JSON patch (other types: ``415``).

        A ``metadata.resourceVersion`` in the patched result must equal the current one.
        """
        old = self._require(ref, namespace, name)
        if content_type == MERGE_PATCH:
            if not isinstance(body, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            patched = merge_patch(old, body)
        elif content_type == JSON_PATCH:
            if not isinstance(body, list):
                raise errors.bad_request(
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                )
            try:
                patched = json_patch(old, body)
            except PatchError as exc:
                raise errors.ApiError(
                    422, "Invalid", f"the server rejected our request due to an error: {exc}"
                ) from exc
        else:
            raise errors.unsupported_media_type(content_type)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch did not produce an object")
        self._check_body(ref, namespace, patched, name=name)
        requested = _meta(patched).get("resourceVersion")
        if requested and str(requested) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(ref, name)
        return self._commit(ref, namespace, name, old, self._prepare(ref, old, patched, status))

    def delete(self, ref: ResourceRef, namespace: str, name: str, options: Any = None) -> Obj:
        """Delete at once, or mark for deletion when finalizers remain; returns the object."""
        old = self._require(ref, namespace, name)
        meta = old["metadata"]
        pre = (options or {}).get("preconditions") if isinstance(options, dict) else None
        if isinstance(pre, dict):
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise errors.conflict(
                    ref,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {meta['uid']}",
                )
            wanted_rv = pre.get("resourceVersion")
            if wanted_rv and str(wanted_rv) != meta["resourceVersion"]:
                raise errors.conflict(
                    ref,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{wanted_rv}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return copy.deepcopy(old)
            new = copy.deepcopy(old)
            new["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
            return self._commit(ref, namespace, name, old, new)
        rv = self._next_rv()
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(rv)
        del self._objects[ref][(namespace, name)]
        self._emit("DELETED", ref, namespace, name, rv, gone, old)
        return copy.deepcopy(gone)

    def mutate(
        self, ref: ResourceRef, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> Obj | None:
        """Controller write: apply ``change`` to a copy and commit without version checks.

        Returns the committed object, or ``None`` if it does not exist (any more).
        """
        old = self.peek(ref, namespace, name)
        if old is None:
            return None
        new = copy.deepcopy(old)
        change(new)
        _normalise(new)
        return self._commit(ref, namespace, name, old, new)

    # ------------------------------------------------------------------ watches
    def subscribe(
        self, ref: ResourceRef, namespace: str | None, since: int | None
    ) -> tuple[Subscription, list[WatchEvent]]:
        """Start a subscription and return the events the watcher must see first.

        ``since=None`` yields a synthetic ``ADDED`` per existing object; otherwise the
        history after ``since`` is replayed, or ``410 Expired`` raised when compacted.
        """
        if since is not None and since < self._compacted_rv:
            raise errors.expired(f"too old resource version: {since} ({self._compacted_rv})")
        sub = Subscription(ref, namespace)
        if since is None:
            initial = [
                WatchEvent("ADDED", ref, ns, nm, int(obj["metadata"]["resourceVersion"]), obj)
                for (ns, nm), obj in sorted(self._objects.get(ref, {}).items())
                if namespace in (None, ns)
            ]
        else:
            initial = [ev for ev in self._history if ev.rv > since and sub.wants(ev)]
        self._subscriptions.add(sub)
        return sub, initial

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering events to ``sub``."""
        self._subscriptions.discard(sub)

    # ------------------------------------------------------------------ internals
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _check_body(self, ref: ResourceRef, namespace: str, body: Any, name: str | None) -> None:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if not kind:
            raise errors.bad_request("Object 'Kind' is missing in the request body")
        if not api_version:
            raise errors.bad_request("Object 'apiVersion' is missing in the request body")
        if api_version != ref.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({ref.api_version})"
            )
        known = self.registry.known_kind(ref)
        if known and kind != known:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({known})"
            )
        meta = body.get("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be a JSON object")
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if name is not None and meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )

    def _prepare(self, ref: ResourceRef, old: Obj, candidate: Obj, status_only: bool) -> Obj:
        has_status = self.registry.has_status(ref)
        if status_only:
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
            return new
        new = copy.deepcopy(candidate)
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for field in (*_SERVER_FIELDS, "name", "namespace"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        _normalise(new)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers", [])) - set(old_meta.get("finalizers", []))
            if added:
                raise errors.invalid(
                    ref,
                    old["kind"],
                    old_meta["name"],
                    [
                        (
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is "
                            "being deleted",
                        )
                    ],
                )
        self._validate(ref, new)
        return new

    def _validate(self, ref: ResourceRef, obj: Obj) -> None:
        causes = [c for check in self._validators.get(ref, []) for c in check(obj)]
        if causes:
            raise errors.invalid(ref, obj["kind"], obj["metadata"].get("name", ""), causes)

    def _commit(self, ref: ResourceRef, namespace: str, name: str, old: Obj, new: Obj) -> Obj:
        if _without_rv(old) == _without_rv(new):
            return copy.deepcopy(old)
        has_status = self.registry.has_status(ref)
        meta = new["metadata"]
        generation = int(old["metadata"].get("generation", 1))
        if _content(old, has_status=has_status) != _content(new, has_status=has_status):
            generation += 1
        meta["generation"] = generation
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._objects[ref][(namespace, name)]
            self._emit("DELETED", ref, namespace, name, rv, new, old)
        else:
            self._objects[ref][(namespace, name)] = new
            self._emit("MODIFIED", ref, namespace, name, rv, new, old)
        return copy.deepcopy(new)

    def _emit(
        self,
        kind: str,
        ref: ResourceRef,
        namespace: str,
        name: str,
        rv: int,
        obj: Obj,
        old: Obj | None,
    ) -> None:
        event = WatchEvent(kind, ref, namespace, name, rv, obj, old)
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(event)
        for sub in self._subscriptions:
            if sub.wants(event):
                sub.queue.put_nowait(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("store listener failed for %s %s/%s", kind, namespace, name)


__all__ = ["Obj", "ObjectStore", "Subscription", "WatchEvent", "now_rfc3339"]
