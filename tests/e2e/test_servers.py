"""Every server workflow over REST, through every real process, against ``sushy-emulator --fake``:
register (single and batch), inspect, power, provision (with the installer simulator calling
back), rotate credentials, sync by hand and by drift, decommission; the state machine's 409s;
compensation after a failure inside provisioning; no BMC password anywhere.

One stack for the module, tuned for speed: power changes apply at once, the bmc-agent polls
power every second, the projector settles drift for half a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infraflow.common.invariants import assert_well_formed
from infraflow.common.provisioning import callback_token, derive_callback_key
from infraflow.devtools.bmc_emulator import FakeSystem
from infraflow.devtools.stack import Stack

from .conftest import Api, registration

pytestmark = pytest.mark.e2e

SYSTEMS = 12
FAST_ENV = {
    "INFRAFLOW_POWER_SYNC_INTERVAL_S": "1",
    "INFRAFLOW_CALLBACK_POLL_S": "1",
    "INFRAFLOW_SLOT_POLL_S": "0.5",
    "INFRAFLOW_DRIFT__SETTLE_S": "0.5",
    "INFRAFLOW_DRIFT__MIN_INTERVAL_S": "2",
    "INFRAFLOW_DRIFT__RESYNC_INTERVAL_S": "60",
}


class RecordingApi(Api):
    """The test client, keeping every response body (to scan them for secrets)."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(base, token)
        self.bodies: list[str] = []
        self.http.event_hooks["response"] = [self._keep]

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        base_dir=tmp_path_factory.mktemp("servers"),
        bmc_systems=SYSTEMS,
        bmc_power_delay_s=0,
        kube=False,
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        extra_env=FAST_ENV,
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(stack: Stack) -> RecordingApi:
    return RecordingApi(stack.api_url, stack.token())


_free = iter(range(SYSTEMS))


def fake(stack: Stack) -> FakeSystem:
    """A fake server no other test uses."""
    assert stack.bmc is not None
    return stack.bmc.systems[next(_free)]


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    run_id: str = response.json()["meta"]["workflowId"]
    return run_id


