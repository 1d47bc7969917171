"""Sealed BMC credentials in the ``bmc-credentials`` KV bucket (written by the gateway on
register and rotation, opened here, removed on decommission). Plain secrets live only in
memory, in ``BmcEndpoint`` (whose ``repr`` hides the password).

Keys: ``<serverId>`` holds the server's credentials (``address``, ``username``, ``password``,
``verifyTls``, ``site``); ``<serverId>.candidate.<runId>`` holds new credentials waiting for
their ``server.rotate-credentials`` run to check them against the BMC.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from infraflow.bmc_agent.adapters.redfish_models import BmcEndpoint
from infraflow.bmc_agent.errors import BmcAuthError
from infraflow.common.streams import KV_CREDENTIALS
from infraflow.common.vault import Vault

DEFAULT_SITE = "default"


@dataclass(frozen=True, slots=True)
class SiteServer:
    """A server whose BMC an agent of ``site`` polls."""

    server_id: str
    site: str
    endpoint: BmcEndpoint


class CredentialStore:
    def __init__(self, kv: KeyValue, vault: Vault) -> None:
        self._kv = kv
        self._vault = vault
        self._opened: dict[str, tuple[int, SiteServer]] = {}

    @classmethod
    async def open(cls, js: JetStreamContext, vault: Vault) -> CredentialStore:
        return cls(await js.key_value(KV_CREDENTIALS), vault)

    async def endpoint(self, server_id: str) -> BmcEndpoint:
        """The server's BMC endpoint; ``BMC_NO_CREDENTIALS`` when none are stored."""
        return _endpoint(await self._document(server_id))

    async def _document(self, key: str) -> dict[str, Any]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            raise BmcAuthError(
                f"no BMC credentials are stored for {key.split('.')[0]}", code="BMC_NO_CREDENTIALS"
            ) from None
        return self._vault.open(entry.value or b"")

    async def site_servers(self, sites: list[str]) -> list[SiteServer]:
        """Every server registered at one of ``sites`` (documents without a site are at
        ``default``). Documents are decrypted once per revision."""
        try:
            keys = [k for k in await self._kv.keys() if "." not in k]
        except NoKeysError:
            keys = []
        found: list[SiteServer] = []
        for key in keys:
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                continue
            revision = int(entry.revision or 0)
            cached = self._opened.get(key)
            if cached is None or cached[0] != revision:
                doc = self._vault.open(entry.value or b"")
                server = SiteServer(key, str(doc.get("site") or DEFAULT_SITE), _endpoint(doc))
                self._opened[key] = (revision, server)
            server = self._opened[key][1]
            if server.site in sites:
                found.append(server)
        for gone in set(self._opened) - set(keys):
            del self._opened[gone]
        return found

    # ---- rotation ---------------------------------------------------------------------------

    async def candidate(self, server_id: str, run_id: str) -> BmcEndpoint:
        """The endpoint with the rotation's new credentials merged over the current ones."""
        return _endpoint(await self._merged(server_id, run_id))

    async def _merged(self, server_id: str, run_id: str) -> dict[str, Any]:
        current = await self._document(server_id)
        new = await self._document(candidate_key(server_id, run_id))
        return {**current, **new}

    async def has_candidate(self, server_id: str, run_id: str) -> bool:
        try:
            await self._kv.get(candidate_key(server_id, run_id))
        except KeyNotFoundError:
            return False
        return True

    async def commit(self, server_id: str, run_id: str) -> bool:
        """Make the candidate the server's credentials (sealed with the newest key); False if
        there is no candidate (an earlier attempt committed it)."""
        if not await self.has_candidate(server_id, run_id):
            return False
        merged = await self._merged(server_id, run_id)
        await self._kv.put(server_id, self._vault.seal(merged))
        await self.discard(server_id, run_id)
        return True

    async def discard(self, server_id: str, run_id: str) -> None:
        """Remove a rotation's candidate."""
        with contextlib.suppress(KeyNotFoundError):
            await self._kv.purge(candidate_key(server_id, run_id))

    async def forget(self, server_id: str) -> None:
        """Remove the server's credentials and any rotation candidates."""
        try:
            keys = await self._kv.keys(filters=[server_id])
        except NoKeysError:
            keys = []
        for key in {server_id, *(k for k in keys if k.startswith(f"{server_id}."))}:
            with contextlib.suppress(KeyNotFoundError):
                await self._kv.purge(key)
        self._opened.pop(server_id, None)


def candidate_key(server_id: str, run_id: str) -> str:
    """Where the gateway seals a rotation's new credentials."""
    return f"{server_id}.candidate.{run_id}"


def _endpoint(doc: dict[str, Any]) -> BmcEndpoint:
    return BmcEndpoint(
        address=str(doc["address"]),
        username=str(doc["username"]),
        password=str(doc["password"]),
        verify_tls=bool(doc.get("verifyTls", True)),
    )
