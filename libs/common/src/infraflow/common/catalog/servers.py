"""Built-in bare-metal server workflow types (Redfish steps run by the bmc-agent)."""

from __future__ import annotations

from typing import Final

from infraflow.common.catalog.model import (
    ResourceStates,
    RetryPolicy,
    WorkflowType,
    step_builder,
)

_BMC_RETRY = RetryPolicy(
    initial_interval_s=2.0,
    backoff_coefficient=2.0,
    max_interval_s=60.0,
    max_attempts=5,
    non_retryable_codes=frozenset({"BMC_AUTH_FAILED", "BMC_RESOURCE_MISSING", "CANCELLED"}),
)


_bmc = step_builder("bmc", _BMC_RETRY)
"""A step run by the bmc-agent over Redfish."""


_POWER_OFF = _bmc(
    "power_off",
    "power",
    params={"action": "force-off", "target": "Off"},
    description="Power the system off and wait for Off",
    timeout_s=300.0,
    heartbeat_timeout_s=60.0,
)
_EJECT = _bmc("eject_media", "eject_media", description="Eject virtual media")
_CLEAR_BOOT = _bmc("clear_boot_override", "clear_boot_override", description="Clear boot override")

_PROVISIONING_RETRY = RetryPolicy(
    initial_interval_s=1.0,
    backoff_coefficient=2.0,
    max_interval_s=10.0,
    max_attempts=3,
    non_retryable_codes=frozenset(
        {"CANCELLED", "INSTALLER_FAILED", "INSTALLER_CALLBACK_TIMEOUT", "VALIDATION_ERROR"}
    ),
)


_provisioning = step_builder("provisioning", _PROVISIONING_RETRY, timeout_s=60.0, estimate_ms=200)
"""A step of the ``provisioning`` executor: durable waits and per-site slots, run by the
bmc-agent of the server's site next to its BMC steps (but never in their slots)."""


_RELEASE_SLOT = _provisioning(
    "release_slot", "release_slot", description="Give the site's provisioning slot back"
)

# ---- the server state machine ------------------------------------------------------------
# States are data: a workflow type declares the states it may start from (``allowed_from``;
# anything else is 409 INVALID_STATE_TRANSITION at the gateway) and the state the server shows
# while it runs and after it ends (``states``). Only run events move a server between states.

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
SERVER_TRANSIENT_STATES: Final = frozenset(
    {"registering", "inspecting", "provisioning", "deprovisioning"}
)
"""A run is moving the server: no other state-changing workflow may start."""
SERVER_STABLE_STATES: Final = frozenset({"registered", "available", "provisioned", "error"})

_SERVER_STATES_ALL: Final = frozenset(SERVER_STATES) - {"decommissioned"}

SERVER_TYPES: tuple[WorkflowType, ...] = (
    WorkflowType(
        name="server.register",
        trigger="Atlas API",
        description="Register new bare metal server",
        resource_type="server",
        creates_resource=True,
        states=ResourceStates(running="registering", completed="registered", failed="error"),
        steps=(
            _bmc(
                "connect",
                "connect",
                description="Reach the BMC, check credentials, find the system, read identity",
                timeout_s=60.0,
            ),
            _bmc(
                "inventory",
                "inventory",
                description="Read CPU, memory, storage, NICs and GPUs where exposed",
                timeout_s=300.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=3000,
            ),
        ),
    ),
    WorkflowType(
        name="server.inspect",
        trigger="Atlas API",
        description="Hardware inspection",
        resource_type="server",
        states=ResourceStates(running="inspecting", completed="available", failed="error"),
        allowed_from=frozenset({"registered", "available", "error"}),
        steps=(
            _bmc(
                "inventory",
                "inventory",
                description="Read CPU, memory, storage, NICs and GPUs where exposed",
                timeout_s=300.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=3000,
            ),
        ),
    ),
    WorkflowType(
        name="server.provision",
        trigger="Atlas API",
        description="OS provisioning",
        resource_type="server",
        states=ResourceStates(running="provisioning", completed="provisioned", failed="error"),
        allowed_from=frozenset({"registered", "available"}),
        steps=(
            _provisioning(
                "acquire_slot",
                "acquire_slot",
                description="Wait for one of the site's provisioning slots",
                timeout_s=4 * 3600.0,
                heartbeat_timeout_s=60.0,
                compensation=_RELEASE_SLOT,
            ),
            _POWER_OFF,
            _bmc(
                "insert_media",
                "insert_media",
                params={"installer": True},
                description="Insert the installer image (with its callback) as virtual media",
                compensation=_EJECT,
            ),
            _bmc(
                "boot_once_cd",
                "set_boot_once",
                params={"device": "cd"},
                description="Boot once from the virtual CD",
                compensation=_CLEAR_BOOT,
            ),
            _bmc(
                "power_on",
                "power",
                params={"action": "on", "target": "On"},
                description="Power on into the installer",
                compensation=_POWER_OFF,
                timeout_s=300.0,
                heartbeat_timeout_s=60.0,
            ),
            _provisioning(
                "wait_installer",
                "wait_callback",
                description="Wait for the installer's provisioning callback",
                timeout_s=3600.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=600_000,
            ),
            _EJECT,
            _bmc(
                "boot_disk",
                "set_boot_once",
                params={"device": "hdd"},
                description="Boot from disk from now on",
            ),
            _bmc(
                "reboot",
                "power",
                params={"action": "force-reboot", "target": "On"},
                description="Restart into the installed system",
                timeout_s=300.0,
                heartbeat_timeout_s=60.0,
            ),
            _RELEASE_SLOT,
        ),
    ),
    WorkflowType(
        name="server.lifecycle",
        trigger="Atlas/Arc API",
        description="Lifecycle actions (power, provision, etc.)",
        resource_type="server",
        allowed_from=SERVER_STABLE_STATES,
        steps=(
            _bmc(
                "power_action",
                "power",
                description="Request the power action from the BMC",
                params={"wait": False},
            ),
            _bmc(
                "wait_power_state",
                "wait_power",
                description="Wait until the system reaches the target power state",
                timeout_s=600.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=5000,
            ),
        ),
    ),
    WorkflowType(
        name="server.decommission",
        trigger="Atlas API",
        description="Remove from inventory",
        resource_type="server",
        states=ResourceStates(running="deprovisioning", completed="decommissioned", failed="error"),
        allowed_from=SERVER_STABLE_STATES,
        steps=(
            _POWER_OFF,
            _EJECT,
            _CLEAR_BOOT,
            _bmc("forget", "forget", description="Remove the server and its BMC credentials"),
        ),
    ),
    WorkflowType(
        name="server.rotate-credentials",
        trigger="Atlas API",
        description="Replace the BMC credentials after checking them against the BMC",
        resource_type="server",
        allowed_from=SERVER_STABLE_STATES,
        steps=(
            _bmc(
                "verify_credentials",
                "verify_credentials",
                description="Log in to the BMC with the new credentials and find the system",
                timeout_s=60.0,
            ),
            _bmc(
                "commit_credentials",
                "commit_credentials",
                description="Make the new credentials the server's credentials",
                timeout_s=30.0,
                estimate_ms=200,
            ),
        ),
    ),
    WorkflowType(
        name="sync.server-state",
        trigger="Projector",
        description="Sync server power and health to the cache",
        resource_type="server",
        mutating=False,
        allowed_from=_SERVER_STATES_ALL,
        steps=(
            _bmc(
                "observe",
                "observe",
                description="Observe power and health over Redfish and record drift",
                timeout_s=60.0,
            ),
        ),
    ),
)
