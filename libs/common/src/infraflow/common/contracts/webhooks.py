"""Webhook records the gateway stores and its replicas exchange: registrations (KV
``wf-webhooks``), delivery jobs (``WF_WEBHOOK_JOBS``) and the delivery log
(``WF_WEBHOOK_DELIVERIES``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

Outcome = Literal["delivered", "retrying", "failed"]


class WebhookRecord(msgspec.Struct, kw_only=True, rename="camel"):
    """A registration as KV ``wf-webhooks`` stores it (the secret sealed, never in clear)."""

    id: str
    url: str
    events: list[str]
    types: list[str] | None = None
    project_id: str | None = None
    description: str | None = None
    created_by: str
    created_at: datetime
    sealed_secret: str
    """The ``whsec_`` secret sealed with the gateway's Vault (Fernet token, text)."""


class DeliveryRef(msgspec.Struct, kw_only=True, rename="camel"):
    """Which delivery: one event for one webhook (shared by its job and its attempts)."""

    delivery_id: str
    webhook_id: str
    event: str
    event_id: str | None = None
    run_id: str | None = None


class DeliveryJob(DeliveryRef, kw_only=True):
    """One event for one webhook, waiting in ``WF_WEBHOOK_JOBS``. The body is rendered once, so
    every attempt sends the same bytes under the same ``webhook-id``."""

    body: str


class AttemptRecord(DeliveryRef, kw_only=True, omit_defaults=True):
    """One delivery attempt, as the delivery log (``WF_WEBHOOK_DELIVERIES``) keeps it."""

    attempt: int
    attempted_at: datetime
    outcome: Outcome
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
