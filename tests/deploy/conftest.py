"""Rendering the Kubernetes overlays for the deployment tests.

``kubectl kustomize`` (kustomize v5, built into kubectl) renders each overlay from a copy of
``deploy/kubernetes``; the production overlay's keys, which are never committed, are written
into the copy first (a fresh EC public key and Fernet key), as the deploy pipeline would.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infraflow.common.vault import Vault

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "production")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """The objects one overlay renders to, with lookups by kind and name."""

    overlay: str
    objects: list[Obj]

    def of(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: {len(found)} {kind} named {name!r}"
        return found[0]

    def find(self, kind: str, name: str) -> Obj | None:
        return next((o for o in self.of(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[Obj]:
        return self.of("Deployment") + self.of("StatefulSet")

    def config_data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's or Secret's data as text (Secrets are base64 in ``data``)."""
        obj = self.get(kind, name)
        if kind == "Secret":
            out = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            out.update(obj.get("stringData") or {})
            return out
        return dict(obj.get("data") or {})


def kubectl() -> str:
    found = shutil.which("kubectl")
    assert found, (
        "kubectl (with its built-in kustomize) is needed to render deploy/kubernetes; "
        "it ships with the development machine image"
    )
    return found


def provision_production_keys(overlay_dir: Path) -> None:
    """What the deploy pipeline writes before ``kubectl apply -k`` (see secrets/README.md)."""
    secrets = overlay_dir / "secrets"
    secrets.mkdir(exist_ok=True)
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (secrets / "jwt-public-key.pem").write_bytes(pem)
    (secrets / "credential-keys").write_text(f"{Vault.generate_key()},{Vault.generate_key()}")


def render_tree(tree: Path, overlay: str) -> list[Obj]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"kustomize {overlay} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="session")
def kustomize_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    provision_production_keys(tree / "overlays" / "production")
    return tree


@pytest.fixture(scope="session")
def rendered_all(kustomize_tree: Path) -> Mapping[str, Rendered]:
    return {name: Rendered(name, render_tree(kustomize_tree, name)) for name in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, rendered_all: Mapping[str, Rendered]) -> Rendered:
    return rendered_all[str(request.param)]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers") or []
    yield from spec["containers"]


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
