"""Validation helpers: collect every problem of a request, then fail once with all of them.

Messages describe what is expected and never repeat the offending value (it may be a secret).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, date, datetime, time
from typing import Final
from urllib.parse import urlsplit

from infraflow.common.errors import ValidationError

DNS_LABEL: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SUBJECT_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
TAG_KEY: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
MAX_TAGS: Final = 64
MAX_TAG_VALUE: Final = 256
MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 50


class FieldErrors:
    """Problems found in a request, by field path (``bmc.address``, ``pageSize``)."""

    def __init__(self) -> None:
        self._errors: dict[str, str] = {}

    def add(self, field: str, message: str) -> None:
        """Record a problem; the first one reported for a field wins."""
        self._errors.setdefault(field, message)

    def __bool__(self) -> bool:
        return bool(self._errors)

    def __contains__(self, field: object) -> bool:
        return field in self._errors

    def raise_if_any(self, message: str = "the request is not valid") -> None:
        """Raise one ``VALIDATION_ERROR`` carrying every problem in ``details.fields``."""
        if self._errors:
            raise ValidationError(message, details={"fields": dict(self._errors)})


def invalid(field: str, message: str) -> ValidationError:
    """A ``VALIDATION_ERROR`` about a single field."""
    return ValidationError(message, details={"fields": {field: message}})


def check_dns_label(errors: FieldErrors, field: str, value: str) -> None:
    if not DNS_LABEL.match(value):
        errors.add(
            field,
            "must be 1-63 letters, digits or '-', starting and ending with a letter or digit",
        )


def check_subject_token(errors: FieldErrors, field: str, value: str) -> None:
    if not SUBJECT_TOKEN.match(value):
        errors.add(field, "must be 1-63 letters, digits, '-' or '_'")


def check_http_url(errors: FieldErrors, field: str, value: str) -> None:
    """An absolute http(s) URL with a host and without embedded credentials."""
    message = "must be an http:// or https:// URL with a host (no user or password in it)"
    if len(value) > 2048 or any(c.isspace() for c in value):
        errors.add(field, message)
        return
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        errors.add(field, message)
        return
    if (
        parts.scheme.lower() not in {"http", "https"}
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or not port_ok
    ):
        errors.add(field, message)


def check_text(
    errors: FieldErrors, field: str, value: str, *, max_length: int, allow_empty: bool = False
) -> None:
    """Printable text of bounded length."""
    if not value and not allow_empty:
        errors.add(field, "must not be empty")
    elif len(value) > max_length:
        errors.add(field, f"must be at most {max_length} characters")
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        errors.add(field, "must not contain control characters")


def check_tags(errors: FieldErrors, field: str, tags: dict[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        errors.add(field, f"at most {MAX_TAGS} tags")
        return
    for key, value in tags.items():
        if not TAG_KEY.match(key):
            errors.add(f"{field}.{key[:63]}", "tag keys are 1-63 letters, digits, '.', '_', '/'")
        else:
            check_text(errors, f"{field}.{key}", value, max_length=MAX_TAG_VALUE, allow_empty=True)


def split_csv(value: str | None) -> list[str] | None:
    """``a,b, c`` -> ``["a", "b", "c"]``; empty or missing -> None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def parse_multi(
    errors: FieldErrors,
    field: str,
    value: str | None,
    allowed: Collection[str] | None = None,
    pattern: re.Pattern[str] | None = None,
) -> list[str] | None:
    """A comma-separated filter; every value must be ``allowed`` (or match ``pattern``)."""
    items = split_csv(value)
    if items is None:
        return None
    if allowed is not None:
        unknown = [v for v in items if v not in allowed]
        if unknown:
            errors.add(field, "each value must be one of: " + ", ".join(sorted(allowed)))
    elif pattern is not None and not all(pattern.match(v) for v in items):
        errors.add(field, "contains a value that is not a valid identifier")
    return items


def parse_page_size(errors: FieldErrors, value: str | None, field: str = "pageSize") -> int:
    """An integer in 1-500, default 50."""
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        errors.add(field, f"must be an integer between 1 and {MAX_PAGE_SIZE}")
        return DEFAULT_PAGE_SIZE
    if not 1 <= size <= MAX_PAGE_SIZE:
        errors.add(field, f"must be an integer between 1 and {MAX_PAGE_SIZE}")
        return DEFAULT_PAGE_SIZE
    return size


def parse_int(
    errors: FieldErrors, field: str, value: str | None, *, default: int, low: int, high: int
) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        errors.add(field, f"must be an integer between {low} and {high}")
        return default
    if not low <= number <= high:
        errors.add(field, f"must be an integer between {low} and {high}")
        return default
    return number


def parse_instant(
    errors: FieldErrors, field: str, value: str | None, *, end_of_day: bool = False
) -> datetime | None:
    """An ISO 8601 date (``2025-01-31``) or date-time; naive values are UTC. A bare date as an
    upper bound means the end of that day."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        errors.add(field, "must be an ISO 8601 date or date-time, e.g. 2025-01-31T12:00:00Z")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_DECODER_AT: Final = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_EXPECTED: Final = re.compile(
    r"^Expected `(?P<want>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?P<rest>.*)$"
)


def decoder_field_error(
    text: str, prefix: str = "", drop_root: str | None = None
) -> tuple[str, str]:
    """Turn a msgspec decoding error (``Expected `str`, got `int` - at `$.bmc.address```) into
    a field path and a message. msgspec never quotes the offending value, except for enum
    mismatches, whose message is replaced here. ``drop_root`` removes a wrapper segment (the
    ``data`` under which Litestar decodes a body)."""
    found = _DECODER_AT.match(text.strip())
    message = found["message"] if found else text
    path = (found["path"] or "") if found else ""
    segments = [s for s in path.replace("[", ".[").split(".") if s]
    if drop_root is not None and segments[:1] == [drop_root]:
        segments = segments[1:]
    if prefix:
        segments.insert(0, prefix)
    if (missing := _MISSING.match(message)) is not None:
        segments.append(missing["name"])
        message = "is required"
    elif message.startswith("Invalid enum value"):
        message = "is not one of the allowed values"
    elif (expected := _EXPECTED.match(message)) is not None:
        got = f", got {expected['got']}" if expected["got"] else ""
        message = f"expected {expected['want']}{got}{expected['rest']}"
    field = ".".join(segments).replace(".[", "[") or "body"
    if drop_root is not None and field == drop_root:
        return "body", "a JSON request body is required"
    return field, message
