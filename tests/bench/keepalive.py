"""A lean HTTP/1.1 keep-alive client for the benchmark's load generator.

The load generator shares the two cores with the stack it measures, so its own cost per request
shows up in every latency it reports. A general client (httpx, aiohttp) spends most of that on
features a load generator does not use; this one writes a prepared request on a pooled
connection and reads a ``Content-Length`` response, nothing else (no redirects, no chunked
bodies, no TLS). A connection idle for longer than ``max_idle_s`` is not reused (servers close
idle keep-alive connections; uvicorn after 5 s), and a reused connection that the server closed
before answering is replaced once, as browsers and general clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit


class KeepAliveClient:
    """POSTs to one origin over a pool of persistent connections."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        timeout_s: float = 30.0,
        max_idle_s: float = 2.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None or url.port is None:
            raise ValueError(f"need http://host:port, got {base_url!r}")
        self._host, self._port = url.hostname, url.port
        fixed = {"Host": f"{self._host}:{self._port}", **headers}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._timeout_s = timeout_s
        self._max_idle_s = max_idle_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """The status and body of one POST."""
        head = (
            f"POST {path} HTTP/1.1\r\n{self._fixed}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        request = head + body
        reused = self._reusable()
        if reused is not None:
            try:
                return await self._exchange(*reused, request)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise  # it had started to answer: not a closed idle connection
        return await self._exchange(*await asyncio.open_connection(self._host, self._port), request)

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since <= self._max_idle_s and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self._timeout_s):
                writer.write(request)
                status, length, close = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                data = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, data

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer, _ in idle:
            writer.close()
        for _, writer, _ in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, connection closes) of a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported by this client")
        elif name == b"connection" and b"close" in value.lower():
            close = True
    return status, length, close
