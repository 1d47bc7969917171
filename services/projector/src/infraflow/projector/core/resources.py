"""Folding run events into the resource cache (servers now; clusters and VMs share the shape).

* ``run_created`` of a type that ``creates_resource`` creates (or refreshes) the resource from the
  run's redacted input.
* While a mutating run is active it is the resource's ``activeRunId``; if its type declares
  ``states.running`` the resource shows that state.
* A forward ``step_succeeded`` whose output holds a ``resource`` dict merges those attributes
  (``state`` excepted: state comes only from the catalog) and stamps ``observedAt``.
* The terminal event sets ``lastRunId``, clears ``activeRunId`` and applies the catalog's state
  for the outcome; without one, a state the run had set is rolled back to the prior state.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from infraflow.common.catalog import WorkflowType
from infraflow.common.contracts import (
    AnyRunEvent,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunFailed,
    RunStarted,
    StepSucceeded,
)
from infraflow.projector.core.state import (
    CANCELLED,
    COMPLETED,
    FAILED,
    ResourceState,
    RunState,
    to_micros,
)

RESOURCE_OUTPUT_KEY: Final = "resource"
"""The key of a step output whose dict value updates the resource's attributes."""

_NOT_ATTRIBUTES: Final = frozenset({"name", "site", "projectId", "project_id", "state"})
_SECRET_MARKERS: Final = ("password", "passwd", "secret", "token", "privatekey", "apikey")


def redact(value: Any) -> Any:
    """``value`` without any key that looks like a secret, at any depth.

    Inputs reach the projector already redacted; this is the second line of defence, since the
    cache is served to every reader of the resource.
    """
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not _is_secret(str(k))}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    folded = key.lower().replace("_", "").replace("-", "")
    return any(marker in folded for marker in _SECRET_MARKERS)


def attributes_from_input(run_input: dict[str, Any]) -> dict[str, Any]:
    """The type-specific attributes of a new resource: its input minus the top-level fields."""
    cleaned: dict[str, Any] = redact(run_input)
    return {k: v for k, v in cleaned.items() if k not in _NOT_ATTRIBUTES}


def evolve_resource(
    resource: ResourceState | None,
    event: AnyRunEvent,
    run: RunState,
    workflow: WorkflowType | None,
) -> ResourceState | None:
    """Apply one event of ``run`` (already folded into ``run``) to its resource.

    ``resource`` is None when the cache has no row for the run's resource yet; the result is the
    (possibly new) resource, or None when the event does not concern the cache.
    """
    at = to_micros(event.time)
    if isinstance(event, RunCreated):
        if workflow is None or not workflow.creates_resource:
            return resource
        resource = _create_or_refresh(resource, event, at)
        if run.mutating:
            _activate(resource, run.id, workflow, at)
        return resource
    if resource is None:
        return None  # a resource the cache never saw created: nothing safe to attach to
    if isinstance(event, RunStarted):
        if run.mutating:
            _activate(resource, run.id, workflow, at)
    elif isinstance(event, StepSucceeded):
        observed = event.output.get(RESOURCE_OUTPUT_KEY)
        if event.phase == "forward" and isinstance(observed, dict):
            _observe(resource, observed, at)
    elif isinstance(event, RunCompleted):
        _release(resource, run.id, workflow, COMPLETED, at)
    elif isinstance(event, RunFailed):
        _release(resource, run.id, workflow, FAILED, at)
    elif isinstance(event, RunCancelled):
        _release(resource, run.id, workflow, CANCELLED, at)
    return resource


def _create_or_refresh(resource: ResourceState | None, event: RunCreated, at: int) -> ResourceState:
    name = event.input.get("name")
    attrs = attributes_from_input(event.input)
    if resource is None:
        return ResourceState(
            id=event.resource_id,
            type=event.resource_type,
            name=name if isinstance(name, str) else None,
            project_id=event.project_id,
            site=event.site,
            attributes=attrs,
            created_at=at,
            updated_at=at,
            revision=1,
        )
    # e.g. a retry of a failed registration: same resource, possibly corrected input
    if isinstance(name, str):
        resource.name = name
    resource.site = event.site if event.site is not None else resource.site
    resource.project_id = event.project_id if event.project_id else resource.project_id
    resource.attributes.update(attrs)
    _touch(resource, at)
    return resource


def _activate(resource: ResourceState, run_id: str, workflow: WorkflowType | None, at: int) -> None:
    if resource.active_run_id == run_id:
        return
    running = workflow.states.running if workflow is not None else None
    if running is not None:
        resource.prior_state = resource.state
        resource.state = running
    resource.active_run_id = run_id
    _touch(resource, at)


def _observe(resource: ResourceState, observed: dict[str, Any], at: int) -> None:
    if resource.observed_at is not None and at < resource.observed_at:
        return  # an older observation arriving late never overwrites a newer one
    update: dict[str, Any] = redact(observed)
    resource.attributes.update({k: v for k, v in update.items() if k != "state"})
    resource.observed_at = at
    _touch(resource, at)


def _release(
    resource: ResourceState, run_id: str, workflow: WorkflowType | None, outcome: str, at: int
) -> None:
    was_active = resource.active_run_id == run_id
    target: str | None = None
    running: str | None = None
    if workflow is not None:
        target = getattr(workflow.states, outcome)
        running = workflow.states.running
    if target is not None:
        resource.state = target
    elif was_active and running is not None and resource.state == running:
        # no state declared for this outcome: undo the run's "running" state
        resource.state = resource.prior_state if resource.prior_state is not None else running
    if was_active:
        resource.active_run_id = None
        resource.prior_state = None
    resource.last_run_id = run_id
    _touch(resource, at)


def _touch(resource: ResourceState, at: int) -> None:
    resource.updated_at = at
    resource.revision += 1
