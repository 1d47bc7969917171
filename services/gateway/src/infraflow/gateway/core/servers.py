"""Servers: registration, provisioning, rotation and callback checks, the credential documents,
the state machine check, and the server view (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from infraflow.common import catalog
from infraflow.common.catalog import WorkflowType
from infraflow.common.contracts import ResourceView
from infraflow.common.errors import InvalidStateTransitionError, ValidationError
from infraflow.common.ids import is_id
from infraflow.common.provisioning import INSTALLER_PARAMS
from infraflow.common.vault import redact
from infraflow.gateway.core.validation import (
    FieldErrors,
    check_dns_label,
    check_http_url,
    check_subject_token,
    check_tags,
    check_text,
)
from infraflow.gateway.schemas import (
    CredentialsRotate,
    ProvisioningCallbackBody,
    ProvisionRequest,
    Server,
    ServerBmc,
    ServerCreate,
)

DEFAULT_SITE: Final = "default"
RESOURCE_TYPE: Final = "server"
POWER_ACTIONS: Final = ("on", "off", "reboot", "shutdown", "force-off", "force-reboot")
SERVER_STATES: Final = catalog.SERVER_STATES
MAX_BATCH: Final = 100
"""Most servers one ``batchCreate`` may register."""
MAX_USER_DATA: Final = 64 * 1024
CHECKSUM_TYPES: Final = {"md5": 32, "sha256": 64, "sha512": 128}
"""Checksum algorithm -> length of its hex digest."""
WAIT_STEP: Final = "wait_installer"


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated registration: what the run may see, and the credentials it may not."""

    name: str
    site: str
    tags: dict[str, str]
    address: str
    username: str
    verify_tls: bool
    password: str

    def __repr__(self) -> str:
        return f"Registration(name={self.name!r}, site={self.site!r}, password='***')"

    def run_input(self) -> dict[str, Any]:
        """The run's input: the body without the password (redacted again to be sure)."""
        document = {
            "name": self.name,
            "bmc": {
                "address": self.address,
                "username": self.username,
                "verifyTls": self.verify_tls,
            },
            "site": self.site,
            "tags": dict(self.tags),
        }
        redacted: dict[str, Any] = redact(document)
        return redacted

    def credentials(self) -> dict[str, Any]:
        """The document sealed into ``bmc-credentials`` under the server id (with the site, so
        the site's bmc-agent knows which BMCs to poll)."""
        return {
            "address": self.address,
            "username": self.username,
            "password": self.password,
            "verifyTls": self.verify_tls,
            "site": self.site,
        }


def validate_registration(body: ServerCreate) -> Registration:
    """Check a registration body, reporting every problem at once."""
    errors = FieldErrors()
    check_dns_label(errors, "name", body.name)
    site = DEFAULT_SITE if body.site is None else body.site
    check_subject_token(errors, "site", site)
    check_http_url(errors, "bmc.address", body.bmc.address)
    check_text(errors, "bmc.username", body.bmc.username, max_length=256)
    check_text(errors, "bmc.password", body.bmc.password, max_length=1024)
    tags = body.tags or {}
    check_tags(errors, "tags", tags)
    errors.raise_if_any("the server registration is not valid")
    return Registration(
        name=body.name,
        site=site,
        tags=dict(tags),
        address=body.bmc.address,
        username=body.bmc.username,
        verify_tls=body.bmc.verify_tls,
        password=body.bmc.password,
    )


def check_transition(workflow: WorkflowType, state: str | None) -> None:
    """``INVALID_STATE_TRANSITION`` when the workflow may not start from the current state
    (``WorkflowType.allowed_from`` is the state machine); ``details.currentState`` says where
    the resource is."""
    allowed = workflow.allowed_from
    if allowed is not None and state not in allowed:
        raise InvalidStateTransitionError(
            f"{workflow.name} is not allowed while the {workflow.resource_type} is "
            f"{state or 'in an unknown state'}",
            details={"currentState": state, "allowedStates": sorted(allowed)},
        )


