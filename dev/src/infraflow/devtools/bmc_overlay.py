"""Additions to ``sushy-emulator`` (dev/test only), installed into its Flask app before it
starts (``python -m infraflow.devtools.bmc_emulator``). Read from the emulator's config file:

- ``INFRAFLOW_SYSTEM_DETAILS``: per-UUID Redfish fields merged into the ComputerSystem answer
  (Manufacturer, Model, SerialNumber, SKU, BiosVersion, MemorySummary, ProcessorSummary).
- ``INFRAFLOW_POWER_DELAY_S``: the fake driver's power delay instead of its random 1-11 s.

And a small admin route, ``/infraflow/faults`` (behind the same HTTP Basic login):
``POST`` a rule ``{"method", "path" (regex), "status", "times" (-1: always),
"bodyContains"?, "message"?}``, ``GET`` the armed rules, ``DELETE`` them all. A request that
matches an armed rule is answered with the rule's status and a Redfish error body instead of
reaching the emulator; each match uses up one of its ``times``.
"""

from __future__ import annotations

import json
import random
import re
import threading
from typing import Any


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class _Faults:
    """Armed fault rules, shared by the emulator's request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[dict[str, Any]] = []

    def add(self, rule: dict[str, Any]) -> None:
        re.compile(str(rule["path"]))  # refuse a bad pattern at once
        with self._lock:
            self._rules.append(dict(rule))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def armed(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._rules]

    def take(self, method: str, path: str, body: str) -> dict[str, Any] | None:
        """The first armed rule matching the request, used up once."""
        with self._lock:
            for rule in self._rules:
                if rule["method"] != method or not re.search(rule["path"], path):
                    continue
                wanted = rule.get("bodyContains")
                if wanted and wanted not in body:
                    continue
                if rule["times"] > 0:
                    rule["times"] -= 1
                    if rule["times"] == 0:
                        self._rules.remove(rule)
                return dict(rule)
        return None


def install_overlay() -> None:
    """Install the additions into sushy-tools' app (see the module docstring)."""
    import flask
    from sushy_tools.emulator import main as emulator
    from sushy_tools.emulator.resources.systems import fakedriver

    app = emulator.app
    faults = _Faults()

    def _system_details(response: flask.Response) -> flask.Response:
        request = flask.request
        if (
            request.method != "GET"
            or request.endpoint != "system_resource"
            or response.status_code != 200
        ):
            return response
        identity = (request.view_args or {}).get("identity")
        details = app.config.get("INFRAFLOW_SYSTEM_DETAILS", {}).get(identity)
        if details:
            body = json.loads(response.get_data())
            _merge(body, details)
            response.set_data(json.dumps(body, indent=2))
        return response

    def _inject() -> flask.Response | None:
        request = flask.request
        if request.path.startswith("/infraflow/"):
            return None
        rule = faults.take(request.method, request.path, request.get_data(as_text=True) or "")
        if rule is None:
            return None
        body = {
            "error": {
                "code": "Base.1.0.GeneralError",
                "message": rule.get("message") or "injected fault",
                "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError"}],
            }
        }
        return flask.Response(
            json.dumps(body), status=int(rule["status"]), mimetype="application/json"
        )

    def _faults_admin() -> flask.Response:
        request = flask.request
        if request.method == "POST":
            faults.add(request.get_json(force=True))
        elif request.method == "DELETE":
            faults.clear()
        return flask.Response(json.dumps(faults.armed()), mimetype="application/json")

    class _PowerDelay:
        """Stands in for the ``random`` module the fake driver draws its 1-11 s delay from."""

        def randint(self, a: int, b: int) -> int:
            delay = app.config.get("INFRAFLOW_POWER_DELAY_S")
            return random.randint(a, b) if delay is None else int(delay)

    app.before_request(_inject)
    app.after_request(_system_details)
    app.add_url_rule(
        "/infraflow/faults",
        "infraflow_faults",
        _faults_admin,
        methods=["GET", "POST", "DELETE"],
    )
    fakedriver.random = _PowerDelay()
