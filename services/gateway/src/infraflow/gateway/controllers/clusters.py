"""``/v1/projects/{project}/clusters``: the cluster cache and the cluster workflows (create,
scale, upgrade, delete). Arc, project-scoped: project admins and members act, viewers read."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from infraflow.common.contracts import RunSummary
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
from infraflow.gateway.schemas_k8s import Cluster, ClusterCreate, ClusterScale, ClusterUpgrade

ACCEPTED = (
    "202 Accepted once the command is durable: `Location` names the run, `meta.workflowId` is "
    "its id and `meta.estimatedDuration` a hint in ms."
)


class ClusterController(Controller):
    """Kubernetes clusters of a project (k0rdent ClusterDeployments in the project's
    namespace)."""

    path = "/v1/projects/{project:str}/clusters"
    tags = ["clusters"]

    @post(
        "/",
        operation_id="createCluster",
        summary="Create a cluster (cluster.create)",
        description=ACCEPTED + " `data.resourceId` is the new cluster's id.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def create_cluster(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        data: JSONBody[ClusterCreate],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await compute.create_cluster(who, project, data))

    @get(
        "/",
        operation_id="listClusters",
        summary="List the project's clusters from the cache",
        responses=error_responses(*READ_ERRORS),
    )
    async def list_clusters(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        state_filter: Annotated[str | None, query("state", "states, comma-separated")] = None,
        page_size: Annotated[str | None, query("pageSize", "1-500, default 50")] = None,
        page_token: Annotated[str | None, query("pageToken", "meta.pagination.nextCursor")] = None,
    ) -> Response[Envelope[list[Cluster]]]:
        page = await compute.list_clusters(
            principal, project, state=state_filter, page_size=page_size, page_token=page_token
        )
        return ok(request, page.items, pagination=page.pagination())

    @get(
        "/{cluster_id:str}",
        operation_id="getCluster",
        summary="Get a cluster from the cache",
        description="phase, conditions, workers, version, availableUpgrades, lastRunId...",
        responses=error_responses(*READ_ERRORS),
    )
    async def get_cluster(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        cluster_id: FromPath[str],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
    ) -> Response[Envelope[Cluster]]:
        return ok(request, await compute.get_cluster(principal, project, cluster_id))

    @post(
        "/{cluster_id:str}/scale",
        operation_id="scaleCluster",
        summary="Change the worker count (cluster.scale)",
        description=ACCEPTED + " On failure the previous count is restored.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def scale_cluster(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        cluster_id: FromPath[str],
        data: JSONBody[ClusterScale],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await compute.scale_cluster(who, project, cluster_id, data))

    @post(
        "/{cluster_id:str}/upgrade",
        operation_id="upgradeCluster",
        summary="Upgrade to another ClusterTemplate (cluster.upgrade)",
        description=ACCEPTED
        + " The template must be one of the cluster's `availableUpgrades`; otherwise 409 "
        "CONFLICT (details.availableUpgrades) and no run is started.",
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def upgrade_cluster(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        cluster_id: FromPath[str],
        data: JSONBody[ClusterUpgrade],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key, data)
        return accepted(request, await compute.upgrade_cluster(who, project, cluster_id, data))

    @delete(
        "/{cluster_id:str}",
        operation_id="deleteCluster",
        summary="Delete a cluster (cluster.delete)",
        description=ACCEPTED,
        status_code=202,
        response_headers=ACCEPTED_HEADERS,
        responses=error_responses(*WRITE_ERRORS),
    )
    async def delete_cluster(
        self,
        request: Request[Any, Any, Any],
        project: FromPath[str],
        cluster_id: FromPath[str],
        compute: NamedDependency[ComputeOperations],
        principal: NamedDependency[Principal],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[Envelope[RunSummary]]:
        who = caller(request, principal, idempotency_key)
        return accepted(request, await compute.delete_cluster(who, project, cluster_id))
