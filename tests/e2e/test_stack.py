"""The local stack itself: it recovers when its chosen gateway port is taken before the bind."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from infraflow.devtools.ports import free_port
from infraflow.devtools.stack import Stack


def test_gateway_moves_to_another_port_when_its_port_was_taken(tmp_path: Path) -> None:
    taken = free_port()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    stack = Stack(
        base_dir=tmp_path / "stack",
        gateway_port=taken,
        bmc_systems=0,
        kube=False,
        services=("gateway", "projector"),
    )
    try:
        stack.start()
        assert stack.gateway_port != taken
        r = httpx.get(f"{stack.api_url}/readyz", timeout=5)
        assert r.status_code == 200
    finally:
        stack.stop()
        squatter.close()
