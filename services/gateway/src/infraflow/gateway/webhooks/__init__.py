"""Webhooks: registrations, Standard Webhooks signing, the SSRF guard and the dispatcher.

    WF_EVENTS ──(durable consumer gateway-webhook-events, run_started/completed/failed/
                 cancelled and step_failed only)──► fan-out: match webhooks by event, types,
                 project ──► WF_WEBHOOK_JOBS (one job per webhook and event, Nats-Msg-Id dedupe)
    WF_WEBHOOK_JOBS ──(durable consumer gateway-webhook-delivery, shared by every replica)──►
                 POST to the resolved, checked address ──► 2xx: ack; else nak(delay=backoff)
                 ... until max attempts ──► every attempt appended to WF_WEBHOOK_DELIVERIES

Modules: ``model`` (pure: records, matching, payloads, backoff), ``signing``, ``ssrf``,
``store`` (KV ``wf-webhooks`` and its in-memory mirror), ``sender`` (one HTTP attempt),
``deliveries`` (the delivery log), ``dispatcher`` (the two consumers), ``operations`` (the API's
use cases) and ``schemas`` (the API's DTOs).
"""
