"""Telemetry of the running system: every service's /metrics after a workload agrees with the
runs' event histories, and one run can be followed by its runId through the JSON logs of the
gateway, the orchestrator, the agent and the projector.

The workload, through the REST API: two server registrations (bmc-agent), twenty five-step
``bench.noop5`` runs, and ``test.steps`` runs on one server (so they queue for its lock) whose
last step fails once and is retried, or fails for good.
"""

from __future__ import annotations

import collections
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infraflow.common.contracts import RunEvent, StepScheduled
from infraflow.common.invariants import assert_well_formed
from infraflow.common.metrics import Sample, parse_text, value_of
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .conftest import Api, registration

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TERMINAL = {"completed", "failed", "cancelled"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"  # the caller's, continued by every service
SERVICES = ("gateway", "orchestrator", "bmc-agent", "projector", "test-agent")
NOOP_RUNS = 20
RETRIED_RUNS = 3  # test.steps whose step c fails once, then succeeds
FAILED_RUNS = 2  # test.steps whose step c fails for good


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("telemetry")
    stack = Stack(
        base_dir=base / "stack",
        kube=False,
        bmc_systems=2,
        bmc_power_delay_s=0,
        catalog_extra_file=str(write_catalog(base / "catalog.json")),
        services=SERVICES[:4],
        test_agent=True,
        extra_env={"INFRAFLOW_RATE_LIMIT__ENABLED": "false"},  # the tests poll every run
    )
    stack.start()
    try:
        stack.wait_services_ready()
        yield stack, _run_workload(stack)
    finally:
        stack.stop()


def _run_workload(stack: Stack) -> dict[str, Any]:
    api = Api(stack.api_url, stack.token())
    assert stack.bmc is not None
    runs: dict[str, str] = {}  # run id -> workflow type
    servers = []
    for i, system in enumerate(stack.bmc.systems):
        body = registration(stack, system, f"telemetry{i}")
        headers = {"traceparent": TRACEPARENT} if i == 0 else {}
        r = api.post("/v1/servers", json=body, headers=headers)
        assert r.status_code == 202, r.text
        assert r.headers["traceparent"].split("-")[1] == TRACE_ID or i > 0
        runs[r.json()["meta"]["workflowId"]] = "server.register"
        servers.append(r.json()["data"]["resourceId"])
    for run_id in list(runs):
        assert api.wait_run(run_id, timeout=60)["status"] == "completed"

    def start(body: dict[str, Any]) -> None:
        r = api.post("/v1/workflows/runs", json=body)
        assert r.status_code == 202, r.text
        runs[r.json()["meta"]["workflowId"]] = body["type"]

    for i in range(NOOP_RUNS):
        start({"type": "bench.noop5", "resourceId": servers[i % 2]})
    flaky = {"c": {"fail": "FLAKY", "retryable": True, "failAttempts": 1}}
    broken = {"c": {"fail": "BROKEN", "retryable": False}}
    for script in [flaky] * RETRIED_RUNS + [broken] * FAILED_RUNS:
        start({"type": "test.steps", "resourceId": servers[0], "input": {"script": script}})

    final = {run_id: api.wait_run(run_id, timeout=90) for run_id in runs}
    histories = {run_id: api.events(run_id) for run_id in runs}
    for events in histories.values():
        assert_well_formed(events)
    return {"api": api, "runs": runs, "final": final, "histories": histories}


def scrape(stack: Stack, service: str) -> list[Sample]:
    with urllib.request.urlopen(f"{stack.ops_url(service)}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_text(r.read().decode())


def test_metrics_count_what_the_event_log_says(workload: tuple[Stack, dict[str, Any]]) -> None:
    stack, w = workload
    runs: dict[str, str] = w["runs"]
    final: dict[str, dict[str, Any]] = w["final"]
    histories: dict[str, list[RunEvent]] = w["histories"]
    by_type = collections.Counter(runs.values())
    finished = collections.Counter((runs[r], f["status"]) for r, f in final.items())
    assert finished[("test.steps", "failed")] == FAILED_RUNS
    assert finished[("test.steps", "completed")] == RETRIED_RUNS

    # gateway: every 202, and the responses by route
    gateway = scrape(stack, "gateway")
    for kind, n in by_type.items():
        assert value_of(gateway, "infraflow_gateway_runs_accepted_total", type=kind) == n
    created = value_of(
        gateway, "infraflow_http_responses_total", method="POST", route="/v1/workflows/runs"
    )
    assert created == NOOP_RUNS + RETRIED_RUNS + FAILED_RUNS
    assert value_of(gateway, "infraflow_http_responses_total", route="/v1/servers") == 2

    # orchestrator: runs created, started, finished by type and status, durations, retries,
    # lock waits; each equal to what the histories hold
    orch = scrape(stack, "orchestrator")
    events = [e for h in histories.values() for e in h]
    queued = collections.Counter(runs[e.run_id] for e in events if e.name == "run_queued")
    retries = collections.Counter(
        (runs[e.run_id], e.step) for e in events if isinstance(e, StepScheduled) and e.attempt > 1
    )
    assert retries == {("test.steps", "c"): RETRIED_RUNS}
    assert queued["test.steps"] >= 1  # they share one server's lock
    for kind, n in by_type.items():
        assert value_of(orch, "infraflow_runs_created_total", type=kind) == n
        assert value_of(orch, "infraflow_runs_started_total", type=kind) == n
        assert value_of(orch, "infraflow_run_start_delay_seconds_count", type=kind) == n
        assert value_of(orch, "infraflow_lock_waits_total", type=kind) == queued[kind]
    for (kind, status), n in finished.items():
        assert value_of(orch, "infraflow_runs_finished_total", type=kind, status=status) == n
        assert value_of(orch, "infraflow_run_duration_seconds_count", type=kind, status=status) == n
    for (kind, step), n in retries.items():
        assert value_of(orch, "infraflow_step_retries_total", type=kind, step=step) == n
    lag = value_of(
        orch, "infraflow_consumer_delivery_lag_seconds_count", consumer="orchestrator-commands"
    )
    assert lag >= len(runs)

    # agents: one duration sample per attempt they ran, by outcome
    attempts = collections.Counter(
        ("bmc" if runs[e.run_id] == "server.register" else "test", e.name)
        for e in events
        if e.name in ("step_succeeded", "step_failed")
    )
    for executor, service in (("bmc", "bmc-agent"), ("test", "test-agent")):
        samples = scrape(stack, service)
        for fact, outcome in (("step_succeeded", "succeeded"), ("step_failed", "failed")):
            got = value_of(
                samples,
                "infraflow_step_duration_seconds_count",
                executor=executor,
                outcome=outcome,
            )
            assert got == attempts[(executor, fact)], (executor, outcome)

    # backlog gauges (read every 5 s) and the projector's lag settle at zero
    deadline = time.monotonic() + 20
    while True:
        orch = scrape(stack, "orchestrator")
        agent = scrape(stack, "test-agent")
        projector = scrape(stack, "projector")
        pending = {
            s.labels["consumer"]: s.value
            for s in orch + agent
            if s.name == "infraflow_consumer_pending_messages"
        }
        lag_samples = [s for s in projector if s.name == "infraflow_projector_lag_messages"]
        settled = (
            set(pending) >= {"orchestrator-commands", "orchestrator-facts", "test-agent-default"}
            and not any(pending.values())
            and lag_samples
            and lag_samples[0].value == 0
        )
        if settled:
            break
        assert time.monotonic() < deadline, (pending, lag_samples)
        time.sleep(0.5)


def test_one_run_can_be_followed_through_every_service_log(
    workload: tuple[Stack, dict[str, Any]],
) -> None:
    stack, w = workload
    runs: dict[str, str] = w["runs"]
    run_id = next(r for r, kind in runs.items() if kind == "server.register")  # the traced one
    logs = stack.base_dir / "logs"
    trail = {service: _lines_of(logs / f"{service}.log", run_id) for service in SERVICES[:4]}

    gateway = trail["gateway"]
    assert any("accepted run" in line["msg"] for line in gateway), gateway
    # the polls of the run (GET /v1/workflows/runs/<runId>) carry it too
    assert any("GET /v1/workflows/runs/" in line["msg"] for line in gateway), gateway
    assert all(line.get("requestId", "").startswith("req_") for line in gateway)
    orchestrator = {line["msg"].split(" ")[0] for line in trail["orchestrator"]}
    assert {"run_created", "run_started", "run_completed"} <= orchestrator
    agent = trail["bmc-agent"]
    assert {line["stepId"] for line in agent} == {"connect#1", "inventory#1"}, agent
    assert all("succeeded" in line["msg"] for line in agent)
    projector = [line["msg"] for line in trail["projector"]]
    assert any("run_created" in m for m in projector)
    assert any("run_completed" in m for m in projector)
    # the caller's trace went with the command, the step commands and the facts
    assert any(line.get("traceId") == TRACE_ID for line in gateway), gateway
    for service in ("orchestrator", "bmc-agent"):
        assert {line.get("traceId") for line in trail[service]} == {TRACE_ID}, trail[service]
    # and the run's lines are in time order in each service
    for service, lines in trail.items():
        stamps = [line["ts"] for line in lines]
        assert stamps == sorted(stamps), service


def _lines_of(path: Path, run_id: str) -> list[dict[str, Any]]:
    """The JSON lines of a service log that carry ``run_id`` as their runId."""
    out = []
    for raw in path.read_text().splitlines():
        if not raw.startswith("{"):
            continue  # a traceback's continuation lines
        line = json.loads(raw)
        assert {"ts", "level", "service", "logger", "msg"} <= set(line), raw
        if line.get("runId") == run_id:
            out.append(line)
    assert out, f"{path.name} has no line with runId {run_id}"
    return out
