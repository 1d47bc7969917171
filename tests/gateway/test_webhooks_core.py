"""Webhooks, pure parts: the signature against the Standard Webhooks test vector, the SSRF
rules, matching, delivery ids and the retry schedule."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infraflow.common.contracts import RunCompleted
from infraflow.common.contracts.webhooks import WebhookRecord
from infraflow.common.ids import is_id
from infraflow.gateway.webhooks import model, signing
from infraflow.gateway.webhooks.ssrf import DestinationGuard, url_problem


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # the example of the Standard Webhooks specification and its reference libraries
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_new_secrets_are_32_random_bytes() -> None:
    one, two = signing.new_secret(), signing.new_secret()
    assert one != two
    assert len(signing.secret_key(one)) == 32


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00:ec2::254", "private"),
        ("100.64.0.1", None),  # shared address space: not global
        ("0.0.0.0", None),
        ("224.0.0.1", "multicast"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str, kind: str | None) -> None:
    reason = DestinationGuard().refusal(ipaddress.ip_address(address))
    assert reason is not None
    if kind is not None:
        assert kind in reason


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert DestinationGuard().refusal(ipaddress.ip_address(address)) is None


def test_public_addresses_can_be_closed_too() -> None:
    guard = DestinationGuard(["10.20.0.0/16"], allow_public=False)
    assert guard.refusal(ipaddress.ip_address("1.1.1.1")) is not None
    assert guard.refusal(ipaddress.ip_address("10.20.1.1")) is None


def test_the_allowlist_opens_only_its_networks() -> None:
    guard = DestinationGuard(["127.0.0.0/8", "10.20.0.0/16"])
    assert guard.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert guard.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert guard.refusal(ipaddress.ip_address("10.21.3.4")) is not None
    assert guard.refusal(ipaddress.ip_address("169.254.169.254")) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "http://hooks.example.com:8080/a?b=c",
        "http://[2001:db8::1]/",
    ],
)
def test_well_formed_urls(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///nohost",
        "https://user:secret@example.com/",
        "http://example.com/#frag",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "javascript:alert(1)",
        "http://example.com/" + "a" * 3000,
    ],
)
def test_malformed_urls(url: str) -> None:
    assert url_problem(url) is not None


def _hook(**kw: object) -> WebhookRecord:
    base: dict[str, object] = {
        "id": "whk_x",
        "url": "https://h.example.com/",
        "events": ["*"],
        "created_by": "u",
        "created_at": datetime.now(UTC),
        "sealed_secret": "s",
    }
    return WebhookRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_matching_by_event_type_and_project() -> None:
    assert model.wants(_hook(), "run.failed", "server.inspect", None)
    assert not model.wants(_hook(events=["run.completed"]), "run.failed", "server.inspect", None)
    assert model.wants(_hook(types=["server.*"]), "run.failed", "server.provision", "p")
    assert not model.wants(_hook(types=["server.*"]), "run.failed", "cluster.create", "p")
    assert not model.wants(_hook(types=["server.inspect"]), "run.failed", None, None)
    assert model.wants(_hook(project_id="p"), "run.failed", "vm.create", "p")
    assert not model.wants(_hook(project_id="p"), "run.failed", "vm.create", "q")
    assert not model.wants(_hook(project_id="p"), "run.failed", "vm.create", None)


def test_delivery_ids_are_deterministic_and_time_sortable() -> None:
    event = RunCompleted(
        event_id="evt_1",
        run_id="run_1",
        resource_type="server",
        resource_id="srv_1",
        time=datetime(2025, 1, 1, tzinfo=UTC),
    )
    first = model.delivery_id("whk_a", event)
    assert is_id(first, "dlv")
    assert model.delivery_id("whk_a", event) == first
    assert model.delivery_id("whk_b", event) != first


@given(st.integers(1, 60))
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    delay = model.backoff_s(attempt, 5.0, 3.0, 7200.0)
    assert 5.0 <= delay <= 7200.0
    assert model.backoff_s(attempt + 1, 5.0, 3.0, 7200.0) >= delay


def test_default_schedule_retries_for_hours() -> None:
    total = sum(model.backoff_s(n, 5.0, 3.0, 7200.0) for n in range(1, 10))
    assert 4 * 3600 < total < 8 * 3600
