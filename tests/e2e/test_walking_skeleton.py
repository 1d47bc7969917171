"""Register a fake bare-metal server over REST and power it on, through every real process:
gateway → JetStream → orchestrator → bmc-agent → Redfish emulator → event log → projector."""

from __future__ import annotations

import time

import pytest

from infraflow.common.invariants import assert_well_formed
from infraflow.devtools.stack import Stack

from .conftest import Api, registration

pytestmark = pytest.mark.e2e


def test_register_then_power_on(stack: Stack, api: Api) -> None:
    assert stack.bmc is not None
    system = next(s for s in stack.bmc.systems if s.power == "Off")
    body = registration(stack, system, "rack1-node1", site="default", tags={"rack": "r1"})
    t0 = time.monotonic()
    r = api.post("/v1/servers", json=body)
    accepted_s = time.monotonic() - t0
    assert r.status_code == 202, r.text
    assert accepted_s < 1.0
    run_id = r.json()["meta"]["workflowId"]
    assert r.headers["location"] == f"/v1/workflows/runs/{run_id}"
    assert r.json()["meta"]["estimatedDuration"] > 0
    server_id = r.json()["data"]["resourceId"]

    # readable at once, even before the projector saw it
    first = api.run(run_id)
    assert first["status"] in ("pending", "running", "completed")

    run = api.wait_run(run_id)
    assert run["status"] == "completed", run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
    server = api.get(f"/v1/servers/{server_id}").json()["data"]
    assert server["state"] == "registered"
    assert server["vendor"] == system.manufacturer
    assert server["model"] == system.model
    assert server["serial"] == system.serial
    assert server["powerState"] == "Off"
    assert stack.bmc.password not in r.text + str(server) + str(run)
    assert_well_formed(api.events(run_id))

    r = api.post(f"/v1/servers/{server_id}/power", json={"action": "on"})
    assert r.status_code == 202, r.text
    power_run = r.json()["meta"]["workflowId"]
    run = api.wait_run(power_run)
    assert run["status"] == "completed", run
    assert stack.bmc.power_state(system.id) == "On"
    assert api.get(f"/v1/servers/{server_id}").json()["data"]["powerState"] == "On"
    events = api.events(power_run)
    assert_well_formed(events)
    assert events[0].name == "run_created"
    assert events[-1].name == "run_completed"

    listed = api.get("/v1/workflows/runs", params={"resourceId": server_id}).json()
    assert [x["id"] for x in listed["data"]] == [power_run, run_id]


def test_bad_input_gets_4xx_envelopes(api: Api) -> None:
    r = api.post("/v1/servers", json={"name": "x"})
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert "bmc" in body["error"]["details"]["fields"]
    r = api.get("/v1/workflows/runs/run_0000000000000000000000000")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NOT_FOUND"
    r = api.post("/v1/workflows/runs", json={"type": "no.such-type", "input": {}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = api.post("/v1/servers/srv_0000000000000000000000000/power", json={"action": "on"})
    assert r.status_code == 404
