"""The gateway's pure core: request ids, validation, role rules, idempotency, server views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from infraflow.common.contracts import ResourceView
from infraflow.common.errors import ValidationError
from infraflow.gateway.core import access, idempotency
from infraflow.gateway.core.errors import ForbiddenError, UnauthorizedError
from infraflow.gateway.core.request_ids import (
    caller_request_id,
    format_request_id,
    format_timestamp,
)
from infraflow.gateway.core.runs import estimate_from_reply
from infraflow.gateway.core.servers import server_from_view, validate_registration
from infraflow.gateway.core.validation import (
    FieldErrors,
    check_http_url,
    decoder_field_error,
    parse_instant,
)
from infraflow.gateway.schemas import BmcCreate, ServerCreate


def test_request_id_and_timestamp_formats() -> None:
    assert format_request_id("eu1", 1735689600123, "0123456789ab") == (
        "req_eu1-1735689600123-0123456789ab"
    )
    with pytest.raises(ValueError, match="hex"):
        format_request_id("eu1", 1, "xyz")
    moment = datetime(2025, 1, 31, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2025-01-31T12:00:00.123Z"
    assert caller_request_id(" trace-1 ") == "trace-1"
    assert caller_request_id("a\nb") is None
    assert caller_request_id("x" * 129) is None


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("https://10.0.0.1", True),
        ("http://bmc.example:8000/redfish/v1", True),
        ("HTTPS://BMC", True),
        ("ftp://10.0.0.1", False),
        ("https://", False),
        ("10.0.0.1", False),
        ("https://user:pw@10.0.0.1", False),
        ("https://10.0.0.1:99999", False),
        ("https://10.0.0.1/a b", False),
    ],
)
def test_bmc_address_rules(url: str, valid: bool) -> None:
    errors = FieldErrors()
    check_http_url(errors, "bmc.address", url)
    assert (not errors) is valid


def test_instants() -> None:
    errors = FieldErrors()
    assert parse_instant(errors, "since", "2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
    end = parse_instant(errors, "until", "2025-01-31", end_of_day=True)
    assert end is not None
    assert end.hour == 23
    assert parse_instant(errors, "since", "2025-01-31T10:00:00") == datetime(
        2025, 1, 31, 10, tzinfo=UTC
    )
    assert parse_instant(errors, "since", "2025-01-31T10:00:00+02:00") == datetime(
        2025, 1, 31, 8, tzinfo=UTC
    )
    assert not errors
    parse_instant(errors, "since", "last week")
    assert "since" in errors


def test_decoder_errors_become_fields_without_values() -> None:
    assert decoder_field_error(
        "Expected `str`, got `int` - at `$.data.bmc.address`", drop_root="data"
    ) == ("bmc.address", "expected str, got int")
    assert decoder_field_error(
        "Object missing required field `password` - at `$.data.bmc`", drop_root="data"
    ) == ("bmc.password", "is required")
    assert decoder_field_error("Invalid enum value 'hunter2' - at `$.data.action`", "", "data") == (
        "action",
        "is not one of the allowed values",
    )


def test_registration_collects_every_problem_and_hides_the_password() -> None:
    body = ServerCreate(
        name="-",
        bmc=BmcCreate(address="gopher://x", username="", password="hunter2"),
        site="a b",
    )
    assert "hunter2" not in repr(body)
    with pytest.raises(ValidationError) as info:
        validate_registration(body)
    fields = info.value.details["fields"]
    assert set(fields) == {"name", "site", "bmc.address", "bmc.username"}
    assert "hunter2" not in str(fields)
    ok = validate_registration(
        ServerCreate(name="n1", bmc=BmcCreate(address="http://b", username="u", password="pw"))
    )
    assert ok.site == "default"
    assert "pw" not in repr(ok)
    assert "password" not in str(ok.run_input())
    assert ok.credentials()["password"] == "pw"


def test_claims_and_role_rules() -> None:
    arc = access.principal_from_claims(
        {"sub": "t", "projects": {"p1": "member", "p2": "viewer"}, "org": "o"}
    )
    assert arc.scope_projects == ["p1", "p2"]
    assert arc.acts_in_project("p1")
    assert not arc.acts_in_project("p2")
    assert access.may_start_on_server(arc, "server.lifecycle")
    assert not access.may_start_on_server(arc, "server.inspect")
    with pytest.raises(ForbiddenError):
        access.authorize_server_workflow(arc, "server.lifecycle", "p2")
    access.authorize_server_workflow(arc, "server.lifecycle", "p1")
    support = access.principal_from_claims({"sub": "s", "roles": ["support"]})
    assert support.scope_projects is None
    assert not support.is_fleet_writer
    with pytest.raises(ForbiddenError):
        access.require_fleet_writer(support)
    operator = access.principal_from_claims({"sub": "o", "roles": "provider_operator"})
    access.authorize_cancel(operator, None, terminate=False)
    with pytest.raises(ForbiddenError):
        access.authorize_cancel(operator, None, terminate=True)
    for claims in ({}, {"sub": ""}, {"sub": "x", "roles": [1]}, {"sub": "x", "projects": ["p"]}):
        with pytest.raises(UnauthorizedError):
            access.principal_from_claims(claims)


def test_idempotency_keys_and_fingerprints() -> None:
    key = idempotency.storage_key("alice", "post", "/v1/servers", "k1")
    assert key == idempotency.storage_key("alice", "POST", "/v1/servers", "k1")
    assert key != idempotency.storage_key("bob", "POST", "/v1/servers", "k1")
    secret = idempotency.fingerprint_secret(["key-a"])
    same = idempotency.body_fingerprint(secret, {"a": 1, "b": [1, 2]})
    assert same == idempotency.body_fingerprint(secret, {"b": [1, 2], "a": 1})
    assert same != idempotency.body_fingerprint(idempotency.fingerprint_secret(["k"]), {"a": 1})
    with pytest.raises(ValidationError):
        idempotency.check_key("has space")
    record = idempotency.IdempotencyRecord(
        state="pending", body_hash="h", run_id="r", created_at_ms=1_000
    )
    assert record.is_stale(now_ms=40_000, stale_ms=30_000)
    assert not record.is_stale(now_ms=20_000, stale_ms=30_000)
    assert idempotency.decode_record(idempotency.encode_record(record)) == record


def test_estimates() -> None:
    assert estimate_from_reply(1500) == 1500
    assert estimate_from_reply({"estimatedDuration": 2500.7}) == 2500
    assert estimate_from_reply(None) is None
    assert estimate_from_reply(True) is None
    assert estimate_from_reply(-1) is None


def test_server_view_whitelists_fields() -> None:
    view = ResourceView(
        id="srv_1",
        type="server",
        name="n1",
        state="available",
        attributes={
            "bmc": {"address": "https://b", "username": "u", "password": "pw", "verifyTls": True},
            "hardwareSpecs": {"cpus": 8, "secret": "s"},
            "credentials": {"password": "pw"},
            "powerState": "Off",
        },
    )
    server = server_from_view(view)
    assert server.bmc is not None
    assert server.bmc.address == "https://b"
    assert server.hardware_specs == {"cpus": 8, "secret": "***"}
    assert server.power_state == "Off"
    assert "pw" not in repr(server)
