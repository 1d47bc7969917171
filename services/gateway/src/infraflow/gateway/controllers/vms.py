"""``/v1/projects/{project}/vms``: the VM cache and the VM workflows (create, power, delete).
Arc, project-scoped: project admins and members act, viewers read."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from infraflow.common.contracts import RunSummary
from infraflow.gateway.controllers.clusters import ACCEPTED
from infraflow.gateway.controllers.support import (
    ACCEPTED_HEADERS,
    READ_ERRORS,
    WRITE_ERRORS,
    IdempotencyKey,
    caller,
    error_responses,
    query,
)
from infraflow.gateway.core.access import Principal
from infraflow.gateway.operations_k8s import ComputeOperations
from infraflow.gateway.responses import accepted, ok
from infraflow.gateway.schemas import Envelope
from infraflow.gateway.schemas_k8s import Vm, VmCreate, VmPower


class VmController(Controller):
    """Virtual machines of a project (KubeVirt VirtualMachines in the project's namespace)."""

    path = "/v1/projects/{project:str}/vms"
    tags = ["vms"]

    @post(
        "/",
        operation_id="createVm",
        summary="Create a VM (vm.create)",
        description=ACCEPTED + " `data.resourceId` is the new VM's id.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def create_vm(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        data: JSONBody[VmCreate],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await compute.create_vm(who, project, data))

    @get(
        "/",
        operation_id="listVms",
        summary="List the project's VMs from the cache",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_vms(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        state_filter: Annotated[str | None, query("state", "states, comma-separated")] = None,
        page_size: Annotated[str | None, query("pageSize", "1-500, default 50")] = None,
        page_token: Annotated[str | None, query("pageToken", "meta.pagination.nextCursor")] = None,
    ) -> Response[Envelope[list[Vm]]]:
        page = await compute.list_vms(
            principal, project, state=state_filter, page_size=page_size, page_token=page_token
        )
        return ok(request, page.items, pagination=page.pagination())

    @get(
        "/{vm_id:str}",
        operation_id="getVm",
        summary="Get a VM from the cache",
        responses=error_responses(*READ_ERRORS),
    )
    async def get_vm(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        vm_id: FromPath[str],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[Vm]]:
        return ok(request, await compute.get_vm(principal, project, vm_id))

    @post(
        "/{vm_id:str}/power",
        operation_id="powerVm",
        summary="Start, stop or restart a VM (vm.power)",
        description=ACCEPTED,
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def power_vm(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        vm_id: FromPath[str],
        data: JSONBody[VmPower],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await compute.power_vm(who, project, vm_id, data))

    @delete(
        "/{vm_id:str}",
        operation_id="deleteVm",
        summary="Delete a VM (vm.delete)",
        description=ACCEPTED,
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def delete_vm(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        vm_id: FromPath[str],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key)
        return accepted(request, await compute.delete_vm(who, project, vm_id))
