"""Discovery and health endpoints (``/version``, ``/api``, ``/apis``, ``/healthz`` ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .errors import route_not_found
from .state import STATE_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EMULATED_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.2-infraflow-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-10-22T00:00:00Z",
    "goVersion": "go1.22.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[-1]}


async def version(request: web.Request) -> web.Response:
    """``GET /version``."""
    return web.json_response(EMULATED_VERSION)


async def core_versions(request: web.Request) -> web.Response:
    """``GET /api``: the core group's versions."""
    return web.json_response(
        {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
            ],
        }
    )


async def core_resources(request: web.Request) -> web.Response:
    """``GET /api/v1``: the core resources the emulator knows."""
    resources = request.app[STATE_KEY].registry.api_resources("", "v1") or []
    return web.json_response(
        {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
    )


async def groups(request: web.Request) -> web.Response:
    """``GET /apis``: every named group with its versions."""
    known = request.app[STATE_KEY].registry.groups()
    return web.json_response(
        {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group_entry(g, versions) for g, versions in known.items()],
        }
    )


async def group(request: web.Request) -> web.Response:
    """``GET /apis/{group}``."""
    name = request.match_info["group"]
    versions = request.app[STATE_KEY].registry.groups().get(name)
    if not versions:
        raise route_not_found()
    return web.json_response(
        {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(name, versions)}
    )


async def group_version(request: web.Request) -> web.Response:
    """``GET /apis/{group}/{version}``: the resource list of one group/version."""
    name, ver = request.match_info["group"], request.match_info["version"]
    resources = request.app[STATE_KEY].registry.api_resources(name, ver)
    if resources is None:
        raise route_not_found()
    return web.json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{name}/{ver}",
            "resources": resources,
        }
    )


async def healthy(request: web.Request) -> web.Response:
    """``/healthz``, ``/readyz``, ``/livez``."""
    return web.Response(text="ok")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register discovery and health routes (with and without a trailing slash)."""
    routes: list[tuple[str, Handler]] = [
        ("/version", version),
        ("/api", core_versions),
        ("/api/v1", core_resources),
        ("/apis", groups),
        ("/apis/{group}", group),
        ("/apis/{group}/{version}", group_version),
        ("/healthz", healthy),
        ("/readyz", healthy),
        ("/livez", healthy),
    ]
    for path, handler in routes:
        router.add_get(path, handler)
        router.add_get(path + "/", handler)
