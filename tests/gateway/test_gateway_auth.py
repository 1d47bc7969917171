"""Authentication (401), authorization (403) and tenant isolation (404)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nats.js import JetStreamContext

from infraflow.common.contracts import GetRun, ListRuns
from infraflow.gateway.auth import JwtVerifier, mint_token
from infraflow.gateway.core.errors import UnauthorizedError
from infraflow.gateway.settings import AuthSettings, GatewaySettings

from .conftest import ARC, SECRET, FakeProjector, auth, body_of, commands, serve, started, token

REGISTER = {"name": "n1", "bmc": {"address": "http://bmc", "username": "u", "password": "p"}}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "header is required"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
        ("Bearer not-a-jwt", "malformed"),
        (f"Bearer {token(ttl_s=-120)}", "expired"),
        (f"Bearer {token(secret='another-secret-of-sufficient-length!!')}", "signature"),
    ],
)
async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, header: str | None, message: str
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await client.get("/v1/workflows/runs", headers=headers)
    assert response.status_code == 401
    error = body_of(response)["error"]
    assert error["code"] == "UNAUTHORIZED"
    assert message in error["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_unsigned_and_claimless_tokens_are_401(client: httpx.AsyncClient) -> None:
    unsigned = jwt.encode({"sub": "x", "exp": 2**31}, key=None, algorithm="none")
    no_exp = jwt.encode({"sub": "x", "roles": ["super_admin"]}, SECRET, algorithm="HS256")
    bad_projects = jwt.encode(
        {"sub": "x", "exp": 2**31, "projects": {"p": "owner"}}, SECRET, algorithm="HS256"
    )
    for bad in (unsigned, no_exp, bad_projects):
        response = await client.get(
            "/v1/workflows/runs", headers={"Authorization": f"Bearer {bad}"}
        )
        assert response.status_code == 401, bad


async def test_read_roles_cannot_write(
    client: httpx.AsyncClient, js: JetStreamContext, projector: FakeProjector
) -> None:
    server = projector.add_server()
    for role in ("support", "provider_revenue"):
        headers = auth(roles=(role,))
        assert (await client.get("/v1/servers", headers=headers)).status_code == 200
        response = await client.post("/v1/servers", json=REGISTER, headers=headers)
        assert response.status_code == 403
        assert body_of(response)["error"]["code"] == "FORBIDDEN"
        response = await client.post(f"/v1/servers/{server['id']}/inspect", headers=headers)
        assert response.status_code == 403
        response = await client.post(
            "/v1/workflows/runs",
            json={"type": "sync.server-state", "resourceId": server["id"]},
            headers=headers,
        )
        assert response.status_code == 403
    assert await commands(js) == []


async def test_arc_users_only_see_runs_of_their_projects(
    client: httpx.AsyncClient, projector: FakeProjector
) -> None:
    mine = projector.add_run(project_id="prj-a")
    theirs = projector.add_run(project_id="prj-b")
    fleet = projector.add_run(project_id=None)
    arc = auth(sub="tenant", **ARC)
    assert (await client.get(f"/v1/workflows/runs/{mine['id']}", headers=arc)).status_code == 200
    for hidden in (theirs, fleet):
        response = await client.get(f"/v1/workflows/runs/{hidden['id']}", headers=arc)
        assert response.status_code == 404
        assert body_of(response)["error"]["code"] == "NOT_FOUND"
        response = await client.get(f"/v1/workflows/runs/{hidden['id']}/events", headers=arc)
        assert response.status_code == 404
        response = await client.post(f"/v1/workflows/runs/{hidden['id']}/cancel", headers=arc)
        assert response.status_code == 404
    listing = body_of(await client.get("/v1/workflows/runs", headers=arc))["data"]
    assert [r["id"] for r in listing] == [mine["id"]]
    assert {q.scope_projects is not None for q in projector.of(GetRun)} == {True}
    assert projector.of(ListRuns)[0].scope_projects == ["prj-a"]
    # Atlas readers are unrestricted
    listing = body_of(await client.get("/v1/workflows/runs", headers=auth(roles=("support",))))
    assert len(listing["data"]) == 3
    assert projector.of(ListRuns)[1].scope_projects is None


async def test_public_key_tokens_are_accepted_when_configured(
    settings: GatewaySettings, tmp_path: Path, js: JetStreamContext, projector: FakeProjector
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "jwt.pem"
    key_file.write_bytes(pem)
    settings.auth.jwt_public_key_file = str(key_file)
    settings.auth.jwt_audience = "infraflow"
    from infraflow.gateway.app import create_app

    rs = jwt.encode(
        {"sub": "svc", "roles": ["support"], "exp": 2**31, "aud": "infraflow"},
        private,
        algorithm="RS256",
    )
    wrong_aud = jwt.encode({"sub": "svc", "exp": 2**31, "aud": "other"}, private, algorithm="RS256")
    async with serve(create_app(settings)) as client:
        await started(client)
        ok = await client.get("/v1/workflows/runs", headers={"Authorization": f"Bearer {rs}"})
        assert ok.status_code == 200
        response = await client.get(
            "/v1/workflows/runs", headers={"Authorization": f"Bearer {wrong_aud}"}
        )
        assert response.status_code == 401


def test_a_verified_token_is_reused_only_while_it_is_valid() -> None:
    verifier = JwtVerifier(AuthSettings(jwt_hs256_secret=SECRET, leeway_s=0))
    short = mint_token(SECRET, "alice", roles=["fleet-admin"], ttl_s=1)
    first = verifier.verify(short)
    assert verifier.verify(short) is first  # the second request skips the signature check
    time.sleep(1.3)
    with pytest.raises(UnauthorizedError, match="expired"):
        verifier.verify(short)  # the kept principal is not used past exp

    # a token that differs in one signature character is verified on its own, and refused
    good = mint_token(SECRET, "bob")
    verifier.verify(good)
    head, payload, signature = good.split(".")
    forged = (
        f"{head}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    )
    with pytest.raises(UnauthorizedError):
        verifier.verify(forged)

    # bounded: many distinct tokens never grow the cache past its limit
    for i in range(5000):
        verifier.verify(mint_token(SECRET, f"user-{i}"))
    assert len(verifier._verified) <= 4096
