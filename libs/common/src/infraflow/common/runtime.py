"""The life of a service process: logging, signals, waiting for the broker, ops endpoints.

    async def main(rt: ServiceRuntime) -> None:
        nc, js = await rt.connect(consumers=(...))
        ... start consumers with rt.stop ...
        await rt.stop.wait()

    run_service("orchestrator", settings, main)

SIGTERM/SIGINT set ``rt.stop``; consumers finish their in-flight messages and leave the rest for
redelivery; the connection is drained last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from nats.aio.client import Client
from nats.js import JetStreamContext

from infraflow.common.broker import connect, prepare
from infraflow.common.logs import setup_logging
from infraflow.common.metrics import REGISTRY
from infraflow.common.settings import ServiceSettings
from infraflow.common.streams import ConsumerSpec

log = logging.getLogger(__name__)

Probe = Callable[[], bool]


class ServiceRuntime:
    """What a service's ``main`` gets: settings, a stop event and the broker connection."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.stop = asyncio.Event()
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self.ready_checks: list[Probe] = []
        self.metrics: list[Callable[[], str]] = [REGISTRY.render]
        self._ops: asyncio.base_events.Server | None = None

    async def connect(
        self, consumers: tuple[ConsumerSpec, ...] = ()
    ) -> tuple[Client, JetStreamContext]:
        """Wait for the broker (forever, until stopped), then ensure the topology."""
        self.nc = await connect(self.settings.nats, self.name, stop=self.stop)
        self.js = await prepare(self.nc, self.settings.nats, consumers, stop=self.stop)
        log.info(
            "connected to the broker at %s",
            self.nc.connected_url.netloc if self.nc.connected_url else "?",
        )
        return self.nc, self.js

    def is_ready(self) -> bool:
        return bool(self.nc and self.nc.is_connected) and all(c() for c in self.ready_checks)

    async def start_ops(self) -> None:
        """``/healthz``, ``/readyz`` and ``/metrics`` on the ops port, for non-HTTP services."""
        if not self.settings.ops_port:
            return
        self._ops = await asyncio.start_server(
            self._serve_ops, self.settings.ops_host, self.settings.ops_port
        )

    async def _serve_ops(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode(errors="replace").split()
            path = parts[1] if len(parts) > 1 else "/"
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            if path.startswith("/healthz"):
                status, body = 200, b'{"status":"ok"}'
            elif path.startswith("/readyz"):
                ok = self.is_ready()
                status, body = (
                    (200, b'{"status":"ready"}') if ok else (503, b'{"status":"not ready"}')
                )
            elif path.startswith("/metrics"):
                status, body = 200, "".join(m() for m in self.metrics).encode()
            else:
                status, body = 404, b'{"status":"not found"}'
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            ctype = (
                "text/plain; version=0.0.4" if path.startswith("/metrics") else "application/json"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._ops is not None:
            self._ops.close()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 10)
            with contextlib.suppress(Exception):
                await self.nc.close()


def run_service(
    name: str,
    settings: ServiceSettings,
    main: Callable[[ServiceRuntime], Awaitable[Any]],
) -> None:
    """Run ``main`` until SIGTERM/SIGINT, then shut down cleanly."""
    setup_logging(name, settings.log_level, settings.log_json)

    async def _amain() -> None:
        rt = ServiceRuntime(name, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rt.stop.set)
        await rt.start_ops()
        try:
            await main(rt)
        except ConnectionAbortedError:
            pass  # stopped before the broker was ever reachable
        finally:
            await rt.close()
            log.info("stopped")

    # uvloop: the services spend most of their time in the event loop and socket writes (many
    # small NATS messages); it does the same work for a fraction of asyncio's CPU
    uvloop.run(_amain())
