"""The ``infraflow`` command against the whole stack, run as a separate process like a person
would: ``runs watch`` follows live runs to their end (exit 0 completed, 1 failed, 3 cancelled),
``--json`` output parses, and API errors print the API's code and message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infraflow.cli.client import ApiClient
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("cli")
    s = Stack(
        base_dir=base / "stack",
        bmc_systems=2,
        kube=False,
        test_agent=True,
        catalog_extra_file=str(write_catalog(base / "catalog.json")),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.token()}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as client:
        yield client


def env(stack: Stack, token: str | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "INFRAFLOW_URL": stack.api_url,
        "INFRAFLOW_TOKEN": stack.token() if token is None else token,
        "COLUMNS": "200",
    }


def infraflow(
    stack: Stack, *args: str, token: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infraflow.cli", *args],
        env=env(stack, token),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(api: httpx.Client, type_: str, server: str, script: dict[str, Any] | None = None) -> str:
    body = {"type": type_, "resourceId": server, "input": {"script": script or {}}}
    r = api.post("/v1/workflows/runs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["meta"]["workflowId"])


def status(api: httpx.Client, run_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/workflows/runs/{run_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


@pytest.fixture(scope="module")
def servers(stack: Stack) -> list[str]:
    """Two servers registered through the CLI itself (``--wait``: it ends when they are)."""
    assert stack.bmc is not None
    ids = []
    for i, system in enumerate(stack.bmc.systems):
        done = infraflow(
            stack,
            "servers",
            "register",
            "--name",
            f"cli{i}",
            "--bmc-address",
            stack.bmc.system_url(system.id),
            "--bmc-username",
            stack.bmc.username,
            "--bmc-password",
            stack.bmc.password,
            "--json",
            "--wait",
        )
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert run["status"] == "completed"
        ids.append(run["resourceId"])
    return ids


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("infraflow")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "infraflow" in done.stdout


def test_watch_a_live_run_to_completion(
    stack: Stack, api: httpx.Client, servers: list[str]
) -> None:
    run_id = start(api, "test.steps", servers[0], {"c": {"sleep": 2}})
    done = infraflow(stack, "runs", "watch", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Watching {run_id}: test.steps on server {servers[0]}")
    progress = [line for line in lines if line.startswith("[")]
    assert any(line.startswith("[2/3]") and "step c" in line and "ETA" in line for line in progress)
    assert progress[-1].startswith("[3/3] 100% completed")
    assert any("started c (attempt 1)" in line for line in lines)  # events, live
    assert lines[-1].startswith(f"{run_id} completed after")
    assert status(api, run_id)["status"] == "completed"
    # the events came over the gateway's SSE stream (not the polling fallback)
    with ApiClient(stack.api_url, stack.token()) as client:
        streamed = [item for item in client._stream(run_id, 0) if item is not None]
    assert streamed[-1].name == "run_completed"


def test_watch_a_failing_run_exits_non_zero(
    stack: Stack, api: httpx.Client, servers: list[str]
) -> None:
    run_id = start(
        api, "test.steps", servers[0], {"c": {"sleep": 1, "fail": "DISK_GONE", "retryable": False}}
    )
    done = infraflow(stack, "runs", "watch", run_id)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed c (attempt 1): DISK_GONE" in done.stdout
    last = done.stdout.splitlines()[-1]
    assert last.startswith(f"{run_id} failed after")
    assert "DISK_GONE at step c" in last
    # then retry it from the failed step and wait for the retry: the script still fails
    again = infraflow(stack, "runs", "retry", run_id, "--from-step", "c", "--wait")
    assert again.returncode == 1
    assert "Accepted run_" in again.stdout
    assert "skipped a" in again.stdout


def test_watch_a_run_cancelled_meanwhile(
    stack: Stack, api: httpx.Client, servers: list[str]
) -> None:
    run_id = start(api, "test.hold", servers[1])
    watcher = subprocess.Popen(
        [sys.executable, "-m", "infraflow.cli", "runs", "watch", run_id],
        env=env(stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while status(api, run_id)["progress"].get("currentStep") != "hold":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cancel = infraflow(stack, "runs", "cancel", run_id, "--reason", "cli test")
        assert cancel.returncode == 0, cancel.stderr
        assert f"Cancel requested for {run_id}" in cancel.stdout
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 3, out + err
    assert "cancel requested by dev-admin" in out
    assert "compensating: undo_prepare" in out
    assert out.splitlines()[-1].startswith(f"{run_id} cancelled after")


def test_json_output_parses(stack: Stack, api: httpx.Client, servers: list[str]) -> None:
    run_id = start(api, "test.steps", servers[0])
    watched = infraflow(stack, "runs", "watch", run_id, "--json")
    assert watched.returncode == 0
    assert json.loads(watched.stdout)["status"] == "completed"
    listed = infraflow(
        stack, "runs", "list", "--type", "test.steps", "--status", "completed", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert run_id in [r["id"] for r in runs]
    assert {r["status"] for r in runs} == {"completed"}
    detail = json.loads(infraflow(stack, "runs", "get", run_id, "--events", "--json").stdout)
    assert [s["name"] for s in detail["steps"]] == ["a", "b", "c"]
    assert detail["events"][-1]["event"]["event"] == "run_completed"
    server = json.loads(infraflow(stack, "servers", "get", servers[0], "--json").stdout)
    assert server["id"] == servers[0]
    assert servers[0] in [
        s["id"] for s in json.loads(infraflow(stack, "servers", "list", "--json").stdout)
    ]
    metrics = json.loads(infraflow(stack, "metrics", "--json").stdout)
    assert metrics["byType"]["test.steps"]["count"] >= 1
    preview = infraflow(
        stack, "runs", "bulk-retry", "--resource-id", servers[0], "--dry-run", "--json"
    )
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["dryRun"] is True
    # people get tables
    table = infraflow(stack, "runs", "list", "--resource-id", servers[0])
    assert run_id in table.stdout
    assert "test.steps" in table.stdout


def test_power_with_wait(stack: Stack, servers: list[str]) -> None:
    done = infraflow(stack, "servers", "power", servers[1], "on", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed" in done.stdout.splitlines()[-1]


def api_error(response: httpx.Response) -> str:
    """What the CLI must print for this error response: the API's own code and message."""
    error = response.json()["error"]
    return f"Error: {error['code']}: {error['message']}"


