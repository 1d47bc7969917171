"""The one place where sushy's and requests' exceptions become the agent's ``BmcError`` tree.

The mapping is a table: the first row whose foreign type matches wins. HTTP statuses refine
it (429 and 5xx are worth retrying). Messages say which BMC (host only), which operation and
what the BMC answered; the password is scrubbed from every foreign text we quote, in case a
BMC echoes it.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

import requests
from sushy import exceptions as sushy_exc

from infraflow.bmc_agent.errors import (
    BmcActionRejectedError,
    BmcAuthError,
    BmcError,
    BmcResourceMissingError,
    BmcUnreachableError,
)

__all__ = ["map_foreign_error", "redact"]

_MAX_DETAIL = 400
_MIN_REDACTED = 4

# (foreign exception type, our type, retryable override or None, what happened)
_TABLE: Final[tuple[tuple[type[BaseException], type[BmcError], bool | None, str], ...]] = (
    (sushy_exc.ConnectionError, BmcUnreachableError, None, "did not answer"),
    (sushy_exc.AccessError, BmcAuthError, None, "rejected the credentials"),
    (sushy_exc.ResourceNotFoundError, BmcResourceMissingError, None, "has no such resource"),
    (sushy_exc.BadRequestError, BmcActionRejectedError, False, "rejected the request"),
    (sushy_exc.ServerSideError, BmcActionRejectedError, True, "failed the request (5xx)"),
    (sushy_exc.HTTPError, BmcActionRejectedError, False, "rejected the request"),
    (sushy_exc.MissingAttributeError, BmcResourceMissingError, None, "does not expose"),
    (sushy_exc.UnknownDefaultError, BmcResourceMissingError, None, "has no single default"),
    (sushy_exc.MissingActionError, BmcActionRejectedError, False, "does not offer the action"),
    (
        sushy_exc.InvalidParameterValueError,
        BmcActionRejectedError,
        False,
        "does not accept the value",
    ),
    (sushy_exc.MissingHeaderError, BmcActionRejectedError, False, "answered incompletely"),
    (sushy_exc.SushyError, BmcError, False, "failed"),
    # A non-JSON answer: the address is not a Redfish service (requests' JSONDecodeError is
    # both a RequestException and a ValueError, so it must come before RequestException).
    (requests.JSONDecodeError, BmcResourceMissingError, None, "did not answer with Redfish JSON"),
    (requests.RequestException, BmcUnreachableError, None, "did not answer"),
)

# Statuses that override the row's retryable flag.
_RETRYABLE_STATUS: Final[frozenset[int]] = frozenset({429, 500, 502, 503, 504})


def redact(text: str, secret: str | None) -> str:
    """Replace ``secret`` (raw and percent-encoded) in ``text`` by ``***``.

    Secrets shorter than 4 characters are left alone: they would match ordinary words and
    garble the message while protecting nothing.
    """
    if not secret or len(secret) < _MIN_REDACTED:
        return text
    for form in {secret, quote(secret, safe="")}:
        text = text.replace(form, "***")
    return text


def map_foreign_error(
    exc: BaseException, *, host: str, operation: str, secret: str | None
) -> BmcError | None:
    """Our error for a sushy/requests exception, or ``None`` if ``exc`` is not one of theirs.

    ``host`` names the BMC in the message, ``operation`` the adapter call, ``secret`` is
    scrubbed from any quoted text.
    """
    row = next((row for row in _TABLE if isinstance(exc, row[0])), None)
    if row is None:
        return None
    _, ours, retryable, what = row

    details: dict[str, Any] = {"bmc": host, "operation": operation}
    status = getattr(exc, "status_code", None) if isinstance(exc, sushy_exc.HTTPError) else None
    if isinstance(status, int):
        details["httpStatus"] = status
        details["redfishCode"] = getattr(exc, "code", None)
        if status in _RETRYABLE_STATUS:
            retryable = True
    if isinstance(exc, sushy_exc.ConnectionError) and isinstance(
        exc.__context__, requests.exceptions.SSLError
    ):
        # A certificate or protocol mismatch does not heal by retrying.
        what, retryable = "failed the TLS handshake", False

    detail = redact(str(exc), secret)
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    message = f"BMC {host} {what} during {operation}: {detail}"
    return ours(message, retryable=retryable, details=details)
