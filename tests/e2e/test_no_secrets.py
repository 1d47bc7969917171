"""No BMC password and no bearer token ever shows up: not in any response body, any service's
log line, any event of the log (``WF_EVENTS``), any command, or any webhook delivery. The stack
is driven through everything that handles a password or a token: registration (good and bad
credentials), a batch, credential rotation, reads of servers and runs, failed logins,
webhooks and their test pings, errors and validation failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from infraflow.common.streams import COMMANDS, EVENTS, WEBHOOK_DELIVERIES, WEBHOOK_JOBS
from infraflow.devtools.stack import Stack
from infraflow.devtools.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

WRONG_PASSWORD = "Wr0ng-P4ssw0rd-Never-Shown"
ROTATED_PASSWORD = "R0tated-P4ssw0rd-Never-Shown"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        base_dir=tmp_path_factory.mktemp("secrets"),
        bmc_systems=2,
        kube=False,
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        extra_env={"INFRAFLOW_WEBHOOKS__ALLOW_NETWORKS": "127.0.0.0/8"},
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


class Recorder:
    """An API client that keeps every response body."""

    def __init__(self, base: str, token: str) -> None:
        self.bodies: list[bytes] = []
        self.http = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            event_hooks={"response": [self._keep]},
        )

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.content)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, **kw)

    def wait_run(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.request("GET", f"/v1/workflows/runs/{run_id}").json()["data"]
            if run["status"] in ("completed", "failed", "cancelled"):
                return run
            assert time.monotonic() < deadline, run
            time.sleep(0.2)


def _stream_payloads(stack: Stack, stream: str) -> list[bytes]:
    async def read() -> list[bytes]:
        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except Exception:  # deleted (work queues) or purged
                    continue
                out.append((msg.data or b"") + repr(msg.headers).encode())
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def test_no_password_or_token_anywhere(stack: Stack) -> None:
    assert stack.bmc is not None
    token = stack.token()
    tenant_token = stack.token("tenant", roles=[], projects={"prj-x": "member"})
    api = Recorder(stack.api_url, token)
    tenant = Recorder(stack.api_url, tenant_token)
    password = stack.bmc.password
    secrets = {
        "BMC password": password,
        "wrong BMC password": WRONG_PASSWORD,
        "rotated BMC password": ROTATED_PASSWORD,
        "admin token": token,
        "admin token signature": token.rsplit(".", 1)[1],
        "tenant token": tenant_token,
        "tenant token signature": tenant_token.rsplit(".", 1)[1],
    }
    systems = stack.bmc.systems

    def bmc(index: int, pw: str) -> dict[str, Any]:
        assert stack.bmc is not None
        return {
            "address": stack.bmc.system_url(systems[index].id),
            "username": stack.bmc.username,
            "password": pw,
        }

    with WebhookReceiver() as rx:
        hook = api.request("POST", "/v1/webhooks", json={"url": rx.url, "events": ["*"]})
        assert hook.status_code == 201
        good = api.request("POST", "/v1/servers", json={"name": "good", "bmc": bmc(0, password)})
        bad = api.request(
            "POST", "/v1/servers", json={"name": "bad", "bmc": bmc(1, WRONG_PASSWORD)}
        )
        assert good.status_code == bad.status_code == 202
        server_id = good.json()["data"]["resourceId"]
        assert api.wait_run(good.json()["meta"]["workflowId"])["status"] == "completed"
        assert api.wait_run(bad.json()["meta"]["workflowId"])["status"] == "failed"
        batch = api.request(
            "POST",
            "/v1/servers:batchCreate",
            json={"servers": [{"name": "b1", "bmc": bmc(0, password)}, {"name": "bad name!"}]},
        )
        assert batch.status_code == 207
        rotate = api.request(
            "POST",
            f"/v1/servers/{server_id}/rotate-credentials",
            json={"password": ROTATED_PASSWORD},
        )
        assert rotate.status_code in (202, 409), rotate.text
        if rotate.status_code == 202:
            api.wait_run(rotate.json()["meta"]["workflowId"])
        # reads of everything that was touched
        api.request("GET", f"/v1/servers/{server_id}")
        api.request("GET", "/v1/servers")
        for run in api.request("GET", "/v1/workflows/runs").json()["data"]:
            api.request("GET", f"/v1/workflows/runs/{run['id']}")
            api.request("GET", f"/v1/workflows/runs/{run['id']}/events")
        # refusals and errors echo nothing
        api.request("POST", "/v1/servers", json={"name": "x", "bmc": {"password": password}})
        api.request("POST", "/v1/servers", content=b'{"bmc": {"password": "' + password.encode())
        tenant.request("POST", "/v1/servers", json={"name": "t", "bmc": bmc(0, password)})
        tenant.request("GET", f"/v1/servers/{server_id}")
        httpx.get(f"{stack.api_url}/v1/servers", headers={"Authorization": f"Bearer {token}x"})
        api.request("POST", f"/v1/webhooks/{hook.json()['data']['id']}/test")
        api.request("GET", f"/v1/webhooks/{hook.json()['data']['id']}/deliveries")
        rx.wait_for(lambda r: len(r.snapshot()) >= 3)
        time.sleep(1.0)
        deliveries = [r.body + repr(r.headers).encode() for r in rx.snapshot()]

    places: dict[str, list[bytes]] = {
        "responses": api.bodies + tenant.bodies,
        "webhook deliveries": deliveries,
        "events": _stream_payloads(stack, EVENTS),
        "commands": _stream_payloads(stack, COMMANDS),
        "webhook jobs": _stream_payloads(stack, WEBHOOK_JOBS),
        "delivery log": _stream_payloads(stack, WEBHOOK_DELIVERIES),
    }
    logs = Path(stack.base_dir) / "logs"
    for service in ("gateway", "orchestrator", "bmc-agent", "projector"):
        places[f"{service} log"] = [(logs / f"{service}.log").read_bytes()]
    assert sum(len(v) for v in places["events"]) > 0
    assert len(places["responses"]) > 20
    found = [
        f"{name} in {place}"
        for place, blobs in places.items()
        for blob in blobs
        for name, secret in secrets.items()
        if secret.encode() in blob
    ]
    assert not found, found
