"""One delivery attempt over HTTP: resolve and check the destination, then POST to the checked
address itself (Host header and TLS SNI/verification keep the URL's host name), without
following redirects and without proxies from the environment."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Final

import httpx

from infraflow.gateway.webhooks import signing
from infraflow.gateway.webhooks.ssrf import (
    DestinationBlockedError,
    DestinationGuard,
    DestinationUnresolvableError,
    Target,
)

USER_AGENT: Final = "Infraflow-Webhooks/1.0"
_MAX_RESPONSE_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt got: a status code (any HTTP answer) or an error, and how long it took.
    Error texts name the kind of failure only: never the URL, a header or the body."""

    status_code: int | None
    latency_ms: int
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Sends signed deliveries; one pooled client for the process."""

    def __init__(self, guard: DestinationGuard, timeout_s: float) -> None:
        self.guard = guard
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, secret: str, message_id: str, body: bytes) -> AttemptResult:
        """POST ``body`` to ``url``, signed for ``message_id`` at the current time."""
        started = time.monotonic()
        try:
            target = await self.guard.resolve(url)
        except (DestinationBlockedError, DestinationUnresolvableError) as exc:
            return AttemptResult(None, _ms(started), exc.message)
        headers = {
            **signing.headers(secret, message_id, int(time.time()), body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.url.netloc.rpartition("@")[2],
        }
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        try:
            request = self._client.build_request(
                "POST", _pinned(target), content=body, headers=headers, extensions=extensions
            )
            response = await self._client.send(request, stream=True)
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= _MAX_RESPONSE_BYTES:
                        break
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return AttemptResult(None, _ms(started), "timed out")
        except httpx.ConnectError:
            return AttemptResult(None, _ms(started), "connection failed")
        except httpx.HTTPError as exc:
            return AttemptResult(None, _ms(started), f"HTTP error ({type(exc).__name__})")
        status = response.status_code
        error = None if 200 <= status < 300 else _status_error(status)
        return AttemptResult(status, _ms(started), error)


def _pinned(target: Target) -> str:
    """The URL with its host replaced by the checked address."""
    address = target.address
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    path = target.url.path or "/"
    query = f"?{target.url.query}" if target.url.query else ""
    return f"{target.url.scheme}://{host}:{target.port}{path}{query}"


def _status_error(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}"


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
