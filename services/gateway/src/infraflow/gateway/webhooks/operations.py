"""The webhook API's use cases: who may register, see, test and delete which webhooks, and
what a registration must look like.

Global webhooks (no ``projectId``) belong to the provider: Atlas read roles see them, Atlas
write roles manage them. Project webhooks are seen by anyone who sees the project and managed
by Atlas write roles and the project's admins and members; a webhook of a project the caller
cannot see is ``NOT_FOUND``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, TypeVar

from infraflow.common.catalog import Catalog
from infraflow.common.contracts.webhooks import AttemptRecord, WebhookRecord
from infraflow.common.errors import NotFoundError, ValidationError
from infraflow.common.ids import is_id, new_id
from infraflow.common.vault import Vault
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.errors import ForbiddenError
from infraflow.gateway.core.request_ids import format_timestamp
from infraflow.gateway.core.validation import SUBJECT_TOKEN, FieldErrors, check_text
from infraflow.gateway.webhooks import model, signing
from infraflow.gateway.webhooks.deliveries import DeliveryLog, DeliveryPage, fold
from infraflow.gateway.webhooks.dispatcher import WebhookDispatcher
from infraflow.gateway.webhooks.schemas import Delivery, Webhook, WebhookCreate, WebhookCreated
from infraflow.gateway.webhooks.ssrf import (
    DestinationBlockedError,
    DestinationGuard,
    DestinationUnresolvableError,
    url_problem,
)
from infraflow.gateway.webhooks.store import WebhookStore

W = TypeVar("W", bound=Webhook)
_MIRROR_WAIT_S: Final = 2.0
_TYPE_PATTERN_MAX: Final = 128


class WebhookOperations:
    """Registration, reads, deletion and the test ping."""

    def __init__(
        self,
        store: WebhookStore,
        deliveries: DeliveryLog,
        dispatcher: WebhookDispatcher,
        guard: DestinationGuard,
        vault: Vault,
        catalog: Catalog,
        max_webhooks: int,
    ) -> None:
        self._store = store
        self._log = deliveries
        self._dispatcher = dispatcher
        self._guard = guard
        self._vault = vault
        self._catalog = catalog
        self._max = max_webhooks

    async def create(self, principal: Principal, body: WebhookCreate) -> WebhookCreated:
        errors = FieldErrors()
        if body.project_id is None:
            if not principal.is_fleet_writer:
                raise ForbiddenError(
                    "global webhooks need an Atlas write role; project users give projectId"
                )
        elif not SUBJECT_TOKEN.match(body.project_id):
            errors.add("projectId", "must be 1-63 letters, digits, '-' or '_'")
        else:
            _authorize_manage(principal, body.project_id)
        self._check(errors, body)
        errors.raise_if_any("the webhook is not valid")
        try:
            await self._guard.resolve(body.url)
        except (DestinationBlockedError, DestinationUnresolvableError) as exc:
            raise ValidationError(
                "the webhook destination is not allowed", details={"fields": {"url": exc.message}}
            ) from exc
        await self._store.loaded(_MIRROR_WAIT_S)
        if len(self._store.all()) >= self._max:
            raise ValidationError(
                f"at most {self._max} webhooks may be registered",
                details={"fields": {"url": "the webhook limit is reached"}},
            )
        secret = signing.new_secret()
        record = WebhookRecord(
            id=new_id(model.WEBHOOK_PREFIX),
            url=body.url,
            events=sorted(set(body.events)),
            types=sorted(set(body.types)) if body.types is not None else None,
            project_id=body.project_id,
            description=body.description,
            created_by=principal.subject,
            created_at=datetime.now(UTC),
            sealed_secret=self._vault.seal({"secret": secret}).decode(),
        )
        await self._store.create(record)
        return _public(record, WebhookCreated, secret=secret)

    def _check(self, errors: FieldErrors, body: WebhookCreate) -> None:
        problem = url_problem(body.url)
        if problem is not None:
            errors.add("url", problem)
        if len(set(body.events)) != len(body.events):
            errors.add("events", "must not repeat an event")
        if body.types is not None:
            known = {t.name for t in self._catalog.types()}
            for index, pattern in enumerate(body.types):
                if not _type_known(pattern, known):
                    errors.add(
                        f"types[{index}]",
                        "must be a workflow type (GET /v1/workflows/types) or 'prefix.*'",
                    )
        if body.description is not None:
            check_text(errors, "description", body.description, max_length=256, allow_empty=True)

    async def list(
        self, principal: Principal, page_size: int, cursor: str | None
    ) -> tuple[list[Webhook], bool, str | None]:
        """Visible webhooks, newest first; ``cursor`` is the last id of the previous page."""
        await self._store.loaded(_MIRROR_WAIT_S)
        visible = [w for w in self._store.all() if _sees(principal, w)]
        if cursor is not None:
            visible = [w for w in visible if w.id < cursor]
        page = visible[:page_size]
        has_more = len(visible) > page_size
        return [_public(w) for w in page], has_more, page[-1].id if has_more and page else None

    async def get(self, principal: Principal, webhook_id: str) -> Webhook:
        return _public(await self._visible(principal, webhook_id))

    async def delete(self, principal: Principal, webhook_id: str) -> Webhook:
        record = await self._visible(principal, webhook_id)
        _authorize_manage(principal, record.project_id)
        await self._store.delete(record.id)
        await self._log.forget(record.id)
        return _public(record)

    async def deliveries(
        self, principal: Principal, webhook_id: str, page_size: int, cursor: str | None
    ) -> DeliveryPage:
        record = await self._visible(principal, webhook_id)
        return await self._log.page(record.id, page_size, cursor)

    async def test(self, principal: Principal, webhook_id: str) -> Delivery:
        """Send a ``webhook.test`` event now (one attempt, recorded in the delivery log)."""
        record = await self._visible(principal, webhook_id)
        _authorize_manage(principal, record.project_id)
        now = datetime.now(UTC)
        delivery_id = new_id(model.DELIVERY_PREFIX)
        body = model.ping_body(record, format_timestamp(now))
        result = await self._dispatcher.attempt(record, delivery_id, body)
        attempt = AttemptRecord(
            delivery_id=delivery_id,
            webhook_id=record.id,
            event=model.TEST_EVENT,
            attempt=1,
            attempted_at=now,
            outcome="delivered" if result.delivered else "failed",
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
        )
        await self._log.record(attempt)
        return fold([attempt])[0]

    async def _visible(self, principal: Principal, webhook_id: str) -> WebhookRecord:
        if not is_id(webhook_id, model.WEBHOOK_PREFIX):
            raise NotFoundError("no such webhook")
        record = await self._store.get(webhook_id)
        if record is None or not _sees(principal, record):
            raise NotFoundError("no such webhook")
        return record


def _sees(principal: Principal, webhook: WebhookRecord) -> bool:
    if webhook.project_id is None:
        return principal.is_fleet_reader
    return principal.sees_project(webhook.project_id)


def _authorize_manage(principal: Principal, project_id: str | None) -> None:
    """Global: Atlas write roles. Project: also its admins and members; viewers 403,
    outsiders 404."""
    if project_id is None:
        if not principal.is_fleet_writer:
            raise ForbiddenError("managing global webhooks needs an Atlas write role")
        return
    if not principal.sees_project(project_id):
        raise NotFoundError("no such project")
    if not principal.acts_in_project(project_id):
        raise ForbiddenError("managing webhooks needs the admin or member project role")


def _type_known(pattern: str, known: set[str]) -> bool:
    if len(pattern) > _TYPE_PATTERN_MAX:
        return False
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return len(prefix) > 1 and any(name.startswith(prefix) for name in known)
    return pattern in known


def _public(record: WebhookRecord, cls: type[W] = Webhook, **extra: str) -> W:  # type: ignore[assignment]
    """The API's view of a registration (never the sealed secret)."""
    return cls(
        id=record.id,
        url=record.url,
        events=record.events,
        types=record.types,
        project_id=record.project_id,
        description=record.description,
        created_by=record.created_by,
        created_at=record.created_at,
        **extra,
    )
