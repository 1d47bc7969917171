"""The emulator as a subprocess, the admin surface and the kubeconfig helper."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client, config

from infraflow.devtools.kube_emulator import KubeEmulator, write_kubeconfig

from .conftest import GROUP, NS, PLURAL, VERSION, widget


def read_url(path: Path) -> str | None:
    """The URL in the ready file, ``None`` while it is absent or empty."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def port_is_closed(port: int) -> bool:
    """Whether nothing accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def wait_for_url(path: Path, proc: asyncio.subprocess.Process, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if url := read_url(path):
            return url
        if proc.returncode is not None:
            pytest.fail(f"emulator exited early with {proc.returncode}")
        await asyncio.sleep(0.05)
    pytest.fail("ready file not written in time")


async def test_main_subprocess_ready_file_and_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready" / "url"
    kubeconfig = tmp_path / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infraflow.devtools.kube_emulator",
        "--port",
        "0",
        "--ready-file",
        str(ready),
        "--kubeconfig",
        str(kubeconfig),
        "--cluster-ready-delay",
        "0.2",
        "--vm-ready-delay",
        "0.2",
        "--history-window",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = await wait_for_url(ready, proc, timeout=20.0)
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert port > 0

        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(kubeconfig), client_configuration=configuration
        )
        async with client.ApiClient(configuration) as api:
            co = client.CustomObjectsApi(api)
            await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("p"))
            got = await co.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "p")
            assert got["metadata"]["name"] == "p"

        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == url
    assert read_url(ready) is None  # the ready file is removed on exit
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    assert port_is_closed(port)


async def test_admin_requests_reset_and_state(
    emulator: KubeEmulator, co: client.CustomObjectsApi
) -> None:
    await co.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, widget("a"))
    async with aiohttp.ClientSession(base_url=emulator.url) as http:
        async with http.get("/_emulator/requests") as resp:
            items = (await resp.json())["items"]
        post = [i for i in items if i["method"] == "POST"]
        assert post[-1]["path"] == f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
        assert post[-1]["status"] == 201
        assert post[-1]["bearerToken"] is True  # the kubeconfig's token is sent

        async with http.get("/_emulator/state") as resp:
            state = await resp.json()
        assert state["objects"] == {f"{PLURAL}.{GROUP}": 1}

        async with http.post("/_emulator/reset") as resp:
            assert resp.status == 200
        async with http.get("/_emulator/objects") as resp:
            assert (await resp.json())["items"] == []
        async with http.get("/no/such/path") as resp:
            body = await resp.json()
        assert resp.status == 404
        assert body["kind"] == "Status"
        assert body["reason"] == "NotFound"


async def test_write_kubeconfig_is_loadable(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "nested" / "kc", "http://127.0.0.1:1234", namespace="ns1")
    assert path.stat().st_mode & 0o777 == 0o600
    document = json.loads(path.read_text())
    assert document["contexts"][0]["context"]["namespace"] == "ns1"
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == "http://127.0.0.1:1234"
    assert configuration.api_key["BearerToken"] == "Bearer kube-emulator-token"