def completed(api: Api, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    run = api.wait_run(run_id, timeout)
    assert run["status"] == "completed", run
    assert_well_formed(api.events(run_id))
    return run


def register(api: Api, stack: Stack, system: FakeSystem, name: str) -> str:
    response = api.post("/v1/servers", json=registration(stack, system, name))
    completed(api, accepted(response))
    server_id: str = response.json()["data"]["resourceId"]
    return server_id


def provision(api: Api, stack: Stack, server_id: str, **extra: Any) -> str:
    """Start provisioning with the emulator's installer image; the run id."""
    assert stack.bmc is not None
    request = {"image": {"url": stack.bmc.image_url()}, **extra}
    return accepted(api.post(f"/v1/servers/{server_id}/provision", json=request))


def server(api: Api, server_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/servers/{server_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def runs_of(api: Api, server_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        "/v1/workflows/runs", params={"resourceId": server_id, "pageSize": 100}
    ).json()["data"]
    return items


def step_status(run: dict[str, Any], kind: str = "steps") -> dict[str, str]:
    return {s["name"]: s["status"] for s in run[kind]}


def assert_409(response: httpx.Response, state: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_STATE_TRANSITION"
    assert error["details"]["currentState"] == state


# ---- register, inspect, power ------------------------------------------------------------


def test_register_inspect_and_every_power_action(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    system = fake(stack)
    server_id = register(api, stack, system, "power-node")
    cached = server(api, server_id)
    assert cached["state"] == "registered"
    assert (cached["vendor"], cached["model"], cached["serial"]) == (
        system.manufacturer,
        system.model,
        system.serial,
    )
    assert cached["powerState"] == system.power

    completed(api, accepted(api.post(f"/v1/servers/{server_id}/inspect")))
    cached = server(api, server_id)
    assert cached["state"] == "available"
    specs = cached["hardwareSpecs"]
    assert specs["memoryGib"] == system.memory_gib
    assert specs["cpu"]["count"] == system.cpus
    assert [n["mac"] for n in specs["nics"]] == list(system.macs)
    # the fake BMC exposes no processors: GPUs are unknown, not an empty list, not an error
    assert specs["gpus"] is None
    assert "gpus" in specs["unavailable"]

    for action, expected in [
        ("on", "On"),
        ("force-reboot", "On"),
        ("reboot", "On"),
        ("force-off", "Off"),
        ("on", "On"),
        ("off", "Off"),
        ("on", "On"),
        ("shutdown", "Off"),
    ]:
        run = completed(
            api, accepted(api.post(f"/v1/servers/{server_id}/power", json={"action": action}))
        )
        assert step_status(run) == {"power_action": "succeeded", "wait_power_state": "succeeded"}
        assert stack.bmc.power_state(system.id) == expected, action
        assert server(api, server_id)["powerState"] == expected, action
    assert server(api, server_id)["state"] == "available"  # power never changes the state


def test_batch_register_answers_207_item_by_item(stack: Stack, api: RecordingApi) -> None:
    good_1, good_2 = fake(stack), fake(stack)
    no_password = registration(stack, good_1, "batch-bad-1")
    del no_password["bmc"]["password"]
    bad_address = registration(stack, good_2, "batch-bad-2")
    bad_address["bmc"]["address"] = "ftp://nowhere"
    items = [
        registration(stack, good_1, "batch-good-1"),
        no_password,
        bad_address,
        registration(stack, good_2, "batch-good-2", site="default", tags={"rack": "r9"}),
    ]
    response = api.post("/v1/servers:batchCreate", json={"servers": items})
    assert response.status_code == 207, response.text
    data = response.json()["data"]
    assert (data["accepted"], data["failed"]) == (2, 2)
    results = data["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["status"] for r in results] == [202, 400, 400, 202]
    assert [r["success"] for r in results] == [True, False, False, True]
    assert results[1]["error"]["code"] == "VALIDATION_ERROR"
    assert results[1]["error"]["details"]["fields"] == {"bmc.password": "is required"}
    assert "bmc.address" in results[2]["error"]["details"]["fields"]
    for good in (results[0], results[3]):
        assert good["data"]["type"] == "server.register"
        assert good["meta"]["location"] == f"/v1/workflows/runs/{good['meta']['workflowId']}"
        completed(api, good["meta"]["workflowId"])
    assert server(api, results[3]["data"]["resourceId"])["tags"] == {"rack": "r9"}
    assert len({r["data"]["resourceId"] for r in (results[0], results[3])}) == 2

    too_many = api.post("/v1/servers:batchCreate", json={"servers": [items[0]] * 101})
    assert too_many.status_code == 400


# ---- provisioning ------------------------------------------------------------------------


def test_provision_happy_path_and_the_state_machine(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    assert stack.installer is not None
    system = fake(stack)
    server_id = register(api, stack, system, "prov-node")
    # provisioning needs an available (or registered) server; decommissioned is final
    completed(api, accepted(api.post(f"/v1/servers/{server_id}/inspect")))
    image = {"url": stack.bmc.image_url(), "checksum": "ab" * 32, "checksumType": "sha256"}

    run_id = accepted(api.post(f"/v1/servers/{server_id}/provision", json={"image": image}))
    run = completed(api, run_id)
    assert step_status(run) == dict.fromkeys(
        [
            "acquire_slot",
            "power_off",
            "insert_media",
            "boot_once_cd",
            "power_on",
            "wait_installer",
            "eject_media",
            "boot_disk",
            "reboot",
            "release_slot",
        ],
        "succeeded",
    )
    assert run["compensation"] == []
    # the installer called back once, with its run's token
    [call] = stack.installer.calls_for(system.id)
    assert (call.run_id, call.status, call.http_status) == (run_id, "succeeded", 200)
    # effect on the BMC: running, boots from disk, no media
    assert stack.bmc.power_state(system.id) == "On"
    assert stack.bmc.boot_override(system.id)[0] == "Hdd"
    assert stack.bmc.media_image(system.id) is None
    cached = server(api, server_id)
    assert (cached["state"], cached["powerState"]) == ("provisioned", "On")

    # the state machine: a provisioned server cannot be provisioned or inspected again
    before = len(runs_of(api, server_id))
    assert_409(api.post(f"/v1/servers/{server_id}/provision", json={"image": image}), "provisioned")
    assert_409(api.post(f"/v1/servers/{server_id}/inspect"), "provisioned")
    assert len(runs_of(api, server_id)) == before  # no run was started

    # a second callback for the finished run is recorded once only
    key = derive_callback_key(stack.secrets["credential_key"])
    again = httpx.post(
        f"{stack.api_url}/v1/servers/{server_id}/provisioning-callback",
        json={"runId": run_id, "status": "succeeded"},
        headers={"Authorization": f"Bearer {callback_token(key, server_id, run_id)}"},
    )
    assert again.status_code == 200
    assert again.json()["data"]["duplicate"] is True
    forged = httpx.post(
        f"{stack.api_url}/v1/servers/{server_id}/provisioning-callback",
        json={"runId": run_id, "status": "failed"},
        headers={"Authorization": "Bearer not-the-token"},
    )
    assert forged.status_code == 401


def test_a_callback_while_the_agent_is_down_is_not_lost(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    assert stack.installer is not None
    system = fake(stack)
    server_id = register(api, stack, system, "restart-node")
    stack.installer.hold(system.id)
    run_id = provision(api, stack, server_id)
    wait_for(
        lambda: step_status(api.run(run_id)).get("wait_installer") == "running",
        30,
        "never waiting for the installer",
    )
    stack.procs["bmc-agent"].stop()  # SIGTERM: the wait is handed back to the stream
    try:
        stack.installer.release(system.id)
        wait_for(lambda: stack.installer.calls_for(system.id), 20, "the installer never called")
    finally:
        stack.start_service("bmc-agent")
    run = completed(api, run_id)
    assert run["steps"][5]["output"]["installer"]["status"] == "succeeded"
    assert server(api, server_id)["state"] == "provisioned"


def test_decommission_powers_off_ejects_clears_and_forgets(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    system = fake(stack)
    server_id = register(api, stack, system, "old-node")
    # left over from some earlier life: running, media in, booting from CD
    stack.bmc.insert_media(system.id, stack.bmc.image_url())
    stack.bmc.set_boot_override(system.id, "Cd")
    stack.bmc.set_power(system.id, "On")
    stack.bmc.wait_power_state(system.id, "On")

    run = completed(api, accepted(api.delete(f"/v1/servers/{server_id}")))
    assert [s["name"] for s in run["steps"]] == [
        "power_off",
        "eject_media",
        "clear_boot_override",
        "forget",
    ]
    assert stack.bmc.power_state(system.id) == "Off"
    assert stack.bmc.media_image(system.id) is None
    assert stack.bmc.boot_override(system.id)[0] != "Cd"
    assert server(api, server_id)["state"] == "decommissioned"
    # nothing is allowed on a decommissioned server, not even a sync (no credentials left)
    for method, suffix, payload in [
        ("POST", "/power", {"action": "on"}),
        ("POST", "/inspect", None),
        ("POST", "/sync", None),
        ("DELETE", "", None),
    ]:
        response = api.http.request(method, f"/v1/servers/{server_id}{suffix}", json=payload)
        assert_409(response, "decommissioned")


def _assert_compensated(stack: Stack, api: Api, run: dict[str, Any], system: FakeSystem) -> None:
    assert stack.bmc is not None
    assert step_status(run, "compensation") == {
        "power_off": "succeeded",
        "clear_boot_override": "succeeded",
        "eject_media": "succeeded",
        "release_slot": "succeeded",
    }
    assert stack.bmc.power_state(system.id) == "Off"
    assert stack.bmc.media_image(system.id) is None
    assert stack.bmc.boot_override(system.id)[0] != "Cd"
    assert server(api, run["resourceId"])["state"] == "error"


def test_no_callback_before_the_timeout_compensates(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    assert stack.installer is not None
    system = fake(stack)
    server_id = register(api, stack, system, "silent-node")
    stack.installer.hold(system.id)
    try:
        run_id = provision(api, stack, server_id, callbackTimeoutS=3)
        # while it provisions, other state-changing actions are refused with the state
        wait_for(
            lambda: server(api, server_id)["state"] == "provisioning", 20, "never provisioning"
        )
        assert_409(api.post(f"/v1/servers/{server_id}/inspect"), "provisioning")
        assert_409(
            api.post(f"/v1/servers/{server_id}/power", json={"action": "off"}), "provisioning"
        )
        run = api.wait_run(run_id, 60)
    finally:
        stack.installer.release(system.id)
    assert run["status"] == "failed", run
    assert run["error"]["code"] == "INSTALLER_CALLBACK_TIMEOUT"
    assert run["error"]["step"] == "wait_installer"
    _assert_compensated(stack, api, run, system)
    assert_well_formed(api.events(run_id))
    # out of error through inspection, as the state machine says
    completed(api, accepted(api.post(f"/v1/servers/{server_id}/inspect")))
    assert server(api, server_id)["state"] == "available"


def test_bmc_failure_inside_provisioning_compensates(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    system = fake(stack)
    server_id = register(api, stack, system, "faulty-node")
    # the BMC refuses the boot-from-disk override once: after the installer's callback
    stack.bmc.inject_fault(
        "PATCH", f"/Systems/{system.id}$", status=400, times=1, body_contains="Hdd"
    )
    run_id = provision(api, stack, server_id)
    run = api.wait_run(run_id, 60)
    assert run["status"] == "failed", run
    assert run["error"]["code"] == "BMC_ACTION_REJECTED"
    assert run["error"]["step"] == "boot_disk"
    assert stack.bmc.faults() == []
    _assert_compensated(stack, api, run, system)
    assert_well_formed(api.events(run_id))


def test_no_bmc_password_in_events_logs_or_responses(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    system = fake(stack)
    password = stack.bmc.password
    server_id = register(api, stack, system, "secret-node")
    run_ids = [r["id"] for r in runs_of(api, server_id)]
    provisioning = provision(api, stack, server_id)
    completed(api, provisioning)
    run_ids.append(provisioning)
    token = callback_token(
        derive_callback_key(stack.secrets["credential_key"]), server_id, provisioning
    )

    texts = [api.get(f"/v1/workflows/runs/{r}/events").text for r in run_ids]
    texts += [api.get(f"/v1/workflows/runs/{r}").text for r in run_ids]
    texts += [api.get(f"/v1/servers/{server_id}").text, api.get("/v1/servers").text]
    texts += api.bodies
    logs = sorted(Path(stack.base_dir, "logs").glob("*.log"))
    assert logs, "no service logs"
    texts += [p.read_text(errors="replace") for p in logs]
    assert any(provisioning in t for t in texts)  # the scan does look at this run
    for text in texts:
        assert password not in text
        assert token not in text


# ---- credentials, sync, drift -------------------------------------------------------------


def test_rotate_credentials_checks_them_first(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    system = fake(stack)
    server_id = register(api, stack, system, "rotate-node")
    wrong = api.post(
        f"/v1/servers/{server_id}/rotate-credentials", json={"password": "not-the-password"}
    )
    run = api.wait_run(accepted(wrong), 60)
    assert run["status"] == "failed"
    assert run["error"]["code"] == "BMC_AUTH_FAILED"
    assert run["error"]["step"] == "verify_credentials"
    # the old credentials still work
    completed(api, accepted(api.post(f"/v1/servers/{server_id}/power", json={"action": "on"})))

    right = api.post(
        f"/v1/servers/{server_id}/rotate-credentials",
        json={"username": stack.bmc.username, "password": stack.bmc.password},
    )
    run = completed(api, accepted(right))
    assert run["input"] == {"username": stack.bmc.username}  # never the password
    completed(api, accepted(api.post(f"/v1/servers/{server_id}/power", json={"action": "off"})))


def test_power_drift_is_corrected_by_a_sync_run(stack: Stack, api: RecordingApi) -> None:
    assert stack.bmc is not None
    system = fake(stack)
    server_id = register(api, stack, system, "drift-node")
    completed(api, accepted(api.post(f"/v1/servers/{server_id}/power", json={"action": "on"})))
    assert server(api, server_id)["powerState"] == "On"

    stack.bmc.set_power(system.id, "ForceOff")  # behind Infraflow's back
    stack.bmc.wait_power_state(system.id, "Off")
    t0 = time.monotonic()
    wait_for(lambda: server(api, server_id)["powerState"] == "Off", 20, "drift not corrected")
    assert time.monotonic() - t0 < 15
    syncs = [r for r in runs_of(api, server_id) if r["type"] == "sync.server-state"]
    assert syncs, "the cache was corrected without a sync run"
    assert syncs[0]["triggeredBy"] == "projector"
    detail = completed(api, syncs[0]["id"])
    assert detail["input"]["reason"] == "drift"
    assert detail["input"]["differences"]["powerState"] == {"cached": "On", "observed": "Off"}
    assert server(api, server_id)["state"] == "registered"

    manual = completed(api, accepted(api.post(f"/v1/servers/{server_id}/sync")))
    assert manual["output"]["observe"]["observed"]["powerState"] == "Off"


def test_steps_run_at_the_servers_site(stack: Stack, api: RecordingApi) -> None:
    """No bmc-agent serves site ``elsewhere``: the run waits there, untouched."""
    assert stack.bmc is not None
    system = stack.bmc.systems[0]
    response = api.post(
        "/v1/servers", json=registration(stack, system, "far-node", site="elsewhere")
    )
    run_id = accepted(response)
    time.sleep(2)
    run = api.run(run_id)
    assert run["status"] == "running"
    assert run["steps"][0]["status"] in ("pending", "scheduled")
    api.post(f"/v1/workflows/runs/{run_id}/cancel", json={"reason": "test over"})
