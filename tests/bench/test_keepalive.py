"""The load generator's keep-alive client: pooled connections, and a server's idle close."""

from __future__ import annotations

import asyncio

import pytest

from .keepalive import KeepAliveClient


async def _serve(answers: int) -> tuple[asyncio.Server, list[bytes]]:
    """Answers ``answers`` requests per connection with 202, then closes it silently (like a
    server's keep-alive timeout)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(answers):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            seen.append(await reader.readexactly(length))
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


@pytest.mark.parametrize("pause", [0.0, 0.01])
@pytest.mark.parametrize("answers", [1, 3])
async def test_requests_survive_connections_the_server_closed(answers: int, pause: float) -> None:
    server, seen = await _serve(answers)
    port = server.sockets[0].getsockname()[1]
    client = KeepAliveClient(f"http://127.0.0.1:{port}", {"Authorization": "Bearer t"})
    try:
        for i in range(7):
            assert await client.post("/x", f"{i}".encode(), "application/json") == (202, b"{}")
            await asyncio.sleep(pause)  # 0: the close often lands while the request is sent
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert seen == [f"{i}".encode() for i in range(7)]  # each request made exactly once
