"""Rate limiting: a token bucket per (user, route), in this process's memory.

Each authenticated request takes one token from the bucket of its caller (the token's ``sub``)
and route (the operation id, or method and path template); an empty bucket answers
``429 RATE_LIMITED`` with ``Retry-After`` (whole seconds until a token is back) and
``details.retryAfterS``. Buckets refill at ``rate_per_s`` up to ``burst``. Public routes
(probes, metrics, the API document) and requests that fail authentication are not limited.

The buckets are per replica: behind a load balancer spreading a user over N replicas the user
gets up to N times the configured rate. That is the intended trade (no shared state on the hot
path); a global limit belongs in the ingress.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from infraflow.gateway.auth import EXCLUDE_OPT_KEY
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.errors import RateLimitedError
from infraflow.gateway.settings import RateLimitSettings

Clock = Callable[[], float]


@dataclass(slots=True)
class TokenBucket:
    """``tokens`` at ``updated`` (monotonic seconds); refills continuously."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """The buckets, least recently used first (bounded by ``max_buckets``)."""

    def __init__(self, settings: RateLimitSettings, clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def check(self, user: str, route: str) -> float:
        """0.0 if the request may go ahead, else the seconds to wait."""
        now = self._clock()
        key = (user, route)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate, burst = self._settings.routes.get(
                route, (self._settings.rate_per_s, self._settings.burst)
            )
            bucket = TokenBucket(
                rate=float(rate), burst=float(burst), tokens=float(burst), updated=now
            )
            self._buckets[key] = bucket
            while len(self._buckets) > self._settings.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)


_EXEMPT: Final = frozenset({"/healthz", "/readyz", "/metrics"})


def route_key(scope: Scope) -> str:
    """The route a request counts against: its operation id, else method + path template."""
    handler = scope.get("route_handler")
    operation = getattr(handler, "operation_id", None)
    if isinstance(operation, str):
        return operation
    return f"{scope.get('method', '')} {scope.get('path_template') or scope.get('path', '')}"


def rate_limit_middleware(limiter: RateLimiter) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar middleware factory; place it after the authentication middleware."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and not _exempt(scope):
                user = scope.get("user")
                if isinstance(user, Principal):
                    wait = limiter.check(user.subject, route_key(scope))
                    if wait > 0:
                        seconds = max(1, math.ceil(wait))
                        raise RateLimitedError(
                            f"too many requests; retry in {seconds} s",
                            details={"retryAfterS": seconds},
                        )
            await app(scope, receive, send)

        return limited

    return middleware


def _exempt(scope: Scope) -> bool:
    if scope.get("path") in _EXEMPT:
        return True
    handler: Any = scope.get("route_handler")
    opt = getattr(handler, "opt", None) or {}
    return bool(opt.get(EXCLUDE_OPT_KEY))
