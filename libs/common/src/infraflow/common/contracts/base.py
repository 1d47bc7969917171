"""Base classes and shared value types for wire contracts.

Every wire message is a frozen, keyword-only msgspec Struct with camelCase JSON names. Fields are
only ever added (with defaults); a breaking change gets a new tag and an upcast.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

SCHEMA_VERSION = 1

Phase = Literal["forward", "compensation"]
OnBusy = Literal["queue", "fail"]


class Contract(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Root of all wire contracts."""


class ErrorInfo(Contract, frozen=True, kw_only=True):
    """A failure as data: what went wrong, where, and whether trying again may help."""

    code: str
    message: str
    retryable: bool = False
    step: str | None = None
    details: dict[str, Any] | None = None


class ResourceRef(Contract, frozen=True, kw_only=True):
    """The resource a run acts on."""

    type: str
    id: str
