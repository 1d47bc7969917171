"""Request ids and response timestamps (pure: time and randomness come in as arguments)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

_CALLER_ID: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HEX12: Final = re.compile(r"^[0-9a-f]{12}$")


def format_request_id(region: str, now_ms: int, random_hex: str) -> str:
    """``req_<region>-<unix ms>-<12 hex>``."""
    if not _HEX12.match(random_hex):
        raise ValueError("random_hex must be 12 lowercase hex characters")
    return f"req_{region}-{now_ms}-{random_hex}"


def caller_request_id(value: str | None) -> str | None:
    """A caller's own ``X-Request-Id`` if it is safe to echo (in headers and logs), else None."""
    if value is None:
        return None
    value = value.strip()
    return value if _CALLER_ID.match(value) else None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``: ``2025-01-31T12:00:00.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
