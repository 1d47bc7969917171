"""bmc-agent settings (``INFRAFLOW_`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from infraflow.common.settings import ServiceSettings


class BmcAgentSettings(ServiceSettings):
    sites: str = "default"
    """Comma-separated sites whose BMC steps this agent runs (deploy one agent per site)."""
    credential_keys: str = Field(default="", repr=False)
    """Fernet keys (comma-separated, newest first) that open sealed BMC credentials."""
    max_inflight: int = 32
    """Steps run concurrently by one agent process."""
    power_poll_interval_s: float = 1.0
    shutdown_grace_s: float = 20.0

    @property
    def site_list(self) -> list[str]:
        return [s.strip() for s in self.sites.split(",") if s.strip()]
