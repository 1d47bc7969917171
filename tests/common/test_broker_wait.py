"""A service waits for an unreachable broker, and SIGTERM still stops it at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from infraflow.devtools.ports import free_port


def test_service_waiting_for_the_broker_stops_on_sigterm() -> None:
    env = dict(os.environ, INFRAFLOW_NATS__URL=f"nats://127.0.0.1:{free_port()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "infraflow.orchestrator.app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[bytes] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stderr.readline, b"")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        deadline = time.monotonic() + 30  # it waits (no broker listens there) and says so
        while not any(b"broker not reachable yet" in line for line in lines):
            assert time.monotonic() < deadline, lines
            assert proc.poll() is None
            time.sleep(0.1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert code == 0
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
