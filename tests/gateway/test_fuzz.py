"""Property-based API fuzzing (schemathesis) from the gateway's own OpenAPI document: the real
gateway (uvicorn on loopback, a real nats-server, the projector replaced by the canned
responder of ``conftest``) gets generated valid and invalid requests for every operation, with
an Atlas token, and must never answer 5xx, an undocumented status, an undocumented content type
or a body that violates the documented schema.

Bounded for CI (``INFRAFLOW_FUZZ_EXAMPLES``, default 30 per operation, ~20 s); the longer run
is the same test with a larger number and ``INFRAFLOW_FUZZ_RANDOM=1`` (a new seed each run).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infraflow.common.settings import NatsSettings
from infraflow.common.streams import ensure_topology
from infraflow.common.vault import Vault
from infraflow.devtools.nats_server import NatsServer
from infraflow.devtools.ports import free_port
from infraflow.gateway.app import create_app
from infraflow.gateway.settings import GatewaySettings

from .conftest import SECRET, FakeProjector, token

EXAMPLES = int(os.environ.get("INFRAFLOW_FUZZ_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


class GatewayThread:
    """The gateway under uvicorn and the projector responder, in one event loop of their own."""

    def __init__(self, nats_url: str) -> None:
        self.port = free_port()
        self.nats_url = nats_url
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> None:
        nc = await nats.connect(self.nats_url)
        await ensure_topology(nc.jetstream())
        projector = FakeProjector()
        projector.add_server(project_id="prj-a")
        projector.add_run(project_id="prj-a")
        await nc.subscribe("wf.query.*", queue="projector", cb=projector.on_query)
        settings = GatewaySettings(
            auth={"jwt_hs256_secret": SECRET},
            credential_keys=Vault.generate_key(),
            nats=NatsSettings(url=self.nats_url),
            query_timeout_s=1.0,
            log_json=True,
            rate_limit={"enabled": False},
            # generated webhook URLs must never make the gateway contact a host off this machine
            webhooks={"allow_public": False, "allow_networks": ["127.0.0.0/8"]},
        )
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        try:
            await self.server.serve()
        finally:
            await nc.close()

    def start(self) -> GatewayThread:
        import urllib.request

        self._thread.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start: {self.error!r}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self._thread.join(timeout=20)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    server = NatsServer(store_dir=Path(tmp_path_factory.mktemp("fuzz")) / "nats").start()
    gw = GatewayThread(server.url).start()
    try:
        yield gw
    finally:
        gw.stop()
        server.stop()


def _document() -> dict[str, Any]:
    """The OpenAPI document, built without a broker (the served one is compared below)."""
    settings = GatewaySettings(
        auth={"jwt_hs256_secret": SECRET}, credential_keys=Vault.generate_key(), log_json=True
    )
    document: dict[str, Any] = json.loads(
        msgspec.json.encode(create_app(settings).openapi_schema.to_schema())
    )
    return document


DOCUMENT = _document()
OPERATIONS = [
    result.ok() for result in schemathesis.openapi.from_dict(DOCUMENT).get_all_operations()
]


def test_the_served_document_is_the_fuzzed_one(gateway: GatewayThread) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{gateway.url}/schema/openapi.json", timeout=5) as r:
        served = json.loads(r.read())
    assert served == DOCUMENT


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_api_conforms_to_its_openapi_document(operation: Any, gateway: GatewayThread) -> None:
    bearer = token(sub="fuzzer", roles=("super_admin",))

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("INFRAFLOW_FUZZ_RANDOM") is None,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=gateway.url, headers={"Authorization": f"Bearer {bearer}"}, checks=CHECKS
        )

    fuzz()
