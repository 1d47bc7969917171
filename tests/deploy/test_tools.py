"""deploy/tools: the operations scripts the guide tells operators to run."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from nats.js import JetStreamContext

from infraflow.common.streams import KV_CREDENTIALS
from infraflow.common.vault import Vault
from infraflow.devtools.nats_server import NatsServer

from .conftest import DEPLOY


def load(name: str) -> ModuleType:
    path = DEPLOY / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_reseal_moves_every_credential_to_the_newest_key(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    old, new = Vault.generate_key(), Vault.generate_key()
    kv = await js.key_value(KV_CREDENTIALS)
    for i in range(5):
        await kv.put(f"srv_{i}", Vault(old).seal({"username": "admin", "password": f"p{i}"}))
    await kv.put("srv_foreign", Vault(Vault.generate_key()).seal({"password": "x"}))

    reseal = load("reseal_credentials")
    done, unopened = await reseal.reseal([nats_server.url], f"{new},{old}")
    assert done == 5
    assert unopened == ["srv_foreign"]
    only_new = Vault(new)  # the old key can now be dropped
    for i in range(5):
        entry = await kv.get(f"srv_{i}")
        assert entry.value is not None
        assert only_new.open(entry.value)["password"] == f"p{i}"
    again, _ = await reseal.reseal([nats_server.url], new)  # safe to run twice
    assert again == 5
