"""The CLI without a server: an ``httpx.MockTransport`` plays the API. Error reporting (the
API's code and message, field errors, exit codes), JSON output, the SSE parser, the polling
fallback when the gateway cannot stream, and the ETA."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from infraflow.cli.app import Context, cli
from infraflow.cli.client import ApiClient, RunEventItem, _parse_sse
from infraflow.cli.output import describe_event
from infraflow.cli.watch import eta_seconds

RUN = "run_0123456789abcdefghijklmnop"
Handler = Callable[[httpx.Request], httpx.Response]


def envelope(data: Any, status: int = 200, **meta: Any) -> httpx.Response:
    body = {"success": True, "data": data, "meta": {"requestId": "req_t-1-a", **meta}}
    return httpx.Response(status, json=body)


def error(status: int, code: str, message: str, **details: Any) -> httpx.Response:
    body = {
        "success": False,
        "error": {"code": code, "message": message, **({"details": details} if details else {})},
        "meta": {"requestId": "req_t-2-b"},
    }
    return httpx.Response(status, json=body)


def invoke(handler: Handler, *args: str, stdin: str | None = None) -> Any:
    context = Context(url="http://api", token="t", transport=httpx.MockTransport(handler))
    return CliRunner().invoke(cli, list(args), obj=context, input=stdin)


def run(status: str, done: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": RUN,
        "type": "test.steps",
        "status": status,
        "resourceType": "server",
        "resourceId": "srv_1",
        "triggeredBy": "me",
        "createdAt": "2025-01-01T00:00:00Z",
        "estimatedDuration": 3000,
        "progress": {"completedSteps": done, "totalSteps": 3, "currentStep": "b"},
        **extra,
    }


def test_api_errors_print_code_message_and_fields() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t"
        return error(
            400, "VALIDATION_ERROR", "the run filters are not valid", fields={"status": "bad"}
        )

    result = invoke(handler, "runs", "list", "--status", "exploded")
    assert result.exit_code == 4
    assert "Error: VALIDATION_ERROR: the run filters are not valid" in result.stderr
    assert "status: bad" in result.stderr
    assert "req_t-2-b" in result.stderr
    assert result.stdout == ""


def test_not_found_and_unreachable() -> None:
    result = invoke(lambda r: error(404, "NOT_FOUND", "no such run"), "runs", "get", RUN)
    assert result.exit_code == 4
    assert "Error: NOT_FOUND: no such run" in result.stderr

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = invoke(refuse, "runs", "get", RUN)
    assert result.exit_code == 5
    assert "cannot reach http://api" in result.stderr
    result = invoke(lambda r: httpx.Response(502, text="<html>bad gateway</html>"), "metrics")
    assert result.exit_code == 5
    assert "without a JSON envelope" in result.stderr


def test_list_json_follows_pages_and_parses() -> None:
    pages = {
        None: ([run("failed")], {"hasMore": True, "nextCursor": "c2"}),
        "c2": ([run("completed")], {"hasMore": False, "nextCursor": None}),
    }
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        seen.append(params)
        items, pagination = pages[params.get("pageToken")]
        return envelope(items, pagination={"pageSize": 1, **pagination})

    result = invoke(handler, "runs", "list", "--type", "test.steps", "--all", "--json")
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in json.loads(result.stdout)] == ["failed", "completed"]
    assert seen[0]["type"] == "test.steps"
    table = invoke(handler, "runs", "list", "--limit", "1")
    assert RUN in table.stdout
    assert "failed" in table.stdout


def test_retry_posts_the_step_and_prints_the_new_run() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/workflows/runs/{RUN}/retry"
        assert json.loads(request.content) == {"fromStep": "c"}
        return envelope(run("pending", id="run_new", retryOf=RUN), 202, workflowId="run_new")

    result = invoke(handler, "runs", "retry", RUN, "--from-step", "c")
    assert result.exit_code == 0, result.output
    assert "Accepted run_new" in result.stdout
    result = invoke(handler, "runs", "retry", RUN, "--from-step", "c", "--json")
    assert json.loads(result.stdout)["retryOf"] == RUN


def test_bulk_asks_after_the_dry_run() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if body.get("dryRun"):
            preview = {"matched": 2, "matchedExact": True, "limit": 200, "runIds": ["r1", "r2"]}
            return envelope({"dryRun": True, **preview})
        item = {"runId": "r1", "status": 202, "success": True, "meta": {"workflowId": "r9"}}
        refused = {
            "runId": "r2",
            "status": 409,
            "success": False,
            "error": {"code": "INVALID_STATE_TRANSITION", "message": "it completed"},
        }
        return envelope({"results": [item, refused], "accepted": 1, "failed": 1}, 207)

    result = invoke(handler, "runs", "bulk-retry", "--status", "failed", stdin="n\n")
    assert result.exit_code == 1  # declined: nothing but the dry run was sent
    assert "2 run(s) match" in result.stdout
    assert len(bodies) == 1
    result = invoke(handler, "runs", "bulk-retry", "--status", "failed", "--yes")
    assert result.exit_code == 0, result.output
    assert bodies[-1] == {"filter": {"status": "failed"}}
    assert "r1  202 accepted -> r9" in result.stdout
    assert "r2  409 INVALID_STATE_TRANSITION: it completed" in result.stdout


def test_sse_parser() -> None:
    lines = [
        ": keep-alive",
        "id: 7",
        "event: step_started",
        'data: {"event": "step_started", "step": "a", "attempt": 1}',
        "",
        "id: 8",
        "event: run_completed",
        'data: {"event": "run_completed"}',
        "",
    ]
    items = list(_parse_sse(iter(lines)))
    assert items[0] is None
    assert items[1] == RunEventItem(
        7, "step_started", {"event": "step_started", "step": "a", "attempt": 1}
    )
    assert items[2] is not None
    assert items[2].name == "run_completed"


def test_follow_falls_back_to_polling_without_sse() -> None:
    events = [
        {"seq": 1, "event": {"event": "run_started"}},
        {"seq": 2, "event": {"event": "run_completed"}},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params.get("afterSeq", 0))
        return envelope([e for e in events if e["seq"] > after])

    transport = httpx.MockTransport(handler)
    with ApiClient("http://api", "t", transport=transport) as client:
        names = [i.name for i in client.follow_events(RUN, poll_s=0.01) if i is not None]
    assert names == ["run_started", "run_completed"]


def test_watch_exit_code_follows_the_run() -> None:
    states = iter([run("running", 1), run("running", 2), run("failed", 2, error={"code": "X"})])
    final: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return envelope([{"seq": 1, "event": {"event": "run_failed", "error": {"code": "X"}}}])
        nonlocal final
        final = next(states, final)
        return envelope(final)

    result = invoke(handler, "runs", "watch", RUN)
    assert result.exit_code == 1, result.output
    assert "[1/3]" in result.stdout
    assert "failed" in result.stdout.splitlines()[-1]


def test_eta() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    started = (now - timedelta(seconds=1)).isoformat()
    assert eta_seconds(run("running", startedAt=started), now) == pytest.approx(2.0)
    late = (now - timedelta(seconds=10)).isoformat()
    assert eta_seconds(run("running", 2, startedAt=late), now) == pytest.approx(5.0)
    assert eta_seconds(run("completed", 3, startedAt=late), now) == 0.0
    assert eta_seconds(run("pending", estimatedDuration=0), now) is None


def test_event_lines() -> None:
    failed = {
        "event": "step_failed",
        "step": "c",
        "attempt": 1,
        "error": {"code": "FLAKY", "message": "no", "retryable": True},
    }
    assert describe_event(failed) == "failed c (attempt 1): FLAKY: no (will retry)"
    assert describe_event({"event": "run_queued", "waitingFor": "run_x"}) == "queued behind run_x"
    assert describe_event({"event": "run_completed"}) == "completed"


def recorder() -> tuple[list[httpx.Request], Handler]:
    """A handler that accepts everything with a 202 and remembers the requests."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return envelope([], pagination={"pageSize": 50, "hasMore": False})
        return envelope(run("pending", id="run_x"), 202, workflowId="run_x")

    return seen, handler


