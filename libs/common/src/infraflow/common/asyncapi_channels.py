"""The channel table of the AsyncAPI document (``infraflow.common.asyncapi``): every subject
Infraflow publishes on, what flows there, who sends and who receives. Data, not logic: a new
subject or contract is documented by adding a row here (``docs/asyncapi.json`` then has to be
regenerated, which ``tests/common/test_asyncapi.py`` enforces).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from infraflow.common import streams, subjects
from infraflow.common.contracts import (
    EVENT_TYPES,
    AttemptRecord,
    CancelNotice,
    CancelRun,
    DeliveryJob,
    EstimateDuration,
    ExecuteStep,
    GetMetrics,
    GetResource,
    GetRun,
    GetRunEvents,
    ListResources,
    ListRuns,
    QueryReply,
    ResourceEntry,
    ResourceObserved,
    ResumeRun,
    RunTimer,
    StartRun,
    StepHeartbeat,
    WebhookRecord,
)
from infraflow.common.locks import LockEntry
from infraflow.common.provisioning import ProvisioningCallback, ProvisioningSlot

_RESOURCE_TYPES: Final = ("server", "cluster", "vm")
PARAMETERS: Final[Mapping[str, Mapping[str, Any]]] = {
    "runId": {"description": "The run id: `run_` + 26 base62 characters (time-sortable)."},
    "resourceType": {
        "description": "The kind of resource the run acts on.",
        "enum": list(_RESOURCE_TYPES),
    },
    "resourceId": {
        "description": "The resource id (`srv_…`, `cls_…`, `vm_…`), or `_` for none.",
    },
    "executor": {
        "description": "Who runs the step: `bmc`, `provisioning` (bmc-agent), `k8s` (k8s-agent),"
        " or a dev executor such as `test`.",
        "examples": ["bmc", "provisioning", "k8s"],
    },
    "site": {"description": "The site whose agents take the step (`default` when unset)."},
    "action": {"description": "The action of the step, e.g. `power`, `inventory`, `apply`."},
    "name": {"description": "The timer: `<kind>-<f|c><step index>-<attempt>`, e.g. `retry-f2-1`."},
    "key": {"description": "The key within the bucket."},
    "webhookId": {"description": "The webhook id (`whk_…`)."},
    "deliveryId": {"description": "The delivery id (`dlv_…`), one per webhook and event."},
    "serverId": {"description": "The server id (`srv_…`)."},
    "n": {"description": "The slot number within the site (0-based)."},
}

_TRACE: Final = {"traceparent": "W3C trace context of the hop that published it, when traced."}


def _headers(name: str, **more: str) -> tuple[str, dict[str, str]]:
    return name, {**{k.replace("_", "-"): v for k, v in more.items()}, **_TRACE}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One channel: where it is, what flows on it, who sends and who receives."""

    key: str
    address: str | None
    messages: Sequence[Any]
    """Contract types, or ``(name, schema, description)`` for values that are not contracts."""
    description: str
    tag: str
    senders: Sequence[str] = ()
    receivers: Sequence[str] = ()
    headers: tuple[str, Mapping[str, str]] | None = None
    """The NATS headers its publishers set: (schema name, header -> description)."""
    stream: str | None = None
    bucket: str | None = None
    queue: str | None = None
    reply: str | None = None
    """The channel key of the replies (request/reply)."""


