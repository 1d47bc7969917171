"""Gateway settings: ``INFRAFLOW_`` environment variables, nested with ``__``.

INFRAFLOW_HTTP__HOST=0.0.0.0            INFRAFLOW_HTTP__PORT=8080
INFRAFLOW_AUTH__JWT_HS256_SECRET=...    INFRAFLOW_AUTH__JWT_PUBLIC_KEY_FILE=/keys/jwt.pem
INFRAFLOW_CREDENTIAL_KEYS=<fernet key>[,<older key>...]
INFRAFLOW_REGION=eu1                    INFRAFLOW_NATS__URL=nats://nats:4222
INFRAFLOW_AUTH__JWT_JWKS_FILE=/keys/jwks.json
INFRAFLOW_WEBHOOKS__ALLOW_NETWORKS=10.20.0.0/16,127.0.0.1/32
INFRAFLOW_RATE_LIMIT__RATE_PER_S=20     INFRAFLOW_RATE_LIMIT__BURST=100
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

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
    jwt_jwks_file: str | None = None
    """A JSON Web Key Set file (``{"keys": [...]}``, RSA or EC public keys); a token names its
    key with the ``kid`` header (optional when the set holds one key)."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    leeway_s: float = Field(default=30.0, ge=0)
    """Clock skew tolerated on ``exp``/``nbf``/``iat``."""


class WebhookSettings(BaseModel):
    """Webhook delivery: the SSRF guard, timeouts and the retry schedule."""

    allow_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """CIDR networks webhooks may reach even though they are loopback, private, link-local or
    otherwise not public (e.g. an in-cluster receiver). Everything else non-public is refused,
    at registration and again, on the resolved address, at every delivery."""
    allow_public: bool = True
    """False: webhooks may reach only the allowlisted networks (an internal-only deployment)."""
    timeout_s: float = Field(default=10.0, gt=0, le=30)
    """Connect + read timeout of one delivery attempt."""
    max_attempts: int = Field(default=10, ge=1, le=100)
    """Attempts before a delivery is given up (recorded as ``failed`` in the delivery log)."""
    initial_backoff_s: float = Field(default=5.0, gt=0)
    backoff_coefficient: float = Field(default=3.0, ge=1)
    max_backoff_s: float = Field(default=7200.0, gt=0)
    """With the defaults the attempts are ~5 s, 15 s, 45 s, 2 min, 7 min, 20 min, 1 h, 2 h, 2 h
    apart: about 5.5 hours of retrying."""
    max_webhooks: int = Field(default=1000, ge=1)
    """Registrations the gateway accepts in total."""
    concurrency: int = Field(default=32, ge=1, le=1024)
    """Deliveries in flight per gateway replica."""
    dispatcher: bool = True
    """Run the dispatcher in this process (every replica shares the work)."""

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # raises ValueError when malformed
        return value


class RateLimitSettings(BaseModel):
    """Token buckets per (user, route), in each replica's memory: with N replicas behind a
    load balancer a user gets up to N times these numbers."""

    enabled: bool = True
    rate_per_s: float = Field(default=20.0, gt=0)
    """Tokens added per second (the sustained request rate)."""
    burst: int = Field(default=100, ge=1)
    """Bucket size (the burst allowed after a quiet period)."""
    routes: dict[str, tuple[float, int]] = Field(default_factory=dict)
    """Per-route overrides by operation id, e.g. ``{"registerServers": [1, 5]}`` (rate, burst)."""
    max_buckets: int = Field(default=100_000, ge=100)
    """Buckets kept in memory; the least recently used are dropped first."""


class GatewaySettings(ServiceSettings):
    """Settings of the REST gateway."""

    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    webhooks: WebhookSettings = WebhookSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    region: str = "local"
    """Part of every request id: ``req_<region>-<unix ms>-<12 hex>``."""
    credential_keys: SecretStr = SecretStr("")
    """Comma-separated Fernet keys sealing BMC credentials, newest first."""
    publish_timeout_s: float = Field(default=2.0, gt=0)
    """How long to wait for JetStream to acknowledge a command (or a KV write)."""
    query_timeout_s: float = Field(default=3.0, gt=0)
    """How long to wait for the projector to answer a read."""
    bulk_max_runs: int = Field(default=200, ge=1, le=1000)
    """The most runs one bulk retry or cancel (``POST /v1/workflows/runs:retry|cancel``) acts on."""
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
