"""Orchestrator errors."""

from __future__ import annotations

from infraflow.common.errors import InfraflowError


class DecisionConflictError(InfraflowError):
    """A decision kept conflicting with concurrent writers; the input will be redelivered."""

    code = "DECISION_CONFLICT"
    retryable = True
