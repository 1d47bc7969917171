"""What the controllers share: the caller of a request and the documented error responses."""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeAlias

import msgspec
from litestar import Request
from litestar.datastructures import ResponseHeader
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, QueryParameter

from infraflow.common.errors import ValidationError
from infraflow.gateway.core import idempotency
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.errors import UnauthorizedError
from infraflow.gateway.launcher import IdempotencyRequest
from infraflow.gateway.operations import Caller
from infraflow.gateway.responses import request_id
from infraflow.gateway.schemas import ErrorEnvelope

_ERROR_DESCRIPTIONS: Final = {
    400: "VALIDATION_ERROR: details.fields maps each invalid field to a message",
    401: "UNAUTHORIZED: missing, expired or badly signed bearer token",
    403: "FORBIDDEN: authenticated, but the role does not allow this",
    404: "NOT_FOUND: unknown, or outside the caller's projects",
    409: "CONFLICT / INVALID_STATE_TRANSITION (details.currentState) / RESOURCE_BUSY",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED: the caller's token bucket for this route is empty; see Retry-After "
    "and details.retryAfterS",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE: broker or read model unreachable; nothing was accepted",
}

READ_ERRORS: Final = (400, 401, 404, 500, 503)
WRITE_ERRORS: Final = (400, 401, 403, 404, 409, 413, 500, 503)

ACCEPTED_HEADERS: Final = [
    ResponseHeader(
        name="Location",
        documentation_only=True,
        description="/v1/workflows/runs/{runId}: where the run can be followed",
    )
]
REQUEST_ID_HEADERS: Final = [
    ResponseHeader(
        name="X-Request-Id",
        documentation_only=True,
        description="meta.requestId; the caller's own X-Request-Id is echoed",
    )
]

IdempotencyKey: TypeAlias = Annotated[
    str | None,
    HeaderParameter(
        name=idempotency.HEADER,
        required=False,
        description="Repeat-safe retries: the same key and body within 24 h return the first "
        "response (same run id); the same key with another body is 409 CONFLICT.",
    ),
]


def query(name: str, description: str | None = None) -> QueryParameter:
    """An optional query parameter (validated by ``core``, so all problems are reported)."""
    return QueryParameter(name=name, required=False, description=description)


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error envelope under ``statuses``; authenticated routes (those
    answering 401) are rate limited, so they also document 429."""
    if 401 in statuses and 429 not in statuses:
        statuses = (*statuses, 429)
    return {
        status: ResponseSpec(
            data_container=ErrorEnvelope,
            description=_ERROR_DESCRIPTIONS[status],
            generate_examples=False,  # random values would make the document noisy and unstable
        )
        for status in statuses
    }


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The authenticated caller (set by ``BearerAuthMiddleware``)."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise UnauthorizedError("authentication is required")
    return user


def caller(
    request: Request[Any, Any, Any],
    principal: Principal,
    idempotency_key: str | None = None,
    body: Any = None,
) -> Caller:
    """The caller of a run-starting request, with its idempotency identity if a key was sent."""
    repeat = None
    if idempotency_key is not None:
        repeat = IdempotencyRequest(
            key=idempotency.check_key(idempotency_key),
            subject=principal.subject,
            method=request.method,
            path=request.url.path,
            body=msgspec.to_builtins(body),
        )
    on_busy = request.query_params.get("onBusy", "queue")
    if on_busy not in ("queue", "fail"):
        raise ValidationError(
            "onBusy must be queue or fail", details={"fields": {"onBusy": "must be queue or fail"}}
        )
    return Caller(
        principal=principal,
        request_id=request_id(request),
        idempotency=repeat,
        on_busy="fail" if on_busy == "fail" else "queue",
    )
