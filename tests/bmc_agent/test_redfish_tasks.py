"""Task monitors, ResetType fallbacks and 5xx answers, against a tiny stub Redfish service.

sushy-emulator never answers 202 and allows every ResetType, so these behaviours need a BMC
that does: a real HTTP server on the loopback, speaking just enough Redfish.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from infraflow.bmc_agent.adapters.redfish import BmcEndpoint, RedfishBmc, RedfishOptions
from infraflow.bmc_agent.errors import BmcActionRejectedError, BmcTimeoutError

from .conftest import TEST_OPTIONS

_SYSTEM = "/redfish/v1/Systems/1"
_RESET = f"{_SYSTEM}/Actions/ComputerSystem.Reset"
_MONITOR = "/taskmon/1"


@dataclass
class StubBmc:
    """One system; its reset answers ``reset_status`` (202: a task monitor follows)."""

    power: str = "Off"
    allowed: list[str] = field(default_factory=lambda: ["On", "ForceOff", "GracefulShutdown"])
    reset_status: int = 202
    task_polls: int = 2  # 202 answers before the monitor is done; -1: never done
    final_task_state: str = "Completed"
    resets: list[str] = field(default_factory=list)
    monitor_gets: int = 0

    def answer(self, method: str, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        if method == "GET" and path in ("/redfish/v1", "/redfish/v1/"):
            return 200, {}, {"@odata.id": "/redfish/v1/", "Id": "Stub", "RedfishVersion": "1.6.0"}
        if method == "GET" and path == _SYSTEM:
            return 200, {}, self._system()
        if method == "POST" and path == _RESET:
            if self.reset_status >= 400:
                return self.reset_status, {}, {"error": {"code": "Base.1.0.GeneralError"}}
            self.resets.append(body["ResetType"])
            self.power = "Off" if "Off" in body["ResetType"] else "On"
            return self.reset_status, {"Location": _MONITOR}, None
        if method == "GET" and path == _MONITOR:
            self.monitor_gets += 1
            if self.task_polls != 0:
                self.task_polls -= 1
                return 202, {"Retry-After": "0"}, None
            return 200, {}, {"Id": "1", "TaskState": self.final_task_state}
        return 404, {}, {"error": {"code": "Base.1.0.ResourceMissingAtURI"}}

    def _system(self) -> dict[str, Any]:
        return {
            "@odata.id": _SYSTEM,
            "Id": "1",
            "Name": "stub",
            "PowerState": self.power,
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": _RESET,
                    "ResetType@Redfish.AllowableValues": self.allowed,
                }
            },
        }


@pytest.fixture
def stub() -> Iterator[tuple[StubBmc, BmcEndpoint]]:
    """A running stub BMC and an endpoint for its system."""
    state = StubBmc()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, headers, payload = state.answer(self.command, self.path, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield state, BmcEndpoint(f"http://127.0.0.1:{port}{_SYSTEM}", "admin", "stub-password")
    finally:
        server.shutdown()
        server.server_close()


async def test_action_answering_202_is_followed_to_completion(
    bmc: RedfishBmc, stub: tuple[StubBmc, BmcEndpoint]
) -> None:
    state, ep = stub

    await bmc.power(ep, "on")

    assert state.resets == ["On"]
    assert state.monitor_gets == 3  # two "still running", one "done"


async def test_task_that_never_ends_times_out(stub: tuple[StubBmc, BmcEndpoint]) -> None:
    state, ep = stub
    state.task_polls = -1

    async with RedfishBmc(RedfishOptions(task_timeout=0.5)) as impatient:
        with pytest.raises(BmcTimeoutError, match="still running") as caught:
            await impatient.power(ep, "on")

    assert caught.value.retryable is True


async def test_failed_task_is_rejected(bmc: RedfishBmc, stub: tuple[StubBmc, BmcEndpoint]) -> None:
    state, ep = stub
    state.final_task_state = "Exception"

    with pytest.raises(BmcActionRejectedError, match="ended Exception"):
        await bmc.power(ep, "on")


async def test_off_falls_back_to_force_off_without_graceful_shutdown(
    bmc: RedfishBmc, stub: tuple[StubBmc, BmcEndpoint]
) -> None:
    state, ep = stub
    state.power, state.allowed, state.task_polls = "On", ["On", "ForceOff"], 0

    await bmc.power(ep, "off")

    assert state.resets == ["ForceOff"]


async def test_off_prefers_graceful_shutdown(
    bmc: RedfishBmc, stub: tuple[StubBmc, BmcEndpoint]
) -> None:
    state, ep = stub
    state.power, state.task_polls = "On", 0

    await bmc.power(ep, "off")

    assert state.resets == ["GracefulShutdown"]


async def test_shutdown_without_graceful_support_is_rejected(
    bmc: RedfishBmc, stub: tuple[StubBmc, BmcEndpoint]
) -> None:
    state, ep = stub
    state.power, state.allowed = "On", ["On", "ForceOff"]

    with pytest.raises(BmcActionRejectedError, match="allows none of") as caught:
        await bmc.power(ep, "shutdown")

    assert caught.value.retryable is False
    assert state.resets == []


async def test_server_side_error_is_retryable(stub: tuple[StubBmc, BmcEndpoint]) -> None:
    state, ep = stub
    state.reset_status = 503

    async with RedfishBmc(TEST_OPTIONS) as client:
        with pytest.raises(BmcActionRejectedError) as caught:
            await client.power(ep, "on")

    assert caught.value.retryable is True
    assert caught.value.details["httpStatus"] == 503
