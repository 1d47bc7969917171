"""The workflow catalog: every workflow type, its steps, retry policies, timeouts and compensation.

This is data; the orchestrator executes it and the gateway publishes it
(``GET /v1/workflows/types``).
A step's ``compensation`` is the step that undoes it; on failure or cancel, the compensations of
the completed steps run in reverse order. A type whose steps are not all ``executable`` yet is
declared (so it is visible) but starting it is a ``VALIDATION_ERROR``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from infraflow.common.contracts.base import Contract


class RetryPolicy(Contract, frozen=True, kw_only=True):
    """Exponential backoff between attempts of one step (Temporal-style)."""

    initial_interval_s: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval_s: float = 60.0
    max_attempts: int = 3
    non_retryable_codes: frozenset[str] = frozenset()
    jitter: float = 0.1

    def delay_s(self, failed_attempt: int, seed: str) -> float:
        """Backoff before the attempt after ``failed_attempt`` (1-based); jitter is derived
        from ``seed`` so the same failure always yields the same delay."""
        base = self.initial_interval_s * self.backoff_coefficient ** max(failed_attempt - 1, 0)
        base = min(base, self.max_interval_s)
        if self.jitter <= 0:
            return base
        digest = hashlib.blake2b(seed.encode(), digest_size=4).digest()
        unit = int.from_bytes(digest, "big") / 0xFFFFFFFF  # in [0, 1]
        return max(0.0, base * (1.0 + self.jitter * (2.0 * unit - 1.0)))

    def allows_retry(self, failed_attempt: int, code: str, retryable: bool) -> bool:
        return (
            retryable
            and code not in self.non_retryable_codes
            and (self.max_attempts <= 0 or failed_attempt < self.max_attempts)
        )


class StepSpec(Contract, frozen=True, kw_only=True):
    """One step: who executes it, how long it may take and how it is retried."""

    name: str
    executor: str
    action: str
    description: str = ""
    timeout_s: float = 60.0
    heartbeat_timeout_s: float | None = None
    retry: RetryPolicy = RetryPolicy()
    estimate_ms: int = 1000
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    compensation: StepSpec | None = None
    executable: bool = True


class ResourceStates(Contract, frozen=True, kw_only=True):
    """The resource's state while a run of this type is active and after it ends (None: keep)."""

    running: str | None = None
    completed: str | None = None
    failed: str | None = None
    cancelled: str | None = None


class WorkflowType(Contract, frozen=True, kw_only=True):
    """A workflow type: an ordered list of steps acting on one kind of resource."""

    name: str
    trigger: str
    description: str
    resource_type: str
    steps: tuple[StepSpec, ...]
    mutating: bool = True
    creates_resource: bool = False
    states: ResourceStates = ResourceStates()
    allowed_from: frozenset[str] | None = None

    @property
    def executable(self) -> bool:
        return all(
            s.executable and (s.compensation is None or s.compensation.executable)
            for s in self.steps
        )

    @property
    def estimate_ms(self) -> int:
        return sum(s.estimate_ms for s in self.steps)

    def step_index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        raise KeyError(name)

    @property
    def has_compensation(self) -> bool:
        return any(s.compensation is not None for s in self.steps)


# ---- building blocks --------------------------------------------------------------------

_BMC_RETRY = RetryPolicy(
    initial_interval_s=2.0,
    backoff_coefficient=2.0,
    max_interval_s=60.0,
    max_attempts=5,
    non_retryable_codes=frozenset({"BMC_AUTH_FAILED", "BMC_RESOURCE_MISSING", "CANCELLED"}),
)
_K8S_RETRY = RetryPolicy(
    initial_interval_s=1.0,
    max_interval_s=30.0,
    max_attempts=5,
    non_retryable_codes=frozenset({"K8S_INVALID", "K8S_FORBIDDEN", "CANCELLED"}),
)


def _bmc(
    name: str,
    action: str,
    *,
    timeout_s: float = 120.0,
    estimate_ms: int = 2000,
    heartbeat_timeout_s: float | None = None,
    params: dict[str, Any] | None = None,
    compensation: StepSpec | None = None,
    description: str = "",
    executable: bool = True,
) -> StepSpec:
    return StepSpec(
        name=name,
        executor="bmc",
        action=action,
        description=description,
        timeout_s=timeout_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        retry=_BMC_RETRY,
        estimate_ms=estimate_ms,
        params=params or {},
        compensation=compensation,
        executable=executable,
    )


