"""Re-seal every BMC credential with the newest credential key (the last step of a key rotation,
docs/operations.md "Rotating keys").

Runs inside any image that has infraflow-common and the keys, e.g. the gateway's:

    kubectl -n infraflow exec -i deploy/gateway -- python - < deploy/tools/reseal_credentials.py

It reads ``INFRAFLOW_NATS__URL`` and ``INFRAFLOW_CREDENTIAL_KEYS`` (newest first) like the
services, rewrites each entry of the ``bmc-credentials`` bucket with compare-and-set (an entry
changed meanwhile is read again), and prints how many it re-sealed. Entries no configured key
opens are reported and left alone. Safe to run twice.
"""

from __future__ import annotations

import asyncio
import os
import sys

import nats
from cryptography.fernet import InvalidToken
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError

from infraflow.common.streams import KV_CREDENTIALS
from infraflow.common.vault import Vault, VaultError


async def reseal(servers: list[str], keys: str) -> tuple[int, list[str]]:
    """Re-seal the bucket's entries; returns (re-sealed, keys of entries that did not open)."""
    vault = Vault(keys)
    nc = await nats.connect(servers=servers)
    try:
        kv = await nc.jetstream().key_value(KV_CREDENTIALS)
        try:
            names = await kv.keys()
        except NoKeysError:
            return 0, []
        done, unopened = 0, []
        for name in names:
            for _ in range(5):
                entry = await kv.get(name)
                if entry.value is None:
                    break
                try:
                    sealed = vault.rotate(entry.value)
                except (VaultError, InvalidToken):
                    unopened.append(name)
                    break
                try:
                    await kv.update(name, sealed, last=entry.revision)
                    done += 1
                    break
                except KeyWrongLastSequenceError:
                    continue  # changed meanwhile: read it again
        return done, unopened
    finally:
        await nc.close()


def main() -> int:
    servers = [u.strip() for u in os.environ.get("INFRAFLOW_NATS__URL", "").split(",") if u]
    keys = os.environ.get("INFRAFLOW_CREDENTIAL_KEYS", "")
    if not servers or not keys:
        print("INFRAFLOW_NATS__URL and INFRAFLOW_CREDENTIAL_KEYS must be set", file=sys.stderr)
        return 2
    done, unopened = asyncio.run(reseal(servers, keys))
    print(f"re-sealed {done} entries with the newest key")
    if unopened:
        print(f"{len(unopened)} entries no configured key opens: {unopened}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
