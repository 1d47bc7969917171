"""The workflow catalog: every workflow type, its steps, retry policies, timeouts and compensation.

This is data; the orchestrator executes it and the gateway publishes it
(``GET /v1/workflows/types``). A step's ``compensation`` is the step that undoes it; on failure
or cancel, the compensations of the completed steps run in reverse order. A type whose steps are
not all ``executable`` yet is declared (so it is visible) but starting it is a
``VALIDATION_ERROR``.

    model.py     WorkflowType, StepSpec, RetryPolicy, ResourceStates
    servers.py   server.* and sync.server-state
    compute.py   cluster.*, vm.* and sync.cluster-state
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from infraflow.common.catalog.compute import COMPUTE_TYPES
from infraflow.common.catalog.model import ResourceStates, RetryPolicy, StepSpec, WorkflowType
from infraflow.common.catalog.servers import (
    SERVER_STABLE_STATES,
    SERVER_STATES,
    SERVER_TRANSIENT_STATES,
    SERVER_TYPES,
)

__all__ = [
    "DEFAULT_CATALOG",
    "SERVER_STABLE_STATES",
    "SERVER_STATES",
    "SERVER_TRANSIENT_STATES",
    "WORKFLOW_TYPE_NAMES",
    "Catalog",
    "ResourceStates",
    "RetryPolicy",
    "StepSpec",
    "WorkflowType",
    "describe",
    "load_catalog",
]

_TYPES: tuple[WorkflowType, ...] = (*SERVER_TYPES, *COMPUTE_TYPES)


class Catalog:
    """The workflow types known to this deployment, looked up by name."""

    def __init__(self, types: Iterable[WorkflowType]) -> None:
        self._types: dict[str, WorkflowType] = {}
        for t in types:
            _validate(t)
            self._types[t.name] = t

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __getitem__(self, name: str) -> WorkflowType:
        return self._types[name]

    def get(self, name: str) -> WorkflowType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def types(self) -> list[WorkflowType]:
        return [self._types[n] for n in self.names()]

    def with_types(self, extra: Iterable[WorkflowType]) -> Catalog:
        return Catalog([*self._types.values(), *extra])


def _validate(t: WorkflowType) -> None:
    """Declarations are checked when declared, not when a run trips over them."""
    if not t.steps:
        raise ValueError(f"{t.name}: a workflow needs at least one step")
    names = [s.name for s in t.steps]
    if len(set(names)) != len(names):
        raise ValueError(f"{t.name}: step names must be unique: {names}")
    for s in t.steps:
        if s.timeout_s <= 0 or (s.heartbeat_timeout_s is not None and s.heartbeat_timeout_s <= 0):
            raise ValueError(f"{t.name}.{s.name}: timeouts must be positive")
        if s.retry.max_attempts < 0 or s.retry.backoff_coefficient < 1:
            raise ValueError(f"{t.name}.{s.name}: invalid retry policy")


DEFAULT_CATALOG: Final = Catalog(_TYPES)
WORKFLOW_TYPE_NAMES: Final = tuple(t.name for t in _TYPES)


def load_catalog(extra_file: str | Path | None = None) -> Catalog:
    """The built-in catalog, plus types declared in a JSON file (a list of ``WorkflowType``
    objects; used for deployment-specific or benchmark workflows)."""
    if not extra_file:
        return DEFAULT_CATALOG
    raw = json.loads(Path(extra_file).read_text())
    extra = msgspec.convert(raw, list[WorkflowType])
    return DEFAULT_CATALOG.with_types(extra)


def describe(t: WorkflowType) -> Mapping[str, Any]:
    """The catalog entry as the REST API shows it."""
    data: dict[str, Any] = msgspec.to_builtins(t)
    data["type"] = data.pop("name")
    data["estimatedDuration"] = t.estimate_ms
    data["executable"] = t.executable
    data["compensation"] = [
        s.compensation.name for s in reversed(t.steps) if s.compensation is not None
    ]
    return data
