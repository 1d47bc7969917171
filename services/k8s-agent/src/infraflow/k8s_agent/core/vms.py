"""KubeVirt VirtualMachines: the manifest, power actions, readiness and the cache's view (pure).

A VM is a ``VirtualMachine`` (``kubevirt.io/v1``) booting a container disk, sized by
``domain.cpu.cores`` and ``domain.memory.guest``, with GPUs passed through by device name.
It is created with ``runStrategy: Always`` (``running: true``, the default) or ``Halted``;
start/stop/restart go through KubeVirt's ``subresources.kubevirt.io`` API, which flips the
strategy just as ``virtctl`` does. ``status.printableStatus`` is what the cache calls the phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from infraflow.k8s_agent.core import names
from infraflow.k8s_agent.core.objects import (
    Obj,
    condition,
    conditions_summary,
    generation,
    meta,
    spec,
    status,
)

VIRTUAL_MACHINES: Final = names.ApiRef("kubevirt.io", "v1", "virtualmachines", "VirtualMachine")
SUBRESOURCES_GROUP: Final = "subresources.kubevirt.io"
RESTART_ANNOTATION: Final = "infraflow.dev/last-restart"
"""The run whose restart was issued last: a redelivered step does not restart twice."""

POWER_ACTIONS: Final = frozenset({"start", "stop", "restart"})
RUNNING_STRATEGIES: Final = frozenset({"Always", "RerunOnFailure", "Once"})
FAILED_STATUSES: Final = frozenset(
    {
        "CrashLoopBackOff",
        "ErrorUnschedulable",
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrorPvcNotFound",
        "ErrorDataVolumeNotFound",
        "DataVolumeError",
    }
)
"""Printable statuses that mean the VM will not come up by itself."""
STATUS_RUNNING: Final = "Running"
STATUS_STOPPED: Final = "Stopped"
STATUS_DELETED: Final = "Deleted"
MAX_CPU: Final = 256
MAX_MEMORY_GIB: Final = 4096.0
MAX_GPUS: Final = 16


@dataclass(frozen=True, slots=True)
class Gpu:
    """GPUs of one device type passed through to the VM."""

    device_name: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class VmSpec:
    """What ``vm.create`` asks for (from the run's input)."""

    name: str
    cpu: int
    memory_gib: float
    image: str
    gpus: tuple[Gpu, ...] = ()
    running: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what} must map strings to strings")
    reserved = [k for k in value if names.is_reserved_key(k)]
    if reserved:
        raise ValueError(f"{what} may not use the reserved keys {sorted(reserved)}")
    return dict(value)


def _gpus(value: Any) -> tuple[Gpu, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("gpus must be a list")
    out: list[Gpu] = []
    for item in value:
        kind = item.get("type") if isinstance(item, dict) else None
        count = item.get("count", 1) if isinstance(item, dict) else None
        if not isinstance(kind, str) or not kind:
            raise ValueError("each GPU needs a type (the device name, e.g. nvidia.com/A100)")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GPUS:
            raise ValueError(f"a GPU count is an integer between 1 and {MAX_GPUS}")
        out.append(Gpu(kind, count))
    if sum(g.count for g in out) > MAX_GPUS:
        raise ValueError(f"at most {MAX_GPUS} GPUs per VM")
    return tuple(out)


def vm_spec_from_input(run_input: dict[str, Any]) -> VmSpec:
    """Read and check the ``vm.create`` input (``ValueError`` names the problem)."""
    name, image = run_input.get("name"), run_input.get("image")
    if not isinstance(name, str) or not name:
        raise ValueError("name is required")
    if not isinstance(image, str) or not image:
        raise ValueError("image is required")
    cpu = run_input.get("cpu")
    if isinstance(cpu, bool) or not isinstance(cpu, int) or not 1 <= cpu <= MAX_CPU:
        raise ValueError(f"cpu must be an integer between 1 and {MAX_CPU}")
    memory = run_input.get("memoryGiB")
    if (
        isinstance(memory, bool)
        or not isinstance(memory, int | float)
        or not math.isfinite(memory)
        or not 0.125 <= memory <= MAX_MEMORY_GIB
    ):
        raise ValueError(f"memoryGiB must be a number between 0.125 and {MAX_MEMORY_GIB:g}")
    running = run_input.get("running", True)
    if not isinstance(running, bool):
        raise ValueError("running must be true or false")
    return VmSpec(
        name=name,
        cpu=cpu,
        memory_gib=float(memory),
        image=image,
        gpus=_gpus(run_input.get("gpus")),
        running=running,
        labels=_str_map(run_input.get("labels"), "labels"),
        annotations=_str_map(run_input.get("annotations"), "annotations"),
    )


def memory_quantity(gib: float) -> str:
    """A Kubernetes quantity for ``gib`` GiB (``4Gi``, ``512Mi``)."""
    mib = round(gib * 1024)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def vm_manifest(resource_id: str, namespace: str, project_id: str, vm: VmSpec, run_id: str) -> Obj:
    """The VirtualMachine for ``vm``."""
    name = names.object_name(resource_id)
    gpus = [
        {"name": f"gpu{i}", "deviceName": g.device_name}
        for i, g in enumerate(g for g in vm.gpus for _ in range(g.count))
    ]
    devices: dict[str, Any] = {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}]}
    if gpus:
        devices["gpus"] = gpus
    return {
        "apiVersion": VIRTUAL_MACHINES.api_version,
        "kind": VIRTUAL_MACHINES.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**vm.labels, **names.labels_for(resource_id, project_id)},
            "annotations": {
                **vm.annotations,
                names.DISPLAY_NAME_ANNOTATION: vm.name,
                names.CREATED_BY_RUN_ANNOTATION: run_id,
            },
        },
        "spec": {
            "runStrategy": "Always" if vm.running else "Halted",
            "template": {
                "metadata": {
                    "labels": {"kubevirt.io/vm": name, names.RESOURCE_ID_LABEL: resource_id}
                },
                "spec": {
                    "domain": {
                        "cpu": {"cores": vm.cpu},
                        "memory": {"guest": memory_quantity(vm.memory_gib)},
                        "devices": devices,
                    },
                    "volumes": [{"name": "rootdisk", "containerDisk": {"image": vm.image}}],
                },
            },
        },
    }