def _k8s(
    name: str,
    action: str,
    *,
    timeout_s: float = 120.0,
    estimate_ms: int = 2000,
    heartbeat_timeout_s: float | None = None,
    params: dict[str, Any] | None = None,
    compensation: StepSpec | None = None,
    description: str = "",
) -> StepSpec:
    return StepSpec(
        name=name,
        executor="k8s",
        action=action,
        description=description,
        timeout_s=timeout_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        retry=_K8S_RETRY,
        estimate_ms=estimate_ms,
        params=params or {},
        compensation=compensation,
        executable=False,  # the k8s-agent executors land with the clusters-and-VMs work
    )


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

_SERVER_STATES_ALL: Final = frozenset(
    {
        "registering",
        "registered",
        "inspecting",
        "available",
        "provisioning",
        "provisioned",
        "deprovisioning",
        "error",
    }
)

_TYPES: tuple[WorkflowType, ...] = (
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
            _POWER_OFF,
            _bmc("insert_media", "insert_media", compensation=_EJECT),
            _bmc(
                "boot_once_cd",
                "set_boot_once",
                params={"device": "cd"},
                compensation=_CLEAR_BOOT,
            ),
            _bmc(
                "power_on",
                "power",
                params={"action": "on", "target": "On"},
                compensation=_POWER_OFF,
                timeout_s=300.0,
            ),
            StepSpec(
                name="wait_installer",
                executor="callback",
                action="wait_callback",
                description="Wait for the installer's provisioning callback",
                timeout_s=3600.0,
                estimate_ms=600_000,
                retry=RetryPolicy(max_attempts=1),
                executable=False,
            ),
            _EJECT,
            _bmc("boot_disk", "set_boot_once", params={"device": "hdd"}),
        ),
    ),
    WorkflowType(
        name="server.lifecycle",
        trigger="Atlas/Arc API",
        description="Lifecycle actions (power, provision, etc.)",
        resource_type="server",
        allowed_from=frozenset({"registered", "available", "provisioned", "error"}),
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
        allowed_from=_SERVER_STATES_ALL - {"registering", "deprovisioning"},
        steps=(
            _POWER_OFF,
            _EJECT,
            _CLEAR_BOOT,
            _bmc("forget", "forget", description="Remove the server and its BMC credentials"),
        ),
    ),
    WorkflowType(
        name="cluster.create",
        trigger="Arc API",
        description="Create Kubernetes cluster",
        resource_type="cluster",
        creates_resource=True,
        states=ResourceStates(running="creating", completed="ready", failed="failed"),
        steps=(
            _k8s(
                "apply",
                "apply_cluster",
                compensation=_k8s("delete", "delete_cluster", timeout_s=900.0),
            ),
            _k8s("wait_ready", "wait_cluster_ready", timeout_s=3600.0, heartbeat_timeout_s=120.0),
        ),
    ),
    WorkflowType(
        name="cluster.scale",
        trigger="Arc API",
        description="Scale cluster nodes",
        resource_type="cluster",
        states=ResourceStates(running="scaling", completed="ready", failed="failed"),
        steps=(
            _k8s(
                "patch_workers",
                "scale_cluster",
                compensation=_k8s("restore_workers", "restore_cluster_scale"),
            ),
            _k8s("wait_ready", "wait_cluster_ready", timeout_s=3600.0, heartbeat_timeout_s=120.0),
        ),
    ),
    WorkflowType(
        name="cluster.upgrade",
        trigger="Arc API",
        description="Upgrade Kubernetes version",
        resource_type="cluster",
        states=ResourceStates(running="upgrading", completed="ready", failed="failed"),
        steps=(
            _k8s("check_upgrade", "check_cluster_upgrade"),
            _k8s("patch_template", "upgrade_cluster"),
            _k8s("wait_ready", "wait_cluster_ready", timeout_s=3600.0, heartbeat_timeout_s=120.0),
        ),
    ),
    WorkflowType(
        name="cluster.delete",
        trigger="Arc API",
        description="Delete cluster",
        resource_type="cluster",
        states=ResourceStates(running="deleting", completed="deleted", failed="failed"),
        steps=(
            _k8s("delete", "delete_cluster"),
            _k8s("wait_gone", "wait_cluster_gone", timeout_s=1800.0, heartbeat_timeout_s=120.0),
        ),
    ),
    WorkflowType(
        name="vm.create",
        trigger="Arc API",
        description="Create virtual machine",
        resource_type="vm",
        creates_resource=True,
        states=ResourceStates(running="creating", completed="running", failed="failed"),
        steps=(
            _k8s("apply", "apply_vm", compensation=_k8s("delete", "delete_vm")),
            _k8s("wait_ready", "wait_vm_ready", timeout_s=900.0, heartbeat_timeout_s=60.0),
        ),
    ),
    WorkflowType(
        name="vm.power",
        trigger="Arc API",
        description="VM power actions",
        resource_type="vm",
        steps=(
            _k8s("power_action", "power_vm"),
            _k8s("wait_status", "wait_vm_status", timeout_s=600.0, heartbeat_timeout_s=60.0),
        ),
    ),
    WorkflowType(
        name="vm.delete",
        trigger="Arc API",
        description="Delete VM",
        resource_type="vm",
        states=ResourceStates(running="deleting", completed="deleted", failed="failed"),
        steps=(
            _k8s("delete", "delete_vm"),
            _k8s("wait_gone", "wait_vm_gone", timeout_s=900.0, heartbeat_timeout_s=60.0),
        ),
    ),
    WorkflowType(
        name="sync.server-state",
        trigger="Projector",
        description="Sync K8s state to cache",
        resource_type="server",
        mutating=False,
        steps=(
            _bmc(
                "observe",
                "observe",
                description="Observe power and health over Redfish and record drift",
                timeout_s=60.0,
            ),
        ),
    ),
    WorkflowType(
        name="sync.cluster-state",
        trigger="Projector",
        description="Sync cluster state to cache",
        resource_type="cluster",
        mutating=False,
        steps=(_k8s("observe", "observe_clusters", timeout_s=300.0),),
    ),
)


