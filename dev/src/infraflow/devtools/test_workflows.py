"""Workflow types for tests and benchmarks (dev only), loaded through
``INFRAFLOW_CATALOG_EXTRA_FILE``. Their steps run on the ``test`` executor
(``infraflow.devtools.test_agent``) or, for ``test.power-cycle``, on the real bmc-agent."""

from __future__ import annotations

from pathlib import Path

import msgspec

from infraflow.common.catalog import RetryPolicy, StepSpec, WorkflowType

_FAST = RetryPolicy(
    initial_interval_s=0.2, backoff_coefficient=2.0, max_interval_s=1.0, max_attempts=3, jitter=0.1
)


def _t(
    name: str,
    action: str,
    *,
    compensation: StepSpec | None = None,
    timeout_s: float = 30.0,
    heartbeat_timeout_s: float | None = None,
    params: dict[str, object] | None = None,
    retry: RetryPolicy = _FAST,
) -> StepSpec:
    return StepSpec(
        name=name,
        executor="test",
        action=action,
        timeout_s=timeout_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        retry=retry,
        estimate_ms=50,
        params=dict(params or {}),
        compensation=compensation,
    )


def _undo(name: str) -> StepSpec:
    return _t(f"undo_{name}", "record", params={"undoes": name})


def test_types() -> list[WorkflowType]:
    return [
        WorkflowType(
            name="bench.noop5",
            trigger="benchmark",
            description="Five no-op steps",
            resource_type="server",
            mutating=False,
            steps=tuple(_t(f"s{i}", "noop") for i in range(1, 6)),
        ),
        WorkflowType(
            name="test.saga",
            trigger="test",
            description="Three recorded steps with compensation; step behaviour from the input",
            resource_type="server",
            steps=(
                _t("reserve", "record", compensation=_undo("reserve")),
                _t("configure", "record", compensation=_undo("configure")),
                _t("finish", "scripted"),
            ),
        ),
        WorkflowType(
            name="test.steps",
            trigger="test",
            description="Three steps without compensation; the last is scripted by the input",
            resource_type="server",
            steps=(_t("a", "record"), _t("b", "record"), _t("c", "scripted")),
        ),
        WorkflowType(
            name="test.hold",
            trigger="test",
            description="Holds the resource until released or cancelled",
            resource_type="server",
            steps=(
                _t("prepare", "record", compensation=_undo("prepare")),
                _t("hold", "hold", timeout_s=120.0, heartbeat_timeout_s=10.0),
            ),
        ),
        WorkflowType(
            name="test.power-cycle",
            trigger="test",
            description="Force off then on over Redfish (crash tests)",
            resource_type="server",
            steps=(
                StepSpec(
                    name="off",
                    executor="bmc",
                    action="power",
                    timeout_s=60.0,
                    params={"action": "force-off", "target": "Off"},
                    estimate_ms=500,
                ),
                StepSpec(
                    name="on",
                    executor="bmc",
                    action="power",
                    timeout_s=60.0,
                    params={"action": "on", "target": "On"},
                    estimate_ms=500,
                ),
            ),
        ),
    ]


def write_catalog(path: Path) -> Path:
    path.write_bytes(msgspec.json.encode(test_types()))
    return path
