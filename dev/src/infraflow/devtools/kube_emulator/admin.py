"""The test/admin surface under ``/_emulator/`` and the request-log middleware.

* ``GET /_emulator/requests`` - recent API requests (``{"items": [...]}``), oldest first;
  ``DELETE`` clears the log.
* ``POST /_emulator/compact`` - drop the watch history so older resourceVersions get 410.
* ``POST /_emulator/reset`` - remove all objects, end all watches, clear controller memory.
* ``GET /_emulator/state`` - resourceVersion, compaction point, object counts, watches.
* ``GET /_emulator/objects`` - every stored object.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .state import STATE_KEY

ADMIN_PREFIX = "/_emulator/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every non-admin request (status filled in when the handler returns)."""
    if request.path.startswith(ADMIN_PREFIX):
        return await handler(request)
    entry: dict[str, object] = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "contentType": request.headers.get("Content-Type"),
        "userAgent": request.headers.get("User-Agent"),
        "bearerToken": request.headers.get("Authorization", "").startswith("Bearer "),
        "status": None,
    }
    request.app[STATE_KEY].requests.append(entry)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        entry["status"] = exc.status
        raise
    entry["status"] = response.status
    return response


async def get_requests(request: web.Request) -> web.Response:
    """``GET /_emulator/requests``."""
    return web.json_response({"items": list(request.app[STATE_KEY].requests)})


async def clear_requests(request: web.Request) -> web.Response:
    """``DELETE /_emulator/requests``."""
    request.app[STATE_KEY].requests.clear()
    return web.json_response({"status": "ok"})


async def compact(request: web.Request) -> web.Response:
    """``POST /_emulator/compact``."""
    rv = request.app[STATE_KEY].store.compact()
    return web.json_response({"compactedResourceVersion": str(rv)})


async def reset(request: web.Request) -> web.Response:
    """``POST /_emulator/reset``."""
    request.app[STATE_KEY].reset()
    return web.json_response({"status": "ok"})


async def summary(request: web.Request) -> web.Response:
    """``GET /_emulator/state``."""
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "url": state.url,
            "resourceVersion": str(state.store.current_rv),
            "compactedResourceVersion": str(state.store.compacted_rv),
            "objects": state.store.counts(),
            "watches": state.store.watch_count,
        }
    )


async def objects(request: web.Request) -> web.Response:
    """``GET /_emulator/objects``."""
    return web.json_response({"items": request.app[STATE_KEY].store.dump()})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the ``/_emulator/`` routes."""
    router.add_get("/_emulator/requests", get_requests)
    router.add_delete("/_emulator/requests", clear_requests)
    router.add_post("/_emulator/compact", compact)
    router.add_post("/_emulator/reset", reset)
    router.add_get("/_emulator/state", summary)
    router.add_get("/_emulator/objects", objects)
