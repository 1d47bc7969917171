"""The local broker (tests, ``dev.py up``, benchmarks): how its nats-server process is run."""

from __future__ import annotations

from pathlib import Path

import pytest

from infraflow.devtools.nats_server import NatsServer


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize(
    ("from_env", "gomaxprocs", "expected"),
    [(None, 1, "1"), ("2", 1, "2"), (None, None, None)],
)
def test_broker_threads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    from_env: str | None,
    gomaxprocs: int | None,
    expected: str | None,
) -> None:
    """One Go thread by default; an explicit GOMAXPROCS in the environment wins."""
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    if from_env is not None:
        monkeypatch.setenv("GOMAXPROCS", from_env)
    server = NatsServer(store_dir=tmp_path / "nats", gomaxprocs=gomaxprocs).start()
    try:
        assert server.pid is not None
        assert _environ(server.pid).get("GOMAXPROCS") == expected
    finally:
        server.stop()
