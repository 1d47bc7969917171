"""The REST client: the API's envelope unwrapped, its errors raised as ``ApiError``, and a run's
events followed live (Server-Sent Events, or polling where the gateway does not stream).

    CliError                  something the command cannot get past (exit code ``exit_code``)
    ├── ApiError              the API answered with an error envelope (code, message, details)
    └── UnreachableError      no answer: connection refused, DNS, timeout, not the API
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

EXIT_API_ERROR: Final = 4
EXIT_UNREACHABLE: Final = 5
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})
TERMINAL_EVENTS: Final = frozenset({"run_completed", "run_failed", "run_cancelled"})
MAX_STREAM_DROPS: Final = 5
"""Consecutive failures to (re)open a run's event stream before giving up."""


class CliError(Exception):
    """A failure the command reports on stderr and turns into its exit code."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(CliError):
    """An error envelope: ``{"success": false, "error": {"code", "message", "details"}}``."""

    exit_code = EXIT_API_ERROR

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = dict(details or {})
        self.request_id = request_id


class UnreachableError(CliError):
    """The API could not be reached (or what answered was not the API)."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful envelope: ``data`` and ``meta``, and the HTTP status."""

    status: int
    data: Any
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunEventItem:
    """One event of a run's history: its stream sequence, name and body."""

    seq: int
    name: str
    event: dict[str, Any]


class ApiClient:
    """A small synchronous client of the Infraflow REST API."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout_s: float = 15.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "infraflow-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Reply:
        """Send a request and unwrap the envelope; raise ``ApiError`` on an error envelope."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=json)
        except httpx.HTTPError as exc:
            raise UnreachableError(f"cannot reach {self.base_url}: {exc}") from exc
        return _unwrap(response)

    def get(self, path: str, **params: Any) -> Reply:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Reply:
        return self.request("POST", path, params=params, json=body if body is not None else {})

    def delete(self, path: str, **params: Any) -> Reply:
        return self.request("DELETE", path, params=params)

    def pages(self, path: str, params: Mapping[str, Any], limit: int | None) -> Iterator[Any]:
        """Every item of a paginated list (following ``nextCursor``), at most ``limit``."""
        token: str | None = params.get("pageToken")
        count = 0
        while True:
            reply = self.request("GET", path, params={**params, "pageToken": token})
            for item in reply.data or []:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            pagination = reply.meta.get("pagination") or {}
            token = pagination.get("nextCursor")
            if not pagination.get("hasMore") or not token:
                return

    # ---- a run's events ------------------------------------------------------------------

    def run_events(self, run_id: str, after_seq: int = 0) -> list[RunEventItem]:
        """The run's events after ``after_seq`` (all pages)."""
        out: list[RunEventItem] = []
        while True:
            reply = self.get(f"/v1/workflows/runs/{run_id}/events", afterSeq=after_seq)
            items = [_event_item(raw) for raw in reply.data or []]
            out += items
            if not items or not (reply.meta.get("pagination") or {}).get("hasMore"):
                return out
            after_seq = items[-1].seq

    def follow_events(
        self, run_id: str, after_seq: int = 0, *, poll_s: float = 0.5
    ) -> Iterator[RunEventItem | None]:
        """The run's events as they happen, until its terminal event. Streams them
        (``Accept: text/event-stream``) where the gateway can, else polls; ``None`` now and
        then while nothing happens (keep-alives, empty polls), so callers can refresh."""
        last = after_seq
        streamed = True
        drops = 0
        while True:
            if streamed:
                try:
                    for item in self._stream(run_id, last):
                        drops = 0
                        if item is not None:
                            last = max(last, item.seq)
                        yield item
                        if item is not None and item.name in TERMINAL_EVENTS:
                            return
                    return  # the stream ended: the run ended before our last event
                except _NoStream:
                    streamed = False
                except UnreachableError:
                    drops += 1  # a dropped stream: resume after the last event
                    if drops > MAX_STREAM_DROPS:
                        raise
                    time.sleep(poll_s * drops)
                    continue
            items = self.run_events(run_id, last)
            for item in items:
                last = max(last, item.seq)
                yield item
                if item.name in TERMINAL_EVENTS:
                    return
            if not items:
                yield None
                time.sleep(poll_s)

    def _stream(self, run_id: str, after_seq: int) -> Iterator[RunEventItem | None]:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after_seq)}
        timeout = httpx.Timeout(10.0, read=60.0)
        path = f"/v1/workflows/runs/{run_id}/events"
        try:
            with self._http.stream(
                "GET", path, params={"afterSeq": after_seq}, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    _unwrap(response)  # raises the API's error
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    response.read()
                    raise _NoStream
                yield from _parse_sse(response.iter_lines())
        except httpx.HTTPError as exc:
            raise UnreachableError(f"the event stream of {run_id} broke: {exc}") from exc


class _NoStream(Exception):
    """The gateway answered the events request with JSON: it cannot stream them."""


def _parse_sse(lines: Iterator[str]) -> Iterator[RunEventItem | None]:
    """Server-Sent Events: ``id:``, ``event:``, ``data:`` lines, a blank line ends a message;
    a comment (``:``) is a keep-alive, reported as ``None``."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                event = json.loads("\n".join(data))
                seq = int(fields.get("id") or 0)
                yield RunEventItem(seq, fields.get("event") or str(event.get("event")), event)
            fields, data = {}, []
            continue
        if line.startswith(":"):
            yield None
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("id", "event"):
            fields[name] = value


def _event_item(raw: Mapping[str, Any]) -> RunEventItem:
    event = raw.get("event") or {}
    return RunEventItem(int(raw.get("seq") or 0), str(event.get("event") or ""), dict(event))


def _unwrap(response: httpx.Response) -> Reply:
    try:
        body = response.json()
    except ValueError as exc:
        raise UnreachableError(
            f"{response.request.url} answered HTTP {response.status_code} without a JSON "
            "envelope; is this the Infraflow API?"
        ) from exc
    if not isinstance(body, dict) or "success" not in body:
        raise UnreachableError(f"{response.request.url} did not answer with an API envelope")
    meta = body.get("meta") or {}
    if body["success"] is True:
        return Reply(response.status_code, body.get("data"), meta)
    error = body.get("error") or {}
    raise ApiError(
        response.status_code,
        str(error.get("code") or "UNKNOWN"),
        str(error.get("message") or f"HTTP {response.status_code}"),
        error.get("details"),
        meta.get("requestId"),
    )
