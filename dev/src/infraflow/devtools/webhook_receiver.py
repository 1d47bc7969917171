"""A webhook receiver for tests and the local stack: a threaded HTTP server on loopback that
records every POST (headers, body, time) and answers a programmable status.

    with WebhookReceiver(fail_first=3) as rx:      # 500 three times, then 204
        ... register rx.url as a webhook ...
        rx.wait_for(lambda r: len(r.unique()) >= 1)

``unique()`` deduplicates by the ``webhook-id`` header, as a Standard Webhooks receiver should.
``python -m infraflow.devtools.webhook_receiver --port 9000`` prints what it receives.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers ``fail_status`` to the first ``fail_first`` requests, then ``ok_status``."""

    fail_first: int = 0
    fail_status: int = 500
    ok_status: int = 204
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    n = len(receiver.requests)
                    status = receiver.fail_status if n < receiver.fail_first else receiver.ok_status
                    receiver.requests.append(
                        Received(
                            path=self.path,
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            at=time.time(),
                            answered=status,
                        )
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def unique(self) -> dict[str, Received]:
        """The accepted (2xx) requests, one per ``webhook-id``: what a deduplicating receiver
        processes."""
        out: dict[str, Received] = {}
        for r in self.snapshot():
            if 200 <= r.answered < 300:
                out.setdefault(r.headers.get("webhook-id", ""), r)
        return out

    def wait_for(self, ok: Callable[[WebhookReceiver], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver got {len(self.snapshot())} requests")
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print webhook deliveries.")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    rx = WebhookReceiver(port=args.port).start()
    print(f"receiving on {rx.url} (Ctrl-C stops)", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            items = rx.snapshot()
            for r in items[seen:]:
                print(r.headers.get("webhook-id"), r.body.decode(errors="replace"), flush=True)
            seen = len(items)
    except KeyboardInterrupt:
        rx.stop()


if __name__ == "__main__":
    main()


def verify_signature(secret: str, received: Received, tolerance_s: int = 300) -> None:
    """Check a delivery as a Standard Webhooks receiver does, written from the specification
    (independent of the gateway's code): key = base64-decode(secret without ``whsec_``),
    content = ``{webhook-id}.{webhook-timestamp}.{body}``, signature =
    base64(HMAC-SHA256(key, content)) among the space-separated ``v1,<sig>`` entries of
    ``webhook-signature``; the timestamp must be recent. Raises ``AssertionError``."""
    msg_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) < tolerance_s, "stale webhook-timestamp"
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{msg_id}.{timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    offered = [
        part.split(",", 1)[1]
        for part in received.headers["webhook-signature"].split()
        if part.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, sig) for sig in offered), "bad webhook-signature"
