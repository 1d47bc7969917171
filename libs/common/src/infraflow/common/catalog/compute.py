"""Built-in Kubernetes workflow types: k0rdent ClusterDeployments and KubeVirt VirtualMachines
(steps run by the k8s-agent)."""

from __future__ import annotations

from infraflow.common.catalog.model import (
    ResourceStates,
    RetryPolicy,
    WorkflowType,
    step_builder,
)

_K8S_RETRY = RetryPolicy(
    initial_interval_s=1.0,
    max_interval_s=30.0,
    max_attempts=5,
    non_retryable_codes=frozenset(
        {
            "K8S_INVALID",
            "K8S_FORBIDDEN",
            "K8S_NOT_FOUND",
            "K8S_NAME_TAKEN",
            "K8S_CLUSTER_FAILED",
            "K8S_VM_FAILED",
            "UPGRADE_NOT_AVAILABLE",
            "VM_NOT_RUNNING",
            "VALIDATION_ERROR",
            "CANCELLED",
        }
    ),
)


_k8s = step_builder("k8s", _K8S_RETRY)
"""A step run by the k8s-agent against the management cluster."""


_CLUSTER_WAIT_READY = _k8s(
    "wait_ready",
    "wait_cluster_ready",
    description="Watch the ClusterDeployment until Ready at its current generation",
    timeout_s=3600.0,
    heartbeat_timeout_s=120.0,
    estimate_ms=120_000,
)
_CLUSTER_DELETE_AND_WAIT = _k8s(
    "delete",
    "delete_cluster",
    description="Delete the ClusterDeployment and wait until it is gone",
    params={"wait": True},
    timeout_s=900.0,
    heartbeat_timeout_s=120.0,
)

COMPUTE_TYPES: tuple[WorkflowType, ...] = (
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
                description="Create the k0rdent ClusterDeployment (or find it: create-or-get)",
                compensation=_CLUSTER_DELETE_AND_WAIT,
            ),
            _CLUSTER_WAIT_READY,
        ),
    ),
    WorkflowType(
        name="cluster.scale",
        trigger="Arc API",
        description="Scale cluster nodes",
        resource_type="cluster",
        states=ResourceStates(running="scaling", completed="ready", failed="failed"),
        allowed_from=frozenset({"ready", "failed", "scaling"}),
        steps=(
            _k8s(
                "patch_workers",
                "scale_cluster",
                description="Patch config.workersNumber (the previous count is recorded)",
                compensation=_k8s(
                    "restore_workers",
                    "restore_cluster_scale",
                    description="Put the previous worker count back",
                ),
            ),
            _CLUSTER_WAIT_READY,
        ),
    ),
    WorkflowType(
        name="cluster.upgrade",
        trigger="Arc API",
        description="Upgrade Kubernetes version",
        resource_type="cluster",
        states=ResourceStates(running="upgrading", completed="ready", failed="failed"),
        allowed_from=frozenset({"ready", "failed"}),
        steps=(
            _k8s(
                "check_upgrade",
                "check_cluster_upgrade",
                description="The target template must be in status.availableUpgrades",
                timeout_s=60.0,
                estimate_ms=500,
            ),
            _k8s(
                "patch_template",
                "upgrade_cluster",
                description="Patch spec.template to the target ClusterTemplate",
                estimate_ms=500,
            ),
            _CLUSTER_WAIT_READY,
        ),
    ),
    WorkflowType(
        name="cluster.delete",
        trigger="Arc API",
        description="Delete cluster",
        resource_type="cluster",
        states=ResourceStates(running="deleting", completed="deleted", failed="failed"),
        allowed_from=frozenset({"creating", "ready", "failed", "scaling", "upgrading"}),
        steps=(
            _k8s("delete", "delete_cluster", description="Delete the ClusterDeployment"),
            _k8s(
                "wait_gone",
                "wait_cluster_gone",
                description="Wait until its finalizers let it go",
                timeout_s=1800.0,
                heartbeat_timeout_s=120.0,
                estimate_ms=10_000,
            ),
        ),
    ),
    WorkflowType(
        name="vm.create",
        trigger="Arc API",
        description="Create virtual machine",
        resource_type="vm",
        creates_resource=True,
        states=ResourceStates(running="creating", completed="ready", failed="failed"),
        steps=(
            _k8s(
                "apply",
                "apply_vm",
                description="Create the KubeVirt VirtualMachine (or find it: create-or-get)",
                compensation=_k8s(
                    "delete",
                    "delete_vm",
                    description="Delete the VirtualMachine and wait until it is gone",
                    params={"wait": True},
                    timeout_s=900.0,
                    heartbeat_timeout_s=60.0,
                ),
            ),
            _k8s(
                "wait_ready",
                "wait_vm_ready",
                description="Wait until the VM runs and is ready (Stopped if created halted)",
                timeout_s=900.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=30_000,
            ),
        ),
    ),
    WorkflowType(
        name="vm.power",
        trigger="Arc API",
        description="VM power actions",
        resource_type="vm",
        allowed_from=frozenset({"ready"}),
        steps=(
            _k8s(
                "power_action",
                "power_vm",
                description="start, stop or restart through KubeVirt's subresource API",
            ),
            _k8s(
                "wait_status",
                "wait_vm_status",
                description="Wait for the printable status the action leads to",
                timeout_s=600.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=10_000,
            ),
        ),
    ),
    WorkflowType(
        name="vm.delete",
        trigger="Arc API",
        description="Delete VM",
        resource_type="vm",
        states=ResourceStates(running="deleting", completed="deleted", failed="failed"),
        allowed_from=frozenset({"creating", "ready", "failed"}),
        steps=(
            _k8s("delete", "delete_vm", description="Delete the VirtualMachine"),
            _k8s(
                "wait_gone",
                "wait_vm_gone",
                description="Wait until it is gone",
                timeout_s=900.0,
                heartbeat_timeout_s=60.0,
                estimate_ms=5000,
            ),
        ),
    ),
    WorkflowType(
        name="sync.cluster-state",
        trigger="Projector",
        description="Sync cluster state to cache",
        resource_type="cluster",
        mutating=False,
        steps=(
            _k8s(
                "observe",
                "observe_clusters",
                description="Read the live ClusterDeployment or VirtualMachine of the run's "
                "resource (a cluster or a VM) and record what the cache should say",
                timeout_s=60.0,
                estimate_ms=500,
            ),
        ),
    ),
)
