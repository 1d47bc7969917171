"""The AsyncAPI document: checked in and current, valid AsyncAPI 3.0, complete (every contract
has a channel), subjects built by ``infraflow.common.subjects`` resolve to the right channel,
payloads of the contracts validate against their schemas, and the gateway serves it.

``asyncapi-3.0.0.schema.json.gz`` is the official AsyncAPI 3.0.0 JSON Schema
(``schemas/3.0.0-without-$id.json`` of the npm package ``@asyncapi/specs`` 6.11.1,
Apache-2.0), vendored so that the check needs no network.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from litestar.testing import TestClient

from infraflow.common import asyncapi, streams, subjects
from infraflow.common.contracts import (
    EVENT_TYPES,
    CancelNotice,
    ErrorInfo,
    ExecuteStep,
    GetRun,
    QueryReply,
    ResourceObserved,
    RunTimer,
    StartRun,
    StepFailed,
    StepHeartbeat,
    encode,
)
from infraflow.common.settings import NatsSettings
from infraflow.common.vault import Vault
from infraflow.gateway.app import create_app
from infraflow.gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "docs" / "asyncapi.json"
SPEC_SCHEMA = Path(__file__).with_name("asyncapi-3.0.0.schema.json.gz")
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN = "run_0123456789abcdefghijklmnop"
SRV = "srv_0123456789abcdefghijklmnop"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build_document()


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time (jsonschema checks it only with an optional extra installed)."""
    return not isinstance(value, str) or (
        "T" in value.upper() and datetime.fromisoformat(value).tzinfo is not None
    )


def validate(document: dict[str, Any], message: dict[str, Any], payload: bytes) -> None:
    schema = asyncapi.payload_schema(document, message, closed=True)
    jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(json.loads(payload))


def test_the_checked_in_document_is_the_generated_one() -> None:
    assert CHECKED_IN.read_text(encoding="utf-8") == asyncapi.render(asyncapi.build_document()), (
        "docs/asyncapi.json is stale: run `python -m infraflow.common.asyncapi`"
    )


