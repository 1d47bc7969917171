"""Telemetry at the HTTP edge: ``/metrics`` (public like the probes; keep it off the public
ingress, docs/operations.md), the ``before_send`` hook that counts responses, and the
middleware that starts each request's trace (continuing the caller's ``traceparent``)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from infraflow.common.logs import (
    TRACEPARENT,
    new_traceparent,
    run_id_var,
    trace_var,
    valid_traceparent,
)
from infraflow.common.metrics import CONTENT_TYPE, HTTP_RESPONSES, REGISTRY
from infraflow.gateway.auth import EXCLUDE_OPT_KEY


class MetricsController(Controller):
    """Prometheus scrapes this; the shared families (``infraflow.common.metrics``) included."""

    path = "/"
    tags = ["operations"]
    opt = {EXCLUDE_OPT_KEY: True}
    security = [{}]

    @get(
        "/metrics",
        operation_id="getMetrics",
        summary="Prometheus metrics (text exposition format 0.0.4)",
        media_type=CONTENT_TYPE,
        sync_to_thread=False,
    )
    def metrics(self) -> Response[str]:
        return Response(REGISTRY.render(), media_type=CONTENT_TYPE)


def trace_context(app: ASGIApp) -> ASGIApp:
    """Middleware: the request's trace is the caller's ``traceparent`` if valid, else a new one;
    commands published while handling it carry it on (NATS header ``traceparent``)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            incoming = Headers.from_scope(scope).get(TRACEPARENT)
            trace_var.set(valid_traceparent(incoming) or new_traceparent())
        await app(scope, receive, send)

    return middleware


async def count_response(message: Message, scope: Scope) -> None:
    """``before_send`` hook: one count per response, by route template (not the raw path,
    which would make a series per id), and the trace in a ``traceparent`` header. A request
    about one run also puts its id in the log context, so the access log line carries it."""
    if message["type"] == "http.response.start" and scope["type"] == "http":
        route = str(scope.get("path_template") or "unmatched")
        HTTP_RESPONSES.labels(scope["method"], route, str(message["status"])).inc()
        run_id = (scope.get("path_params") or {}).get("run_id")
        if isinstance(run_id, str):
            run_id_var.set(run_id)
        trace = trace_var.get()
        if trace:
            MutableScopeHeaders.from_message(message)[TRACEPARENT] = trace
