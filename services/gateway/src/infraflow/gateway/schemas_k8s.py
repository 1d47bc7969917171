"""DTOs of the clusters and VMs endpoints (``/v1/projects/{project}/clusters|vms``).

Request DTOs are decoded by Litestar (shape and types); the semantic checks live in
``core.compute``. Responses are built from the projector's cache.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from infraflow.gateway.schemas import Dto

VmPowerActionName = Literal["start", "stop", "restart"]

_LABELS = msgspec.Meta(
    description="Kubernetes labels for the object (keys under infraflow.dev/ are reserved)"
)
_ANNOTATIONS = msgspec.Meta(
    description="Kubernetes annotations for the object (keys under infraflow.dev/ are reserved)"
)


class ClusterCreate(Dto, kw_only=True):
    """Create a Kubernetes cluster (starts ``cluster.create``): a k0rdent ClusterDeployment."""

    name: Annotated[str, msgspec.Meta(description="1-63 letters, digits or '-'")]
    template: Annotated[
        str,
        msgspec.Meta(
            description="ClusterTemplate in the project's namespace", examples=["k0s-v1-31-2"]
        ),
    ]
    credential: Annotated[str, msgspec.Meta(description="k0rdent Credential object name")]
    workers: Annotated[int, msgspec.Meta(description="config.workersNumber, 0-1000")]
    control_planes: Annotated[
        int | None, msgspec.Meta(description="config.controlPlaneNumber, 1-9 (default 1)")
    ] = None
    config: Annotated[
        dict[str, Any] | None,
        msgspec.Meta(description="more Helm values of the template (spec.config)"),
    ] = None
    labels: Annotated[dict[str, str] | None, _LABELS] = None
    annotations: Annotated[dict[str, str] | None, _ANNOTATIONS] = None


class ClusterScale(Dto, kw_only=True):
    """Change the worker count (starts ``cluster.scale``)."""

    workers: Annotated[int, msgspec.Meta(description="0-1000")]


class ClusterUpgrade(Dto, kw_only=True):
    """Move to another ClusterTemplate (starts ``cluster.upgrade``); it must be one of the
    cluster's ``availableUpgrades``, else 409."""

    template: str


class GpuRequest(Dto, kw_only=True):
    type: Annotated[str, msgspec.Meta(description="device name", examples=["nvidia.com/A100"])]
    count: int = 1


class VmCreate(Dto, kw_only=True):
    """Create a virtual machine (starts ``vm.create``): a KubeVirt VirtualMachine."""

    name: Annotated[str, msgspec.Meta(description="1-63 letters, digits or '-'")]
    cpu: Annotated[int, msgspec.Meta(description="virtual cores, 1-256")]
    memory_gib: Annotated[float, msgspec.Meta(description="guest memory in GiB")] = msgspec.field(
        name="memoryGiB"
    )
    image: Annotated[
        str,
        msgspec.Meta(
            description="container disk image", examples=["quay.io/containerdisks/fedora:40"]
        ),
    ]
    gpus: list[GpuRequest] | None = None
    running: Annotated[bool, msgspec.Meta(description="start it at once (default)")] = True
    labels: Annotated[dict[str, str] | None, _LABELS] = None
    annotations: Annotated[dict[str, str] | None, _ANNOTATIONS] = None


class VmPower(Dto, kw_only=True):
    """A VM power action (starts ``vm.power``)."""

    action: VmPowerActionName


class Condition(Dto, kw_only=True):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class Cluster(Dto, kw_only=True):
    """A cluster as the cache knows it. ``state`` is the lifecycle Infraflow drives
    (creating, ready, scaling, upgrading, deleting, deleted, failed); ``phase`` is what the
    ClusterDeployment reports (Ready, Progressing, Failed, NotReady, Deleting, Deleted)."""

    id: str
    name: str | None = None
    project_id: str | None = None
    state: str | None = None
    phase: str | None = None
    ready: bool | None = None
    conditions: list[Condition] = msgspec.field(default_factory=list)
    template: str | None = None
    credential: str | None = None
    workers: int | None = None
    control_planes: int | None = None
    version: Annotated[str | None, msgspec.Meta(description="status.k8sVersion")] = None
    available_upgrades: list[str] = msgspec.field(default_factory=list)
    namespace: str | None = None
    kubernetes_name: str | None = None
    last_run_id: str | None = None
    active_run_id: str | None = None
    observed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Vm(Dto, kw_only=True):
    """A VM as the cache knows it. ``state`` is the lifecycle (creating, ready, deleting,
    deleted, failed); ``phase`` is KubeVirt's printable status (Running, Stopped, ...)."""

    id: str
    name: str | None = None
    project_id: str | None = None
    state: str | None = None
    phase: str | None = None
    ready: bool | None = None
    running: bool | None = None
    run_strategy: str | None = None
    conditions: list[Condition] = msgspec.field(default_factory=list)
    cpu: int | None = None
    memory_gib: float | None = msgspec.field(default=None, name="memoryGiB")
    image: str | None = None
    gpus: list[GpuRequest] = msgspec.field(default_factory=list)
    namespace: str | None = None
    kubernetes_name: str | None = None
    last_run_id: str | None = None
    active_run_id: str | None = None
    observed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
