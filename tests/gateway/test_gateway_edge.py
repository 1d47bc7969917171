"""The edge: envelope, request ids, error statuses, health, the API document."""

from __future__ import annotations

import re
from typing import Any

import httpx

from infraflow.common.contracts import Query, QueryReply
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.settings import GatewaySettings

from .conftest import FakeProjector, auth, body_of, serve, started

REQUEST_ID = re.compile(r"^req_local-\d{13}-[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_success_envelope_carries_request_id_and_timestamp(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = body_of(response)
    assert body["success"] is True
    assert body["data"] == {"status": "ok"}
    assert REQUEST_ID.match(body["meta"]["requestId"])
    assert TIMESTAMP.match(body["meta"]["timestamp"])
    assert response.headers["x-request-id"] == body["meta"]["requestId"]


async def test_callers_request_id_is_echoed_and_unsafe_ones_replaced(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/workflows/types", headers=auth(**{"X-Request-Id": "abc-42"}))
    assert response.headers["x-request-id"] == "abc-42"
    assert body_of(response)["meta"]["requestId"] == "abc-42"
    response = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert REQUEST_ID.match(response.headers["x-request-id"])
    response = await client.get("/nope", headers={"X-Request-Id": "err-7"})
    assert response.headers["x-request-id"] == "err-7"
    assert body_of(response)["meta"]["requestId"] == "err-7"


async def test_unknown_route_and_wrong_method_are_enveloped(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here", headers=auth())
    assert response.status_code == 404
    body = body_of(response)
    assert body["success"] is False
    assert body["error"]["code"] == "NOT_FOUND"
    assert REQUEST_ID.match(body["meta"]["requestId"])
    response = await client.put("/v1/workflows/types", headers=auth())
    assert response.status_code == 405
    assert body_of(response)["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/servers",
        content=b'{"name": "' + b"x" * 2_000_000 + b'"}',
        headers=auth(**{"Content-Type": "application/json"}),
    )
    assert response.status_code == 413
    assert body_of(response)["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_readyz_is_200_when_connected(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert body_of(response)["data"]["checks"] == {"broker": True, "streams": True}


async def test_health_answers_while_the_broker_is_unreachable(settings: GatewaySettings) -> None:
    settings.nats.url = "nats://127.0.0.1:9"  # nothing listens there
    async with serve(_app(settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert body_of(response)["error"]["code"] == "SERVICE_UNAVAILABLE"
        response = await client.get("/v1/workflows/runs", headers=auth())
        assert response.status_code == 503
        assert body_of(response)["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_projector_silence_is_503(
    client: httpx.AsyncClient, projector: FakeProjector
) -> None:
    projector.silent = True
    response = await client.get("/v1/workflows/runs", headers=auth())
    assert response.status_code == 503
    assert body_of(response)["error"]["code"] == "SERVICE_UNAVAILABLE"


class _ExplodingBroker(Broker):
    async def ask(self, query: Query, timeout_s: float) -> QueryReply:
        raise RuntimeError("kaboom: internal detail that must not leak")


async def test_unexpected_exception_is_internal_error_without_details(
    settings: GatewaySettings, projector: FakeProjector
) -> None:
    broker = _ExplodingBroker(settings.nats)
    async with serve(_app(settings, broker)) as client:
        await started(client)
        response = await client.get("/v1/workflows/runs", headers=auth())
    assert response.status_code == 500
    body = body_of(response)
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert "kaboom" not in response.text
    assert "Traceback" not in response.text
    assert REQUEST_ID.match(body["meta"]["requestId"])


async def test_malformed_projector_reply_is_internal_error(
    client: httpx.AsyncClient, projector: FakeProjector
) -> None:
    server = projector.add_server()
    server["attributes"] = "not an object"
    response = await client.get(f"/v1/servers/{server['id']}", headers=auth())
    assert response.status_code == 500
    assert body_of(response)["error"]["code"] == "INTERNAL_ERROR"


async def test_openapi_document_and_page_are_public(client: httpx.AsyncClient) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    operations = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {
        "registerServer",
        "powerServer",
        "listRuns",
        "getRun",
        "cancelRun",
        "startRun",
        "listWorkflowTypes",
    } <= operations
    register = doc["paths"]["/v1/servers"]["post"]
    assert register["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorEnvelope"
    }
    assert "ErrorEnvelope" in doc["components"]["schemas"]
    assert "bearer" in doc["components"]["securitySchemes"]
    page = await client.get("/schema/swagger")
    assert page.status_code == 200
    assert "html" in page.text.lower()


def _app(settings: GatewaySettings, broker: Broker | None = None) -> Any:
    from infraflow.gateway.app import create_app

    return create_app(settings, broker=broker)
