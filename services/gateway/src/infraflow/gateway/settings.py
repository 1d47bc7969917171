"""Gateway settings: ``INFRAFLOW_`` environment variables, nested with ``__``.

INFRAFLOW_HTTP__HOST=0.0.0.0            INFRAFLOW_HTTP__PORT=8080
INFRAFLOW_AUTH__JWT_HS256_SECRET=...    INFRAFLOW_AUTH__JWT_PUBLIC_KEY_FILE=/keys/jwt.pem
INFRAFLOW_CREDENTIAL_KEYS=<fernet key>[,<older key>...]
INFRAFLOW_REGION=eu1                    INFRAFLOW_NATS__URL=nats://nats:4222
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, SecretStr, field_validator

from infraflow.common.settings import ServiceSettings

_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class HttpSettings(BaseModel):
    """Where the REST API listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Larger request bodies are refused with 413 ``PAYLOAD_TOO_LARGE``."""
    graceful_shutdown_s: float = 10.0
    """How long in-flight requests may take after SIGTERM."""


class AuthSettings(BaseModel):
    """How bearer tokens are verified. At least one key must be configured."""

    jwt_hs256_secret: SecretStr | None = None
    jwt_public_key_file: str | None = None
    """A PEM public key (RSA or EC) for asymmetrically signed tokens (RS256/ES256 ...)."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    leeway_s: float = Field(default=30.0, ge=0)
    """Clock skew tolerated on ``exp``/``nbf``/``iat``."""


class GatewaySettings(ServiceSettings):
    """Settings of the REST gateway."""

    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    region: str = "local"
    """Part of every request id: ``req_<region>-<unix ms>-<12 hex>``."""
    credential_keys: SecretStr = SecretStr("")
    """Comma-separated Fernet keys sealing BMC credentials, newest first."""
    publish_timeout_s: float = Field(default=2.0, gt=0)
    """How long to wait for JetStream to acknowledge a command (or a KV write)."""
    query_timeout_s: float = Field(default=3.0, gt=0)
    """How long to wait for the projector to answer a read."""
    estimate_timeout_s: float = Field(default=0.25, gt=0)
    """How long to wait for the projector's duration estimate before using the catalog's."""
    idempotency_wait_s: float = Field(default=2.0, ge=0)
    """How long a request waits for a concurrent request with the same Idempotency-Key."""
    idempotency_stale_s: float = Field(default=30.0, gt=0)
    """A claim left unfinished this long (a crashed gateway) may be taken over."""

    @field_validator("region")
    @classmethod
    def _region_is_a_token(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError("region must be 1-32 lowercase letters, digits or '-'")
        return value

    @property
    def credential_key_list(self) -> list[str]:
        """The Fernet keys, newest first."""
        raw = self.credential_keys.get_secret_value()
        return [k.strip() for k in raw.split(",") if k.strip()]
