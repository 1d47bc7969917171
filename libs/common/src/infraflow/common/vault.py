"""Sealing secrets at rest (BMC credentials) with Fernet (AES-128-CBC + HMAC-SHA256).

``cryptography``'s Fernet is a well-kept, audited construction; writing our own would be worse.
The key comes from settings (a Kubernetes Secret in production). Several keys may be given,
newest first, so keys can be rotated: data sealed with an older key still opens.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from infraflow.common.errors import InfraflowError


class VaultError(InfraflowError):
    code = "VAULT_ERROR"


class Vault:
    """Seal and open small JSON documents."""

    def __init__(self, keys: str | list[str]) -> None:
        items = [k.strip() for k in (keys.split(",") if isinstance(keys, str) else keys)]
        items = [k for k in items if k]
        if not items:
            raise VaultError("no encryption key configured")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in items])
        except ValueError as exc:
            raise VaultError("an encryption key is not a valid Fernet key") from exc

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, document: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(json.dumps(document, separators=(",", ":")).encode())

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._fernet.decrypt(token))
        except InvalidToken as exc:
            raise VaultError("sealed data could not be opened with the configured keys") from exc
        return data

    def rotate(self, token: bytes) -> bytes:
        """Re-seal with the newest key."""
        return self._fernet.rotate(token)


SECRET_KEYS = frozenset({"password", "secret", "token", "apikey", "api_key", "privatekey"})


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking field replaced by ``"***"``."""
    if isinstance(value, dict):
        return {
            k: ("***" if k.replace("-", "").replace("_", "").lower() in _NORMALISED else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


_NORMALISED = frozenset(k.replace("_", "") for k in SECRET_KEYS)
