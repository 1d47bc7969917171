"""W3C trace context in logs and NATS headers."""

from __future__ import annotations

import io
import json
import logging

from infraflow.common.logs import (
    TRACEPARENT,
    JsonFormatter,
    adopt_trace,
    new_traceparent,
    trace_headers,
    trace_id,
    trace_var,
    valid_traceparent,
)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_validation() -> None:
    assert valid_traceparent(PARENT) == PARENT
    assert valid_traceparent(new_traceparent()) is not None
    for bad in (None, "", "01-" + PARENT[3:], PARENT.upper(), "00-" + "0" * 32 + PARENT[35:]):
        assert valid_traceparent(bad) is None
    assert trace_id(PARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_outgoing_headers_continue_the_trace_with_a_new_span() -> None:
    token = trace_var.set(None)
    try:
        assert trace_headers() == {}
        adopt_trace({"Nats-Msg-Id": "x"})  # no trace on the message: nothing changes
        assert trace_var.get() is None
        adopt_trace({TRACEPARENT: PARENT})
        out = trace_headers()[TRACEPARENT]
        assert trace_id(out) == trace_id(PARENT)
        assert out != PARENT  # a new span id
        assert out.endswith("-01")
    finally:
        trace_var.reset(token)


def test_json_lines_carry_the_trace_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("trace-test")
    logger.addHandler(handler)
    logger.propagate = False
    token = trace_var.set(PARENT)
    try:
        logger.warning("hello")
    finally:
        trace_var.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["traceId"] == trace_id(PARENT)
    assert line["msg"] == "hello"
