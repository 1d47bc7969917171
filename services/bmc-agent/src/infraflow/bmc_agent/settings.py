"""bmc-agent settings (``INFRAFLOW_`` environment variables).

INFRAFLOW_SITES=dc1,dc2                         sites this agent serves
INFRAFLOW_CREDENTIAL_KEYS=<fernet key>[,...]    open sealed BMC credentials (a Kubernetes Secret)
INFRAFLOW_CALLBACK_URL=https://api.example.com  the gateway the installers call back
INFRAFLOW_PROVISION_MAX_CONCURRENT=8            provisioning runs at once per site (0: no cap)
INFRAFLOW_PROVISION_MAX_CONCURRENT_BY_SITE='{"dc2": 2}'
INFRAFLOW_POWER_SYNC_INTERVAL_S=60              power polling per site (0: off)
"""

from __future__ import annotations

from pydantic import Field

from infraflow.common.settings import ServiceSettings


class BmcAgentSettings(ServiceSettings):
    sites: str = "default"
    """Comma-separated sites whose BMC steps this agent runs (deploy one agent per site)."""
    credential_keys: str = Field(default="", repr=False)
    """Fernet keys (comma-separated, newest first) that open sealed BMC credentials; the
    provisioning callback tokens are derived from them too."""
    max_inflight: int = 32
    """BMC steps run concurrently by one agent process."""
    power_poll_interval_s: float = 1.0
    """How often a step polls a BMC while it waits for a power state."""
    shutdown_grace_s: float = 20.0

    callback_url: str = "http://127.0.0.1:8080"
    """The gateway's base URL as the installers reach it (they POST the provisioning callback
    to ``<callback_url>/v1/servers/<id>/provisioning-callback``)."""
    provisioning_max_inflight: int = 256
    """Provisioning steps (slot waits, callback waits) run concurrently: cheap waits, kept out
    of the BMC steps' slots so that waiting installers never starve power actions."""
    callback_poll_s: float = 5.0
    """How often a callback wait re-reads its key besides watching it (a safety net)."""
    provision_max_concurrent: int = Field(default=0, ge=0)
    """Provisioning runs that may hold a slot at once, per site (0: no cap)."""
    provision_max_concurrent_by_site: dict[str, int] = Field(default_factory=dict)
    """Per-site overrides of ``provision_max_concurrent``."""
    slot_poll_s: float = 2.0
    """How often a provisioning run waiting for a slot looks again."""

    power_sync_interval_s: float = 60.0
    """Power-state polling of every BMC of the served sites (Ironic's default: 60 s); 0 turns
    it off."""
    power_sync_concurrency: int = Field(default=8, ge=1)
    """BMCs polled at once per agent (Ironic: 8 power-sync workers)."""
    power_sync_timeout_s: float = 10.0
    """A BMC that does not answer a poll within this is reported unreachable."""

    @property
    def site_list(self) -> list[str]:
        return [s.strip() for s in self.sites.split(",") if s.strip()]

    @property
    def key_list(self) -> list[str]:
        """The credential keys, newest first."""
        return [k.strip() for k in self.credential_keys.split(",") if k.strip()]

    def provision_cap(self, site: str) -> int:
        """The site's provisioning cap (0: none)."""
        return self.provision_max_concurrent_by_site.get(site, self.provision_max_concurrent)