def test_the_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "asyncapi.json"
    assert asyncapi.main(["--check", "--output", str(target)]) == 1
    assert asyncapi.main(["--output", str(target)]) == 0
    assert asyncapi.main(["--check", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == CHECKED_IN.read_text(encoding="utf-8")
    assert "stale" in capsys.readouterr().err


def test_it_is_a_valid_asyncapi_3_document(document: dict[str, Any]) -> None:
    spec = json.loads(gzip.decompress(SPEC_SCHEMA.read_bytes()))
    errors = list(jsonschema.Draft7Validator(spec).iter_errors(document))
    assert not errors, [e.message[:200] for e in errors[:5]]
    assert document["asyncapi"] == "3.0.0"
    # and the check has teeth: a malformed operation is refused
    broken = json.loads(json.dumps(document))
    broken["operations"]["heartbeatSend"]["action"] = "publish"
    assert list(jsonschema.Draft7Validator(spec).iter_errors(broken))


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    found = refs(document)
    assert len(found) > 100
    for ref in found:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, ref
            node = node[part]


def test_every_contract_has_a_channel(document: dict[str, Any]) -> None:
    messages = {
        name
        for channel in document["channels"].values()
        for name in channel["messages"]
        if not channel["address"] or not channel["address"].startswith("$KV.")
    }
    expected = {t.__name__ for t in EVENT_TYPES.values()} | {
        "StartRun",
        "CancelRun",
        "ResumeRun",
        "ExecuteStep",
        "RunTimer",
        "StepHeartbeat",
        "CancelNotice",
        "ResourceObserved",
        "GetRun",
        "ListRuns",
        "GetRunEvents",
        "GetMetrics",
        "GetResource",
        "ListResources",
        "EstimateDuration",
        "QueryReply",
        "DeliveryJob",
        "AttemptRecord",
    }
    assert messages == expected
    for name in EVENT_TYPES:
        assert any(
            (c["address"] or "").endswith("." + name) for c in document["channels"].values()
        ), name
    buckets = {c.get("x-nats-kv-bucket") for c in document["channels"].values()} - {None}
    assert buckets == {
        "wf-locks",
        "wf-idempotency",
        "bmc-credentials",
        "wf-provisioning",
        "wf-webhooks",
        "wf-resources",
    }


def test_every_stream_and_bucket_is_described(document: dict[str, Any]) -> None:
    channels = document["channels"].values()
    described = {c["x-nats-stream"]["name"] for c in channels if "x-nats-stream" in c}
    assert described == {c.name for c in streams.stream_configs(streams.Topology())}
    buckets = {c["x-nats-kv-bucket"] for c in channels if "x-nats-kv-bucket" in c}
    assert buckets == {kv.bucket for kv in streams.kv_configs(streams.Topology())}


@pytest.mark.parametrize(
    ("subject", "channel", "parameters"),
    [
        (subjects.command("start", RUN), "commandStart", {"runId": RUN}),
        (subjects.command("cancel", RUN), "commandCancel", {"runId": RUN}),
        (subjects.command("resume", RUN), "commandResume", {"runId": RUN}),
        (
            subjects.event("server", SRV, RUN, "step_failed"),
            "eventStepFailed",
            {"resourceType": "server", "resourceId": SRV, "runId": RUN},
        ),
        (
            subjects.step("bmc", "dc1", "power"),
            "stepExecute",
            {"executor": "bmc", "site": "dc1", "action": "power"},
        ),
        (subjects.timer(RUN, "retry-f2-1"), "timerSchedule", {"runId": RUN, "name": "retry-f2-1"}),
        (
            subjects.timer_fired(RUN, "timeout-f0-1"),
            "timerFired",
            {"runId": RUN, "name": "timeout-f0-1"},
        ),
        (subjects.observed("vm", "vm_x"), "observed", {"resourceType": "vm", "resourceId": "vm_x"}),
        (subjects.heartbeat(RUN), "heartbeat", {"runId": RUN}),
        (subjects.cancel(RUN), "cancelNotice", {"runId": RUN}),
        (subjects.query("get_run"), "queryGetRun", {}),
        (subjects.query("estimate_duration"), "queryEstimateDuration", {}),
        (f"$KV.wf-locks.server.{SRV}", "kvLocks", {"resourceType": "server", "resourceId": SRV}),
        ("$KV.wf-provisioning.slot.dc1.0", "kvProvisioningSlot", {"site": "dc1", "n": "0"}),
        (subjects.webhook_job("whk_1"), "webhookJob", {"webhookId": "whk_1"}),
        (
            subjects.webhook_delivery("whk_1", "dlv_2"),
            "webhookDelivery",
            {"webhookId": "whk_1", "deliveryId": "dlv_2"},
        ),
    ],
)
def test_subjects_resolve_to_their_channel(
    document: dict[str, Any], subject: str, channel: str, parameters: dict[str, str]
) -> None:
    match = asyncapi.channel_for(document, subject)
    assert match is not None, subject
    assert (match.key, match.parameters) == (channel, parameters)


@pytest.mark.parametrize(
    "subject",
    [
        "wf.events.robot.x.run_1.run_created",  # resource type outside the enum
        "wf.events.server.x.run_1.run_exploded",  # no such event
        "wf.cmd.retry.run_1",  # no such verb
        "wf.query.drop_tables",
        "wf.heartbeat.a.b",
        "webhooks.delivery.x",
        "wf.webhook.delivery.only-one-token",
    ],
)
def test_unknown_subjects_match_nothing(document: dict[str, Any], subject: str) -> None:
    assert asyncapi.channel_for(document, subject) is None


def test_internal_subjects_are_told_apart() -> None:
    assert asyncapi.is_internal("_INBOX.abc.1")
    assert asyncapi.is_internal("$JS.API.CONSUMER.MSG.NEXT.WF_EVENTS.x")
    assert asyncapi.is_internal("$KV.wf-locks.server.srv_1")
    assert not asyncapi.is_internal("wf.cmd.start.run_1")


def _samples() -> list[tuple[str, Any]]:
    error = ErrorInfo(code="BMC_UNREACHABLE", message="no route", retryable=True, step="connect")
    return [
        (
            subjects.command("start", RUN),
            StartRun(
                run_id=RUN,
                resource_type="server",
                resource_id=SRV,
                workflow_type="server.inspect",
                triggered_by="u",
                requested_at=NOW,
            ),
        ),
        (
            subjects.event("server", SRV, RUN, "step_failed"),
            StepFailed(
                event_id="evt_1",
                run_id=RUN,
                resource_type="server",
                resource_id=SRV,
                time=NOW,
                step="connect",
                index=0,
                attempt=1,
                error=error,
            ),
        ),
        (
            subjects.step("bmc", "dc1", "power"),
            ExecuteStep(
                run_id=RUN,
                resource_type="server",
                resource_id=SRV,
                workflow_type="server.lifecycle",
                step="power",
                index=0,
                attempt=1,
                executor="bmc",
                action="power",
                site="dc1",
                scheduled_at=NOW,
            ),
        ),
        (
            subjects.timer_fired(RUN, "retry-f0-1"),
            RunTimer(
                run_id=RUN,
                resource_type="server",
                resource_id=SRV,
                kind="retry",
                index=0,
                attempt=1,
                due=NOW,
            ),
        ),
        (
            subjects.heartbeat(RUN),
            StepHeartbeat(
                run_id=RUN, resource_type="server", resource_id=SRV, index=0, attempt=1, time=NOW
            ),
        ),
        (subjects.cancel(RUN), CancelNotice(run_id=RUN, terminate=True)),
        (
            subjects.observed("server", SRV),
            ResourceObserved(
                resource_type="server",
                resource_id=SRV,
                observed_at=NOW,
                source="power-sync",
                state={"powerState": "On"},
            ),
        ),
        (subjects.query("get_run"), GetRun(run_id=RUN, scope_projects=["p1"])),
    ]


@pytest.mark.parametrize(("subject", "message"), _samples())
def test_contract_payloads_validate(document: dict[str, Any], subject: str, message: Any) -> None:
    match = asyncapi.channel_for(document, subject)
    assert match is not None
    (only,) = match.messages.values()
    validate(document, only, encode(message))


def test_replies_validate_and_the_schemas_have_teeth(document: dict[str, Any]) -> None:
    reply = document["components"]["messages"]["QueryReply"]
    validate(document, reply, encode(QueryReply(data={"id": RUN}, has_more=True)))
    match = asyncapi.channel_for(document, subjects.heartbeat(RUN))
    assert match is not None
    message = match.messages["StepHeartbeat"]
    good = json.loads(
        encode(
            StepHeartbeat(
                run_id=RUN, resource_type="server", resource_id=SRV, index=0, attempt=1, time=NOW
            )
        )
    )
    for bad in (
        {k: v for k, v in good.items() if k != "runId"},  # a required field missing
        {**good, "kind": "cancel"},  # the wrong tag
        {**good, "attempt": "one"},  # the wrong type
        {**good, "time": "yesterday"},  # not a date-time
        {**good, "surprise": 1},  # not in the contract (closed check)
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(document, message, json.dumps(bad).encode())
    # the open schema (as documented) tolerates added fields: fields are only ever added
    open_schema = asyncapi.payload_schema(document, message)
    jsonschema.Draft202012Validator(open_schema).validate({**good, "surprise": 1})


def test_the_gateway_serves_it_without_a_token() -> None:
    settings = GatewaySettings(
        auth={"jwt_hs256_secret": "x" * 40},
        credential_keys=Vault.generate_key(),
        nats=NatsSettings(url="nats://127.0.0.1:9", connect_timeout_s=0.2),
        log_json=False,
    )
    with TestClient(create_app(settings)) as client:
        r = client.get("/asyncapi.json")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.text == CHECKED_IN.read_text(encoding="utf-8")
