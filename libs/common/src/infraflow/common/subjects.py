"""Every NATS subject, built in one place. Tokens are validated so a subject never breaks.

Streams and their subjects (DESIGN §2):
    WF_COMMANDS     wf.cmd.<verb>.<runId>
    WF_EVENTS       wf.events.<resourceType>.<resourceId>.<runId>.<event>
    WF_STEPS        wf.step.<executor>.<site>.<action>
    WF_TIMERS       wf.timer.<runId>.<name> (schedules) -> wf.timer.fired.<runId>.<name>
    INFRA_OBSERVED  infra.observed.<resourceType>.<resourceId>
    WF_WEBHOOK_JOBS         wf.webhook.job.<webhookId>               (the gateway's dispatcher)
    WF_WEBHOOK_DELIVERIES   wf.webhook.delivery.<webhookId>.<deliveryId>   (the delivery log)
Core NATS (not persisted):
    wf.heartbeat.<runId>    step heartbeats and progress
    wf.cancel.<runId>       ask agents to stop a run's in-flight step
    wf.query.<name>         read-model queries (request/reply, queue group "projector")
"""

from __future__ import annotations

import re
from typing import Final

NO_RESOURCE: Final = "_"
"""Token used when a run has no single resource (e.g. a fleet-wide sync)."""

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")

COMMANDS_ALL: Final = "wf.cmd.>"
EVENTS_ALL: Final = "wf.events.>"
STEPS_ALL: Final = "wf.step.>"
TIMERS_ALL: Final = "wf.timer.>"
TIMERS_FIRED_ALL: Final = "wf.timer.fired.>"
OBSERVED_ALL: Final = "infra.observed.>"
WEBHOOK_JOBS_ALL: Final = "wf.webhook.job.>"
WEBHOOK_DELIVERIES_ALL: Final = "wf.webhook.delivery.>"
HEARTBEATS_ALL: Final = "wf.heartbeat.*"
CANCELS_ALL: Final = "wf.cancel.*"
QUERY_PREFIX: Final = "wf.query"


def token(value: str) -> str:
    """Return ``value`` if it is a safe single subject token, else raise ``ValueError``."""
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


def command(verb: str, run_id: str) -> str:
    return f"wf.cmd.{token(verb)}.{token(run_id)}"


def event(resource_type: str, resource_id: str, run_id: str, name: str) -> str:
    return f"wf.events.{token(resource_type)}.{token(resource_id)}.{token(run_id)}.{token(name)}"


def run_events(resource_type: str, resource_id: str, run_id: str) -> str:
    """The filter over every event of one run (also its optimistic-concurrency scope)."""
    return f"wf.events.{token(resource_type)}.{token(resource_id)}.{token(run_id)}.*"


def resource_events(resource_type: str, resource_id: str) -> str:
    return f"wf.events.{token(resource_type)}.{token(resource_id)}.>"


def events_named(*names: str) -> list[str]:
    """Filters selecting events by name across all runs."""
    return [f"wf.events.*.*.*.{token(n)}" for n in names]


def parse_event(subject: str) -> tuple[str, str, str, str]:
    """Split an event subject into (resourceType, resourceId, runId, event)."""
    parts = subject.split(".")
    if len(parts) != 6 or parts[0] != "wf" or parts[1] != "events":
        raise ValueError(f"not an event subject: {subject!r}")
    return parts[2], parts[3], parts[4], parts[5]


def step(executor: str, site: str, action: str) -> str:
    return f"wf.step.{token(executor)}.{token(site)}.{token(action)}"


def steps_for(executor: str, site: str = "*") -> str:
    return f"wf.step.{token(executor)}.{site if site == '*' else token(site)}.*"


def timer(run_id: str, name: str) -> str:
    return f"wf.timer.{token(run_id)}.{token(name)}"


def timer_fired(run_id: str, name: str) -> str:
    return f"wf.timer.fired.{token(run_id)}.{token(name)}"


def parse_timer_fired(subject: str) -> tuple[str, str]:
    parts = subject.split(".")
    if len(parts) != 5 or parts[:3] != ["wf", "timer", "fired"]:
        raise ValueError(f"not a fired-timer subject: {subject!r}")
    return parts[3], parts[4]


def kv_key(bucket: str, key: str) -> str:
    """The subject a KV bucket stores ``key`` on (``key`` may be a wildcard pattern)."""
    return f"$KV.{bucket}.{key}"


def observed(resource_type: str, resource_id: str) -> str:
    return f"infra.observed.{token(resource_type)}.{token(resource_id)}"


def heartbeat(run_id: str) -> str:
    return f"wf.heartbeat.{token(run_id)}"


def cancel(run_id: str) -> str:
    return f"wf.cancel.{token(run_id)}"


def query(name: str) -> str:
    return f"{QUERY_PREFIX}.{token(name)}"


def webhook_job(webhook_id: str) -> str:
    """A pending delivery to one webhook (work queue)."""
    return f"wf.webhook.job.{token(webhook_id)}"


def webhook_delivery(webhook_id: str, delivery_id: str) -> str:
    """The attempts of one delivery, in the delivery log."""
    return f"wf.webhook.delivery.{token(webhook_id)}.{token(delivery_id)}"


def webhook_deliveries(webhook_id: str) -> str:
    """The filter over every delivery attempt of one webhook."""
    return f"wf.webhook.delivery.{token(webhook_id)}.*"
