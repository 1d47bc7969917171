"""End-to-end fixtures: the whole stack as real processes (NATS, five services, emulators)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infraflow.common.contracts import RunEvent, decode_event, encode
from infraflow.devtools.bmc_emulator import FakeSystem
from infraflow.devtools.stack import Stack

TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(base_dir=tmp_path_factory.mktemp("stack"))
    s.start()
    try:
        yield s
    finally:
        codes = s.stop()
        pids = [svc.pid for svc in s.procs.values() if svc.pid]
        for pid in pids:
            assert not _alive(pid), f"process {pid} survived the stack"
        # a clean SIGTERM shutdown exits 0 (a service killed by a test may differ)
        unclean = {n: c for n, c in codes.items() if c not in (0, None)}
        if unclean:
            logs = Path(s.base_dir) / "logs"
            print(f"non-zero exits: {unclean}; logs in {logs}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone once reaped by Popen.wait
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


class Api:
    """A tiny REST client for tests."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, **kw)

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.get(f"/v1/workflows/runs/{run_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    def wait_run(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/v1/workflows/runs/{run_id}")
            if r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)  # the read model is (re)connecting: 503 means "retry"
                continue
            run = self.run(run_id)
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']}: {run}")
            time.sleep(0.2)

    def events(self, run_id: str) -> list[RunEvent]:
        r = self.get(f"/v1/workflows/runs/{run_id}/events")
        assert r.status_code == 200, r.text
        items = r.json()["data"]
        return [decode_event(encode(item["event"])) for item in items]


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    return Api(stack.api_url, stack.token())


def registration(stack: Stack, system: FakeSystem, name: str, **extra: Any) -> dict[str, Any]:
    """The body of ``POST /v1/servers`` for one of the stack's emulated BMCs."""
    assert stack.bmc is not None
    return {
        "name": name,
        "bmc": {
            "address": stack.bmc.system_url(system.id),
            "username": stack.bmc.username,
            "password": stack.bmc.password,
        },
        **extra,
    }


def register_all(stack: Stack, api: Api, prefix: str, timeout: float = 60.0) -> list[str]:
    """Register every emulated BMC (``<prefix><n>``) and wait for the runs to complete; the
    server ids, in the emulator's order."""
    assert stack.bmc is not None
    ids, runs = [], []
    for i, system in enumerate(stack.bmc.systems):
        r = api.post("/v1/servers", json=registration(stack, system, f"{prefix}{i}"))
        assert r.status_code == 202, r.text
        ids.append(r.json()["data"]["resourceId"])
        runs.append(r.json()["meta"]["workflowId"])
    for run in runs:
        assert api.wait_run(run, timeout=timeout)["status"] == "completed"
    return ids