def channel_specs() -> list[ChannelSpec]:
    command_headers = _headers(
        "CommandHeaders",
        Nats_Msg_Id="Deduplication: the run id for `start`, `<runId>:cancel:<evt id>` for "
        "`cancel`, `resume:<runId>:<previous holder>` for `resume`.",
    )
    specs = [
        ChannelSpec(
            key=f"command{verb.capitalize()}",
            address=f"wf.cmd.{verb}.{{runId}}",
            messages=[kind],
            description=f"`{verb}` commands of one run ({streams.COMMANDS}, a work queue). " + text,
            tag="commands",
            senders=senders,
            receivers=("orchestrator",),
            headers=command_headers,
            stream=streams.COMMANDS,
        )
        for verb, kind, senders, text in (
            (
                "start",
                StartRun,
                ("gateway", "projector"),
                "Retries are starts with `retryOf` (and `fromStep`); the projector starts "
                "`sync.*` runs on drift.",
            ),
            ("cancel", CancelRun, ("gateway",), "`terminate` skips compensation."),
            (
                "resume",
                ResumeRun,
                ("orchestrator",),
                "The resource lock was handed to this queued run.",
            ),
        )
    ]
    event_headers = _headers(
        "EventHeaders",
        Nats_Msg_Id="Deduplication: `<attempt id>:started|result` for agent facts, derived "
        "from the decision for orchestrator events.",
        Nats_Expected_Last_Subject_Sequence="Optimistic concurrency on the run's events.",
        Nats_Expected_Last_Subject_Sequence_Subject="`wf.events.<type>.<id>.<runId>.*`: the "
        "scope of the concurrency check.",
    )
    for name, kind in EVENT_TYPES.items():
        by_agent = name in {"step_started", "step_succeeded", "step_failed"}
        specs.append(
            ChannelSpec(
                key="event" + "".join(p.capitalize() for p in name.split("_")),
                address=f"wf.events.{{resourceType}}.{{resourceId}}.{{runId}}.{name}",
                messages=[kind],
                description=f"The `{name}` event of a run, in {streams.EVENTS} (the log and "
                "audit trail, kept). The last token repeats the payload's `event`.",
                tag="events",
                senders=("bmc-agent", "k8s-agent") if by_agent else ("orchestrator",),
                receivers=("projector", "orchestrator", "gateway")
                if by_agent
                else ("projector", "gateway"),
                headers=event_headers,
                stream=streams.EVENTS,
            )
        )
    specs += [
        ChannelSpec(
            key="stepExecute",
            address="wf.step.{executor}.{site}.{action}",
            messages=[ExecuteStep],
            description=f"One attempt of a step for an executor at a site ({streams.STEPS}, a "
            "work queue with a 15 min duplicate window). Agents share one durable consumer "
            "per executor and site: `<executor>-agent-<site>`.",
            tag="steps",
            senders=("orchestrator",),
            receivers=("bmc-agent", "k8s-agent"),
            headers=_headers(
                "StepHeaders", Nats_Msg_Id="The attempt id `<runId>:<f|c>:<index>:<attempt>`."
            ),
            stream=streams.STEPS,
        ),
        ChannelSpec(
            key="timerSchedule",
            address="wf.timer.{runId}.{name}",
            messages=[RunTimer],
            description=f"A durable timer ({streams.TIMERS}, message schedules): a step's "
            "start-to-close or heartbeat deadline, or the end of a retry backoff. Re-arming "
            "replaces it; cancelling purges the subject.",
            tag="timers",
            senders=("orchestrator",),
            headers=_headers(
                "TimerHeaders",
                Nats_Schedule="`@at <RFC 3339 time>`: when it fires.",
                Nats_Schedule_Target="`wf.timer.fired.<runId>.<name>`: where it fires.",
            ),
            stream=streams.TIMERS,
        ),
        ChannelSpec(
            key="timerFired",
            address="wf.timer.fired.{runId}.{name}",
            messages=[RunTimer],
            description="A timer that fired: published by the NATS server from the schedule.",
            tag="timers",
            senders=("nats-server",),
            receivers=("orchestrator",),
            stream=streams.TIMERS,
        ),
        ChannelSpec(
            key="observed",
            address="infra.observed.{resourceType}.{resourceId}",
            messages=[ResourceObserved],
            description=f"The observed state of a resource ({streams.OBSERVED}, last per "
            "subject): Kubernetes informers and BMC power sync. The projector starts a "
            "`sync.*` run on drift.",
            tag="observations",
            senders=("bmc-agent", "k8s-agent"),
            receivers=("projector",),
            stream=streams.OBSERVED,
        ),
        ChannelSpec(
            key="heartbeat",
            address="wf.heartbeat.{runId}",
            messages=[StepHeartbeat],
            description="Core NATS (not persisted): an agent is still working on an attempt, "
            "with optional progress. Pushes out the attempt's heartbeat deadline.",
            tag="core",
            senders=("bmc-agent", "k8s-agent"),
            receivers=("orchestrator",),
            queue="orchestrator",
        ),
        ChannelSpec(
            key="cancelNotice",
            address="wf.cancel.{runId}",
            messages=[CancelNotice],
            description="Core NATS (not persisted): stop the run's in-flight step at a safe "
            "point (or only one timed-out attempt).",
            tag="core",
            senders=("orchestrator",),
            receivers=("bmc-agent", "k8s-agent"),
        ),
    ]
    specs += [
        ChannelSpec(
            key="webhookJob",
            address="wf.webhook.job.{webhookId}",
            messages=[DeliveryJob],
            description=f"A run event to deliver to one webhook ({streams.WEBHOOK_JOBS}, a "
            "work queue): the gateway's dispatcher fans events out, its senders attempt them "
            "with backoff.",
            tag="webhooks",
            senders=("gateway",),
            receivers=("gateway",),
            headers=_headers("WebhookJobHeaders", Nats_Msg_Id="`<webhookId>:<eventId>`."),
            stream=streams.WEBHOOK_JOBS,
        ),
        ChannelSpec(
            key="webhookDelivery",
            address="wf.webhook.delivery.{webhookId}.{deliveryId}",
            messages=[AttemptRecord],
            description=f"Every delivery attempt ({streams.WEBHOOK_DELIVERIES}, the delivery "
            "log): status code, latency, error, next attempt.",
            tag="webhooks",
            senders=("gateway",),
            receivers=("gateway",),
            stream=streams.WEBHOOK_DELIVERIES,
        ),
    ]
    for query in (
        GetRun,
        ListRuns,
        GetRunEvents,
        GetMetrics,
        GetResource,
        ListResources,
        EstimateDuration,
    ):
        tag = str(query.__struct_config__.tag)
        specs.append(
            ChannelSpec(
                key="query" + query.__name__,
                address=subjects.query(tag),
                messages=[query],
                description=f"Read-model query `{tag}` (core NATS request/reply, queue group "
                "`projector`); the reply is a `QueryReply` on the request's reply subject.",
                tag="queries",
                senders=("gateway",),
                receivers=("projector",),
                queue="projector",
                reply="queryReply",
            )
        )
    specs.append(
        ChannelSpec(
            key="queryReply",
            address=None,
            messages=[QueryReply],
            description="The answer to a read-model query, sent to the request's reply subject "
            "(an `_INBOX.…` of the asking connection): `data` on success, `error` otherwise.",
            tag="queries",
            senders=("projector",),
            receivers=("gateway",),
        )
    )
    return specs + kv_specs()


