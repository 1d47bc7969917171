"""The response envelope, request ids and the ``X-Request-Id`` header on every response.

{"success": true,  "data": ...,  "meta": {"requestId", "timestamp", ...}}
{"success": false, "error": {"code", "message", "details"?}, "meta": {...}}
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.types import Message, Scope

from infraflow.common.logs import request_id_var
from infraflow.gateway.core.request_ids import (
    caller_request_id,
    format_request_id,
    format_timestamp,
)
from infraflow.gateway.launcher import Accepted

REQUEST_ID_HEADER: Final = "X-Request-Id"
_STATE_KEY: Final = "infraflow.request_id"


class RequestIds:
    """Assigns each request its id once: the caller's ``X-Request-Id`` if it is safe to echo,
    else ``req_<region>-<unix ms>-<12 hex>``."""

    def __init__(self, region: str) -> None:
        self.region = region

    def of(self, scope: Scope) -> str:
        state: dict[str, Any] = scope.setdefault("state", {})
        value = state.get(_STATE_KEY)
        if not isinstance(value, str):
            value = caller_request_id(Headers.from_scope(scope).get(REQUEST_ID_HEADER))
            if value is None:
                value = format_request_id(
                    self.region, int(time.time() * 1000), secrets.token_hex(6)
                )
            state[_STATE_KEY] = value
        request_id_var.set(value)
        return value

    async def add_header(self, message: Message, scope: Scope) -> None:
        """``before_send`` hook: every HTTP response carries the request id."""
        if message["type"] == "http.response.start":
            headers = MutableScopeHeaders.from_message(message)
            headers[REQUEST_ID_HEADER] = self.of(scope)


def request_ids_of(request: Request[Any, Any, Any]) -> RequestIds:
    ids = request.app.state.get("request_ids")
    assert isinstance(ids, RequestIds)
    return ids


def request_id(request: Request[Any, Any, Any]) -> str:
    """This request's id."""
    return request_ids_of(request).of(request.scope)


def meta(request: Request[Any, Any, Any], **extra: Any) -> dict[str, Any]:
    """``meta`` with the request id, the time, and any non-None extras."""
    out: dict[str, Any] = {
        "requestId": request_id(request),
        "timestamp": format_timestamp(datetime.now(UTC)),
    }
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def ok(
    request: Request[Any, Any, Any],
    data: Any,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **meta_extra: Any,
) -> Response[Any]:
    """A success envelope."""
    body = {"success": True, "data": msgspec.to_builtins(data), "meta": meta(request, **meta_extra)}
    return Response(body, status_code=status_code, headers=dict(headers or {}))


def accepted(request: Request[Any, Any, Any], outcome: Accepted) -> Response[Any]:
    """The 202 of a run-starting request (also when replayed for an Idempotency-Key)."""
    headers = {"Location": outcome.location}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return ok(
        request,
        outcome.data,
        status_code=outcome.status,
        headers=headers,
        workflowId=outcome.run_id,
        estimatedDuration=outcome.estimated_duration_ms,
    )


def failure(
    request: Request[Any, Any, Any],
    status_code: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[Any]:
    """An error envelope."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = msgspec.to_builtins(dict(details))
    body = {"success": False, "error": error, "meta": meta(request)}
    return Response(body, status_code=status_code, headers=dict(headers or {}))
