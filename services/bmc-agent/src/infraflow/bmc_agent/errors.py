"""Errors raised by the bmc-agent. Each carries a stable ``code`` and whether it is ``retryable``.

    InfraflowError(message, code, retryable, details)      (infraflow.common.errors)
    └── BmcError                  BMC_ERROR             anything else the BMC did wrong
        ├── BmcUnreachableError   BMC_UNREACHABLE       retryable (network, TLS handshake: no)
        ├── BmcAuthError          BMC_AUTH_FAILED       not retryable
        ├── BmcActionRejectedError BMC_ACTION_REJECTED  not retryable, unless 5xx/429
        ├── BmcResourceMissingError BMC_RESOURCE_MISSING not retryable
        └── BmcTimeoutError       BMC_TIMEOUT           retryable

Foreign exceptions (sushy, requests) are mapped to these once, at the Redfish adapter's
boundary, by a table (``infraflow.bmc_agent.adapters.redfish_errors``). Messages name the BMC
by host and the Redfish path, never by credentials: a BMC password must not appear in a
message, a ``repr`` or ``details``.
"""

from __future__ import annotations

from typing import Any

from infraflow.common.errors import InfraflowError

__all__ = [
    "BmcActionRejectedError",
    "BmcAuthError",
    "BmcError",
    "BmcResourceMissingError",
    "BmcTimeoutError",
    "BmcUnreachableError",
]


class BmcError(InfraflowError):
    """A BMC operation failed. ``code`` and ``retryable`` say what the shell should do."""

    code = "BMC_ERROR"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable, details=details)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, retryable={self.retryable!r}, "
            f"message={self.message!r})"
        )


class BmcUnreachableError(BmcError):
    """The BMC did not answer: connection refused, DNS, timeout, TLS failure."""

    code = "BMC_UNREACHABLE"
    retryable = True


class BmcAuthError(BmcError):
    """The BMC refused the credentials (HTTP 401/403)."""

    code = "BMC_AUTH_FAILED"
    retryable = False


class BmcActionRejectedError(BmcError):
    """The BMC refused a request (4xx), or failed it server side (5xx: retryable)."""

    code = "BMC_ACTION_REJECTED"
    retryable = False


class BmcResourceMissingError(BmcError):
    """A resource the operation needs does not exist (no such system, no virtual media...)."""

    code = "BMC_RESOURCE_MISSING"
    retryable = False


class BmcTimeoutError(BmcError):
    """A wait (power state, Redfish task) did not finish in time."""

    code = "BMC_TIMEOUT"
    retryable = True
