"""sushy plumbing behind the Redfish facade: options, cached root objects, task monitors.

Everything here is synchronous and runs in the facade's worker threads. Private to the
adapter: ``redfish.py`` is the public face.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import requests
import sushy
from sushy import exceptions as sushy_exc
from sushy.auth import BasicAuth
from sushy.connector import Connector
from sushy.resources.system.system import System
from sushy.taskmonitor import TaskMonitor

from infraflow.bmc_agent.adapters.redfish_models import BmcEndpoint
from infraflow.bmc_agent.errors import (
    BmcActionRejectedError,
    BmcResourceMissingError,
    BmcTimeoutError,
)

__all__ = ["RedfishOptions", "Session", "SessionCache", "Target"]

_ROOT_PATHS: Final = frozenset({"", "/redfish", "/redfish/v1"})
_SYSTEMS_PREFIX: Final = "/redfish/v1/Systems/"
_FAILED_TASK_STATES: Final = frozenset({"Exception", "Killed", "Cancelled", "Interrupted"})
_MIN_TASK_POLL: Final = 0.1  # never poll a task monitor more often, whatever Retry-After says


@dataclass(frozen=True, slots=True)
class RedfishOptions:
    """Timeouts and limits of the facade (seconds unless named otherwise).

    ``server_side_retries=1`` means one connection attempt and one retry of a GET that got a
    5xx (sushy reads 0 as "use the default": three attempts 2 s apart).
    """

    connect_timeout: float = 3.0
    read_timeout: float = 30.0
    server_side_retries: int = 1
    server_side_retries_delay: float = 1.0
    task_timeout: float = 300.0
    cache_size: int = 32
    max_workers: int = 16
    max_requests_per_bmc: int = 4


@dataclass(frozen=True, slots=True)
class Target:
    """An endpoint's address split into the BMC root and the system path (if given)."""

    root_url: str
    system_path: str | None

    @classmethod
    def of(cls, ep: BmcEndpoint) -> Target:
        """Parse ``ep.address``; ``BmcResourceMissingError`` if it is neither form."""
        parts = urlsplit(ep.address)
        root = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.rstrip("/")
        if path in _ROOT_PATHS:
            return cls(root, None)
        ident = path.removeprefix(_SYSTEMS_PREFIX)
        if path.startswith(_SYSTEMS_PREFIX) and ident and "/" not in ident:
            return cls(root, path)
        raise BmcResourceMissingError(
            f"BMC address for {ep.host} is neither a BMC root URL nor a Redfish system URL "
            f"(.../redfish/v1/Systems/<id>)",
            details={"bmc": ep.host},
        )


class _ActionResponses(threading.local):
    """The last non-GET response a connector saw, per worker thread (for task monitors)."""

    def __init__(self) -> None:
        self.last: requests.Response | None = None

    def record(self, response: requests.Response) -> None:
        if response.request is not None and response.request.method != "GET":
            self.last = response