def kv_specs() -> list[ChannelSpec]:
    """The KV buckets' keys and values (raw subjects ``$KV.<bucket>.<key>``)."""
    opaque = {"type": "string", "description": "A Fernet token (not JSON)."}
    instant = {"type": "string", "format": "date-time", "description": "ISO 8601 time (text)."}
    idempotency = {
        "type": "object",
        "description": "The gateway's IdempotencyRecord: state (`pending`|`done`), bodyHash, "
        "runId, resourceId, createdAtMs, and once done status, body and location.",
    }
    kv: list[tuple[str, str, str, list[Any], str, tuple[str, ...], tuple[str, ...]]] = [
        (
            "kvLocks",
            streams.KV_LOCKS,
            "{resourceType}.{resourceId}",
            [LockEntry],
            "The holder and FIFO queue of a busy resource; changed only by compare-and-set.",
            ("orchestrator",),
            ("orchestrator", "gateway"),
        ),
        (
            "kvIdempotency",
            streams.KV_IDEMPOTENCY,
            "{key}",
            [("IdempotencyRecord", idempotency, "A request's Idempotency-Key claim (24 h).")],
            "Key: sha256 of caller, method, path and Idempotency-Key.",
            ("gateway",),
            ("gateway",),
        ),
        (
            "kvCredentials",
            streams.KV_CREDENTIALS,
            "{serverId}",
            [("SealedCredentials", opaque, "BMC credentials sealed with Fernet.")],
            "A server's BMC credentials, opened only by its site's bmc-agent.",
            ("gateway", "bmc-agent"),
            ("bmc-agent",),
        ),
        (
            "kvCredentialCandidates",
            streams.KV_CREDENTIALS,
            "{serverId}.candidate.{runId}",
            [("SealedCredentials", opaque, "BMC credentials sealed with Fernet.")],
            "New credentials waiting for their rotation run to check them.",
            ("gateway",),
            ("bmc-agent",),
        ),
        (
            "kvProvisioningCallback",
            streams.KV_PROVISIONING,
            "callback.{runId}",
            [ProvisioningCallback],
            "The installer's first callback for a provisioning run.",
            ("gateway",),
            ("bmc-agent",),
        ),
        (
            "kvProvisioningWait",
            streams.KV_PROVISIONING,
            "wait.{runId}",
            [("CallbackWaitStart", instant, "When the run began waiting for its callback.")],
            "When a provisioning run began waiting for its callback.",
            ("bmc-agent",),
            ("bmc-agent",),
        ),
        (
            "kvWebhooks",
            streams.KV_WEBHOOKS,
            "{webhookId}",
            [WebhookRecord],
            "Webhook registrations; the signing secret sealed with Fernet.",
            ("gateway",),
            ("gateway",),
        ),
        (
            "kvResources",
            streams.KV_RESOURCES,
            "{resourceType}.{resourceId}",
            [ResourceEntry],
            "Project, site and state of a resource, for the checks of a run start.",
            ("projector",),
            ("gateway",),
        ),
        (
            "kvProvisioningSlot",
            streams.KV_PROVISIONING,
            "slot.{site}.{n}",
            [ProvisioningSlot],
            "A held provisioning slot of a site.",
            ("bmc-agent",),
            ("bmc-agent",),
        ),
    ]
    return [
        ChannelSpec(
            key=key,
            address=subjects.kv_key(bucket, pattern),
            messages=messages,
            description=f"KV bucket `{bucket}`: {text}",
            tag="kv",
            senders=senders,
            receivers=receivers,
            bucket=bucket,
        )
        for key, bucket, pattern, messages, text, senders, receivers in kv
    ]
