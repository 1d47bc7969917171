"""Errors raised by the k8s-agent. Each carries a stable ``code`` and whether it is ``retryable``.

    InfraflowError(message, code, retryable, details)       (infraflow.common.errors)
    └── K8sError                 K8S_ERROR           anything else the API server did wrong
        ├── K8sNotFoundError     K8S_NOT_FOUND       404, not retryable
        ├── K8sConflictError     K8S_CONFLICT        409 (stale resourceVersion, AlreadyExists),
        │                                            retryable: read again and reapply
        ├── K8sGoneError         K8S_GONE            410 (watch version expired), retryable: relist
        ├── K8sInvalidError      K8S_INVALID         400/422/415, not retryable
        ├── K8sForbiddenError    K8S_FORBIDDEN       401/403, not retryable
        ├── K8sThrottledError    K8S_THROTTLED       429, retryable
        └── K8sUnavailableError  K8S_UNAVAILABLE     5xx, connection refused, timeouts; retryable

Foreign exceptions (kubernetes-asyncio's ``ApiException``, aiohttp, OS errors) are mapped to
these once, at the adapter's boundary, by a table (``infraflow.k8s_agent.adapters.kube``).
Workflow-level failures the steps decide (a cluster that failed, an upgrade that is not
offered) are ``StepError``s with their own codes (see ``handlers``).
"""

from __future__ import annotations

from typing import Any

from infraflow.common.errors import InfraflowError

__all__ = [
    "K8sConflictError",
    "K8sError",
    "K8sForbiddenError",
    "K8sGoneError",
    "K8sInvalidError",
    "K8sNotFoundError",
    "K8sThrottledError",
    "K8sUnavailableError",
]


class K8sError(InfraflowError):
    """A Kubernetes API call failed. ``code`` and ``retryable`` say what the shell should do."""

    code = "K8S_ERROR"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable, details=details)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
            f"reason={self.reason!r}, message={self.message!r})"
        )


class K8sNotFoundError(K8sError):
    code = "K8S_NOT_FOUND"


class K8sConflictError(K8sError):
    code = "K8S_CONFLICT"
    retryable = True


class K8sGoneError(K8sError):
    code = "K8S_GONE"
    retryable = True


class K8sInvalidError(K8sError):
    code = "K8S_INVALID"


class K8sForbiddenError(K8sError):
    code = "K8S_FORBIDDEN"


class K8sThrottledError(K8sError):
    code = "K8S_THROTTLED"
    retryable = True


class K8sUnavailableError(K8sError):
    code = "K8S_UNAVAILABLE"
    retryable = True
