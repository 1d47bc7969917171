"""``/v1/webhooks``: register, list, read and delete webhooks, read a webhook's delivery log
and send it a test ping. Deliveries follow Standard Webhooks (see ``WebhookCreated.secret``)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from infraflow.gateway.controllers.support import READ_ERRORS, error_responses, query
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.validation import FieldErrors, parse_page_size
from infraflow.gateway.responses import ok
from infraflow.gateway.schemas import Envelope
from infraflow.gateway.webhooks.operations import WebhookOperations
from infraflow.gateway.webhooks.schemas import Delivery, Webhook, WebhookCreate, WebhookCreated

_DELIVERY: Final = (
    "Each delivery is a POST with a JSON body `{type, timestamp, data}` and the Standard "
    "Webhooks headers `webhook-id` (the delivery id, the same on every attempt: deduplicate "
    "by it), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`. A 2xx "
    "answer delivers it; anything else (or no answer within the timeout, or a redirect) is "
    "retried with exponential backoff for hours. Delivery is at least once."
)
_MANAGE_ERRORS: Final = (400, 401, 403, 404, 500, 503)


class WebhookController(Controller):
    """Webhooks (global for Atlas write roles, per project for Arc admins and members)."""

    path = "/v1/webhooks"
    tags = ["webhooks"]

    @post(
        "/",
        operation_id="createWebhook",
        summary="Register a webhook; its signing secret is shown once",
        description=_DELIVERY
        + " Destinations on loopback, private, link-local (cloud metadata) or other non-public "
        "addresses are refused (400, `details.fields.url`) unless the operator allowlisted the "
        "network; the check is repeated on the resolved address at every delivery.",
        status_code=201,
        responses=error_responses(*_MANAGE_ERRORS, 413),
    )
    async def create_webhook(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[WebhookCreate],
        webhooks: NamedDependency[WebhookOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[WebhookCreated]]:
        created = await webhooks.create(principal, data)
        return ok(
            request,
            created,
            status_code=201,
            headers={"Location": f"/v1/webhooks/{created.id}"},
        )

    @get(
        "/",
        operation_id="listWebhooks",
        summary="List the webhooks the caller can see, newest first",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_webhooks(
        self,
        request: Request[Any, Any, Any],
        webhooks: NamedDependency[WebhookOperations],
        principal: NamedDependency[Principal],
        page_size: Annotated[str | None, query("pageSize", "1-500, default 50")] = None,
        page_token: Annotated[str | None, query("pageToken", "meta.pagination.nextCursor")] = None,
    ) -> Response[Envelope[list[Webhook]]]:
        size = _page(page_size, page_token)
        items, has_more, cursor = await webhooks.list(principal, size, page_token)
        return ok(request, items, pagination=_pagination(size, has_more, cursor))

    @get(
        "/{webhook_id:str}",
        operation_id="getWebhook",
        summary="A webhook (without its secret)",
        responses=error_responses(*READ_ERRORS),
    )
    async def get_webhook(
        self,
        request: Request[Any, Any, Any],
        webhook_id: FromPath[str],
        webhooks: NamedDependency[WebhookOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[Webhook]]:
        return ok(request, await webhooks.get(principal, webhook_id))

    @delete(
        "/{webhook_id:str}",
        operation_id="deleteWebhook",
        summary="Delete a webhook; pending deliveries are dropped, its log removed",
        status_code=200,
        responses=error_responses(*_MANAGE_ERRORS),
    )
    async def delete_webhook(
        self,
        request: Request[Any, Any, Any],
        webhook_id: FromPath[str],
        webhooks: NamedDependency[WebhookOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[Webhook]]:
        return ok(request, await webhooks.delete(principal, webhook_id))

    @get(
        "/{webhook_id:str}/deliveries",
        operation_id="listWebhookDeliveries",
        summary="The delivery log: deliveries newest first, each with every attempt",
        description="Each attempt has its time, outcome, the receiver's status code, the "
        "latency and the error that made it fail. Kept for 7 days.",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_deliveries(
        self,
        request: Request[Any, Any, Any],
        webhook_id: FromPath[str],
        webhooks: NamedDependency[WebhookOperations],
        principal: NamedDependency[Principal],
        page_size: Annotated[str | None, query("pageSize", "1-500, default 50")] = None,
        page_token: Annotated[str | None, query("pageToken", "meta.pagination.nextCursor")] = None,
    ) -> Response[Envelope[list[Delivery]]]:
        size = _page(page_size, page_token)
        page = await webhooks.deliveries(principal, webhook_id, size, page_token)
        return ok(
            request, page.items, pagination=_pagination(size, page.has_more, page.next_cursor)
        )

    @post(
        "/{webhook_id:str}/test",
        operation_id="testWebhook",
        summary="Send a test ping (event webhook.test) now and report the attempt",
        description="One signed attempt, no retries; recorded in the delivery log. 200 whether "
        "or not the receiver accepted it: see `data.status` and `data.lastStatusCode`.",
        status_code=200,
        responses=error_responses(*_MANAGE_ERRORS),
    )
    async def test_webhook(
        self,
        request: Request[Any, Any, Any],
        webhook_id: FromPath[str],
        webhooks: NamedDependency[WebhookOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[Delivery]]:
        return ok(request, await webhooks.test(principal, webhook_id))


def _page(page_size: str | None, page_token: str | None) -> int:
    errors = FieldErrors()
    size = parse_page_size(errors, page_size)
    if page_token is not None and not 0 < len(page_token) <= 64:
        errors.add("pageToken", "must be a token returned as meta.pagination.nextCursor")
    errors.raise_if_any("the paging parameters are not valid")
    return size


def _pagination(size: int, has_more: bool, cursor: str | None) -> dict[str, Any]:
    return {"pageSize": size, "hasMore": has_more, "nextCursor": cursor}
