"""The catalog's model: workflow types, steps, retry policies and resource states.

This is data; the orchestrator executes it and the gateway publishes it
(``GET /v1/workflows/types``).
A step's ``compensation`` is the step that undoes it; on failure or cancel, the compensations of
the completed steps run in reverse order. A type whose steps are not all ``executable`` yet is
declared (so it is visible) but starting it is a ``VALIDATION_ERROR``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from infraflow.common.contracts.base import Contract


class RetryPolicy(Contract, frozen=True, kw_only=True):
    """Exponential backoff between attempts of one step (Temporal-style)."""

    initial_interval_s: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval_s: float = 60.0
    max_attempts: int = 3
    non_retryable_codes: frozenset[str] = frozenset()
    jitter: float = 0.1

    def delay_s(self, failed_attempt: int, seed: str) -> float:
        """Backoff before the attempt after ``failed_attempt`` (1-based); jitter is derived
        from ``seed`` so the same failure always yields the same delay."""
        base = self.initial_interval_s * self.backoff_coefficient ** max(failed_attempt - 1, 0)
        base = min(base, self.max_interval_s)
        if self.jitter <= 0:
            return base
        digest = hashlib.blake2b(seed.encode(), digest_size=4).digest()
        unit = int.from_bytes(digest, "big") / 0xFFFFFFFF  # in [0, 1]
        return max(0.0, base * (1.0 + self.jitter * (2.0 * unit - 1.0)))

    def allows_retry(self, failed_attempt: int, code: str, retryable: bool) -> bool:
        return (
            retryable
            and code not in self.non_retryable_codes
            and (self.max_attempts <= 0 or failed_attempt < self.max_attempts)
        )


class StepSpec(Contract, frozen=True, kw_only=True):
    """One step: who executes it, how long it may take and how it is retried."""

    name: str
    executor: str
    action: str
    description: str = ""
    timeout_s: float = 60.0
    heartbeat_timeout_s: float | None = None
    retry: RetryPolicy = RetryPolicy()
    estimate_ms: int = 1000
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    compensation: StepSpec | None = None
    executable: bool = True


class ResourceStates(Contract, frozen=True, kw_only=True):
    """The resource's state while a run of this type is active and after it ends (None: keep)."""

    running: str | None = None
    completed: str | None = None
    failed: str | None = None
    cancelled: str | None = None


class WorkflowType(Contract, frozen=True, kw_only=True):
    """A workflow type: an ordered list of steps acting on one kind of resource."""

    name: str
    trigger: str
    description: str
    resource_type: str
    steps: tuple[StepSpec, ...]
    mutating: bool = True
    creates_resource: bool = False
    states: ResourceStates = ResourceStates()
    allowed_from: frozenset[str] | None = None

    @property
    def executable(self) -> bool:
        return all(
            s.executable and (s.compensation is None or s.compensation.executable)
            for s in self.steps
        )

    @property
    def estimate_ms(self) -> int:
        return sum(s.estimate_ms for s in self.steps)

    def step_index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        raise KeyError(name)

    @property
    def has_compensation(self) -> bool:
        return any(s.compensation is not None for s in self.steps)


def step_builder(executor: str, retry: RetryPolicy, **defaults: Any) -> Callable[..., StepSpec]:
    """A ``StepSpec`` factory for one executor: ``bmc = step_builder("bmc", BMC_RETRY)`` then
    ``bmc("power_off", "power", timeout_s=300.0, ...)``. Keyword arguments override defaults."""

    def build(name: str, action: str, **fields: Any) -> StepSpec:
        merged = {"timeout_s": 120.0, "estimate_ms": 2000, **defaults, **fields}
        merged["params"] = dict(merged.get("params") or {})
        return StepSpec(name=name, executor=executor, action=action, retry=retry, **merged)

    return build
