"""The Kubernetes adapter against the emulator: one client code path for a kubeconfig file and
the in-cluster service account (over TLS), merge patches, coded errors, watches and 410."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infraflow.common.ids import new_id
from infraflow.devtools.kube_emulator import EmulatorState, KubeEmulator, create_app
from infraflow.k8s_agent.adapters.kube import KubeApi, KubeConfigError
from infraflow.k8s_agent.core import clusters, names
from infraflow.k8s_agent.errors import (
    K8sConflictError,
    K8sGoneError,
    K8sInvalidError,
    K8sUnavailableError,
)

from .conftest import FAST, PROJECT


def manifest(rid: str | None = None) -> dict[str, object]:
    spec = clusters.cluster_spec_from_input(
        {"name": "c", "template": "k0s-v1-31-2", "credential": "cred", "workers": 1}
    )
    return clusters.cluster_manifest(rid or new_id("cls"), PROJECT, PROJECT, spec, "run_t")


CD = clusters.CLUSTER_DEPLOYMENTS


async def test_crud_with_merge_patch_and_coded_errors(
    kube: KubeApi, emulator: KubeEmulator
) -> None:
    m = manifest()
    name = m["metadata"]["name"]  # type: ignore[index]
    created = await kube.create(CD, PROJECT, m)
    assert created["metadata"]["labels"][names.RESOURCE_ID_LABEL]
    with pytest.raises(K8sConflictError) as exists:
        await kube.create(CD, PROJECT, m)
    assert exists.value.reason == "AlreadyExists"
    assert exists.value.retryable
    assert await kube.get(CD, PROJECT, "cls-nothing") is None
    patched = await kube.merge_patch(CD, PROJECT, name, {"spec": {"config": {"workersNumber": 4}}})
    assert clusters.workers_of(patched) == 4
    assert patched["spec"]["config"]["controlPlaneNumber"] == 1  # a merge, not a replace
    requests = emulator.state.requests
    patch_types = [r["contentType"] for r in requests if r["method"] == "PATCH"]
    assert patch_types == ["application/merge-patch+json"]
    with pytest.raises(K8sConflictError):  # a stale resourceVersion
        await kube.merge_patch(
            CD, PROJECT, name, {"metadata": {"resourceVersion": "1"}, "spec": {"template": "x"}}
        )
    bad = manifest()
    bad["metadata"]["name"] = "Not_A_Name"  # type: ignore[index]
    with pytest.raises(K8sInvalidError) as invalid:
        await kube.create(CD, PROJECT, bad)
    assert not invalid.value.retryable
    items, rv = await kube.list(CD, None, label_selector=names.MANAGED_SELECTOR)
    assert [i["metadata"]["name"] for i in items] == [name]
    assert int(rv) > 0
    assert await kube.delete(CD, PROJECT, name) is True
    assert await kube.delete(CD, "other", name) is False  # gone already: fine


async def test_watch_streams_events_and_expired_versions_raise_gone(
    kube: KubeApi, emulator: KubeEmulator
) -> None:
    _, rv = await kube.list(CD, PROJECT)
    await kube.create(CD, PROJECT, manifest())
    kinds = []
    async for event in kube.watch(CD, PROJECT, resource_version=rv, timeout_s=1):
        kinds.append(event.type)
        if clusters.cluster_phase(event.object) == "Ready":
            break
    assert kinds[0] == "ADDED"
    assert "MODIFIED" in kinds
    _, rv = await kube.list(CD, PROJECT)  # a real version now (not "0": "from now")
    await kube.create(CD, PROJECT, manifest())
    emulator.state.store.compact()
    with pytest.raises(K8sGoneError):
        async for _ in kube.watch(CD, PROJECT, resource_version=rv, timeout_s=1):
            pass


async def test_unreachable_api_server_is_retryable(tmp_path: Path) -> None:
    emu = KubeEmulator(FAST)
    await emu.start()
    path = emu.write_kubeconfig(tmp_path / "kc")
    await emu.stop()
    async with await KubeApi.connect(str(path), request_timeout_s=2.0) as kube:
        with pytest.raises(K8sUnavailableError) as caught:
            await kube.get(CD, PROJECT, "x")
    assert caught.value.code == "K8S_UNAVAILABLE"
    assert caught.value.retryable is True


async def test_missing_configuration_is_reported(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError):
        await KubeApi.connect(str(tmp_path / "nope"))
    with pytest.raises(KubeConfigError):
        await KubeApi.connect(None, environ={})  # not in a cluster


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-emulator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_emulator(tmp_path: Path) -> AsyncIterator[tuple[EmulatorState, int, Path]]:
    """The emulator's app behind TLS, as an API server in a cluster is."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    state = EmulatorState(FAST)
    runner = web.AppRunner(create_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, port, cert
    finally:
        await runner.cleanup()


async def test_in_cluster_configuration_uses_the_same_client(
    tls_emulator: tuple[EmulatorState, int, Path], tmp_path: Path
) -> None:
    state, port, ca = tls_emulator
    token = tmp_path / "token"
    token.write_text("service-account-token")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)}
    kube = await KubeApi.connect(None, token_file=str(token), ca_file=str(ca), environ=environ)
    async with kube:
        assert kube.host == f"https://127.0.0.1:{port}"
        created = await kube.create(CD, PROJECT, manifest())
        assert created["metadata"]["uid"]
    request = next(r for r in state.requests if r["method"] == "POST")
    assert request["bearerToken"] is True
    # and a client without the CA refuses the self-signed server
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"https://127.0.0.1:{port}/version")
