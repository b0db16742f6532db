"""An asyncio client for the agent's control socket (see agent/api.py for the protocol).

Requests are pipelined over one connection and matched to responses by id, so many concurrent
callers share a connection the way the shell's pooled SSH channels will.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from agent.api import API_VERSION, MAX_REQUEST


class ControlError(Exception):
    """The agent answered with an error; ``code`` is stable (see agent/api.py)."""

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        self.details = details


class ConnectionLost(ControlError):
    """The connection to the agent closed before it answered."""

    def __init__(self, message: str) -> None:
        super().__init__("connection-lost", message, {})


def _error_of(msg: dict[str, Any]) -> ControlError:
    err = dict(msg.get("error") or {})
    code = str(err.pop("code", "unknown"))
    return ControlError(code, str(err.pop("message", "")), err)


class ControlClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[dict[str, Any] | None]] = {}
        self._reader_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, path: str, timeout: float = 5.0) -> ControlClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(path, limit=MAX_REQUEST * 8), timeout
        )
        return cls(reader, writer)

    async def call(self, method: str, **params: Any) -> Any:
        """Send one request and wait for its result; raise ControlError on an error reply."""
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        line = {"v": API_VERSION, "id": req_id, "method": method, "params": params}
        try:
            self._writer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(req_id, None)
            raise ConnectionLost(f"cannot send to the agent: {exc}")
        return await fut

    async def stream(self, method: str, **params: Any) -> AsyncIterator[Any]:
        """Start a streaming request and yield each result; closing the iterator cancels it."""
        req_id = next(self._ids)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._streams[req_id] = queue
        line = {"v": API_VERSION, "id": req_id, "method": method, "params": params}
        finished = False
        try:
            self._writer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
            await self._writer.drain()
            while True:
                msg = await queue.get()
                if msg is None:
                    finished = True
                    raise ConnectionLost("the agent closed the connection")
                if not msg.get("ok"):
                    finished = True
                    raise _error_of(msg)
                if msg.get("done"):
                    finished = True
                    return
                yield msg.get("result")
        except (ConnectionError, RuntimeError) as exc:
            finished = True
            raise ConnectionLost(f"cannot talk to the agent: {exc}")
        finally:
            self._streams.pop(req_id, None)
            if not finished and not self._writer.is_closing():
                cancel = {
                    "v": API_VERSION,
                    "id": None,
                    "method": "cancel",
                    "params": {"id": req_id},
                }
                with contextlib.suppress(ConnectionError, RuntimeError):
                    self._writer.write(json.dumps(cancel).encode() + b"\n")

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                queue = self._streams.get(msg.get("id"))
                if queue is not None:
                    queue.put_nowait(msg)
                    continue
                fut = self._waiting.pop(msg.get("id"), None)
                if fut is None or fut.done():
                    continue
                if msg.get("ok"):
                    fut.set_result(msg.get("result"))
                else:
                    fut.set_exception(_error_of(msg))
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost("the agent closed the connection"))
            self._waiting.clear()
            for queue in self._streams.values():
                queue.put_nowait(None)

    async def close(self) -> None:
        self._writer.close()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, Exception):
            await self._reader_task
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
