"""The clusters and VMs use cases (``/v1/projects/{project}/clusters|vms``): cache reads scoped
to the project and the caller, and the run-starting requests handed to the ``RunLauncher``.

Every lookup checks the resource belongs to the project in the path (else ``NOT_FOUND``), so a
resource of another project is never acted on through a project the caller can see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from infraflow.common.catalog import Catalog, WorkflowType
from infraflow.common.contracts import GetResource, ListResources, Query, QueryReply, ResourceView
from infraflow.common.errors import InfraflowError, NotFoundError, ValidationError
from infraflow.common.ids import is_id, new_id
from infraflow.gateway.adapters.broker import Broker
from infraflow.gateway.core import compute
from infraflow.gateway.core.access import Principal
from infraflow.gateway.core.runs import RunIds, RunPlan
from infraflow.gateway.core.servers import check_transition, resource_view
from infraflow.gateway.core.validation import FieldErrors, parse_multi, parse_page_size
from infraflow.gateway.launcher import Accepted, Prepare, RunLauncher
from infraflow.gateway.operations import Caller, Page
from infraflow.gateway.schemas_k8s import (
    Cluster,
    ClusterCreate,
    ClusterScale,
    ClusterUpgrade,
    Vm,
    VmCreate,
    VmPower,
)


class ComputeOperations:
    """Clusters and VMs of a project."""

    def __init__(
        self, broker: Broker, launcher: RunLauncher, catalog: Catalog, query_timeout_s: float
    ) -> None:
        self.broker = broker
        self.launcher = launcher
        self.catalog = catalog
        self._timeout = query_timeout_s

    # ---- reads -----------------------------------------------------------------------

    async def get_cluster(self, principal: Principal, project: str, cluster_id: str) -> Cluster:
        compute.authorize_read(principal, project)
        view = await self._view(principal, compute.CLUSTER, project, cluster_id)
        return compute.cluster_from_view(view)

    async def get_vm(self, principal: Principal, project: str, vm_id: str) -> Vm:
        compute.authorize_read(principal, project)
        return compute.vm_from_view(await self._view(principal, compute.VM, project, vm_id))

    async def list_clusters(
        self,
        principal: Principal,
        project: str,
        *,
        state: str | None,
        page_size: str | None,
        page_token: str | None,
    ) -> Page:
        page = await self._list(principal, compute.CLUSTER, project, state, page_size, page_token)
        items = [compute.cluster_from_view(v) for v in page.items]
        return Page(items, page.page_size, page.has_more, page.next_cursor)

    async def list_vms(
        self,
        principal: Principal,
        project: str,
        *,
        state: str | None,
        page_size: str | None,
        page_token: str | None,
    ) -> Page:
        page = await self._list(principal, compute.VM, project, state, page_size, page_token)
        items = [compute.vm_from_view(v) for v in page.items]
        return Page(items, page.page_size, page.has_more, page.next_cursor)

    # ---- clusters: runs ------------------------------------------------------------------

    async def create_cluster(self, caller: Caller, project: str, body: ClusterCreate) -> Accepted:
        """``cluster.create``: a new ``cls_`` id and its ClusterDeployment."""
        compute.authorize_write(caller.principal, project)
        compute.check_project(project)
        return await self._create(caller, "cluster.create", project, compute.cluster_input(body))

    async def scale_cluster(
        self, caller: Caller, project: str, cluster_id: str, body: ClusterScale
    ) -> Accepted:
        compute.check_workers(body.workers)
        return await self._start_on(
            caller, "cluster.scale", project, cluster_id, {"workers": body.workers}
        )

    async def upgrade_cluster(
        self, caller: Caller, project: str, cluster_id: str, body: ClusterUpgrade
    ) -> Accepted:
        """``cluster.upgrade``, only to a template the cache lists in ``availableUpgrades``
        (otherwise 409 and no run); the run checks the live object again."""
        compute.check_template(body.template)
        return await self._start_on(
            caller,
            "cluster.upgrade",
            project,
            cluster_id,
            {"template": body.template},
            check=lambda view: compute.check_upgrade(view, body.template),
        )

    async def delete_cluster(self, caller: Caller, project: str, cluster_id: str) -> Accepted:
        return await self._start_on(caller, "cluster.delete", project, cluster_id, {})

    # ---- VMs: runs -------------------------------------------------------------------

    async def create_vm(self, caller: Caller, project: str, body: VmCreate) -> Accepted:
        """``vm.create``: a new ``vm_`` id and its VirtualMachine."""
        compute.authorize_write(caller.principal, project)
        compute.check_project(project)
        return await self._create(caller, "vm.create", project, compute.vm_input(body))

    async def power_vm(self, caller: Caller, project: str, vm_id: str, body: VmPower) -> Accepted:
        return await self._start_on(caller, "vm.power", project, vm_id, {"action": body.action})

    async def delete_vm(self, caller: Caller, project: str, vm_id: str) -> Accepted:
        return await self._start_on(caller, "vm.delete", project, vm_id, {})

    # ---- helpers -----------------------------------------------------------------------

    def _executable(self, name: str) -> WorkflowType:
        workflow = self.catalog.get(name)
        if workflow is None or not workflow.executable:
            raise ValidationError(f"workflow type {name} is not available yet")
        return workflow

    async def _create(
        self, caller: Caller, workflow_type: str, project: str, run_input: dict[str, Any]
    ) -> Accepted:
        workflow = self._executable(workflow_type)
        prefix = compute.PREFIX[workflow.resource_type]

        async def prepare(ids: RunIds) -> RunPlan:
            assert ids.resource_id is not None
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=workflow.resource_type,
                resource_id=ids.resource_id,
                input=run_input,
                project_id=project,
            )

        return await self._launch(caller, prepare, RunIds(new_id("run"), new_id(prefix)))

    async def _start_on(
        self,
        caller: Caller,
        workflow_type: str,
        project: str,
        resource_id: str,
        run_input: dict[str, Any],
        *,
        check: Callable[[ResourceView], None] | None = None,
    ) -> Accepted:
        """Start ``workflow_type`` on an existing cluster or VM of ``project``."""
        principal = caller.principal
        compute.authorize_write(principal, project)
        workflow = self._executable(workflow_type)

        async def prepare(ids: RunIds) -> RunPlan:
            view = await self._view(principal, workflow.resource_type, project, resource_id)
            check_transition(workflow, view.state)
            if check is not None:
                check(view)
            return RunPlan(
                workflow=workflow,
                run_id=ids.run_id,
                resource_type=workflow.resource_type,
                resource_id=view.id,
                input=run_input,
                site=view.site,
                project_id=view.project_id,
            )

        return await self._launch(caller, prepare, RunIds(new_id("run")))

    async def _launch(self, caller: Caller, prepare: Prepare, ids: RunIds) -> Accepted:
        return await self.launcher.start(
            prepare,
            ids=ids,
            triggered_by=caller.principal.subject,
            request_id=caller.request_id,
            idempotency=caller.idempotency,
            on_busy=caller.on_busy,
        )

    async def _view(
        self, principal: Principal, resource_type: str, project: str, resource_id: str
    ) -> ResourceView:
        missing = NotFoundError(f"no such {resource_type}")
        if not is_id(resource_id, compute.PREFIX[resource_type]):
            raise missing
        reply = await self._ask(
            GetResource(
                resource_type=resource_type,
                resource_id=resource_id,
                scope_projects=principal.scope_projects,
            )
        )
        if reply.data is None:
            raise missing
        view = _decode(reply.data)
        if view.id != resource_id or view.project_id != project:
            raise missing
        if not principal.sees_project(view.project_id):
            raise missing
        return view

    async def _list(
        self,
        principal: Principal,
        resource_type: str,
        project: str,
        state: str | None,
        page_size: str | None,
        page_token: str | None,
    ) -> Page:
        compute.authorize_read(principal, project)
        errors = FieldErrors()
        allowed = compute.CLUSTER_STATES if resource_type == compute.CLUSTER else compute.VM_STATES
        query = ListResources(
            resource_type=resource_type,
            project_ids=[project],
            states=parse_multi(errors, "state", state, allowed=allowed),
            page_size=parse_page_size(errors, page_size),
            cursor=page_token or None,
            scope_projects=principal.scope_projects,
        )
        if page_token is not None and not 0 < len(page_token) <= 512:
            errors.add("pageToken", "must be a token returned as meta.pagination.nextCursor")
        errors.raise_if_any(f"the {resource_type} filters are not valid")
        reply = await self._ask(query)
        data = reply.data if isinstance(reply.data, list) else []
        views = [_decode(item) for item in data]
        items = [v for v in views if v.project_id == project]
        return Page(items, query.page_size, reply.has_more, reply.next_cursor)

    async def _ask(self, query: Query) -> QueryReply:
        return await self.broker.ask(query, self._timeout)


def _decode(data: Any) -> ResourceView:
    try:
        return resource_view(data)
    except msgspec.ValidationError as exc:
        raise InfraflowError("the read model sent a resource in an unexpected shape") from exc
