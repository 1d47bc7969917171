"""Generic CRUD, list and watch handlers for any group/version/plural."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request, route_not_found
from .resources import ResourceRef
from .selectors import combine, field_predicate, label_predicate
from .state import STATE_KEY, EmulatorState
from .watch import serve_watch, truthy


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def _ref(request: web.Request) -> ResourceRef:
    info = request.match_info
    return ResourceRef(info.get("group", ""), info["version"], info["plural"])


def _is_status(request: web.Request, ref: ResourceRef) -> bool:
    if not request.path.rstrip("/").endswith("/status"):
        return False
    if not _state(request).registry.has_status(ref):
        raise route_not_found()
    return True


def _reject_dry_run(request: web.Request) -> None:
    if request.query.get("dryRun"):
        raise bad_request("dryRun is not supported by the Kubernetes API emulator")


async def json_body(request: web.Request) -> Any:
    """The decoded JSON request body, ``None`` when empty; ``400`` when malformed."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request("the request body is not valid JSON") from None


def _encode_continue(rv: int, namespace: str, name: str) -> str:
    raw = json.dumps({"rv": rv, "ns": namespace, "name": name}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["ns"]), str(data["name"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request("invalid continue token") from None


def list_body(
    state: EmulatorState, ref: ResourceRef, namespace: str | None, query: Any
) -> dict[str, Any]:
    """The ``<Kind>List`` for a list request (selectors, ``limit``/``continue``)."""
    predicate = combine(
        label_predicate(query.get("labelSelector")), field_predicate(query.get("fieldSelector"))
    )
    try:
        limit = int(query.get("limit") or 0)
    except ValueError:
        raise bad_request("limit must be an integer") from None
    list_rv = state.store.current_rv
    after: tuple[str, str] | None = None
    if token := query.get("continue"):
        list_rv, last_ns, last_name = _decode_continue(token)
        if list_rv < state.store.compacted_rv:
            raise ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter.",
            )
        after = (last_ns, last_name)
    items = state.store.list_objects(ref, namespace, predicate, after)
    metadata: dict[str, Any] = {"resourceVersion": str(list_rv)}
    if limit > 0 and len(items) > limit:
        remaining = len(items) - limit
        items = items[:limit]
        last = items[-1]["metadata"]
        metadata["continue"] = _encode_continue(list_rv, last["namespace"], last["name"])
        metadata["remainingItemCount"] = remaining
    return {
        "apiVersion": ref.api_version,
        "kind": f"{state.registry.kind_of(ref)}List",
        "metadata": metadata,
        "items": items,
    }


async def list_or_watch(request: web.Request) -> web.StreamResponse:
    """``GET`` on a collection: a list, or a watch stream with ``watch=true``."""
    state, ref = _state(request), _ref(request)
    namespace = request.match_info.get("namespace")
    if truthy(request.query.get("watch")):
        return await serve_watch(request, state, ref, namespace)
    return web.json_response(list_body(state, ref, namespace, request.query))


async def create(request: web.Request) -> web.Response:
    """``POST`` on a namespaced collection."""
    _reject_dry_run(request)
    state, ref = _state(request), _ref(request)
    body = await json_body(request)
    obj = state.store.create(ref, request.match_info["namespace"], body)
    return web.json_response(obj, status=201)


async def get(request: web.Request) -> web.Response:
    """``GET`` one object (also through ``/status``)."""
    state, ref = _state(request), _ref(request)
    _is_status(request, ref)
    info = request.match_info
    return web.json_response(state.store.get(ref, info["namespace"], info["name"]))


async def replace(request: web.Request) -> web.Response:
    """``PUT`` one object or its ``/status``."""
    _reject_dry_run(request)
    state, ref = _state(request), _ref(request)
    status = _is_status(request, ref)
    info = request.match_info
    body = await json_body(request)
    obj = state.store.replace(ref, info["namespace"], info["name"], body, status=status)
    return web.json_response(obj)


async def patch(request: web.Request) -> web.Response:
    """``PATCH`` one object or its ``/status`` (merge patch or JSON patch)."""
    _reject_dry_run(request)
    state, ref = _state(request), _ref(request)
    status = _is_status(request, ref)
    info = request.match_info
    body = await json_body(request)
    obj = state.store.patch(
        ref, info["namespace"], info["name"], body, request.content_type, status=status
    )
    return web.json_response(obj)


async def delete(request: web.Request) -> web.Response:
    """``DELETE`` one object; ``DeleteOptions.preconditions`` are honoured."""
    _reject_dry_run(request)
    state, ref = _state(request), _ref(request)
    info = request.match_info
    options = await json_body(request)
    obj = state.store.delete(ref, info["namespace"], info["name"], options)
    return web.json_response(obj)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the generic resource routes for named groups and the core group."""
    for prefix in ("/apis/{group}/{version}", "/api/{version}"):
        collection = prefix + "/namespaces/{namespace}/{plural}"
        item = collection + "/{name}"
        router.add_get(prefix + "/{plural}", list_or_watch)
        router.add_get(collection, list_or_watch)
        router.add_post(collection, create)
        for path in (item, item + "/status"):
            router.add_get(path, get)
            router.add_put(path, replace)
            router.add_patch(path, patch)
        router.add_delete(item, delete)
