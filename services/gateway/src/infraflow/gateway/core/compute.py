"""Clusters and VMs (Arc, project-scoped): request checks, the run inputs, the cache views and
the upgrade rule (pure).

Clusters and VMs live in a Kubernetes namespace named after their project, so a project id used
here must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters).
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from infraflow.common.contracts import ResourceView
from infraflow.common.errors import ConflictError, NotFoundError
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.errors import ForbiddenError
from infraflow.gateway.core.validation import FieldErrors, check_dns_label, invalid
from infraflow.gateway.schemas_k8s import (
    Cluster,
    ClusterCreate,
    Condition,
    GpuRequest,
    Vm,
    VmCreate,
)

CLUSTER: Final = "cluster"
VM: Final = "vm"
PREFIX: Final = {CLUSTER: "cls", VM: "vm"}
CLUSTER_STATES: Final = (
    "creating",
    "ready",
    "scaling",
    "upgrading",
    "deleting",
    "deleted",
    "failed",
)
VM_STATES: Final = ("creating", "ready", "deleting", "deleted", "failed")
MAX_WORKERS: Final = 1000
MAX_CONTROL_PLANES: Final = 9
MAX_CPU: Final = 256
MAX_MEMORY_GIB: Final = 4096.0
MAX_GPUS: Final = 16
MAX_CONFIG_BYTES: Final = 64 * 1024
MAX_KEYS: Final = 64
_PROJECT: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_OBJECT_REF: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_QUALIFIED_KEY: Final = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE: Final = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_RESERVED: Final = ("infraflow.dev/", "app.kubernetes.io/managed-by")
_IMAGE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,510}$")
_CONFIG_COUNTS: Final = ("workersNumber", "controlPlaneNumber")


def check_project(project_id: str) -> None:
    """``VALIDATION_ERROR`` unless the project id can name a namespace."""
    if not _PROJECT.match(project_id):
        raise invalid(
            "project",
            "clusters and VMs need a project id that is a DNS-1123 label "
            "(lowercase letters, digits and '-', at most 63 characters)",
        )


def authorize_read(principal: Principal, project_id: str) -> None:
    """Readers of a project (Atlas roles, or any role in the project); others get 404."""
    if not principal.sees_project(project_id):
        raise NotFoundError("no such project")


def authorize_write(principal: Principal, project_id: str) -> None:
    """Atlas write roles, or project admins and members; viewers get 403, outsiders 404."""
    authorize_read(principal, project_id)
    if not principal.acts_in_project(project_id):
        raise ForbiddenError("changing clusters and VMs needs the admin or member project role")


def _check_int(errors: FieldErrors, field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        errors.add(field, f"must be an integer between {low} and {high}")


def _check_ref(errors: FieldErrors, field: str, value: str) -> None:
    if not _OBJECT_REF.match(value):
        errors.add(field, "must be a Kubernetes object name (lowercase letters, digits, '-', '.')")


def _check_map(
    errors: FieldErrors, field: str, values: dict[str, str] | None, *, label_values: bool
) -> None:
    if not values:
        return
    if len(values) > MAX_KEYS:
        errors.add(field, f"at most {MAX_KEYS} entries")
        return
    for key, value in values.items():
        if not _QUALIFIED_KEY.match(key):
            errors.add(f"{field}.{key[:63]}", "keys are Kubernetes qualified names")
        elif any(key == r or key.startswith(r) for r in _RESERVED):
            errors.add(f"{field}.{key}", "keys under infraflow.dev/ are reserved")
        elif label_values and not _LABEL_VALUE.match(value):
            errors.add(f"{field}.{key}", "label values are up to 63 letters, digits, '-_.'")
        elif len(value) > 4096:
            errors.add(f"{field}.{key}", "must be at most 4096 characters")


def cluster_input(body: ClusterCreate) -> dict[str, Any]:
    """Check a cluster creation, reporting every problem; the run's input."""
    errors = FieldErrors()
    check_dns_label(errors, "name", body.name)
    _check_ref(errors, "template", body.template)
    _check_ref(errors, "credential", body.credential)
    _check_int(errors, "workers", body.workers, 0, MAX_WORKERS)
    planes = 1 if body.control_planes is None else body.control_planes
    _check_int(errors, "controlPlanes", planes, 1, MAX_CONTROL_PLANES)
    config = body.config or {}
    if len(msgspec.json.encode(config)) > MAX_CONFIG_BYTES:
        errors.add("config", f"must be at most {MAX_CONFIG_BYTES} bytes of JSON")
    for key in _CONFIG_COUNTS:
        if key in config:
            errors.add(f"config.{key}", "set it with workers / controlPlanes instead")
    _check_map(errors, "labels", body.labels, label_values=True)
    _check_map(errors, "annotations", body.annotations, label_values=False)
    errors.raise_if_any("the cluster is not valid")
    run_input: dict[str, Any] = {
        "name": body.name,
        "template": body.template,
        "credential": body.credential,
        "workers": body.workers,
        "controlPlanes": planes,
        "config": config,
    }
    if body.labels:
        run_input["labels"] = dict(body.labels)
    if body.annotations:
        run_input["annotations"] = dict(body.annotations)
    return run_input


def check_workers(workers: int) -> None:
    errors = FieldErrors()
    _check_int(errors, "workers", workers, 0, MAX_WORKERS)
    errors.raise_if_any("the scale request is not valid")


