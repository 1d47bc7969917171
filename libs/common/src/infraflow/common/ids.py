"""Time-sortable, prefixed identifiers: ``<prefix>_`` + 26 base62 characters.

The first 9 characters encode the creation time in milliseconds, the remaining 17 are random.
The base62 alphabet is in ASCII order, so ids sort lexicographically by creation time.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TIME_CHARS: Final = 9
_RANDOM_CHARS: Final = 17
BODY_LENGTH: Final = _TIME_CHARS + _RANDOM_CHARS

PREFIXES: Final = frozenset({"run", "srv", "cls", "vm", "evt", "whk", "dlv", "req"})


def _encode(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(ALPHABET[rem])
    if value:
        raise ValueError("value does not fit")
    return "".join(reversed(out))


def new_id(prefix: str, *, now_ms: int | None = None, entropy: int | None = None) -> str:
    """Return a new id such as ``run_0KxY3...``; ``now_ms``/``entropy`` make it deterministic."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rnd = secrets.randbits(100) if entropy is None else entropy
    return f"{prefix}_{_encode(ms, _TIME_CHARS)}{_encode(rnd % 62**_RANDOM_CHARS, _RANDOM_CHARS)}"


def is_id(value: str, prefix: str) -> bool:
    """True when ``value`` is a well-formed id with ``prefix``."""
    head, sep, body = value.partition("_")
    return (
        sep == "_"
        and head == prefix
        and len(body) == BODY_LENGTH
        and all(c in ALPHABET for c in body)
    )


def id_time_ms(value: str) -> int:
    """The creation time (ms since the epoch) encoded in an id."""
    body = value.partition("_")[2]
    ms = 0
    for c in body[:_TIME_CHARS]:
        ms = ms * 62 + ALPHABET.index(c)
    return ms
