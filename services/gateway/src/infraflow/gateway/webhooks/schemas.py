"""The webhook API's DTOs (``/v1/webhooks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from infraflow.gateway.schemas import Dto

WebhookEventName = Literal[
    "run.started", "run.completed", "run.failed", "run.cancelled", "step.failed", "*"
]


class WebhookCreate(Dto, kw_only=True):
    """Register a webhook. Atlas write roles register global ones (every project's runs, or
    one project's with ``projectId``); Arc admins and members register them for their projects
    (``projectId`` required)."""

    url: Annotated[
        str,
        msgspec.Meta(
            description="http(s) URL receiving the POSTs; loopback, private, link-local and "
            "other non-public destinations are refused unless allowlisted by the operator",
            examples=["https://hooks.example.com/infraflow"],
        ),
    ]
    events: Annotated[
        list[WebhookEventName],
        msgspec.Meta(description="events to receive; `*` for all", min_length=1, max_length=6),
    ]
    types: (
        Annotated[
            list[str],
            msgspec.Meta(
                description="only runs of these workflow types (exact, or `prefix.*`); "
                "all if absent",
                max_length=64,
            ),
        ]
        | None
    ) = None
    project_id: Annotated[
        str | None, msgspec.Meta(description="only runs of this project (required for Arc users)")
    ] = None
    description: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Webhook(Dto, kw_only=True):
    """A registered webhook. The signing secret is shown only once, at creation."""

    id: Annotated[str, msgspec.Meta(examples=["whk_0Ksq8xJ2bE1yQwzP3nT5vR7uLm"])]
    url: str
    events: list[str]
    types: list[str] | None = None
    project_id: str | None = None
    description: str | None = None
    created_by: str
    created_at: datetime


class WebhookCreated(Webhook, kw_only=True):
    """The new webhook and its signing secret (shown this once; store it now)."""

    secret: Annotated[
        str,
        msgspec.Meta(
            description="Standard Webhooks signing secret `whsec_<base64>`: verify "
            "`webhook-signature: v1,<base64 HMAC-SHA256(key, id.timestamp.body)>` where key is "
            "the base64-decoded part after `whsec_`",
        ),
    ]


class DeliveryAttempt(Dto, kw_only=True):
    """One attempt of a delivery."""

    attempt: int
    attempted_at: datetime
    outcome: Literal["delivered", "retrying", "failed"]
    status_code: Annotated[int | None, msgspec.Meta(description="the receiver's HTTP status")] = (
        None
    )
    latency_ms: int | None = None
    error: Annotated[str | None, msgspec.Meta(description="why it did not count as delivered")] = (
        None
    )


class Delivery(Dto, kw_only=True):
    """One event sent (or being sent) to a webhook, with every attempt. ``status``:
    ``delivered`` (a 2xx answer), ``retrying`` (next attempt at ``nextAttemptAt``) or
    ``failed`` (gave up after the last attempt, or a test ping that was not delivered)."""

    id: Annotated[str, msgspec.Meta(description="also the `webhook-id` header of every attempt")]
    webhook_id: str
    event: str
    event_id: str | None = None
    run_id: str | None = None
    status: Literal["delivered", "retrying", "failed"]
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    first_attempt_at: datetime
    last_attempt_at: datetime
    next_attempt_at: datetime | None = None
    history: list[DeliveryAttempt]
