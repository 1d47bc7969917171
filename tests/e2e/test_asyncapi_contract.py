"""The AsyncAPI document against the real traffic: a wiretap subscribed to ``>`` on the stack's
NATS records every message while a varied workload runs (register, power, sync, test workflows
that fail, compensate, retry with backoff, retry from a step, queue, cancel, terminate, and the
read side). Every Infraflow subject must match a channel of the document the gateway serves and
every payload must validate against its schema, closed (no field the contract does not name).

Out of scope: the NATS machinery itself — ``$JS.*`` (JetStream API, acks, advisories), ``$KV.*``
(raw KV bucket subjects; the buckets' values are described in the document but written through
the KV API) and ``_INBOX.*`` (inboxes) — except that the replies to read-model queries, which
travel on the asker's inbox, are matched to their request and validated as ``QueryReply``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import nats
import pytest

from infraflow.common import asyncapi
from infraflow.common.streams import KV_IDEMPOTENCY
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

from .conftest import Api, register_all

pytestmark = pytest.mark.e2e

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or (
        "T" in value.upper() and datetime.fromisoformat(value).tzinfo is not None
    )


@dataclass
class Wiretap:
    """Records every message on the broker from a thread with its own event loop."""

    url: str
    seen: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Wiretap:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the wiretap did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    async def _run(self) -> None:
        nc = await nats.connect(self.url)

        async def record(msg: Any) -> None:
            self.seen.append((msg.subject, msg.reply or None, bytes(msg.data)))

        await nc.subscribe(">", cb=record, pending_msgs_limit=1_000_000)
        await nc.flush()
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        await nc.flush()
        await nc.close()

    def kv_put(self, key: str) -> None:
        async def put() -> None:
            nc = await nats.connect(self.url)
            try:
                await (await nc.jetstream().key_value(KV_IDEMPOTENCY)).put(key, b"1")
            finally:
                await nc.close()

        asyncio.run(put())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("asyncapi")
    s = Stack(
        base_dir=base / "stack",
        bmc_systems=2,
        kube=False,
        test_agent=True,
        catalog_extra_file=str(write_catalog(base / "catalog.json")),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
        extra_env={
            "INFRAFLOW_POWER_SYNC_INTERVAL_S": "1",
            "INFRAFLOW_WEBHOOKS__ALLOW_NETWORKS": "127.0.0.0/8",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _start(api: Api, type_: str, server: str, script: dict[str, Any] | None = None) -> str:
    body = {"type": type_, "resourceId": server, "input": {"script": script or {}}}
    r = api.post("/v1/workflows/runs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["meta"]["workflowId"])


def _wait(api: Api, run_id: str, ok: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = api.run(run_id)
        if ok(run):
            return run
        assert time.monotonic() < deadline, f"{run_id}: {run['status']}"
        time.sleep(0.1)


def _step_running(name: str) -> Any:
    return lambda run: any(s["name"] == name and s["status"] == "running" for s in run["steps"])


class _Receiver(BaseHTTPRequestHandler):
    """A webhook destination that accepts everything."""

    received: list[bytes] = []

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def workload(stack: Stack, api: Api, tap: Wiretap, hook: str) -> None:
    """Every kind of message the engine sends, through the public API."""
    assert stack.bmc is not None
    r = api.post("/v1/webhooks", json={"url": hook, "events": ["run.failed", "run.cancelled"]})
    assert r.status_code == 201, r.text
    servers = register_all(stack, api, "tap")
    a, b = servers
    power = api.post(f"/v1/servers/{a}/power", json={"action": "on"})
    assert power.status_code == 202, power.text
    sync = api.post(f"/v1/servers/{b}/sync")
    assert sync.status_code == 202, sync.text
    for r in (power, sync):
        api.wait_run(r.json()["meta"]["workflowId"])
    # failure with compensation; a retried attempt (backoff timer) that then succeeds
    saga = _start(api, "test.saga", b, {"finish": {"fail": "BOOM", "retryable": False}})
    flaky = _start(
        api, "test.steps", b, {"c": {"fail": "FLAKY", "retryable": True, "failAttempts": 1}}
    )
    # a hold on a, a run queued behind it, cancel the holder (the queued run resumes)
    holder = _start(api, "test.hold", a)
    _wait(api, holder, _step_running("hold"))
    queued = _start(api, "test.steps", a)
    _wait(api, queued, lambda run: run.get("waitingFor") == holder)
    assert (
        api.post(f"/v1/workflows/runs/{holder}/cancel", json={"reason": "tap"}).status_code == 202
    )
    # retry from a step once the cause is gone
    flag = "tap.fail"
    tap.kv_put(flag)
    failing = _start(api, "test.steps", a, {"c": {"fail": "HW", "failWhile": flag}})
    assert api.wait_run(failing)["status"] == "failed"
    r = api.post(f"/v1/workflows/runs/{failing}/retry", json={"fromStep": "c"})
    assert r.status_code == 202, r.text
    retried = r.json()["meta"]["workflowId"]
    # terminate a held run (no compensation)
    hard = _start(api, "test.hold", b)
    _wait(api, hard, _step_running("hold"))
    assert (
        api.post(f"/v1/workflows/runs/{hard}/cancel", json={"terminate": True}).status_code == 202
    )
    for run_id in (saga, flaky, holder, queued, retried, hard):
        api.wait_run(run_id)
    # the read side: every query the gateway asks
    assert api.get("/v1/workflows/runs", params={"status": "failed"}).status_code == 200
    assert api.get(f"/v1/workflows/runs/{saga}/events").status_code == 200
    assert api.get("/v1/workflows/metrics").status_code == 200
    assert api.get("/v1/servers").status_code == 200
    assert api.get(f"/v1/servers/{a}").status_code == 200
    # power sync observations arrive every second
    time.sleep(1.5)


def test_every_published_subject_and_payload_is_in_the_asyncapi_document(
    stack: Stack, api: Api
) -> None:
    served = api.get("/asyncapi.json")
    assert served.status_code == 200
    document = served.json()
    assert document == asyncapi.build_document()

    with Wiretap(stack.nats_url) as tap, webhook_receiver() as hook:
        workload(stack, api, tap, hook)
        deadline = time.monotonic() + 10
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    assert _Receiver.received, "no webhook was delivered"

    reply_to_query = {
        reply for subject, reply, _ in tap.seen if subject.startswith("wf.query.") and reply
    }
    reply_message = document["components"]["messages"]["QueryReply"]
    unknown: Counter[str] = Counter()
    invalid: list[str] = []
    channels: Counter[str] = Counter()
    validators: dict[int, jsonschema.Draft202012Validator] = {}

    def check(message: dict[str, Any], subject: str, data: bytes) -> None:
        key = id(message)
        if key not in validators:
            schema = asyncapi.payload_schema(document, message, closed=True)
            validators[key] = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
        try:
            payload = json.loads(data)
        except ValueError:
            invalid.append(f"{subject}: not JSON: {data[:80]!r}")
            return
        errors = list(validators[key].iter_errors(payload))
        if errors:
            invalid.append(f"{subject}: {errors[0].message[:200]} in {data[:300]!r}")

    for subject, _reply, data in tap.seen:
        if subject in reply_to_query:
            channels["queryReply"] += 1
            check(reply_message, subject, data)
            continue
        if asyncapi.is_internal(subject):
            continue
        match = asyncapi.channel_for(document, subject)
        if match is None:
            unknown[subject] += 1
            continue
        channels[match.key] += 1
        (message,) = match.messages.values()
        check(message, subject, data)

    print(f"\n{len(tap.seen)} messages; per channel: {dict(sorted(channels.items()))}")
    assert not unknown, f"subjects the AsyncAPI document does not describe: {dict(unknown)}"
    assert not invalid, "payloads that do not match their schema:\n" + "\n".join(invalid[:10])
    # the workload reached every part of the contract it is meant to
    expected = {
        "commandStart",
        "commandCancel",
        "commandResume",
        "eventRunCreated",
        "eventRunQueued",
        "eventRunStarted",
        "eventStepScheduled",
        "eventStepStarted",
        "eventStepSucceeded",
        "eventStepFailed",
        "eventStepSkipped",
        "eventCompensationStarted",
        "eventRunCancelRequested",
        "eventRunCompleted",
        "eventRunFailed",
        "eventRunCancelled",
        "stepExecute",
        "timerSchedule",
        "heartbeat",
        "cancelNotice",
        "observed",
        "queryGetRun",
        "queryListRuns",
        "queryGetRunEvents",
        "queryGetMetrics",
        "queryGetResource",
        "queryListResources",
        "queryReply",
        "webhookJob",
        "webhookDelivery",
    }
    missing = expected - set(channels)
    assert not missing, f"the workload never produced {sorted(missing)}"