class Catalog:
    """The workflow types known to this deployment, looked up by name."""

    def __init__(self, types: Iterable[WorkflowType]) -> None:
        self._types: dict[str, WorkflowType] = {}
        for t in types:
            _validate(t)
            self._types[t.name] = t

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __getitem__(self, name: str) -> WorkflowType:
        return self._types[name]

    def get(self, name: str) -> WorkflowType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def types(self) -> list[WorkflowType]:
        return [self._types[n] for n in self.names()]

    def with_types(self, extra: Iterable[WorkflowType]) -> Catalog:
        return Catalog([*self._types.values(), *extra])


def _validate(t: WorkflowType) -> None:
    """Declarations are checked when declared, not when a run trips over them."""
    if not t.steps:
        raise ValueError(f"{t.name}: a workflow needs at least one step")
    names = [s.name for s in t.steps]
    if len(set(names)) != len(names):
        raise ValueError(f"{t.name}: step names must be unique: {names}")
    for s in t.steps:
        if s.timeout_s <= 0 or (s.heartbeat_timeout_s is not None and s.heartbeat_timeout_s <= 0):
            raise ValueError(f"{t.name}.{s.name}: timeouts must be positive")
        if s.retry.max_attempts < 0 or s.retry.backoff_coefficient < 1:
            raise ValueError(f"{t.name}.{s.name}: invalid retry policy")


DEFAULT_CATALOG: Final = Catalog(_TYPES)
WORKFLOW_TYPE_NAMES: Final = tuple(t.name for t in _TYPES)


def load_catalog(extra_file: str | Path | None = None) -> Catalog:
    """The built-in catalog, plus types declared in a JSON file (a list of ``WorkflowType``
    objects; used for deployment-specific or benchmark workflows)."""
    if not extra_file:
        return DEFAULT_CATALOG
    raw = json.loads(Path(extra_file).read_text())
    extra = msgspec.convert(raw, list[WorkflowType])
    return DEFAULT_CATALOG.with_types(extra)


def describe(t: WorkflowType) -> Mapping[str, Any]:
    """The catalog entry as the REST API shows it."""
    data: dict[str, Any] = msgspec.to_builtins(t)
    data["type"] = data.pop("name")
    data["estimatedDuration"] = t.estimate_ms
    data["executable"] = t.executable
    data["compensation"] = [
        s.compensation.name for s in reversed(t.steps) if s.compensation is not None
    ]
    return data
