"""Free loopback ports for tests and the local stack."""

from __future__ import annotations

import random
import socket

_LOW, _HIGH = 20000, 32000
"""Below Linux's ephemeral range (32768+): a port picked here is not also handed out as the
source port of some outgoing connection before our server binds it."""


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (loopback only)."""
    for _ in range(50):
        port = random.randrange(_LOW, _HIGH)
        if port in _handed_out:
            continue  # never the same port twice in one process (e.g. client and monitor port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts connections on ``host:port``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)
