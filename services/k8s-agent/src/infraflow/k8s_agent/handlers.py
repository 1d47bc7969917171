"""The k8s-agent's actions: each step action of the catalog's ``k8s`` executor.

Every action is idempotent: objects are named after the resource id (create-or-get), patches
carry the ``resourceVersion`` they were computed from (a conflict re-reads and recomputes),
deletes of a missing object succeed, and waits watch from the version just read. Outputs put
what the cache should learn about the cluster or VM under ``"resource"`` — the same dict the
informers publish, so drift is a field-by-field comparison.

Codes decided here (besides the API errors in ``errors.py``):
``VALIDATION_ERROR`` (bad input), ``K8S_NAME_TAKEN`` (the derived name belongs to another
object), ``K8S_CLUSTER_FAILED`` / ``K8S_VM_FAILED`` (the object reports it will not become
ready), ``UPGRADE_NOT_AVAILABLE`` (target not in ``status.availableUpgrades``),
``VM_NOT_RUNNING`` (restart of a stopped VM), ``K8S_TIMEOUT`` (a wait ran out of time).
All but the last are not retryable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from infraflow.common.agent import Action, StepContext, StepError
from infraflow.k8s_agent.adapters.kube import KubeApi
from infraflow.k8s_agent.core import clusters, names, vms
from infraflow.k8s_agent.core.names import ApiRef
from infraflow.k8s_agent.core.objects import Obj, annotations_of, is_deleting
from infraflow.k8s_agent.errors import K8sConflictError
from infraflow.k8s_agent.waits import wait_for

CD = clusters.CLUSTER_DEPLOYMENTS
VM = vms.VIRTUAL_MACHINES
_PATCH_ATTEMPTS = 5


def invalid(message: str) -> StepError:
    return StepError(message, code="VALIDATION_ERROR", retryable=False)


class K8sActions:
    """The action table of the ``k8s`` executor, bound to one Kubernetes API client."""

    def __init__(
        self,
        kube: KubeApi,
        *,
        namespace_prefix: str = "",
        watch_timeout_s: float = 60.0,
        wait_margin_s: float = 2.0,
    ) -> None:
        self.kube = kube
        self.namespace_prefix = namespace_prefix
        self.watch_timeout_s = watch_timeout_s
        self.wait_margin_s = wait_margin_s

    def table(self) -> dict[str, Action]:
        return {
            "apply_cluster": self.apply_cluster,
            "wait_cluster_ready": self.wait_cluster_ready,
            "scale_cluster": self.scale_cluster,
            "restore_cluster_scale": self.restore_cluster_scale,
            "check_cluster_upgrade": self.check_cluster_upgrade,
            "upgrade_cluster": self.upgrade_cluster,
            "delete_cluster": self.delete_cluster,
            "wait_cluster_gone": self.wait_cluster_gone,
            "apply_vm": self.apply_vm,
            "wait_vm_ready": self.wait_vm_ready,
            "power_vm": self.power_vm,
            "wait_vm_status": self.wait_vm_status,
            "delete_vm": self.delete_vm,
            "wait_vm_gone": self.wait_vm_gone,
            "observe_clusters": self.observe_clusters,
        }

    # ---- clusters ----------------------------------------------------------------------

    async def apply_cluster(self, ctx: StepContext) -> dict[str, Any]:
        """Create the ClusterDeployment, or find the one an earlier attempt created."""
        try:
            spec = clusters.cluster_spec_from_input(ctx.input)
        except ValueError as exc:
            raise invalid(str(exc)) from exc
        namespace, _ = self._where(ctx)
        c = ctx.command
        assert c.project_id is not None  # _where checked it
        manifest = clusters.cluster_manifest(c.resource_id, namespace, c.project_id, spec, c.run_id)
        obj = await self._create_or_get(ctx, CD, namespace, manifest)
        return {
            "namespace": namespace,
            "kubernetesName": manifest["metadata"]["name"],
            "uid": obj["metadata"].get("uid"),
            "resource": clusters.observed_cluster(obj),
        }

    async def wait_cluster_ready(self, ctx: StepContext) -> dict[str, Any]:
        """Until ``Ready`` is true at the object's current generation."""

        def check(obj: Obj | None) -> Obj | None:
            if obj is None:
                raise StepError("the ClusterDeployment is gone", code="K8S_NOT_FOUND")
            failure = clusters.failure_message(obj)
            if failure is not None:
                raise StepError(
                    failure,
                    code="K8S_CLUSTER_FAILED",
                    retryable=False,
                    details={"phase": clusters.PHASE_FAILED},
                )
            return obj if clusters.cluster_phase(obj) == clusters.PHASE_READY else None

        obj = await self._wait(ctx, CD, check, clusters.cluster_phase)
        return {"resource": clusters.observed_cluster(obj)}

    async def scale_cluster(self, ctx: StepContext) -> dict[str, Any]:
        """Patch ``config.workersNumber``, recording the previous count on the object."""
        workers = ctx.input.get("workers")
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise invalid("workers must be an integer")
        if not 0 <= workers <= clusters.MAX_WORKERS:
            raise invalid(f"workers must be between 0 and {clusters.MAX_WORKERS}")
        run_id = ctx.command.run_id
        seen: dict[str, Any] = {}

        def patch(obj: Obj) -> Obj | None:
            seen["previous"] = clusters.previous_workers(obj, run_id)
            record = clusters.last_scale(obj) or {}
            if clusters.workers_of(obj) == workers and record.get("runId") == run_id:
                return None  # an earlier attempt of this run already patched
            return clusters.scale_patch(obj, workers, run_id)

        obj = await self._patch(ctx, CD, patch)
        return {
            "previousWorkers": seen.get("previous"),
            "workers": workers,
            "generation": obj["metadata"].get("generation"),
            "resource": {"workers": workers},
        }

    async def restore_cluster_scale(self, ctx: StepContext) -> dict[str, Any]:
        """Compensation of a scale: put the previous worker count back."""
        earlier = ctx.command.outputs.get("patch_workers") or {}
        previous = earlier.get("previousWorkers")
        run_id = ctx.command.run_id
        restored: dict[str, Any] = {}

        def patch(obj: Obj) -> Obj | None:
            target = previous
            if not isinstance(target, int):
                record = clusters.last_scale(obj) or {}
                target = record.get("from") if record.get("runId") == run_id else None
            restored["workers"] = target
            if not isinstance(target, int) or clusters.workers_of(obj) == target:
                return None
            return clusters.restore_patch(obj, target)

        await self._patch(ctx, CD, patch)
        return {"restoredWorkers": restored.get("workers")}

    async def check_cluster_upgrade(self, ctx: StepContext) -> dict[str, Any]:
        """The target template must be one of the live object's ``availableUpgrades``."""
        target = _template(ctx)
        obj = await self._require(ctx, CD)
        offered = clusters.available_upgrades(obj)
        if not clusters.upgrade_allowed(obj, target):
            raise StepError(
                f"{target} is not an available upgrade of this cluster",
                code="UPGRADE_NOT_AVAILABLE",
                retryable=False,
                details={"template": target, "availableUpgrades": offered},
            )
        return {"from": clusters.template_of(obj), "to": target, "availableUpgrades": offered}

    async def upgrade_cluster(self, ctx: StepContext) -> dict[str, Any]:
        """Patch ``spec.template`` to the target (a no-op if it is already there)."""
        target = _template(ctx)
        before: dict[str, Any] = {}

        def patch(obj: Obj) -> Obj | None:
            before.setdefault("template", clusters.template_of(obj))
            if clusters.template_of(obj) == target:
                return None
            if not clusters.upgrade_allowed(obj, target):
                raise StepError(
                    f"{target} is no longer an available upgrade of this cluster",
                    code="UPGRADE_NOT_AVAILABLE",
                    retryable=False,
                )
            return clusters.template_patch(obj, target)

        obj = await self._patch(ctx, CD, patch)
        return {
            "previousTemplate": before.get("template"),
            "template": target,
            "generation": obj["metadata"].get("generation"),
            "resource": {"template": target},
        }

    async def delete_cluster(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the ClusterDeployment (gone already is fine); ``params.wait``: until gone."""
        namespace, name = self._where(ctx)
        requested = await self.kube.delete(CD, namespace, name)
        if ctx.params.get("wait"):
            await self._wait_gone(ctx, CD, clusters.cluster_phase)
        return {"deleteRequested": requested, "resource": {"phase": clusters.PHASE_DELETING}}

    async def wait_cluster_gone(self, ctx: StepContext) -> dict[str, Any]:
        await self._wait_gone(ctx, CD, clusters.cluster_phase)
        return {"resource": clusters.observed_cluster(None)}

    # ---- VMs ---------------------------------------------------------------------------

    async def apply_vm(self, ctx: StepContext) -> dict[str, Any]:
        """Create the VirtualMachine, or find the one an earlier attempt created."""
        try:
            spec = vms.vm_spec_from_input(ctx.input)
        except ValueError as exc:
            raise invalid(str(exc)) from exc
        namespace, _ = self._where(ctx)
        c = ctx.command
        assert c.project_id is not None
        manifest = vms.vm_manifest(c.resource_id, namespace, c.project_id, spec, c.run_id)
        obj = await self._create_or_get(ctx, VM, namespace, manifest)
        return {
            "namespace": namespace,
            "kubernetesName": manifest["metadata"]["name"],
            "uid": obj["metadata"].get("uid"),
            "resource": vms.observed_vm(obj),
        }

    async def wait_vm_ready(self, ctx: StepContext) -> dict[str, Any]:
        """Until the VM runs and is ready (or, created halted, reports ``Stopped``)."""

        def check(obj: Obj | None) -> Obj | None:
            if obj is None:
                raise StepError("the VirtualMachine is gone", code="K8S_NOT_FOUND")
            failure = vms.failure_message(obj)
            if failure is not None:
                raise StepError(
                    failure,
                    code="K8S_VM_FAILED",
                    retryable=False,
                    details={"phase": vms.printable_status(obj)},
                )
            action = "start" if vms.wants_running(obj) else "stop"
            return obj if vms.reached(obj, action) else None

        obj = await self._wait(ctx, VM, check, vms.printable_status)
        return {"resource": vms.observed_vm(obj)}

    async def power_vm(self, ctx: StepContext) -> dict[str, Any]:
        """Start, stop or restart through KubeVirt's subresource API."""
        action = _power_action(ctx)
        namespace, name = self._where(ctx)
        obj = await self._require(ctx, VM)
        run_id = ctx.command.run_id
        requested_at = datetime.now(UTC)
        issued = True
        if action == "restart":
            record = _restart_record(obj)
            if record.get("runId") == run_id:
                issued = False  # this run's restart went out before a redelivery
                requested_at = _time(record.get("at")) or requested_at
            else:
                if not vms.wants_running(obj):
                    raise StepError(
                        "a stopped VM cannot be restarted; start it instead",
                        code="VM_NOT_RUNNING",
                        retryable=False,
                    )
                await self.kube.vm_action(
                    vms.SUBRESOURCES_GROUP, VM.version, namespace, name, "restart"
                )
                note = json.dumps({"runId": run_id, "at": requested_at.isoformat()})
                marker = {"metadata": {"annotations": {vms.RESTART_ANNOTATION: note}}}
                await self.kube.merge_patch(VM, namespace, name, marker)
        elif vms.power_needed(obj, action):
            try:
                await self.kube.vm_action(
                    vms.SUBRESOURCES_GROUP, VM.version, namespace, name, action
                )
            except K8sConflictError:
                again = await self._require(ctx, VM)
                if vms.power_needed(again, action):
                    raise
        else:
            issued = False
        return {
            "action": action,
            "issued": issued,
            "requestedAt": requested_at.isoformat(),
            "target": vms.target_status(action),
        }

    async def wait_vm_status(self, ctx: StepContext) -> dict[str, Any]:
        """Until the VM's printable status is the power action's target."""
        action = _power_action(ctx)
        earlier = ctx.command.outputs.get("power_action") or {}
        since = _time(earlier.get("requestedAt")) if action == "restart" else None
        seen_down: dict[str, bool] = {}

        def check(obj: Obj | None) -> Obj | None:
            if obj is None:
                raise StepError("the VirtualMachine is gone", code="K8S_NOT_FOUND")
            if action != "stop":
                failure = vms.failure_message(obj)
                if failure is not None:
                    raise StepError(failure, code="K8S_VM_FAILED", retryable=False)
            if not vms.is_ready(obj):
                seen_down["yes"] = True
            if action == "restart" and seen_down and vms.reached(obj, "start"):
                return obj  # watched it go down and come back
            return obj if vms.reached(obj, action, since) else None

        obj = await self._wait(ctx, VM, check, vms.printable_status)
        return {"resource": vms.observed_vm(obj)}

    async def delete_vm(self, ctx: StepContext) -> dict[str, Any]:
        """Delete the VirtualMachine (gone already is fine); ``params.wait``: until gone."""
        namespace, name = self._where(ctx)
        requested = await self.kube.delete(VM, namespace, name)
        if ctx.params.get("wait"):
            await self._wait_gone(ctx, VM, vms.printable_status)
        return {"deleteRequested": requested, "resource": {"phase": "Terminating"}}

    async def wait_vm_gone(self, ctx: StepContext) -> dict[str, Any]:
        await self._wait_gone(ctx, VM, vms.printable_status)
        return {"resource": vms.observed_vm(None)}

    # ---- sync --------------------------------------------------------------------------

    async def observe_clusters(self, ctx: StepContext) -> dict[str, Any]:
        """``sync.cluster-state``: read the live object of the run's cluster or VM and
        return what the cache should say (a missing object is ``Deleted``)."""
        kind = ctx.command.resource_type
        if kind == "cluster":
            ref: ApiRef = CD
            summarize: Callable[[Obj | None], dict[str, Any]] = clusters.observed_cluster
        elif kind == "vm":
            ref, summarize = VM, vms.observed_vm
        else:
            raise invalid(f"sync.cluster-state observes clusters and VMs, not {kind}")
        namespace, name = self._where(ctx)
        obj = await self.kube.get(ref, namespace, name)
        observed = summarize(obj)
        return {"exists": obj is not None, "observed": observed, "resource": observed}

    # ---- helpers -----------------------------------------------------------------------

    def _where(self, ctx: StepContext) -> tuple[str, str]:
        """The namespace and name of the run's object, from its project and resource id."""
        c = ctx.command
        try:
            return (
                names.namespace_for(c.project_id, self.namespace_prefix),
                names.object_name(c.resource_id),
            )
        except ValueError as exc:
            raise invalid(str(exc)) from exc

    async def _require(self, ctx: StepContext, ref: ApiRef) -> Obj:
        namespace, name = self._where(ctx)
        obj = await self.kube.get(ref, namespace, name)
        if obj is None:
            raise StepError(f"{ref.kind} {namespace}/{name} does not exist", code="K8S_NOT_FOUND")
        return obj

    async def _create_or_get(
        self, ctx: StepContext, ref: ApiRef, namespace: str, manifest: Obj
    ) -> Obj:
        name = manifest["metadata"]["name"]
        try:
            return await self.kube.create(ref, namespace, manifest)
        except K8sConflictError:
            existing = await self.kube.get(ref, namespace, name)
        if existing is None:
            raise K8sConflictError(f"{ref.kind} {namespace}/{name} vanished; try again")
        if not names.owned_by(existing, ctx.command.resource_id):
            raise StepError(
                f"{ref.kind} {namespace}/{name} exists and belongs to something else",
                code="K8S_NAME_TAKEN",
                retryable=False,
            )
        if is_deleting(existing):
            raise K8sConflictError(f"{ref.kind} {namespace}/{name} is being deleted")
        return existing

    async def _patch(
        self, ctx: StepContext, ref: ApiRef, build: Callable[[Obj], Obj | None]
    ) -> Obj:
        """Read, compute a patch from what was read, apply it conditionally; on a conflict
        (someone wrote in between) read again. ``build`` returning None: nothing to do."""
        namespace, name = self._where(ctx)
        for attempt in range(_PATCH_ATTEMPTS):
            obj = await self._require(ctx, ref)
            patch = build(obj)
            if patch is None:
                return obj
            try:
                return await self.kube.merge_patch(ref, namespace, name, patch)
            except K8sConflictError:
                if attempt == _PATCH_ATTEMPTS - 1:
                    raise
                ctx.check_cancelled()
        raise AssertionError("unreachable")

    async def _wait(
        self,
        ctx: StepContext,
        ref: ApiRef,
        check: Callable[[Obj | None], Obj | None],
        describe: Callable[[Obj | None], str],
    ) -> Obj:
        namespace, name = self._where(ctx)
        return await wait_for(
            self.kube,
            ref,
            namespace,
            name,
            check,
            timeout_s=max(0.1, ctx.command.timeout_s - self.wait_margin_s),
            progress=self._progress(ctx, describe),
            watch_timeout_s=self.watch_timeout_s,
        )

    async def _wait_gone(
        self, ctx: StepContext, ref: ApiRef, describe: Callable[[Obj | None], str]
    ) -> None:
        namespace, name = self._where(ctx)
        await wait_for(
            self.kube,
            ref,
            namespace,
            name,
            lambda obj: True if obj is None else None,
            timeout_s=max(0.1, ctx.command.timeout_s - self.wait_margin_s),
            progress=self._progress(ctx, describe),
            watch_timeout_s=self.watch_timeout_s,
        )

    @staticmethod
    def _progress(
        ctx: StepContext, describe: Callable[[Obj | None], str]
    ) -> Callable[[Obj | None], Awaitable[None]]:
        async def report(obj: Obj | None) -> None:
            ctx.check_cancelled()
            if obj is not None:
                await ctx.heartbeat(message=describe(obj))

        return report


def _template(ctx: StepContext) -> str:
    target = ctx.input.get("template")
    if not isinstance(target, str) or not target:
        raise invalid("template is required")
    return target


def _power_action(ctx: StepContext) -> str:
    action = str(ctx.params.get("action") or ctx.input.get("action") or "")
    if action not in vms.POWER_ACTIONS:
        raise invalid(f"unknown VM power action {action!r}; use start, stop or restart")
    return action


def _restart_record(obj: Obj) -> dict[str, Any]:
    raw = annotations_of(obj).get(vms.RESTART_ANNOTATION)
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
