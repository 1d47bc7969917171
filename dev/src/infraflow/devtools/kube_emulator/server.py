"""The emulator's aiohttp application and an in-process server wrapper."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType

from aiohttp import web

from . import admin, api, discovery, kubevirt_api
from .config import EmulatorConfig
from .errors import NOT_FOUND_MESSAGE, ApiError, status_object
from .kubeconfig import write_kubeconfig
from .state import STATE_KEY, EmulatorState

log = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: admin.Handler) -> web.StreamResponse:
    """Render every failure as a ``kind: Status`` body."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.to_response()
    except web.HTTPException as exc:
        if exc.status == 404:
            body = status_object(404, "NotFound", NOT_FOUND_MESSAGE)
        elif exc.status == 405:
            body = status_object(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        elif exc.status == 413:
            body = status_object(413, "RequestEntityTooLarge", "the request is too large")
        else:
            raise
        return web.json_response(body, status=exc.status)
    except Exception as exc:
        log.exception("unhandled error for %s %s", request.method, request.path)
        body = status_object(500, "InternalError", f"an error on the server: {exc}")
        return web.json_response(body, status=500)


async def _on_startup(app: web.Application) -> None:
    app[STATE_KEY].start_controllers()


async def _on_shutdown(app: web.Application) -> None:
    app[STATE_KEY].store.close_subscriptions()


async def _on_cleanup(app: web.Application) -> None:
    app[STATE_KEY].stop_controllers()


def create_app(state: EmulatorState | None = None) -> web.Application:
    """Build the aiohttp application serving ``state`` (a fresh state when ``None``).

    Controllers start with the app (``on_startup``); watches end on shutdown.
    """
    app = web.Application(
        middlewares=[admin.request_log_middleware, error_middleware],
        client_max_size=16 * 1024 * 1024,
    )
    app[STATE_KEY] = state or EmulatorState()
    discovery.add_routes(app.router)
    admin.add_routes(app.router)
    kubevirt_api.add_routes(app.router)
    api.add_routes(app.router)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


class KubeEmulator:
    """An emulator listening on a loopback port inside the current event loop.

    Example::

        async with KubeEmulator(EmulatorConfig(cluster_ready_delay=0.2)) as emu:
            emu.write_kubeconfig(tmp_path / "kubeconfig")
            ...
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.state = EmulatorState(config)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        """``http://host:port`` once started."""

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's settings."""
        return self.state.config

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        if self.url is None:
            raise RuntimeError("the emulator is not running")
        return int(self.url.rsplit(":", 1)[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (``0`` picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(
            create_app(self.state), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.url = f"http://{shown}:{bound_port}"
        self.state.url = self.url
        return self.url

    async def stop(self) -> None:
        """End all watches, stop the controllers and close the listener (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self.state.store.close_subscriptions()
        await runner.cleanup()
        self.url = None

    def write_kubeconfig(self, path: str | os.PathLike[str], **kwargs: str) -> Path:
        """Write a kubeconfig for this emulator (see :func:`write_kubeconfig`)."""
        if self.url is None:
            raise RuntimeError("the emulator is not running")
        return write_kubeconfig(path, self.url, **kwargs)

    async def __aenter__(self) -> KubeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
