"""Webhooks, pure parts: the stored record, which run events become which webhook events, who
gets what, the payload, the delivery ids and the retry schedule. No I/O, no clock."""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from infraflow.common.contracts import RunEvent, StepFailed
from infraflow.common.contracts.webhooks import WebhookRecord
from infraflow.common.ids import new_id

WEBHOOK_PREFIX: Final = "whk"
DELIVERY_PREFIX: Final = "dlv"

EVENT_BY_RUN_EVENT: Final = {
    "run_started": "run.started",
    "run_completed": "run.completed",
    "run_failed": "run.failed",
    "run_cancelled": "run.cancelled",
    "step_failed": "step.failed",
}
"""Run events (``WF_EVENTS``) that webhooks can subscribe to, by their webhook event name."""
WEBHOOK_EVENTS: Final = frozenset(EVENT_BY_RUN_EVENT.values())
ALL_EVENTS: Final = "*"
TEST_EVENT: Final = "webhook.test"
_RUN_STATUS: Final = {
    "run.started": "running",
    "run.completed": "completed",
    "run.failed": "failed",
    "run.cancelled": "cancelled",
}


def wants(
    webhook: WebhookRecord, event: str, workflow_type: str | None, project_id: str | None
) -> bool:
    """Whether ``webhook`` receives ``event`` of a run of ``workflow_type`` in ``project_id``:
    the event subscribed (or ``*``), the type listed (or no ``types``), and for a project
    webhook only runs of that project."""
    if ALL_EVENTS not in webhook.events and event not in webhook.events:
        return False
    if webhook.project_id is not None and project_id != webhook.project_id:
        return False
    return webhook.types is None or type_matches(webhook.types, workflow_type)


def type_matches(patterns: list[str], workflow_type: str | None) -> bool:
    """``server.provision`` matches ``server.provision`` and ``server.*``."""
    if workflow_type is None:
        return False
    for pattern in patterns:
        if pattern == workflow_type:
            return True
        if pattern.endswith(".*") and workflow_type.startswith(pattern[:-1]):
            return True
    return False


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the fan-out needs to know about a run (from its ``run_created``)."""

    workflow_type: str | None = None
    project_id: str | None = None
    triggered_by: str | None = None


def delivery_id(webhook_id: str, event: RunEvent) -> str:
    """A deterministic, time-sortable delivery id for (webhook, event): a redelivered event
    yields the same id, so receivers deduplicating by ``webhook-id`` see one delivery."""
    digest = hashlib.sha256(f"{webhook_id}\x00{event.event_id}".encode()).digest()
    return new_id(
        DELIVERY_PREFIX,
        now_ms=int(event.time.timestamp() * 1000),
        entropy=int.from_bytes(digest[:13], "big"),
    )


def payload(event_name: str, event: RunEvent, run: RunInfo, timestamp: str) -> dict[str, Any]:
    """The JSON body of a webhook delivery (Standard Webhooks: ``type``, ``timestamp``,
    ``data``). Only what the run's events already expose; never secrets."""
    data: dict[str, Any] = {
        "eventId": event.event_id,
        "runId": event.run_id,
        "workflowType": run.workflow_type,
        "resourceType": event.resource_type,
        "resourceId": event.resource_id,
        "projectId": run.project_id,
        "triggeredBy": run.triggered_by,
        "occurredAt": timestamp,
    }
    status = _RUN_STATUS.get(event_name)
    if status is not None:
        data["status"] = status
    error = getattr(event, "error", None)
    if error is not None:
        data["error"] = msgspec.to_builtins(error)
    if isinstance(event, StepFailed):
        data["step"] = {"name": event.step, "attempt": event.attempt, "phase": event.phase}
    return {"type": event_name, "timestamp": timestamp, "data": data}


def ping_body(webhook: WebhookRecord, timestamp: str) -> bytes:
    """The body of a test ping."""
    return msgspec.json.encode(
        {
            "type": TEST_EVENT,
            "timestamp": timestamp,
            "data": {"webhookId": webhook.id, "message": "a test delivery from Infraflow"},
        }
    )


def backoff_s(attempt: int, initial_s: float, coefficient: float, max_s: float) -> float:
    """The wait after failed attempt ``attempt`` (1-based): initial * coefficient^(n-1), capped."""
    return min(max_s, initial_s * coefficient ** max(0, attempt - 1))
