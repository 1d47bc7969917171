"""Streams, durable consumers and KV buckets: the public NATS contract, defined once.

``ensure_topology`` creates (or updates) all of them idempotently; every service calls it at
start-up, so whichever starts first creates them and services can start in any order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from infraflow.common import subjects

log = logging.getLogger(__name__)

COMMANDS: Final = "WF_COMMANDS"
EVENTS: Final = "WF_EVENTS"
STEPS: Final = "WF_STEPS"
TIMERS: Final = "WF_TIMERS"
OBSERVED: Final = "INFRA_OBSERVED"
WEBHOOK_JOBS: Final = "WF_WEBHOOK_JOBS"
WEBHOOK_DELIVERIES: Final = "WF_WEBHOOK_DELIVERIES"

KV_LOCKS: Final = "wf-locks"
KV_IDEMPOTENCY: Final = "wf-idempotency"
KV_CREDENTIALS: Final = "bmc-credentials"
KV_PROVISIONING: Final = "wf-provisioning"
KV_WEBHOOKS: Final = "wf-webhooks"
KV_RESOURCES: Final = "wf-resources"

DAY_S: Final = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Topology:
    """Tunables of the broker topology (replicas are 3 in production, 1 in development)."""

    replicas: int = 1
    events_max_age_s: float = 0.0  # 0: keep forever (the audit log)
    events_duplicate_window_s: float = 300.0
    steps_duplicate_window_s: float = 900.0
    ack_wait_s: float = 30.0
    """How long a consumer waits for an ack before redelivering (agents extend it while busy)."""
    webhook_log_max_age_s: float = 7 * 24 * 3600.0
    """How long the webhook delivery log keeps attempts."""


def stream_configs(t: Topology) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=COMMANDS,
            description="Run commands: gateway -> orchestrator",
            subjects=[subjects.COMMANDS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            duplicate_window=120.0,
            allow_direct=True,
        ),
        StreamConfig(
            name=EVENTS,
            description="Run events: the durable log and audit trail",
            subjects=[subjects.EVENTS_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            max_age=t.events_max_age_s,
            duplicate_window=t.events_duplicate_window_s,
            allow_direct=True,
            allow_atomic=True,
        ),
        StreamConfig(
            name=STEPS,
            description="Step commands: orchestrator -> agents",
            subjects=[subjects.STEPS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            duplicate_window=t.steps_duplicate_window_s,
        ),
        StreamConfig(
            name=TIMERS,
            description="Durable timers (message schedules) and their firings",
            subjects=[subjects.TIMERS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            allow_msg_schedules=True,
        ),
        StreamConfig(
            name=OBSERVED,
            description="Observed state of servers, clusters and VMs (last per resource)",
            subjects=[subjects.OBSERVED_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            max_msgs_per_subject=1,
            allow_direct=True,
        ),
        StreamConfig(
            name=WEBHOOK_JOBS,
            description="Webhook deliveries waiting for their next attempt (gateway dispatcher)",
            subjects=[subjects.WEBHOOK_JOBS_ALL],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            duplicate_window=3600.0,
        ),
        StreamConfig(
            name=WEBHOOK_DELIVERIES,
            description="Webhook delivery log: every attempt, its status code, latency, error",
            subjects=[subjects.WEBHOOK_DELIVERIES_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=t.replicas,
            max_age=t.webhook_log_max_age_s,
            max_msgs_per_subject=100,
            allow_direct=True,
        ),
    ]


_BUCKETS: Final[tuple[tuple[str, str, float | None], ...]] = (
    (KV_LOCKS, "Per-resource run locks with FIFO wait queues", None),
    (KV_IDEMPOTENCY, "Idempotency keys of accepted requests (24 h)", DAY_S),
    (KV_CREDENTIALS, "Encrypted BMC credentials by server id", None),
    (
        KV_PROVISIONING,
        "Installer callbacks by run and per-site provisioning slots (7 days)",
        7 * DAY_S,
    ),
    (KV_WEBHOOKS, "Webhook registrations (signing secrets sealed) by webhook id", None),
    (KV_RESOURCES, "Project, site and state of each resource (projector -> gateways)", None),
)
"""Every bucket: name, description and TTL in seconds (None: kept until deleted). All keep
one value per key and answer direct gets from every replica."""


def kv_configs(t: Topology) -> list[KeyValueConfig]:
    return [
        KeyValueConfig(
            bucket=bucket,
            description=description,
            history=1,
            ttl=ttl,
            replicas=t.replicas,
            direct=True,
        )
        for bucket, description, ttl in _BUCKETS
    ]


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer, complete at its definition."""

    stream: str
    durable: str
    filter_subjects: list[str]
    ack_wait_s: float = 30.0
    max_deliver: int = -1
    max_ack_pending: int = 2000
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    """Where a new consumer starts: ``ALL`` (the whole stream) or ``NEW`` (from its creation)."""

    def config(self) -> ConsumerConfig:
        filters = self.filter_subjects
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            deliver_policy=self.deliver_policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )


