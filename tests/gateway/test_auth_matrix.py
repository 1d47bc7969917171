"""Every route against every kind of caller: 401 without a valid token, and the documented
allow/deny for each Atlas role and each Arc project role (403 for a visible thing the role may
not change, 404 for anything outside the caller's projects); ``triggeredBy`` is always the
token's subject."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from nats.js import JetStreamContext

from infraflow.common.contracts import StartRun
from infraflow.devtools.webhook_receiver import WebhookReceiver
from infraflow.gateway.app import create_app
from infraflow.gateway.settings import GatewaySettings

from .conftest import SECRET, FakeProjector, auth, commands, serve, started, token
from .test_gateway_compute import CLUSTER, VM, cached

CALLERS: dict[str, dict[str, Any]] = {
    "super_admin": {"roles": ("super_admin",)},
    "provider_admin": {"roles": ("provider_admin",)},
    "provider_operator": {"roles": ("provider_operator",)},
    "support": {"roles": ("support",)},
    "provider_revenue": {"roles": ("provider_revenue",)},
    "arc_admin": {"roles": (), "projects": {"prj-a": "admin"}},
    "arc_member": {"roles": (), "projects": {"prj-a": "member"}},
    "arc_viewer": {"roles": (), "projects": {"prj-a": "viewer"}},
    "arc_outsider": {"roles": (), "projects": {"prj-b": "admin"}},
    "no_role": {"roles": ()},
}
WRITERS = {"super_admin", "provider_admin", "provider_operator"}
READERS = {"support", "provider_revenue"}
ACTORS = {"arc_admin", "arc_member"}
VIEWERS = {"arc_viewer"}
OUTSIDERS = {"arc_outsider", "no_role"}

OK, DENY, HIDE = "2xx", 403, 404
POLICIES: dict[str, dict[str, Any]] = {
    # everyone authenticated (Arc callers get their projects' share)
    "anyone": dict.fromkeys(CALLERS, OK),
    # a project's things: its members see them, outsiders get 404
    "project_read": {c: HIDE if c in OUTSIDERS else OK for c in CALLERS},
    # the provider's things (no project): Atlas roles only, 404 to Arc users
    "fleet_read": {c: OK if c in WRITERS | READERS else HIDE for c in CALLERS},
    # fleet-wide writes: Atlas write roles only
    "fleet_write": {c: OK if c in WRITERS else DENY for c in CALLERS},
    # changing a project's thing: Atlas writers, project admins and members
    "project_act": {
        c: OK if c in WRITERS | ACTORS else HIDE if c in OUTSIDERS else DENY for c in CALLERS
    },
    # server actions only Atlas write roles may ever start: 403 before any lookup, whoever
    # owns the server (the answer does not depend on the server, so it reveals nothing)
    "atlas_server_action": {c: OK if c in WRITERS else DENY for c in CALLERS},
    # power (server.lifecycle) on a prj-a server: also its admins and members; callers with no
    # acting project role anywhere are refused before the lookup (403), acting roles of
    # another project get 404
    "server_power": {
        c: OK if c in WRITERS | ACTORS else HIDE if c == "arc_outsider" else DENY for c in CALLERS
    },
    # power on a provider-owned server: Arc callers with an acting role cannot see it
    "fleet_server_power": {
        c: OK if c in WRITERS else HIDE if c in ACTORS | {"arc_outsider"} else DENY for c in CALLERS
    },
    # changing a provider-owned webhook: Arc callers cannot see it (404)
    "fleet_only_write": {
        c: OK if c in WRITERS else DENY if c in READERS else HIDE for c in CALLERS
    },
}


@dataclass
class World:
    """What the routes act on: one of each thing in project prj-a, and fleet-owned ones."""

    server: str
    fleet_server: str
    running_run: str
    failed_run: str
    cluster: str
    vm: str
    client: httpx.AsyncClient
    receiver: WebhookReceiver

    async def webhook(self, project: str | None) -> str:
        body: dict[str, Any] = {"url": self.receiver.url, "events": ["*"]}
        if project:
            body["projectId"] = project
        response = await self.client.post("/v1/webhooks", json=body, headers=auth())
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])


Path = str | Callable[[World], Awaitable[str]]


@dataclass(frozen=True)
class Route:
    method: str
    path: Callable[[World], Awaitable[str]]
    policy: str
    body: Any = None


def route(method: str, path: Callable[[World], Any], policy: str, body: Any = None) -> Route:
    async def resolve(world: World) -> str:
        value = path(world)
        return str(await value) if hasattr(value, "__await__") else str(value)

    return Route(method, resolve, policy, body)


BMC = {"address": "https://10.0.0.9", "username": "admin", "password": "pw-123456"}
ROUTES: list[tuple[str, Route]] = [
    ("list runs", route("GET", lambda w: "/v1/workflows/runs", "anyone")),
    ("get run", route("GET", lambda w: f"/v1/workflows/runs/{w.running_run}", "project_read")),
    (
        "run events",
        route("GET", lambda w: f"/v1/workflows/runs/{w.running_run}/events", "project_read"),
    ),
    (
        "start run",
        route(
            "POST",
            lambda w: "/v1/workflows/runs",
            "fleet_write",
            {"type": "sync.server-state", "resourceId": "{server}"},
        ),
    ),
    (
        "cancel run",
        route("POST", lambda w: f"/v1/workflows/runs/{w.running_run}/cancel", "project_act"),
    ),
    (
        "retry run",
        route("POST", lambda w: f"/v1/workflows/runs/{w.failed_run}/retry", "project_act"),
    ),
    ("list types", route("GET", lambda w: "/v1/workflows/types", "anyone")),
    ("get type", route("GET", lambda w: "/v1/workflows/types/server.inspect", "anyone")),
    ("list servers", route("GET", lambda w: "/v1/servers", "anyone")),
    ("get server", route("GET", lambda w: f"/v1/servers/{w.server}", "project_read")),
    ("get fleet server", route("GET", lambda w: f"/v1/servers/{w.fleet_server}", "fleet_read")),
    (
        "register server",
        route("POST", lambda w: "/v1/servers", "fleet_write", {"name": "n9", "bmc": BMC}),
    ),
    (
        "batch register",
        route(
            "POST",
            lambda w: "/v1/servers:batchCreate",
            "fleet_write",
            {"servers": [{"name": "n8", "bmc": BMC}]},
        ),
    ),
    (
        "inspect server",
        route("POST", lambda w: f"/v1/servers/{w.server}/inspect", "atlas_server_action"),
    ),
    (
        "sync server",
        route("POST", lambda w: f"/v1/servers/{w.server}/sync", "atlas_server_action"),
    ),
    (
        "provision server",
        route(
            "POST",
            lambda w: f"/v1/servers/{w.server}/provision",
            "atlas_server_action",
            {"image": {"url": "https://images.example.com/os.iso"}},
        ),
    ),
    (
        "rotate credentials",
        route(
            "POST",
            lambda w: f"/v1/servers/{w.server}/rotate-credentials",
            "atlas_server_action",
            {"password": "new-pw-654321"},
        ),
    ),
    (
        "decommission server",
        route("DELETE", lambda w: f"/v1/servers/{w.server}", "atlas_server_action"),
    ),
    (
        "power server",
        route("POST", lambda w: f"/v1/servers/{w.server}/power", "server_power", {"action": "on"}),
    ),
    (
        "power fleet server",
        route(
            "POST",
            lambda w: f"/v1/servers/{w.fleet_server}/power",
            "fleet_server_power",
            {"action": "on"},
        ),
    ),
    ("list clusters", route("GET", lambda w: "/v1/projects/prj-a/clusters", "project_read")),
    (
        "get cluster",
        route("GET", lambda w: f"/v1/projects/prj-a/clusters/{w.cluster}", "project_read"),
    ),
    (
        "create cluster",
        route("POST", lambda w: "/v1/projects/prj-a/clusters", "project_act", CLUSTER),
    ),
    (
        "scale cluster",
        route(
            "POST",
            lambda w: f"/v1/projects/prj-a/clusters/{w.cluster}/scale",
            "project_act",
            {"workers": 4},
        ),
    ),
    (
        "upgrade cluster",
        route(
            "POST",
            lambda w: f"/v1/projects/prj-a/clusters/{w.cluster}/upgrade",
            "project_act",
            {"template": "k0s-v1-32-0"},
        ),
    ),
    (
        "delete cluster",
        route("DELETE", lambda w: f"/v1/projects/prj-a/clusters/{w.cluster}", "project_act"),
    ),
    ("list vms", route("GET", lambda w: "/v1/projects/prj-a/vms", "project_read")),
    ("get vm", route("GET", lambda w: f"/v1/projects/prj-a/vms/{w.vm}", "project_read")),
    ("create vm", route("POST", lambda w: "/v1/projects/prj-a/vms", "project_act", VM)),
    (
        "power vm",
        route(
            "POST",
            lambda w: f"/v1/projects/prj-a/vms/{w.vm}/power",
            "project_act",
            {"action": "stop"},
        ),
    ),
    ("delete vm", route("DELETE", lambda w: f"/v1/projects/prj-a/vms/{w.vm}", "project_act")),
    ("list webhooks", route("GET", lambda w: "/v1/webhooks", "anyone")),
    (
        "create global webhook",
        route("POST", lambda w: "/v1/webhooks", "fleet_write", {"events": ["*"]}),
    ),
    (
        "create project webhook",
        route(
            "POST",
            lambda w: "/v1/webhooks",
            "project_act",
            {"events": ["*"], "projectId": "prj-a"},
        ),
    ),
    (
        "get global webhook",
        route("GET", lambda w: _hook(w, None, ""), "fleet_read"),
    ),
    (
        "get project webhook",
        route("GET", lambda w: _hook(w, "prj-a", ""), "project_read"),
    ),
    (
        "project webhook deliveries",
        route("GET", lambda w: _hook(w, "prj-a", "/deliveries"), "project_read"),
    ),
    (
        "global webhook deliveries",
        route("GET", lambda w: _hook(w, None, "/deliveries"), "fleet_read"),
    ),
    ("test project webhook", route("POST", lambda w: _hook(w, "prj-a", "/test"), "project_act")),
    ("test global webhook", route("POST", lambda w: _hook(w, None, "/test"), "fleet_only_write")),
    ("delete project webhook", route("DELETE", lambda w: _hook(w, "prj-a", ""), "project_act")),
    (
        "delete global webhook",
        route("DELETE", lambda w: _hook(w, None, ""), "fleet_only_write"),
    ),
]


async def _hook(world: World, project: str | None, suffix: str) -> str:
    return f"/v1/webhooks/{await world.webhook(project)}{suffix}"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
async def world(
    settings: GatewaySettings,
    js: JetStreamContext,
    projector: FakeProjector,
    receiver: WebhookReceiver,
) -> AsyncIterator[World]:
    settings.webhooks.allow_networks = ["127.0.0.0/8"]
    settings.rate_limit.enabled = False
    server = projector.add_server(project_id="prj-a", state="available")
    fleet = projector.add_server(project_id=None, state="available")
    running = projector.add_run(project_id="prj-a", status="running")
    failed = projector.add_run(project_id="prj-a", status="failed")
    cluster = cached(projector, "cluster")
    vm = cached(projector, "vm", state="ready")
    async with serve(create_app(settings)) as client:
        await started(client)
        yield World(
            server=server["id"],
            fleet_server=fleet["id"],
            running_run=running["id"],
            failed_run=failed["id"],
            cluster=cluster["id"],
            vm=vm["id"],
            client=client,
            receiver=receiver,
        )


@pytest.mark.parametrize(("name", "spec"), ROUTES, ids=[n for n, _ in ROUTES])
async def test_each_role_gets_the_documented_answer(world: World, name: str, spec: Route) -> None:
    wrong: list[str] = []
    for caller, claims in CALLERS.items():
        path = await spec.path(world)
        body = spec.body
        if isinstance(body, dict) and "url" not in body and path == "/v1/webhooks":
            body = {**body, "url": world.receiver.url}
        if isinstance(body, dict) and body.get("resourceId") == "{server}":
            body = {**body, "resourceId": world.server}
        response = await world.client.request(
            spec.method, path, json=body, headers=auth(sub=f"u-{caller}", **claims)
        )
        expected = POLICIES[spec.policy][caller]
        got = response.status_code
        fine = 200 <= got < 300 if expected == OK else got == expected
        if not fine:
            wrong.append(f"{caller}: expected {expected}, got {got} {response.text[:160]}")
    assert not wrong, f"{name} ({spec.policy}):\n" + "\n".join(wrong)


def _operations(client_app: Any) -> list[tuple[str, str]]:
    document = client_app.openapi_schema.to_schema()
    out = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == [{}]:
                continue  # public: probes, documents, the installer's token-authenticated call
            out.append((method.upper(), path))
    return out


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer " + token(ttl_s=-300),
        "Bearer " + token(secret="a-different-secret-that-is-long-enough!"),
        "Bearer " + jwt.encode({"sub": "x", "exp": 2**31}, key=None, algorithm="none"),
        "Bearer " + jwt.encode({"roles": ["super_admin"], "exp": 2**31}, SECRET, "HS256"),
        "Basic YWRtaW46YWRtaW4=",
    ],
    ids=["missing", "expired", "wrongly-signed", "unsigned", "no-subject", "basic"],
)
async def test_every_protected_route_refuses_bad_tokens(
    world: World, settings: GatewaySettings, header: str | None
) -> None:
    operations = _operations(create_app(settings))
    assert len(operations) >= 35
    for method, template in operations:
        path = template.replace("{", "").replace("}", "")
        headers = {"Authorization": header} if header else {}
        response = await world.client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_triggered_by_is_the_token_subject_never_the_body(
    world: World, js: JetStreamContext
) -> None:
    body = {
        "type": "sync.server-state",
        "resourceId": world.server,
        "triggeredBy": "mallory",
        "input": {"triggeredBy": "mallory"},
    }
    response = await world.client.post(
        "/v1/workflows/runs", json=body, headers=auth(sub="alice", roles=("super_admin",))
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["triggeredBy"] == "alice"
    response = await world.client.post(
        f"/v1/servers/{world.server}/power",
        json={"action": "on", "triggeredBy": "mallory"},
        headers=auth(sub="tenant-bob", roles=(), projects={"prj-a": "member"}),
    )
    assert response.status_code == 202, response.text
    starts = [c.command for c in await commands(js) if isinstance(c.command, StartRun)]
    assert [s.triggered_by for s in starts] == ["alice", "tenant-bob"]


async def test_jwks_file_keys_are_picked_by_kid(
    settings: GatewaySettings, tmp_path: Any, js: JetStreamContext, projector: FakeProjector
) -> None:
    import json

    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, private in (("rsa-1", rsa_key), ("ec-1", ec_key)):
        jwk = json.loads(_public_jwk(private))
        keys.append({**jwk, "kid": kid, "use": "sig"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": keys}))
    settings.auth.jwt_jwks_file = str(jwks)
    claims = {"sub": "svc", "roles": ["support"], "exp": 2**31}
    good_rsa = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    good_ec = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    wrong_kid = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    unknown_kid = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "other"})
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "rsa-1"})
    async with serve(create_app(settings)) as client:
        await started(client)
        for good in (good_rsa, good_ec):
            response = await client.get(
                "/v1/workflows/types", headers={"Authorization": f"Bearer {good}"}
            )
            assert response.status_code == 200, response.text
        for bad in (wrong_kid, unknown_kid, forged):
            response = await client.get(
                "/v1/workflows/types", headers={"Authorization": f"Bearer {bad}"}
            )
            assert response.status_code == 401, bad
        # the HS256 secret configured alongside still works
        assert (await client.get("/v1/workflows/types", headers=auth())).status_code == 200


def _public_jwk(private: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    if isinstance(private, rsa.RSAPrivateKey):
        return RSAAlgorithm.to_jwk(private.public_key())
    return ECAlgorithm.to_jwk(private.public_key())