def run_strategy(obj: Obj) -> str:
    """``spec.runStrategy``, or the strategy ``spec.running`` implies."""
    s = spec(obj)
    value = s.get("runStrategy")
    if value:
        return str(value)
    return "Always" if s.get("running") else "Halted"


def wants_running(obj: Obj) -> bool:
    """Whether the VM is meant to run (by its strategy)."""
    return run_strategy(obj) in RUNNING_STRATEGIES


def printable_status(obj: Obj | None) -> str:
    if obj is None:
        return STATUS_DELETED
    return str(status(obj).get("printableStatus") or "Unknown")


def is_ready(obj: Obj) -> bool:
    return printable_status(obj) == STATUS_RUNNING and bool(status(obj).get("ready"))


def failure_message(obj: Obj) -> str | None:
    """Why the VM cannot come up, or None while it still may."""
    printable = printable_status(obj)
    if printable not in FAILED_STATUSES:
        return None
    ready = condition(obj, "Ready") or {}
    detail = ready.get("message") or ready.get("reason") or ""
    return f"the VirtualMachine is {printable}" + (f": {detail}" if detail else "")


def target_status(action: str) -> str:
    """The printable status a completed power action leaves the VM in."""
    if action not in POWER_ACTIONS:
        raise ValueError(f"unknown VM power action {action!r}")
    return STATUS_STOPPED if action == "stop" else STATUS_RUNNING


def power_needed(obj: Obj, action: str) -> bool:
    """Whether ``action`` has anything to do (start/stop are idempotent by strategy)."""
    if action == "start":
        return not wants_running(obj)
    if action == "stop":
        return wants_running(obj)
    return True


def reached(obj: Obj | None, action: str, since: datetime | None = None) -> bool:
    """Whether ``action``'s target is reached. For a restart, the VM must have become ready
    again after ``since`` (the Ready condition's transition is later than the request)."""
    if obj is None:
        return False
    if action == "stop":
        return printable_status(obj) == STATUS_STOPPED
    if not is_ready(obj):
        return False
    if action != "restart" or since is None:
        return True
    ready = condition(obj, "Ready") or {}
    moved = _parse_time(ready.get("lastTransitionTime"))
    return moved is not None and moved.replace(microsecond=0) > since.replace(microsecond=0)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def memory_gib(obj: Obj) -> float | None:
    guest = (
        ((spec(obj).get("template") or {}).get("spec") or {}).get("domain", {}).get("memory", {})
    ).get("guest")
    if not isinstance(guest, str):
        return None
    for suffix, factor in (("Gi", 1.0), ("Mi", 1 / 1024), ("Ti", 1024.0)):
        if guest.endswith(suffix) and guest[: -len(suffix)].isdigit():
            return int(guest[: -len(suffix)]) * factor
    return None


def _domain(obj: Obj) -> dict[str, Any]:
    template = spec(obj).get("template") or {}
    inner = template.get("spec") if isinstance(template, dict) else None
    domain = inner.get("domain") if isinstance(inner, dict) else None
    return domain if isinstance(domain, dict) else {}


def _image(obj: Obj) -> str | None:
    template = spec(obj).get("template") or {}
    inner = template.get("spec") if isinstance(template, dict) else {}
    for volume in (inner or {}).get("volumes") or []:
        disk = volume.get("containerDisk") if isinstance(volume, dict) else None
        if isinstance(disk, dict) and disk.get("image"):
            return str(disk["image"])
    return None


def observed_vm(obj: Obj | None) -> dict[str, Any]:
    """The VM as the cache shows it (informers publish this, steps return it)."""
    printable = printable_status(obj)
    if obj is None:
        return {"phase": printable, "ready": False, "running": False}
    cores = (_domain(obj).get("cpu") or {}).get("cores")
    return {
        "phase": printable,
        "ready": is_ready(obj),
        "running": wants_running(obj),
        "runStrategy": run_strategy(obj),
        "conditions": conditions_summary(obj),
        "cpu": cores if isinstance(cores, int) else None,
        "memoryGiB": memory_gib(obj),
        "image": _image(obj),
        "generation": generation(obj),
        "namespace": meta(obj).get("namespace"),
        "kubernetesName": meta(obj).get("name"),
    }