def provision_input(body: ProvisionRequest, workflow: WorkflowType) -> dict[str, Any]:
    """Check a provisioning request and build the run's input. ``callbackTimeoutS`` may only
    shorten the catalog's wait (the orchestrator's timeout of that step still applies)."""
    errors = FieldErrors()
    image = body.image
    check_http_url(errors, "image.url", image.url)
    if "image.url" not in errors and any(p in image.url for p in INSTALLER_PARAMS):
        errors.add("image.url", "must not carry the installer's callback parameters")
    if image.checksum_type is not None and image.checksum_type not in CHECKSUM_TYPES:
        errors.add("image.checksumType", "must be one of: " + ", ".join(CHECKSUM_TYPES))
    if image.checksum is not None:
        want = CHECKSUM_TYPES.get(image.checksum_type or "")
        if image.checksum_type is None:
            errors.add("image.checksumType", "is required with a checksum")
        elif want is not None and (
            len(image.checksum) != want
            or any(c not in "0123456789abcdefABCDEF" for c in image.checksum)
        ):
            errors.add("image.checksum", f"must be {want} hexadecimal digits")
    if body.user_data is not None and len(body.user_data.encode()) > MAX_USER_DATA:
        errors.add("userData", f"must be at most {MAX_USER_DATA} bytes")
    limit = workflow.steps[workflow.step_index(WAIT_STEP)].timeout_s
    timeout = body.callback_timeout_s
    if timeout is not None and not 1 <= timeout <= limit:
        errors.add("callbackTimeoutS", f"must be between 1 and {limit:g} seconds")
    errors.raise_if_any("the provisioning request is not valid")
    document: dict[str, Any] = {"image": {"url": image.url}}
    if image.checksum is not None:
        document["image"]["checksum"] = image.checksum.lower()
        document["image"]["checksumType"] = image.checksum_type
    if body.user_data is not None:
        document["userData"] = body.user_data
    if timeout is not None:
        document["callbackTimeoutS"] = timeout
    return document


@dataclass(frozen=True, slots=True)
class Rotation:
    """Validated new credentials: the run may see the username, never the password."""

    password: str
    username: str | None
    verify_tls: bool | None

    def __repr__(self) -> str:
        return f"Rotation(username={self.username!r}, password='***')"

    def run_input(self) -> dict[str, Any]:
        document: dict[str, Any] = {"username": self.username, "verifyTls": self.verify_tls}
        redacted: dict[str, Any] = redact({k: v for k, v in document.items() if v is not None})
        return redacted

    def candidate(self) -> dict[str, Any]:
        """Sealed under ``candidate_key``; merged over the current document by the agent."""
        document: dict[str, Any] = {"password": self.password}
        if self.username is not None:
            document["username"] = self.username
        if self.verify_tls is not None:
            document["verifyTls"] = self.verify_tls
        return document


def validate_rotation(body: CredentialsRotate) -> Rotation:
    errors = FieldErrors()
    check_text(errors, "password", body.password, max_length=1024)
    if body.username is not None:
        check_text(errors, "username", body.username, max_length=256)
    errors.raise_if_any("the new credentials are not valid")
    return Rotation(password=body.password, username=body.username, verify_tls=body.verify_tls)


def candidate_key(server_id: str, run_id: str) -> str:
    """Where new credentials wait (sealed) until their rotation run has checked them."""
    return f"{server_id}.candidate.{run_id}"


def validate_callback(server_id: str, body: ProvisioningCallbackBody) -> None:
    """The callback names a run and a server by well-formed ids and says little else."""
    errors = FieldErrors()
    if not is_id(server_id, "srv"):
        errors.add("serverId", "must be a server id (srv_...)")
    if not is_id(body.run_id, "run"):
        errors.add("runId", "must be a run id (run_...)")
    if body.message is not None:
        check_text(errors, "message", body.message, max_length=1024, allow_empty=True)
    errors.raise_if_any("the provisioning callback is not valid")


def check_batch_size(count: int) -> None:
    if not 1 <= count <= MAX_BATCH:
        raise ValidationError(
            f"a batch holds 1 to {MAX_BATCH} servers",
            details={"fields": {"servers": f"must hold 1 to {MAX_BATCH} items"}},
        )


def resource_view(data: Any) -> ResourceView:
    """Decode the projector's resource view (plain JSON)."""
    return msgspec.convert(data, ResourceView)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def server_from_view(view: ResourceView) -> Server:
    """Flatten a cached resource into the server object. Only known fields are copied, and the
    BMC block only ever carries address, username and verifyTls: credentials cannot leak."""
    attrs = view.attributes
    bmc_raw = _dict(attrs.get("bmc"))
    bmc = None
    if bmc_raw is not None:
        verify = bmc_raw.get("verifyTls")
        bmc = ServerBmc(
            address=_str(bmc_raw.get("address")),
            username=_str(bmc_raw.get("username")),
            verify_tls=verify if isinstance(verify, bool) else None,
        )
    hardware = _dict(attrs.get("hardwareSpecs")) or _dict(attrs.get("hardware"))
    tags = _dict(attrs.get("tags")) or {}
    health = attrs.get("health")
    return Server(
        id=view.id,
        name=view.name or _str(attrs.get("name")),
        state=view.state,
        power_state=_str(attrs.get("powerState")),
        site=view.site,
        project_id=view.project_id,
        tags=redact(tags),
        hardware_specs=redact(hardware) if hardware is not None else None,
        health=redact(health),
        vendor=_str(attrs.get("vendor")),
        model=_str(attrs.get("model")),
        serial=_str(attrs.get("serial")),
        bios_version=_str(attrs.get("biosVersion")),
        system_id=_str(attrs.get("systemId")),
        bmc=bmc,
        last_run_id=view.last_run_id,
        active_run_id=view.active_run_id,
        observed_at=view.observed_at,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )
