"""The gateway's errors on top of the shared tree, and the HTTP status of every error code.

    InfraflowError                       (infraflow.common.errors)   code                  status
    ├── ValidationError                                              VALIDATION_ERROR      400
    ├── UnauthorizedError                (here)                      UNAUTHORIZED          401
    ├── ForbiddenError                   (here)                      FORBIDDEN             403
    ├── NotFoundError                                                NOT_FOUND             404
    ├── MethodNotAllowedError            (here)                      METHOD_NOT_ALLOWED    405
    ├── ConflictError                                                CONFLICT              409
    │   ├── InvalidStateTransitionError                              INVALID_STATE_TRANSITION 409
    │   └── ResourceBusyError                                        RESOURCE_BUSY         409
    ├── PayloadTooLargeError             (here)                      PAYLOAD_TOO_LARGE     413
    ├── RateLimitedError                 (here)                      RATE_LIMITED          429
    └── BrokerUnavailableError                                       SERVICE_UNAVAILABLE   503

Any other code (or any other exception) is answered as ``INTERNAL_ERROR`` 500 by the edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from infraflow.common.errors import InfraflowError

INTERNAL_ERROR: Final = "INTERNAL_ERROR"


class UnauthorizedError(InfraflowError):
    """No credentials, or credentials that could not be verified."""

    code = "UNAUTHORIZED"


class ForbiddenError(InfraflowError):
    """Authenticated, but not allowed to do this."""

    code = "FORBIDDEN"


class MethodNotAllowedError(InfraflowError):
    code = "METHOD_NOT_ALLOWED"


class PayloadTooLargeError(InfraflowError):
    code = "PAYLOAD_TOO_LARGE"


class RateLimitedError(InfraflowError):
    code = "RATE_LIMITED"
    retryable = True


STATUS_BY_CODE: Final[Mapping[str, int]] = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "NOT_ACCEPTABLE": 406,
    "CONFLICT": 409,
    "INVALID_STATE_TRANSITION": 409,
    "RESOURCE_BUSY": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "RATE_LIMITED": 429,
    INTERNAL_ERROR: 500,
    "SERVICE_UNAVAILABLE": 503,
}

CODE_BY_CLIENT_STATUS: Final[Mapping[int, str]] = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def status_for(code: str) -> int | None:
    """The HTTP status of a public error code; ``None`` for codes that are not public."""
    return STATUS_BY_CODE.get(code)