def check_template(template: str) -> None:
    errors = FieldErrors()
    _check_ref(errors, "template", template)
    errors.raise_if_any("the upgrade request is not valid")


def vm_input(body: VmCreate) -> dict[str, Any]:
    """Check a VM creation, reporting every problem; the run's input."""
    errors = FieldErrors()
    check_dns_label(errors, "name", body.name)
    _check_int(errors, "cpu", body.cpu, 1, MAX_CPU)
    if not 0.125 <= body.memory_gib <= MAX_MEMORY_GIB:
        errors.add("memoryGiB", f"must be between 0.125 and {MAX_MEMORY_GIB:g}")
    elif body.memory_gib * 1024 != int(body.memory_gib * 1024):
        errors.add("memoryGiB", "must be a whole number of MiB")
    if not _IMAGE.match(body.image):
        errors.add("image", "must be a container image reference")
    gpus = body.gpus or []
    total = 0
    for i, gpu in enumerate(gpus):
        if not _QUALIFIED_KEY.match(gpu.type):
            errors.add(f"gpus[{i}].type", "must be a device name such as nvidia.com/A100")
        _check_int(errors, f"gpus[{i}].count", gpu.count, 1, MAX_GPUS)
        total += gpu.count
    if total > MAX_GPUS:
        errors.add("gpus", f"at most {MAX_GPUS} GPUs per VM")
    _check_map(errors, "labels", body.labels, label_values=True)
    _check_map(errors, "annotations", body.annotations, label_values=False)
    errors.raise_if_any("the VM is not valid")
    run_input: dict[str, Any] = {
        "name": body.name,
        "cpu": body.cpu,
        "memoryGiB": body.memory_gib,
        "image": body.image,
        "running": body.running,
    }
    if gpus:
        run_input["gpus"] = [{"type": g.type, "count": g.count} for g in gpus]
    if body.labels:
        run_input["labels"] = dict(body.labels)
    if body.annotations:
        run_input["annotations"] = dict(body.annotations)
    return run_input


def check_upgrade(view: ResourceView, template: str) -> None:
    """``CONFLICT`` (409) unless ``template`` is one of the cached ``availableUpgrades``."""
    offered = view.attributes.get("availableUpgrades")
    available = [str(t) for t in offered] if isinstance(offered, list) else []
    if template not in available:
        raise ConflictError(
            f"{template} is not an available upgrade of this cluster",
            details={
                "template": template,
                "currentTemplate": view.attributes.get("template"),
                "availableUpgrades": available,
            },
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _conditions(value: Any) -> list[Condition]:
    out: list[Condition] = []
    for c in value if isinstance(value, list) else []:
        if isinstance(c, dict) and isinstance(c.get("type"), str):
            out.append(
                Condition(
                    type=c["type"],
                    status=str(c.get("status", "Unknown")),
                    reason=_str(c.get("reason")),
                    message=_str(c.get("message")),
                    last_transition_time=_str(c.get("lastTransitionTime")),
                )
            )
    return out


def cluster_from_view(view: ResourceView) -> Cluster:
    """The cluster object of the API from a cached resource (known fields only)."""
    a = view.attributes
    upgrades = a.get("availableUpgrades")
    return Cluster(
        id=view.id,
        name=view.name or _str(a.get("name")),
        project_id=view.project_id,
        state=view.state,
        phase=_str(a.get("phase")),
        ready=_bool(a.get("ready")),
        conditions=_conditions(a.get("conditions")),
        template=_str(a.get("template")),
        credential=_str(a.get("credential")),
        workers=_int(a.get("workers")),
        control_planes=_int(a.get("controlPlanes")),
        version=_str(a.get("version")),
        available_upgrades=[str(u) for u in upgrades] if isinstance(upgrades, list) else [],
        namespace=_str(a.get("namespace")),
        kubernetes_name=_str(a.get("kubernetesName")),
        last_run_id=view.last_run_id,
        active_run_id=view.active_run_id,
        observed_at=view.observed_at,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def vm_from_view(view: ResourceView) -> Vm:
    """The VM object of the API from a cached resource (known fields only)."""
    a = view.attributes
    memory = a.get("memoryGiB")
    raw_gpus = a.get("gpus")
    gpus = [
        GpuRequest(type=str(g["type"]), count=_int(g.get("count")) or 1)
        for g in (raw_gpus if isinstance(raw_gpus, list) else [])
        if isinstance(g, dict) and isinstance(g.get("type"), str)
    ]
    return Vm(
        id=view.id,
        name=view.name or _str(a.get("name")),
        project_id=view.project_id,
        state=view.state,
        phase=_str(a.get("phase")),
        ready=_bool(a.get("ready")),
        running=_bool(a.get("running")),
        run_strategy=_str(a.get("runStrategy")),
        conditions=_conditions(a.get("conditions")),
        cpu=_int(a.get("cpu")),
        memory_gib=float(memory)
        if isinstance(memory, int | float) and not isinstance(memory, bool)
        else None,
        image=_str(a.get("image")),
        gpus=gpus,
        namespace=_str(a.get("namespace")),
        kubernetes_name=_str(a.get("kubernetesName")),
        last_run_id=view.last_run_id,
        active_run_id=view.active_run_id,
        observed_at=view.observed_at,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )
