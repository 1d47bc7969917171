"""Opaque keyset cursors: the last id of a page, base64url-encoded with its list's kind and the
stream position the page was read at.

The position lets any replica continue a list another replica started: it first catches up to
that position, so a run the first replica had already seen can never be missing from the next
page (no skip), and ids strictly below the last one never repeat an item.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

_ID: Final = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_SEQ: Final = re.compile(r"^[0-9]{1,19}$")


class CursorError(ValueError):
    """The cursor was not issued by this list."""


def encode_cursor(kind: str, last_id: str, seq: int = 0) -> str:
    """The cursor that continues a ``kind`` list after ``last_id`` (read at position ``seq``)."""
    raw = f"{kind}:{last_id}:{seq}" if seq else f"{kind}:{last_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor_at(kind: str, cursor: str) -> tuple[str, int]:
    """The last id a cursor of a ``kind`` list points after, and the stream position its page
    was read at (0 when unknown); raises ``CursorError``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise CursorError("malformed cursor") from exc
    prefix, sep, rest = raw.partition(":")
    last_id, _, seq = rest.partition(":")
    if not sep or prefix != kind or not _ID.match(last_id) or (seq and not _SEQ.match(seq)):
        raise CursorError("cursor does not belong to this list")
    return last_id, int(seq or 0)


def decode_cursor(kind: str, cursor: str) -> str:
    """The last id a cursor of a ``kind`` list points after; raises ``CursorError``."""
    return decode_cursor_at(kind, cursor)[0]
