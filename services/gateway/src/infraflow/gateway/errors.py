"""The one exception handler at the edge: any exception becomes an error envelope.

``InfraflowError`` subclasses (see ``core/errors.py`` for the tree) map by ``code`` to a status;
Litestar's own exceptions (routing, body decoding, size limits) are translated to the same codes;
anything else is ``INTERNAL_ERROR`` 500, logged with its traceback, never shown to the caller.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from infraflow.common.errors import InfraflowError
from infraflow.gateway.core.errors import (
    CODE_BY_CLIENT_STATUS,
    INTERNAL_ERROR,
    status_for,
)
from infraflow.gateway.core.validation import decoder_field_error
from infraflow.gateway.responses import failure

log = logging.getLogger(__name__)

_INTERNAL_MESSAGE = "an unexpected error occurred; it has been logged"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar exception handler for ``Exception``: the single error path of the API."""
    if isinstance(exc, InfraflowError):
        return _from_infraflow(request, exc)
    if isinstance(exc, HTTPException):
        return _from_litestar(request, exc)
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return failure(request, 500, INTERNAL_ERROR, _INTERNAL_MESSAGE)


def _from_infraflow(request: Request[Any, Any, Any], exc: InfraflowError) -> Response[Any]:
    status = status_for(exc.code)
    if status is None or exc.code == INTERNAL_ERROR:
        log.error(
            "%s (%s) on %s %s",
            exc.message,
            exc.code,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return failure(request, 500, INTERNAL_ERROR, _INTERNAL_MESSAGE)
    if status >= 500:
        log.warning("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.message)
    headers = {"WWW-Authenticate": 'Bearer realm="infraflow"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    if status == 429:
        headers = {"Retry-After": str((exc.details or {}).get("retryAfterS", 1))}
    return failure(request, status, exc.code, exc.message, exc.details or None, headers)


def _from_litestar(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        return failure(
            request,
            400,
            "VALIDATION_ERROR",
            "the request is not valid",
            {"fields": _validation_fields(exc)},
        )
    if isinstance(exc.__cause__, SerializationException):
        return failure(
            request,
            400,
            "VALIDATION_ERROR",
            "the request body is not valid JSON",
            {"fields": {"body": "must be a valid JSON document"}},
        )
    if isinstance(exc, NotFoundException):
        return failure(request, 404, "NOT_FOUND", f"no route for {request.url.path}")
    if isinstance(exc, MethodNotAllowedException):
        return failure(
            request,
            405,
            "METHOD_NOT_ALLOWED",
            f"{request.method} is not allowed on {request.url.path}",
            headers=headers,
        )
    if isinstance(exc, RequestEntityTooLarge):
        return failure(request, 413, "PAYLOAD_TOO_LARGE", "the request body is too large")
    if isinstance(exc, NotAuthorizedException):
        return failure(
            request,
            401,
            "UNAUTHORIZED",
            str(exc.detail),
            headers={"WWW-Authenticate": 'Bearer realm="infraflow"'},
        )
    if isinstance(exc, PermissionDeniedException):
        return failure(request, 403, "FORBIDDEN", str(exc.detail))
    code = CODE_BY_CLIENT_STATUS.get(status)
    if code is None or status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        return failure(request, 500, INTERNAL_ERROR, _INTERNAL_MESSAGE)
    return failure(request, status, code, str(exc.detail), headers=headers)


def _validation_fields(exc: ValidationException) -> dict[str, str]:
    """Field -> message from Litestar's validation error (decoded by msgspec)."""
    cause = exc.__cause__
    if isinstance(cause, msgspec.ValidationError):
        field, message = decoder_field_error(str(cause), drop_root="data")
        return {field: message}
    fields: dict[str, str] = {}
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field, message = decoder_field_error(str(item.get("message", "")))
            fields.setdefault(str(item.get("key") or field), message)
    return fields or {"body": "is not valid"}
