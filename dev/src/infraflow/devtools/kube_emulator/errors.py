"""Kubernetes ``Status`` errors raised by the emulator and turned into HTTP responses."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .resources import ResourceRef

NOT_FOUND_MESSAGE = "the server could not find the requested resource"


class ApiError(Exception):
    """An API failure rendered as a ``kind: Status`` object with the given HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        """Return the ``metav1.Status`` body of this error."""
        return status_object(self.code, self.reason, self.message, self.details)

    def to_response(self) -> web.Response:
        """Return an aiohttp JSON response carrying the ``Status`` body."""
        return web.json_response(self.to_status(), status=self.code)


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build a failure ``Status`` object as kube-apiserver returns it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _details(ref: ResourceRef, name: str) -> dict[str, Any]:
    return {"name": name, "group": ref.group, "kind": ref.plural}


def not_found(ref: ResourceRef, name: str) -> ApiError:
    """``404 NotFound`` for a missing object."""
    return ApiError(
        404, "NotFound", f'{ref.qualified} "{name}" not found', details=_details(ref, name)
    )


def already_exists(ref: ResourceRef, name: str) -> ApiError:
    """``409 AlreadyExists`` for a create of an existing name."""
    return ApiError(
        409,
        "AlreadyExists",
        f'{ref.qualified} "{name}" already exists',
        details=_details(ref, name),
    )


def conflict(ref: ResourceRef, name: str, why: str | None = None) -> ApiError:
    """``409 Conflict`` for a stale ``resourceVersion`` (optimistic lock failure)."""
    reason = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {ref.qualified} "{name}": {reason}',
        details=_details(ref, name),
    )


def invalid(ref: ResourceRef, kind: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """``422 Invalid`` with one ``(field, message)`` cause per problem."""
    text = ", ".join(f"{field}: {msg}" for field, msg in causes)
    details = {
        "name": name,
        "group": ref.group,
        "kind": kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes
        ],
    }
    return ApiError(
        422, "Invalid", f'{kind}.{ref.group} "{name}" is invalid: {text}', details=details
    )


def bad_request(message: str) -> ApiError:
    """``400 BadRequest``."""
    return ApiError(400, "BadRequest", message)


def route_not_found() -> ApiError:
    """``404 NotFound`` for a path the server does not serve."""
    return ApiError(404, "NotFound", NOT_FOUND_MESSAGE)


def expired(message: str) -> ApiError:
    """``410 Expired`` for a watch from a compacted resourceVersion."""
    return ApiError(410, "Expired", message)


def unsupported_media_type(content_type: str) -> ApiError:
    """``415 UnsupportedMediaType`` for patch types the emulator does not implement."""
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}) - accepted media "
        "types include: application/json-patch+json, application/merge-patch+json",
    )
