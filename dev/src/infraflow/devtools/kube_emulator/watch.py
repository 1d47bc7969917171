"""Serving ``?watch=true`` requests as newline-delimited JSON event streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request
from .resources import ResourceRef
from .selectors import Predicate, combine, field_predicate, label_predicate
from .state import EmulatorState
from .store import WatchEvent

_IDLE_CHECK = 1.0
"""Seconds between checks for a vanished client while a watch is idle."""


def truthy(value: str | None) -> bool:
    """Kubernetes-style boolean query parameter (``true``/``1``)."""
    return value is not None and value.lower() in ("true", "1")


def parse_resource_version(value: str | None) -> int | None:
    """``None`` for absent/``0`` (start from current state), else the integer version."""
    if value in (None, "", "0"):
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"invalid resource version: {value!r}") from None
    if number < 0:
        raise bad_request(f"invalid resource version: {value!r}")
    return number


def translate(event: WatchEvent, predicate: Predicate) -> tuple[str, dict[str, Any]] | None:
    """Map a store event onto what a filtered watcher sees.

    An object that starts matching the selector is ``ADDED``, one that stops matching is
    ``DELETED`` (with its new state), as kube-apiserver does.
    """
    now = predicate(event.object)
    if event.type == "MODIFIED":
        before = event.old is not None and predicate(event.old)
        if now and before:
            return "MODIFIED", event.object
        if now:
            return "ADDED", event.object
        if before:
            return "DELETED", event.object
        return None
    return (event.type, event.object) if now else None


def _line(kind: str, obj: Mapping[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


async def serve_watch(
    request: web.Request,
    state: EmulatorState,
    ref: ResourceRef,
    namespace: str | None,
) -> web.StreamResponse:
    """Stream watch events for ``ref`` until timeout, client disconnect or shutdown."""
    query = request.query
    predicate = combine(
        label_predicate(query.get("labelSelector")), field_predicate(query.get("fieldSelector"))
    )
    since = parse_resource_version(query.get("resourceVersion"))
    bookmarks = truthy(query.get("allowWatchBookmarks"))
    timeout: float | None = None
    if query.get("timeoutSeconds"):
        try:
            timeout = float(int(query["timeoutSeconds"]))
        except ValueError:
            raise bad_request("timeoutSeconds must be an integer") from None
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        sub, initial = state.store.subscribe(ref, namespace, since)
    except ApiError as exc:
        if exc.code != 410:
            raise
        await response.prepare(request)
        await response.write(_line("ERROR", exc.to_status()))
        await response.write_eof()
        return response
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout is not None else None
    interval = state.config.bookmark_interval
    next_bookmark = loop.time() + interval
    kind = state.registry.kind_of(ref)
    try:
        await response.prepare(request)
        for event in initial:
            if (seen := translate(event, predicate)) is not None:
                await response.write(_line(*seen))
        while True:
            now = loop.time()
            if deadline is not None and now >= deadline:
                break
            if bookmarks and now >= next_bookmark:
                bookmark = {
                    "kind": kind,
                    "apiVersion": ref.api_version,
                    "metadata": {"resourceVersion": str(state.store.current_rv)},
                }
                await response.write(_line("BOOKMARK", bookmark))
                next_bookmark = now + interval
                continue
            wait = _IDLE_CHECK
            if deadline is not None:
                wait = min(wait, deadline - now)
            if bookmarks:
                wait = min(wait, next_bookmark - now)
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=max(wait, 0.0))
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                continue
            if item is None:
                break
            if (seen := translate(item, predicate)) is not None:
                await response.write(_line(*seen))
    except ConnectionError:
        return response  # the client went away
    finally:
        state.store.unsubscribe(sub)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
