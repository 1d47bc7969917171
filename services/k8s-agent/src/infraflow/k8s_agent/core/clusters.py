"""k0rdent ClusterDeployments: the manifest, patches, readiness and the cache's view (pure).

A cluster is a ``ClusterDeployment`` (``k0rdent.mirantis.com/v1beta1``) whose ``spec`` carries
the ``template`` (a ClusterTemplate in the namespace), the ``credential`` and the template's
Helm values in ``config`` (``workersNumber``, ``controlPlaneNumber`` and anything else the
caller passed). Readiness is the ``Ready`` condition at the object's current generation.
Upgrades patch ``spec.template`` to one of ``status.availableUpgrades``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from infraflow.k8s_agent.core import names
from infraflow.k8s_agent.core.objects import (
    Obj,
    annotations_of,
    condition,
    conditions_summary,
    generation,
    is_deleting,
    meta,
    spec,
    status,
)

CLUSTER_DEPLOYMENTS: Final = names.ApiRef(
    "k0rdent.mirantis.com", "v1beta1", "clusterdeployments", "ClusterDeployment"
)
WORKERS_KEY: Final = "workersNumber"
CONTROL_PLANES_KEY: Final = "controlPlaneNumber"
SCALE_ANNOTATION: Final = "infraflow.dev/last-scale"
"""``{"runId", "from", "to"}`` of the last scale: a retried step keeps the original ``from``."""

PHASE_READY: Final = "Ready"
PHASE_PROGRESSING: Final = "Progressing"
PHASE_FAILED: Final = "Failed"
PHASE_NOT_READY: Final = "NotReady"
PHASE_DELETING: Final = "Deleting"
PHASE_DELETED: Final = "Deleted"
MAX_WORKERS: Final = 1000
MAX_CONTROL_PLANES: Final = 9


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What ``cluster.create`` asks for (from the run's input)."""

    name: str
    template: str
    credential: str
    workers: int
    control_planes: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer between {low} and {high}")
    return value


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


def cluster_spec_from_input(run_input: dict[str, Any]) -> ClusterSpec:
    """Read and check the ``cluster.create`` input (``ValueError`` names the problem)."""
    name, template, credential = (run_input.get(k) for k in ("name", "template", "credential"))
    for key, value in (("name", name), ("template", template), ("credential", credential)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key} is required")
    config = run_input.get("config")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ValueError("config must be an object")
    return ClusterSpec(
        name=str(name),
        template=str(template),
        credential=str(credential),
        workers=_int(run_input.get("workers"), "workers", 0, MAX_WORKERS),
        control_planes=_int(
            run_input.get("controlPlanes", 1), "controlPlanes", 1, MAX_CONTROL_PLANES
        ),
        config=dict(config),
        labels=_str_map(run_input.get("labels"), "labels"),
        annotations=_str_map(run_input.get("annotations"), "annotations"),
    )


def cluster_manifest(
    resource_id: str, namespace: str, project_id: str, cluster: ClusterSpec, run_id: str
) -> Obj:
    """The ClusterDeployment for ``cluster``; ``workers``/``controlPlanes`` win over ``config``."""
    config = dict(cluster.config)
    config[WORKERS_KEY] = cluster.workers
    config[CONTROL_PLANES_KEY] = cluster.control_planes
    return {
        "apiVersion": CLUSTER_DEPLOYMENTS.api_version,
        "kind": CLUSTER_DEPLOYMENTS.kind,
        "metadata": {
            "name": names.object_name(resource_id),
            "namespace": namespace,
            "labels": {**cluster.labels, **names.labels_for(resource_id, project_id)},
            "annotations": {
                **cluster.annotations,
                names.DISPLAY_NAME_ANNOTATION: cluster.name,
                names.CREATED_BY_RUN_ANNOTATION: run_id,
            },
        },
        "spec": {
            "template": cluster.template,
            "credential": cluster.credential,
            "config": config,
        },
    }


def config_of(obj: Obj) -> dict[str, Any]:
    value = spec(obj).get("config")
    return value if isinstance(value, dict) else {}