def test_errors_print_the_api_code_and_message(
    stack: Stack, api: httpx.Client, servers: list[str]
) -> None:
    missing = "run_00000000000000000000000000"
    done = infraflow(stack, "runs", "get", missing)
    assert done.returncode == 4
    expected = api_error(api.get(f"/v1/workflows/runs/{missing}"))
    assert expected.startswith("Error: NOT_FOUND: ")
    assert expected in done.stderr

    done = infraflow(stack, "runs", "list", "--status", "exploded")
    assert done.returncode == 4
    response = api.get("/v1/workflows/runs", params={"status": "exploded"})
    assert api_error(response).startswith("Error: VALIDATION_ERROR: ")
    assert api_error(response) in done.stderr
    for field, message in response.json()["error"]["details"]["fields"].items():
        assert f"  {field}: {message}" in done.stderr

    completed = start(api, "test.steps", servers[0])
    assert infraflow(stack, "runs", "watch", completed).returncode == 0
    done = infraflow(stack, "runs", "retry", completed)
    assert done.returncode == 4
    assert "Error: INVALID_STATE_TRANSITION: " in done.stderr
    assert api_error(api.post(f"/v1/workflows/runs/{completed}/retry", json={})) in done.stderr

    done = infraflow(stack, "runs", "list", token="")
    assert done.returncode == 4
    assert "Error: UNAUTHORIZED: " in done.stderr
    reader = stack.token("reader", roles=["support"])
    done = infraflow(stack, "servers", "power", servers[0], "off", token=reader)
    assert done.returncode == 4
    assert "Error: FORBIDDEN: " in done.stderr

    nowhere = subprocess.run(
        [sys.executable, "-m", "infraflow.cli", "--url", "http://127.0.0.1:9", "runs", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "INFRAFLOW_TOKEN": "x"},
        check=False,
    )
    assert nowhere.returncode == 5
    assert "cannot reach http://127.0.0.1:9" in nowhere.stderr
