"""Idempotency keys (pure parts): storage keys, body fingerprints and the stored record.

A run-starting request with an ``Idempotency-Key`` first *claims* the key in KV
``wf-idempotency`` with a ``pending`` record that already names the run (and resource) ids;
after the command is acknowledged the record becomes ``done`` and carries the response. A retry
that takes over a stale claim (a crashed gateway) reuses those ids, so JetStream's ``Nats-Msg-Id``
dedupe and the orchestrator's ``run_created`` check make a second run impossible.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any, Final, Literal

import msgspec

from infraflow.common.errors import ValidationError

HEADER: Final = "Idempotency-Key"
_KEY: Final = re.compile(r"^[\x21-\x7e]{1,255}$")


class IdempotencyRecord(msgspec.Struct, kw_only=True, rename="camel"):
    """What ``wf-idempotency`` stores under a key."""

    state: Literal["pending", "done"]
    body_hash: str
    run_id: str
    resource_id: str | None = None
    created_at_ms: int
    status: int | None = None
    body: dict[str, Any] | None = None
    location: str | None = None

    def is_stale(self, now_ms: int, stale_ms: int) -> bool:
        """A pending claim nobody finished in time: its owner is presumed dead."""
        return self.state == "pending" and now_ms - self.created_at_ms > stale_ms


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(IdempotencyRecord)


def encode_record(record: IdempotencyRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> IdempotencyRecord:
    return _decoder.decode(data)


def check_key(value: str) -> str:
    """1-255 printable ASCII characters, else ``VALIDATION_ERROR``."""
    if not _KEY.match(value):
        message = "must be 1-255 printable ASCII characters without spaces"
        raise ValidationError(
            "the Idempotency-Key header is not valid", details={"fields": {HEADER: message}}
        )
    return value


def storage_key(subject: str, method: str, path: str, key: str) -> str:
    """The KV key: a digest of who asked, what they asked for and their key."""
    material = "\x00".join((subject, method.upper(), path, key)).encode()
    return hashlib.sha256(material).hexdigest()


def body_fingerprint(secret: bytes, body: Any) -> str:
    """A keyed digest of the decoded body (canonical JSON). Keyed, because registration bodies
    hold a BMC password and a plain hash of it would be open to guessing."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()


def fingerprint_secret(credential_keys: list[str]) -> bytes:
    """The fingerprint key, derived from the oldest configured credential key (rotation adds
    new keys in front, so the oldest one changes last)."""
    base = credential_keys[-1].encode() if credential_keys else b""
    return hashlib.sha256(b"infraflow-idempotency\x00" + base).digest()