def workers_of(obj: Obj) -> int | None:
    value = config_of(obj).get(WORKERS_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def control_planes_of(obj: Obj) -> int | None:
    value = config_of(obj).get(CONTROL_PLANES_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def template_of(obj: Obj) -> str | None:
    value = spec(obj).get("template")
    return str(value) if value else None


def available_upgrades(obj: Obj) -> list[str]:
    value = status(obj).get("availableUpgrades") or []
    return [str(v) for v in value] if isinstance(value, list) else []


def last_scale(obj: Obj) -> dict[str, Any] | None:
    """The scale record the agent left on the object, if any."""
    raw = annotations_of(obj).get(SCALE_ANNOTATION)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def previous_workers(obj: Obj, run_id: str) -> int | None:
    """The count before ``run_id`` scaled: from the scale record if this run already patched
    (a retried attempt), else the current count."""
    record = last_scale(obj)
    if record is not None and record.get("runId") == run_id:
        before = record.get("from")
        return before if isinstance(before, int) else None
    return workers_of(obj)


def scale_patch(obj: Obj, workers: int, run_id: str) -> Obj:
    """Merge patch setting ``workersNumber`` (guarded by the object's resourceVersion)."""
    record = {"runId": run_id, "from": previous_workers(obj, run_id), "to": workers}
    return {
        "metadata": {
            "resourceVersion": meta(obj).get("resourceVersion"),
            "annotations": {SCALE_ANNOTATION: json.dumps(record, separators=(",", ":"))},
        },
        "spec": {"config": {WORKERS_KEY: workers}},
    }


def restore_patch(obj: Obj, workers: int) -> Obj:
    """Merge patch putting ``workersNumber`` back (compensation of a scale)."""
    return {
        "metadata": {"resourceVersion": meta(obj).get("resourceVersion")},
        "spec": {"config": {WORKERS_KEY: workers}},
    }


def template_patch(obj: Obj, template: str) -> Obj:
    """Merge patch moving the cluster to another ClusterTemplate."""
    return {
        "metadata": {"resourceVersion": meta(obj).get("resourceVersion")},
        "spec": {"template": template},
    }


def upgrade_allowed(obj: Obj, target: str) -> bool:
    """An upgrade to ``target`` is allowed if it is listed in ``status.availableUpgrades``
    (or the cluster is already on it: a repeated step)."""
    return target == template_of(obj) or target in available_upgrades(obj)


def _at_generation(obj: Obj, cond: dict[str, Any]) -> bool:
    want = generation(obj)
    observed = status(obj).get("observedGeneration")
    cond_gen = cond.get("observedGeneration")
    if isinstance(cond_gen, int) and cond_gen < want:
        return False
    return not (isinstance(observed, int) and observed < want)


def cluster_phase(obj: Obj | None) -> str:
    """``Ready``, ``Progressing``, ``Failed``, ``NotReady``, ``Deleting`` or ``Deleted``."""
    if obj is None:
        return PHASE_DELETED
    deleting = condition(obj, "Deleting")
    if is_deleting(obj) or (deleting is not None and deleting.get("status") == "True"):
        return PHASE_DELETING
    ready = condition(obj, "Ready")
    if ready is None:
        return PHASE_PROGRESSING
    current = _at_generation(obj, ready)
    if ready.get("status") == "True":
        return PHASE_READY if current else PHASE_PROGRESSING
    if not current or ready.get("reason") == "Progressing":
        return PHASE_PROGRESSING
    if ready.get("reason") == "Failed":
        return PHASE_FAILED
    return PHASE_NOT_READY


def failure_message(obj: Obj) -> str | None:
    """Why the cluster failed at its current generation, or None while it has not."""
    if cluster_phase(obj) != PHASE_FAILED:
        return None
    ready = condition(obj, "Ready") or {}
    return str(ready.get("message") or "the ClusterDeployment reports Ready=False (Failed)")


def observed_cluster(obj: Obj | None) -> dict[str, Any]:
    """The cluster as the cache shows it. The informers publish exactly this and the steps
    return it under ``resource``, so drift is a plain field comparison."""
    phase = cluster_phase(obj)
    if obj is None:
        return {"phase": phase, "ready": False}
    st = status(obj)
    version = st.get("k8sVersion")
    return {
        "phase": phase,
        "ready": phase == PHASE_READY,
        "conditions": conditions_summary(obj),
        "template": template_of(obj),
        "credential": spec(obj).get("credential"),
        "workers": workers_of(obj),
        "controlPlanes": control_planes_of(obj),
        "version": str(version) if version else None,
        "availableUpgrades": available_upgrades(obj),
        "generation": generation(obj),
        "namespace": meta(obj).get("namespace"),
        "kubernetesName": meta(obj).get("name"),
    }
