"""Rate limiting: token buckets per (user, route) refill at the configured rate; an empty bucket
is 429 RATE_LIMITED with Retry-After; probes are never limited."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from nats.js import JetStreamContext

from infraflow.gateway.app import create_app
from infraflow.gateway.ratelimit import RateLimiter, TokenBucket
from infraflow.gateway.settings import GatewaySettings, RateLimitSettings

from .conftest import FakeProjector, auth, body_of, serve, started


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token came back after 1/rate seconds
    assert bucket.take(0.5) > 0
    assert bucket.take(10.0) == 0.0  # refills, but never above the burst
    assert bucket.tokens == pytest.approx(2.0)


def test_limiter_keeps_users_and_routes_apart_and_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(
        RateLimitSettings(rate_per_s=1, burst=1, routes={"slow": (0.1, 2)}, max_buckets=100),
        clock=lambda: now[0],
    )
    assert limiter.check("alice", "listRuns") == 0
    assert limiter.check("alice", "listRuns") > 0
    assert limiter.check("bob", "listRuns") == 0
    assert limiter.check("alice", "getRun") == 0
    assert limiter.check("alice", "slow") == 0
    assert limiter.check("alice", "slow") == 0
    assert limiter.check("alice", "slow") == pytest.approx(10.0)
    for i in range(300):
        limiter.check(f"user-{i}", "listRuns")
    assert len(limiter._buckets) == 100


@pytest.fixture
async def limited(
    settings: GatewaySettings, js: JetStreamContext, projector: FakeProjector
) -> AsyncIterator[httpx.AsyncClient]:
    settings.rate_limit.rate_per_s = 0.5
    settings.rate_limit.burst = 3
    async with serve(create_app(settings)) as client:
        await started(client)
        yield client


async def test_429_with_retry_after_per_user_and_route(limited: httpx.AsyncClient) -> None:
    alice = auth(sub="alice")
    for _ in range(3):
        assert (await limited.get("/v1/workflows/types", headers=alice)).status_code == 200
    response = await limited.get("/v1/workflows/types", headers=alice)
    assert response.status_code == 429
    error = body_of(response)["error"]
    assert error["code"] == "RATE_LIMITED"
    assert response.headers["retry-after"] == "2"
    assert error["details"]["retryAfterS"] == 2
    assert response.headers["x-request-id"] == body_of(response)["meta"]["requestId"]
    # another user, and another route of the same user, have their own buckets
    assert (await limited.get("/v1/workflows/types", headers=auth(sub="bob"))).status_code == 200
    assert (await limited.get("/v1/webhooks", headers=alice)).status_code == 200
    # probes are never limited
    for _ in range(10):
        assert (await limited.get("/healthz")).status_code == 200