ORCHESTRATOR_COMMANDS: Final = ConsumerSpec(
    stream=COMMANDS,
    durable="orchestrator-commands",
    filter_subjects=[subjects.COMMANDS_ALL],
    description="Start, cancel and resume commands for the orchestrator",
)
ORCHESTRATOR_FACTS: Final = ConsumerSpec(
    stream=EVENTS,
    durable="orchestrator-facts",
    filter_subjects=subjects.events_named("step_started", "step_succeeded", "step_failed"),
    description="Facts appended by agents that the orchestrator decides on",
)
ORCHESTRATOR_TIMERS: Final = ConsumerSpec(
    stream=TIMERS,
    durable="orchestrator-timers",
    filter_subjects=[subjects.TIMERS_FIRED_ALL],
    description="Fired durable timers",
)


WEBHOOK_EVENTS: Final = ConsumerSpec(
    stream=EVENTS,
    durable="gateway-webhook-events",
    filter_subjects=subjects.events_named(
        "run_started", "run_completed", "run_failed", "run_cancelled", "step_failed"
    ),
    ack_wait_s=30.0,
    max_ack_pending=512,
    description="Events that map to webhook events; the gateway's dispatcher fans them out",
    deliver_policy=DeliverPolicy.NEW,
)
WEBHOOK_DELIVERY: Final = ConsumerSpec(
    stream=WEBHOOK_JOBS,
    durable="gateway-webhook-delivery",
    filter_subjects=[subjects.WEBHOOK_JOBS_ALL],
    ack_wait_s=60.0,
    max_ack_pending=1024,
    description="Webhook deliveries; retried with exponential backoff by nak(delay)",
)


def with_ack_wait(spec: ConsumerSpec, ack_wait_s: float) -> ConsumerSpec:
    return replace(spec, ack_wait_s=ack_wait_s)


def agent_consumer(executor: str, site: str) -> ConsumerSpec:
    """The shared durable consumer of one executor at one site (agents scale by replicas)."""
    return ConsumerSpec(
        stream=STEPS,
        durable=f"{subjects.token(executor)}-agent-{subjects.token(site)}",
        filter_subjects=[subjects.steps_for(executor, site)],
        ack_wait_s=30.0,
        max_ack_pending=256,
        description=f"{executor} steps at site {site}",
    )


CORE_CONSUMERS: Final = (ORCHESTRATOR_COMMANDS, ORCHESTRATOR_FACTS, ORCHESTRATOR_TIMERS)

_ALREADY_IN_USE = {10058, 10148, 10013}


async def ensure_stream(js: JetStreamContext, cfg: StreamConfig) -> None:
    assert cfg.name is not None
    try:
        info = await js.stream_info(cfg.name)
    except NotFoundError:
        try:
            await js.add_stream(cfg)
            return
        except BadRequestError as exc:
            if exc.err_code not in _ALREADY_IN_USE:
                raise
            info = await js.stream_info(cfg.name)
    current = info.config
    # Retention and storage cannot change in place; subjects and limits can.
    wanted = replace(cfg, retention=current.retention, storage=current.storage)
    if _differs(current, wanted):
        await js.update_stream(wanted)


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether ``current`` lacks something ``wanted`` asks for. The server reports unset values
    as its defaults (``max_age`` 0, ``duplicate_window`` 120 s), so those are not differences:
    a needless update on every start costs nothing on one node, but on an R3 cluster the
    updates of several services starting together time out and delay their start."""
    keys = ("subjects", "num_replicas", "max_msgs_per_subject")
    flags = ("allow_direct", "allow_atomic", "allow_msg_schedules")
    return (
        any(getattr(current, k) != getattr(wanted, k) for k in keys)
        or (current.max_age or 0.0) != (wanted.max_age or 0.0)
        or bool(wanted.duplicate_window and current.duplicate_window != wanted.duplicate_window)
        or any(bool(getattr(wanted, f)) and not getattr(current, f) for f in flags)
    )


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    try:
        await js.consumer_info(spec.stream, spec.durable)
        return
    except NotFoundError:
        pass
    try:
        await js.add_consumer(spec.stream, spec.config())
    except BadRequestError as exc:
        # created concurrently by another process: fine
        if exc.err_code not in {10013, 10148, 10105}:
            raise


async def ensure_topology(
    js: JetStreamContext,
    topology: Topology | None = None,
    consumers: tuple[ConsumerSpec, ...] = CORE_CONSUMERS,
) -> None:
    """Create or update every stream, KV bucket and core consumer; safe to run concurrently."""
    t = topology or Topology()
    consumers = tuple(with_ack_wait(c, t.ack_wait_s) for c in consumers)
    for cfg in stream_configs(t):
        await ensure_stream(js, cfg)
    for kv in kv_configs(t):
        try:
            await js.create_key_value(kv)
        except BadRequestError as exc:
            if exc.err_code not in _ALREADY_IN_USE:
                raise
    await asyncio.gather(*(ensure_consumer(js, c) for c in consumers))