@dataclass(slots=True)
class Session:
    """One BMC's sushy root object and connector, shared by worker threads."""

    root: sushy.Sushy
    connector: Connector
    responses: _ActionResponses
    secret_digest: bytes
    system_path: str | None = None  # discovered when the endpoint names only the BMC root
    lock: threading.Lock = field(default_factory=threading.Lock)

    def system(self, ep: BmcEndpoint) -> System:
        """The endpoint's ComputerSystem (fetched now); discovers it for a root address."""
        return self.root.get_system(Target.of(ep).system_path or self._discover(ep))

    def _discover(self, ep: BmcEndpoint) -> str:
        with self.lock:
            if self.system_path is not None:
                return self.system_path
        members: list[str] = sorted(self.root.get_system_collection().members_identities)
        if len(members) != 1:
            raise BmcResourceMissingError(
                f"BMC {ep.host} has {len(members)} systems; give the system URL instead of the "
                f"BMC root, one of: {', '.join(members) or '(none)'}",
                details={"bmc": ep.host, "systems": members},
            )
        with self.lock:
            self.system_path = members[0]
        return members[0]

    def act(self, ep: BmcEndpoint, request: Callable[[], object], *, task_timeout: float) -> None:
        """Send a mutating request; if it answers 202 with a task monitor, wait for the task."""
        self.responses.last = None
        request()
        response, self.responses.last = self.responses.last, None
        if response is not None and response.status_code == 202:
            self._follow_task(ep, response, task_timeout)

    def _follow_task(self, ep: BmcEndpoint, response: requests.Response, timeout: float) -> None:
        if not response.headers.get("Location"):
            return  # accepted without a monitor: nothing to follow
        monitor = TaskMonitor.from_response(self.connector, response, response.url)
        deadline = time.monotonic() + timeout
        while monitor.check_is_processing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BmcTimeoutError(
                    f"BMC {ep.host}: task {monitor.task_monitor_uri} still running after "
                    f"{timeout:g} s",
                    details={"bmc": ep.host, "task": monitor.task_monitor_uri},
                )
            time.sleep(max(_MIN_TASK_POLL, min(float(monitor.sleep_for), remaining)))
        final = monitor.response
        sushy_exc.raise_for_response("GET", monitor.task_monitor_uri, final)
        state = _task_state(final)
        if state in _FAILED_TASK_STATES:
            raise BmcActionRejectedError(
                f"BMC {ep.host}: task {monitor.task_monitor_uri} ended {state}",
                details={"bmc": ep.host, "task": monitor.task_monitor_uri, "taskState": state},
            )


def _task_state(response: requests.Response) -> str | None:
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("TaskState") if isinstance(body, dict) else None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class SessionCache:
    """LRU of ``Session`` per (root URL, username, verify_tls); thread-safe.

    A different password for the same key replaces the entry (credential rotation); the
    facade evicts an entry after an auth or connection failure.
    """

    def __init__(self, options: RedfishOptions) -> None:
        self._options = options
        self._entries: OrderedDict[tuple[str, str, bool], Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ep: BmcEndpoint) -> Session:
        """The cached session for ``ep``, or a new one (fetches the service root)."""
        target = Target.of(ep)
        key = (target.root_url, ep.username, ep.verify_tls)
        digest = _digest(ep.password)
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found.secret_digest == digest:
                self._entries.move_to_end(key)
                return found
        session = self._open(target, ep, digest)
        closed: list[Session] = []
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                closed.append(old)
            self._entries[key] = session
            while len(self._entries) > self._options.cache_size:
                closed.append(self._entries.popitem(last=False)[1])
        for s in closed:
            s.connector.close()
        return session

    def _open(self, target: Target, ep: BmcEndpoint, digest: bytes) -> Session:
        opts = self._options
        responses = _ActionResponses()
        connector = Connector(
            target.root_url,
            verify=ep.verify_tls,
            response_callback=responses.record,
            server_side_retries=opts.server_side_retries,
            server_side_retries_delay=opts.server_side_retries_delay,
            default_request_timeout=opts.read_timeout,
            connect_timeout=opts.connect_timeout,
        )
        try:
            root = sushy.Sushy(
                target.root_url,
                auth=BasicAuth(username=ep.username, password=ep.password),
                connector=connector,
            )
        except BaseException:
            connector.close()
            raise
        return Session(root, connector, responses, digest)

    def evict(self, ep: BmcEndpoint) -> None:
        """Forget ``ep``'s session (next call reconnects)."""
        target = Target.of(ep)
        with self._lock:
            gone = self._entries.pop((target.root_url, ep.username, ep.verify_tls), None)
        if gone is not None:
            gone.connector.close()

    def close(self) -> None:
        """Forget every session and close their connections."""
        with self._lock:
            sessions = list(self._entries.values())
            self._entries.clear()
        for s in sessions:
            s.connector.close()