CLUSTER = {"name": "c1", "template": "t1", "credential": "cred", "workers": 2}
VM = {
    "name": "v",
    "cpu": 2,
    "memoryGiB": 4.0,
    "image": "img",
    "gpus": [{"type": "nvidia.com/A100", "count": 2}],
    "running": False,
}
BMC = {"address": "https://10.0.0.5", "username": "admin", "password": "pw", "verifyTls": True}
COMMANDS = [
    (
        "clusters create -p prj --name c1 --template t1 --credential cred --workers 2",
        "POST",
        "/v1/projects/prj/clusters",
        CLUSTER,
    ),
    (
        "clusters scale -p prj cls_1 --workers 5",
        "POST",
        "/v1/projects/prj/clusters/cls_1/scale",
        {"workers": 5},
    ),
    (
        "clusters upgrade -p prj cls_1 --template t2",
        "POST",
        "/v1/projects/prj/clusters/cls_1/upgrade",
        {"template": "t2"},
    ),
    ("clusters delete -p prj cls_1 --yes", "DELETE", "/v1/projects/prj/clusters/cls_1", None),
    (
        "vms create -p prj --name v --cpu 2 --memory-gib 4 --image img "
        "--gpu nvidia.com/A100:2 --stopped",
        "POST",
        "/v1/projects/prj/vms",
        VM,
    ),
    (
        "vms power -p prj vm_1 restart",
        "POST",
        "/v1/projects/prj/vms/vm_1/power",
        {"action": "restart"},
    ),
    ("vms delete -p prj vm_1 --yes", "DELETE", "/v1/projects/prj/vms/vm_1", None),
    ("vms list -p prj", "GET", "/v1/projects/prj/vms", None),
    (
        "servers register --name n1 --bmc-address https://10.0.0.5 --bmc-username admin "
        "--bmc-password pw --tag rack=r1",
        "POST",
        "/v1/servers",
        {"name": "n1", "bmc": BMC, "tags": {"rack": "r1"}},
    ),
    ("servers inspect srv_1", "POST", "/v1/servers/srv_1/inspect", {}),
    (
        "servers provision srv_1 --image-url http://img/iso --callback-timeout 600",
        "POST",
        "/v1/servers/srv_1/provision",
        {"image": {"url": "http://img/iso"}, "callbackTimeoutS": 600.0},
    ),
    (
        "servers power srv_1 force-off",
        "POST",
        "/v1/servers/srv_1/power",
        {"action": "force-off"},
    ),
    ("servers decommission srv_1 --force --yes", "DELETE", "/v1/servers/srv_1", None),
]


@pytest.mark.parametrize(("args", "method", "path", "body"), COMMANDS)
def test_resource_commands_send_what_the_api_expects(
    args: str, method: str, path: str, body: Any
) -> None:
    seen, handler = recorder()
    result = invoke(handler, *args.split())
    assert result.exit_code == 0, result.output
    request = seen[0]
    assert (request.method, request.url.path) == (method, path)
    if body is not None:
        assert json.loads(request.content) == body
    if args.startswith("servers decommission"):
        assert request.url.params["force"] == "true"


def test_destructive_commands_ask_first() -> None:
    seen, handler = recorder()
    result = invoke(handler, "servers", "decommission", "srv_1", stdin="n\n")
    assert result.exit_code == 1
    assert seen == []
