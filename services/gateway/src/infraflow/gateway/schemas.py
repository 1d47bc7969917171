"""The REST API's DTOs (request bodies and response shapes), kept apart from the wire contracts.

Request DTOs are decoded by Litestar (shape and types); the semantic checks live in ``core``.
Response envelopes are documented here; the controllers build the same shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

T = TypeVar("T")

PowerActionName = Literal["on", "off", "reboot", "shutdown", "force-off", "force-reboot"]


class Dto(msgspec.Struct, kw_only=True, rename="camel"):
    """Root of the gateway's DTOs: camelCase JSON, keyword-only."""


# ---- requests ---------------------------------------------------------------------------


class BmcCreate(Dto, kw_only=True):
    """How to reach a server's BMC. The password is sealed at rest and never shown again."""

    address: Annotated[
        str,
        msgspec.Meta(
            description="http(s) URL of the Redfish service", examples=["https://10.0.0.5"]
        ),
    ]
    username: str
    password: Annotated[str, msgspec.Meta(description="write-only; never returned")]
    verify_tls: bool = True

    def __repr__(self) -> str:  # the password must never reach a log line
        return f"BmcCreate(address={self.address!r}, username={self.username!r}, password='***')"


class ServerCreate(Dto, kw_only=True):
    """Register a bare metal server (starts ``server.register``)."""

    name: Annotated[str, msgspec.Meta(description="1-63 letters, digits or '-'")]
    bmc: BmcCreate
    site: Annotated[
        str | None,
        msgspec.Meta(description="site token (letters, digits, '-', '_'); default 'default'"),
    ] = None
    tags: dict[str, str] | None = None


class PowerRequest(Dto, kw_only=True):
    """A power action (starts ``server.lifecycle``)."""

    action: PowerActionName


class ServerBatchCreate(Dto, kw_only=True):
    """Register several servers at once (``POST /v1/servers:batchCreate``): one
    ``server.register`` run per item, each accepted or refused on its own (207)."""

    servers: Annotated[list[dict[str, Any]], msgspec.Meta(description="registration bodies")]


class ProvisionImage(Dto, kw_only=True):
    """The installer image the server boots from virtual media."""

    url: Annotated[str, msgspec.Meta(description="http(s) URL the BMC can download")]
    checksum: str | None = None
    checksum_type: Annotated[
        str | None, msgspec.Meta(description="md5, sha256 or sha512; required with checksum")
    ] = None


class ProvisionRequest(Dto, kw_only=True):
    """Install an OS (starts ``server.provision``)."""

    image: ProvisionImage
    user_data: Annotated[
        str | None, msgspec.Meta(description="handed to the installer (at most 64 KiB)")
    ] = None
    callback_timeout_s: Annotated[
        float | None,
        msgspec.Meta(
            description="how long to wait for the installer's callback, in seconds (at most "
            "the catalog's timeout of the wait_installer step)"
        ),
    ] = None


class CredentialsRotate(Dto, kw_only=True):
    """New BMC credentials (starts ``server.rotate-credentials``); they replace the stored ones
    only after the BMC accepted them. The password is sealed at once and never shown again."""

    password: Annotated[str, msgspec.Meta(description="write-only; never returned")]
    username: Annotated[str | None, msgspec.Meta(description="default: keep the current")] = None
    verify_tls: bool | None = None

    def __repr__(self) -> str:  # the password must never reach a log line
        return f"CredentialsRotate(username={self.username!r}, password='***')"


class ProvisioningCallbackBody(Dto, kw_only=True):
    """What the installer reports. Authenticated by the per-run token it was booted with
    (``Authorization: Bearer <token>``), not by a user's JWT."""

    run_id: Annotated[str, msgspec.Meta(description="the provisioning run the token names")]
    status: Literal["succeeded", "failed"]
    message: str | None = None


class RunCreate(Dto, kw_only=True):
    """Start a run of any executable workflow type (Atlas write roles)."""

    type: str
    resource_id: str | None = None
    input: dict[str, Any] | None = None


class RunRetry(Dto, kw_only=True):
    """Retry a failed or cancelled run as a new run; steps before ``fromStep`` keep their
    recorded outputs and are not executed again."""

    from_step: str | None = None


class RunCancel(Dto, kw_only=True):
    """Cancel a pending or running run; ``terminate`` skips compensation (admins only)."""

    reason: str | None = None
    terminate: bool = False


# ---- responses --------------------------------------------------------------------------


class ServerBmc(Dto, kw_only=True):
    address: str | None = None
    username: str | None = None
    verify_tls: bool | None = None


class Server(Dto, kw_only=True):
    """A server as the read model knows it. Credentials are never part of it."""

    id: str
    name: str | None = None
    state: str | None = None
    power_state: str | None = None
    site: str | None = None
    project_id: str | None = None
    tags: dict[str, Any] = msgspec.field(default_factory=dict)
    hardware_specs: dict[str, Any] | None = None
    health: Any = None
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    bios_version: str | None = None
    system_id: Annotated[str | None, msgspec.Meta(description="Redfish ComputerSystem id")] = None
    bmc: ServerBmc | None = None
    last_run_id: str | None = None
    active_run_id: str | None = None
    observed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class BatchItemResult(Dto, kw_only=True, omit_defaults=True):
    """One item of a batch: its index and HTTP-like status, then either the accepted run
    (``data`` and ``meta`` as in a 202) or the ``error`` envelope body of a refusal."""

    index: int
    status: int
    success: bool
    data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    error: ErrorBody | None = None


class BatchResult(Dto, kw_only=True):
    """The 207 body of ``POST /v1/servers:batchCreate``: one result per item, in order."""

    results: list[BatchItemResult]
    accepted: int
    failed: int


class CallbackReceipt(Dto, kw_only=True):
    """The installer's callback was recorded (``duplicate``: an earlier one already was)."""

    run_id: str
    server_id: str
    status: str
    duplicate: bool = False


class Pagination(Dto, kw_only=True):
    page_size: int
    has_more: bool
    next_cursor: str | None = None


class Meta(Dto, kw_only=True, omit_defaults=True):
    """Always ``requestId`` and ``timestamp``; the rest depends on the operation."""

    request_id: Annotated[str, msgspec.Meta(examples=["req_local-1735689600000-0123456789ab"])]
    timestamp: Annotated[str, msgspec.Meta(examples=["2025-01-01T00:00:00.000Z"])]
    workflow_id: str | None = None
    estimated_duration: Annotated[int | None, msgspec.Meta(description="milliseconds")] = None
    pagination: Pagination | None = None


class Envelope(Dto, Generic[T], kw_only=True):
    """Every successful response."""

    success: Literal[True]
    data: T
    meta: Meta


class ErrorBody(Dto, kw_only=True):
    code: Annotated[
        str,
        msgspec.Meta(
            examples=["VALIDATION_ERROR"],
            description="VALIDATION_ERROR, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED,"
            " CONFLICT, INVALID_STATE_TRANSITION, RESOURCE_BUSY, PAYLOAD_TOO_LARGE, RATE_LIMITED,"
            " INTERNAL_ERROR, SERVICE_UNAVAILABLE",
        ),
    ]
    message: str
    details: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(
            description="VALIDATION_ERROR: fields (field -> message); "
            "INVALID_STATE_TRANSITION: currentState, allowedStates"
        ),
    ] = None


class ErrorEnvelope(Dto, kw_only=True):
    """Every error response."""

    success: Literal[False]
    error: ErrorBody
    meta: Meta


class Health(Dto, kw_only=True, omit_defaults=True):
    status: str
    checks: dict[str, bool] | None = None
