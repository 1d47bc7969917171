"""Sealed BMC credentials in the ``bmc-credentials`` KV bucket (written by the gateway on
register, opened here, removed on decommission). Plain secrets live only in memory."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from infraflow.bmc_agent.adapters.redfish_models import BmcEndpoint
from infraflow.bmc_agent.errors import BmcAuthError
from infraflow.common.streams import KV_CREDENTIALS
from infraflow.common.vault import Vault


class CredentialStore:
    def __init__(self, kv: KeyValue, vault: Vault) -> None:
        self._kv = kv
        self._vault = vault

    @classmethod
    async def open(cls, js: JetStreamContext, vault: Vault) -> CredentialStore:
        return cls(await js.key_value(KV_CREDENTIALS), vault)

    async def endpoint(self, server_id: str) -> BmcEndpoint:
        try:
            entry = await self._kv.get(server_id)
        except KeyNotFoundError:
            raise BmcAuthError(
                f"no BMC credentials are stored for server {server_id}", code="BMC_NO_CREDENTIALS"
            ) from None
        doc = self._vault.open(entry.value or b"")
        return BmcEndpoint(
            address=str(doc["address"]),
            username=str(doc["username"]),
            password=str(doc["password"]),
            verify_tls=bool(doc.get("verifyTls", True)),
        )

    async def forget(self, server_id: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self._kv.purge(server_id)
