"""Server use cases beyond one registration: provisioning, forced decommission, credential
rotation, batch registration, and the installer's provisioning callback.

They run through the same ``Operations`` (lookups scoped to the caller, the state machine check
of ``start_on_server``, the launcher), so every server action answers the same way; this module
only keeps them out of the generic facade. Secrets stay out of runs: new credentials are sealed
as a candidate before the run starts, and the callback token is checked, never stored or logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from infraflow.common.contracts import encode
from infraflow.common.errors import InfraflowError, ValidationError
from infraflow.common.ids import new_id
from infraflow.common.provisioning import ProvisioningCallback, callback_key, verify_callback_token
from infraflow.common.streams import KV_CREDENTIALS, KV_PROVISIONING
from infraflow.common.vault import Vault
from infraflow.gateway.core import access, servers
from infraflow.gateway.core.errors import UnauthorizedError
from infraflow.gateway.core.runs import RunIds, RunPlan
from infraflow.gateway.core.validation import decoder_field_error
from infraflow.gateway.launcher import Accepted
from infraflow.gateway.schemas import (
    CallbackReceipt,
    CredentialsRotate,
    ProvisioningCallbackBody,
    ProvisionRequest,
    ServerBatchCreate,
    ServerCreate,
)

if TYPE_CHECKING:
    from infraflow.gateway.operations import Caller, Operations

log = logging.getLogger(__name__)

BATCH_CONCURRENCY = 8
"""Registrations of one batch started at a time (each waits for its own acknowledgement)."""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One item of a batch registration: accepted, or refused with an error."""

    index: int
    accepted: Accepted | None = None
    error: InfraflowError | None = None


class ServerOperations:
    """See the module docstring; reached as ``Operations.servers`` (and part of it: it uses the
    facade's lookups and launcher helpers, which are private to the gateway's operations)."""

    def __init__(
        self, ops: Operations, *, vault: Vault | None, callback_keys: Sequence[bytes]
    ) -> None:
        self._ops = ops
        self._vault = vault
        self._callback_keys = tuple(callback_keys)

    async def provision(self, caller: Caller, server_id: str, body: ProvisionRequest) -> Accepted:
        """``server.provision``: the request is checked before the server is looked up."""
        run_input = servers.provision_input(body, self._ops._executable("server.provision"))
        return await self._ops.start_on_server(caller, "server.provision", server_id, run_input)

    async def decommission(self, caller: Caller, server_id: str, force: bool) -> Accepted:
        """``server.decommission``; ``force`` removes the server even if its BMC refuses."""
        run_input = {"force": True} if force else None
        return await self._ops.start_on_server(caller, "server.decommission", server_id, run_input)

    async def rotate_credentials(
        self, caller: Caller, server_id: str, body: CredentialsRotate
    ) -> Accepted:
        """``server.rotate-credentials``: the new credentials are sealed as a candidate at once
        and replace the current ones only after the BMC accepted them."""
        access.require_fleet_writer(caller.principal)
        rotation = servers.validate_rotation(body)
        workflow = self._ops._executable("server.rotate-credentials")
        vault = self._vault
        if vault is None:
            raise InfraflowError("no credential key is configured")
        ops = self._ops

        async def prepare(ids: RunIds) -> RunPlan:
            view = await ops._server_view(caller.principal, server_id)
            servers.check_transition(workflow, view.state)
            sealed = vault.seal(rotation.candidate())
            await ops.broker.kv_put(
                KV_CREDENTIALS, servers.candidate_key(view.id, ids.run_id), sealed
            )
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=servers.RESOURCE_TYPE,
                resource_id=view.id,
                input=rotation.run_input(),
                site=view.site,
                project_id=view.project_id,
            )

        return await ops._start(caller, prepare, RunIds(new_id("run")))

    async def register_batch(self, caller: Caller, body: ServerBatchCreate) -> list[BatchOutcome]:
        """One ``server.register`` per item, each accepted or refused on its own. With an
        ``Idempotency-Key``, item ``i`` uses ``<key>#i``: a repeated batch gets its runs back."""
        access.require_fleet_writer(caller.principal)
        servers.check_batch_size(len(body.servers))
        self._ops.broker.require_available()
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(index: int, raw: dict[str, Any]) -> BatchOutcome:
            async with gate:
                try:
                    item = _registration_body(raw)
                    accepted = await self._ops.register_server(
                        _item_caller(caller, index, raw), item
                    )
                except InfraflowError as exc:
                    return BatchOutcome(index, error=exc)
                return BatchOutcome(index, accepted=accepted)

        return list(await asyncio.gather(*(one(i, raw) for i, raw in enumerate(body.servers))))

    async def record_callback(
        self, server_id: str, token: str, body: ProvisioningCallbackBody
    ) -> CallbackReceipt:
        """The installer's callback: check its per-run token, record it once (the waiting step
        reads it durably), never log or store the token."""
        servers.validate_callback(server_id, body)
        if not verify_callback_token(self._callback_keys, server_id, body.run_id, token):
            raise UnauthorizedError("the provisioning token is not valid for this server and run")
        record = ProvisioningCallback(
            run_id=body.run_id,
            server_id=server_id,
            status=body.status,
            message=body.message,
            received_at=datetime.now(UTC),
        )
        created = await self._ops.broker.kv_create(
            KV_PROVISIONING, callback_key(body.run_id), encode(record)
        )
        log.info(
            "provisioning callback for run %s on %s: %s%s",
            body.run_id,
            server_id,
            body.status,
            "" if created is not None else " (already recorded)",
        )
        return CallbackReceipt(
            run_id=body.run_id,
            server_id=server_id,
            status=body.status,
            duplicate=created is None,
        )


def _registration_body(raw: Any) -> ServerCreate:
    """One batch item as a registration body; decoding errors name the item's own fields."""
    try:
        return msgspec.convert(raw, ServerCreate)
    except msgspec.ValidationError as exc:
        field, message = decoder_field_error(str(exc))
        raise ValidationError(
            "the server registration is not valid", details={"fields": {field: message}}
        ) from exc


def _item_caller(caller: Caller, index: int, raw: Any) -> Caller:
    """The caller of one batch item: its own idempotency identity derived from the batch's."""
    repeat = caller.idempotency
    if repeat is None:
        return caller
    item = dataclasses.replace(
        repeat, key=f"{repeat.key}#{index}", path=f"{repeat.path}#{index}", body=raw
    )
    return dataclasses.replace(caller, idempotency=item)
