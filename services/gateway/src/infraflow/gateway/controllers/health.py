"""``/healthz`` (the process is alive) and ``/readyz`` (the broker is connected and the streams
exist). Both are public: no bearer token needed."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from infraflow.gateway.auth import EXCLUDE_OPT_KEY
from infraflow.gateway.controllers.support import error_responses
from infraflow.gateway.operations import Operations
from infraflow.gateway.responses import failure, ok
from infraflow.gateway.schemas import Envelope, Health


class HealthController(Controller):
    """Probes for Kubernetes and load balancers."""

    path = "/"
    tags = ["operations"]
    opt = {EXCLUDE_OPT_KEY: True}
    security = [{}]

    @get("/healthz", operation_id="getHealth", summary="Liveness")
    async def healthz(self, request: Request[Any, Any, Any]) -> Response[Envelope[Health]]:
        return ok(request, Health(status="ok"))

    @get(
        "/readyz",
        operation_id="getReadiness",
        summary="Readiness: broker connected, streams present",
        responses=error_responses(503),
    )
    async def readyz(
        self, request: Request[Any, Any, Any], operations: NamedDependency[Operations]
    ) -> Response[Envelope[Health]]:
        connected = operations.broker.is_connected
        streams = await operations.broker.streams_present() if connected else False
        checks = {"broker": connected, "streams": streams}
        if connected and streams:
            return ok(request, Health(status="ready", checks=checks))
        return failure(
            request,
            503,
            "SERVICE_UNAVAILABLE",
            "not ready: the message broker or its streams are not available",
            {"checks": checks},
            headers={"Retry-After": "1"},
        )
