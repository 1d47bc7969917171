"""Structured JSON logs with the run, step and request ids of the current context, and the
W3C trace context (``traceparent``) that NATS headers carry from the gateway to the agents."""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)
step_var: ContextVar[str | None] = ContextVar("step", default=None)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
trace_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

TRACEPARENT = "traceparent"
"""The W3C trace-context header; the same name on HTTP requests and NATS messages."""
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent() -> str:
    """A new trace (sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def valid_traceparent(value: str | None) -> str | None:
    """``value`` if it is a well-formed version-00 ``traceparent`` with non-zero ids."""
    m = _TRACEPARENT.match(value or "")
    if not m or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(0)


def trace_id(traceparent: str | None) -> str | None:
    """The trace id part of a ``traceparent``."""
    valid = valid_traceparent(traceparent)
    return valid.split("-")[1] if valid else None


def trace_headers() -> dict[str, str]:
    """Headers continuing the current trace on an outgoing message: same trace, a new span
    (this hop) as the parent; empty when no trace is current."""
    current = trace_var.get()
    tid = trace_id(current)
    if tid is None or current is None:
        return {}
    return {TRACEPARENT: f"00-{tid}-{secrets.token_hex(8)}-{current[-2:]}"}


def adopt_trace(headers: Mapping[str, str] | None) -> None:
    """Make the trace of an incoming message (if any) the current one."""
    value = valid_traceparent((headers or {}).get(TRACEPARENT))
    if value is not None:
        trace_var.set(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message and context ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (
            ("runId", run_id_var),
            ("stepId", step_var),
            ("requestId", request_id_var),
        ):
            value = getattr(record, key, None) or var.get()
            if value:
                out[key] = value
        trace = getattr(record, "traceId", None) or trace_id(trace_var.get())
        if trace:
            out["traceId"] = trace
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(service: str, level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "asyncio", "urllib3", "sushy"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
