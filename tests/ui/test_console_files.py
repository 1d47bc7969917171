"""How the gateway serves the console's files (no browser): public, from memory, with a strict
Content-Security-Policy, and nothing outside ``gateway/ui/``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from infraflow.common.settings import NatsSettings
from infraflow.common.vault import Vault
from infraflow.gateway.app import create_app
from infraflow.gateway.controllers.ui import UI_DIR, assets
from infraflow.gateway.settings import GatewaySettings


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    settings = GatewaySettings(
        auth={"jwt_hs256_secret": "x" * 40},
        credential_keys=Vault.generate_key(),
        nats=NatsSettings(url="nats://127.0.0.1:9", connect_timeout_s=0.2),
        log_json=False,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/js/main.js", "text/javascript"),
        ("/ui/console.css", "text/css"),
    ],
)
def test_files_are_public_with_a_strict_policy(
    client: TestClient,  # type: ignore[type-arg]
    path: str,
    media: str,
) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/../settings.py", "/ui/%2e%2e/app.py"])
def test_nothing_else_is_served(client: TestClient, path: str) -> None:  # type: ignore[type-arg]
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NOT_FOUND"


def test_every_file_is_served_and_no_inline_script() -> None:
    files = assets()
    on_disk = {p.relative_to(UI_DIR).as_posix() for p in UI_DIR.rglob("*") if p.is_file()}
    assert set(files) == on_disk
    assert {"index.html", "console.css", "js/main.js", "js/api.js"} <= set(files)
    index = files["index.html"][0].decode()
    assert "<script>" not in index  # the policy allows only script files from this origin
    assert 'type="module" src="/ui/js/main.js"' in index
    for name, (body, _) in files.items():
        if name.endswith(".js"):
            assert b"innerHTML" not in body, f"{name} builds markup from strings"
