"""The console script: serves until SIGTERM, then shuts down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from infraflow.common.vault import Vault
from infraflow.devtools.nats_server import NatsServer
from infraflow.devtools.ports import free_port

from .conftest import SECRET


def test_main_serves_and_stops_on_sigterm(nats_server: NatsServer) -> None:
    port = free_port()
    env = {
        **os.environ,
        "INFRAFLOW_HTTP__PORT": str(port),
        "INFRAFLOW_NATS__URL": nats_server.url,
        "INFRAFLOW_AUTH__JWT_HS256_SECRET": SECRET,
        "INFRAFLOW_CREDENTIAL_KEYS": Vault.generate_key(),
        "INFRAFLOW_REGION": "eu1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "infraflow.gateway.app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    assert r.status == 200
                    assert r.headers["X-Request-Id"].startswith("req_eu1-")
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the gateway did not become ready"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert process.stderr is not None
        assert "gateway stopped" in process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
