"""Settings shared by every service; each service adds its own ``<Area>Settings`` subclass.

Values come from environment variables with the ``INFRAFLOW_`` prefix (nested with ``__``),
e.g. ``INFRAFLOW_NATS__URL=nats://127.0.0.1:4222``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infraflow.common.streams import Topology


class NatsSettings(BaseModel):
    """How to reach the broker."""

    url: str = "nats://127.0.0.1:4222"
    """Comma-separated server URLs."""
    name: str | None = None
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    token: str | None = Field(default=None, repr=False)
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 5.0
    replicas: int = 1
    """Stream replicas: 3 in production (a 3-node JetStream cluster), 1 in development."""
    ack_wait_s: float = 30.0
    """Redelivery wait of the durable consumers (set when they are first created)."""

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    def topology(self) -> Topology:
        return Topology(replicas=self.replicas, ack_wait_s=self.ack_wait_s)


class ServiceSettings(BaseSettings):
    """Base of every service's settings."""

    model_config = SettingsConfigDict(
        env_prefix="INFRAFLOW_", env_nested_delimiter="__", extra="ignore"
    )

    nats: NatsSettings = NatsSettings()
    log_level: str = "INFO"
    log_json: bool = True
    catalog_extra_file: str | None = None
    """A JSON file with extra workflow types (deployment-specific or benchmark workflows)."""
    ops_port: int | None = None
    """Port of the small ops HTTP server (/healthz, /readyz, /metrics); none when unset."""
    ops_host: str = "127.0.0.1"
