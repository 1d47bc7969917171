"""Opaque keyset cursors: the last id of a page, base64url-encoded with its list's kind."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

_ID: Final = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class CursorError(ValueError):
    """The cursor was not issued by this list."""


def encode_cursor(kind: str, last_id: str) -> str:
    """The cursor that continues a ``kind`` list after ``last_id``."""
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> str:
    """The last id a cursor of a ``kind`` list points after; raises ``CursorError``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError("malformed cursor") from exc
    prefix, sep, last_id = raw.partition(":")
    if not sep or prefix != kind or not _ID.match(last_id):
        raise CursorError("cursor does not belong to this list")
    return last_id
