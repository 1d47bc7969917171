"""Servers: registration checks, the credential document, and the server view (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from infraflow.common.catalog import WorkflowType
from infraflow.common.contracts import ResourceView
from infraflow.common.errors import InvalidStateTransitionError
from infraflow.common.vault import redact
from infraflow.gateway.core.validation import (
    FieldErrors,
    check_dns_label,
    check_http_url,
    check_subject_token,
    check_tags,
    check_text,
)
from infraflow.gateway.schemas import Server, ServerBmc, ServerCreate

DEFAULT_SITE: Final = "default"
RESOURCE_TYPE: Final = "server"
POWER_ACTIONS: Final = ("on", "off", "reboot", "shutdown", "force-off", "force-reboot")
SERVER_STATES: Final = (
    "registering",
    "registered",
    "inspecting",
    "available",
    "provisioning",
    "provisioned",
    "deprovisioning",
    "decommissioned",
    "error",
)


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
        """The document sealed into ``bmc-credentials`` under the server id."""
        return {
            "address": self.address,
            "username": self.username,
            "password": self.password,
            "verifyTls": self.verify_tls,
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
    """``INVALID_STATE_TRANSITION`` when the workflow may not start from the current state."""
    allowed = workflow.allowed_from
    if allowed is not None and state not in allowed:
        raise InvalidStateTransitionError(
            f"{workflow.name} is not allowed while the {workflow.resource_type} is "
            f"{state or 'in an unknown state'}",
            details={"currentState": state, "allowedStates": sorted(allowed)},
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
