"""Power sync: poll the power state and health of every BMC of the served sites on an interval
and publish what was seen as ``ResourceObserved`` on ``infra.observed.server.<id>``.

This loop only observes; it never changes a server or the cache. The projector compares each
observation with its cache and starts a ``sync.server-state`` run when they differ (that run's
output corrects the cache), pausing a site's automatic syncs when most of its BMCs fail.

A BMC that cannot be read is reported too (``reachable: false`` and the error code), so the
projector can tell "this BMC is down" from "no news". ``observedAt`` is taken before the
request: an observation never claims to be newer than what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext

from infraflow.bmc_agent.adapters.credentials import CredentialStore, SiteServer
from infraflow.bmc_agent.adapters.redfish import RedfishBmc
from infraflow.bmc_agent.errors import BmcError
from infraflow.common import streams, subjects
from infraflow.common.contracts import ResourceObserved, encode

log = logging.getLogger(__name__)


class PowerSync:
    """Polls the served sites' BMCs every ``interval_s`` (see the module docstring)."""

    def __init__(
        self,
        js: JetStreamContext,
        bmc: RedfishBmc,
        credentials: CredentialStore,
        sites: list[str],
        *,
        interval_s: float,
        concurrency: int = 8,
        timeout_s: float = 10.0,
        source: str | None = None,
    ) -> None:
        self.js = js
        self.bmc = bmc
        self.credentials = credentials
        self.sites = sites
        self.interval_s = interval_s
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.source = source or f"bmc-agent@{socket.gethostname()}"
        self.polls = 0
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a failed round is logged and the next one comes."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            began = loop.time()
            try:
                await self.poll_once()
            except Exception:
                log.exception("power sync round failed")
            pause = max(0.0, self.interval_s - (loop.time() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)

    async def poll_once(self) -> list[ResourceObserved]:
        """One round over every server of the served sites; returns what was published."""
        servers = await self.credentials.site_servers(self.sites)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(server: SiteServer) -> ResourceObserved:
            async with gate:
                observation = await self.observe(server)
            await self.js.publish(
                subjects.observed("server", server.server_id),
                encode(observation),
                stream=streams.OBSERVED,
            )
            return observation

        return list(await asyncio.gather(*(one(s) for s in servers)))

    async def observe(self, server: SiteServer) -> ResourceObserved:
        """What the BMC says now (or that it did not answer)."""
        at = datetime.now(UTC)
        state: dict[str, Any]
        try:
            info = await asyncio.wait_for(self.bmc.connect(server.endpoint), self.timeout_s)
            state = {"reachable": True, "powerState": info.power_state, "health": info.health}
        except BmcError as exc:
            self.failures += 1
            state = {"reachable": False, "error": {"code": exc.code, "retryable": exc.retryable}}
        except TimeoutError:
            self.failures += 1
            state = {"reachable": False, "error": {"code": "BMC_TIMEOUT", "retryable": True}}
        self.polls += 1
        return ResourceObserved(
            resource_type="server",
            resource_id=server.server_id,
            observed_at=at,
            source=self.source,
            site=server.site,
            state=state,
        )
