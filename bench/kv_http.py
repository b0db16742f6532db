"""A tiny HTTP/1.1 client on asyncio streams, for etcd's v3 JSON gateway in bench/kv_bench.py.

One ``HttpConn`` is one keep-alive TCP connection carrying one request at a time (no
pipelining), the way a simple gateway client talks to etcd. ``post`` sends a JSON body and
returns the decoded JSON answer; ``stream`` sends one request whose answer is a chunked stream
of newline-separated JSON objects (``/v3/watch``) and yields each object as it arrives. Only
what etcd's gateway sends is handled: Content-Length or chunked bodies, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

MAX_HEADER = 64 * 1024


class HttpError(Exception):
    """A non-200 answer, or a connection that broke mid-request."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


class HttpConn:
    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host = host
        self.port = port
        self._reader = reader
        self._writer = writer
        self._prefix = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n"
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 5.0) -> HttpConn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_HEADER * 16), timeout
        )
        return cls(host, port, reader, writer)

    def _send(self, path: str, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = f"POST {path} HTTP/1.1\r\n{self._prefix}Content-Length: {len(data)}\r\n\r\n"
        self._writer.write(head.encode("ascii") + data)

    async def _head(self) -> tuple[int, dict[str, str]]:
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.closed = True
            raise HttpError(0, f"connection closed before the response head: {exc}")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            self.closed = True
            raise HttpError(0, f"bad status line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("connection", "").lower() == "close":
            self.closed = True
        return int(parts[1]), headers

    async def _chunk(self) -> bytes:
        """One chunk of a chunked body; b"" for the last one."""
        size_line = await self._reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            await self._reader.readuntil(b"\r\n")  # no trailers from etcd
            return b""
        data = await self._reader.readexactly(size + 2)
        return data[:-2]

    async def _body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while chunk := await self._chunk():
                parts.append(chunk)
            return b"".join(parts)
        self.closed = True
        return await self._reader.read()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body and return the JSON answer; HttpError unless the status is 200."""
        if self.closed:
            raise HttpError(0, "connection already closed")
        try:
            self._send(path, body)
            await self._writer.drain()
            status, headers = await self._head()
            data = await self._body(headers)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.closed = True
            raise HttpError(0, f"connection lost: {exc}")
        if status != 200:
            raise HttpError(status, data.decode(errors="replace"))
        result: dict[str, Any] = json.loads(data)
        return result

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST once and yield every JSON object of the streamed (chunked) answer. The
        connection is not reusable afterwards."""
        self.closed = True
        try:
            self._send(path, body)
            await self._writer.drain()
            status, headers = await self._head()
            if status != 200:
                raise HttpError(status, (await self._body(headers)).decode(errors="replace"))
            if headers.get("transfer-encoding", "").lower() != "chunked":
                raise HttpError(status, f"expected a chunked stream, got headers {headers}")
            buf = b""
            while chunk := await self._chunk():
                buf += chunk
                while (nl := buf.find(b"\n")) != -1:
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if line.strip():
                        yield json.loads(line)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise HttpError(0, f"connection lost: {exc}")

    async def close(self) -> None:
        self.closed = True
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
