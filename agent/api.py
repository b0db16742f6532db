"""The agent's control API: a unix socket (mode 0600) speaking JSON lines.

The socket is never on the network: the shell reaches it through SSH (direct-streamlocal), so SSH
is the only authentication an operator needs, and file permissions keep other local users out.

Protocol (version 1). Each request is one JSON object on one line::

    {"v": 1, "id": 7, "method": "propose", "params": {"data": "hello"}}

and gets exactly one response line with the same id (responses to pipelined requests may come
out of order)::

    {"v": 1, "id": 7, "ok": true, "result": {"index": 42, ...}}
    {"v": 1, "id": 7, "ok": false, "error": {"code": "not-leader", "message": "…", "leader": "n2"}}

A method may stream: its responses then carry ``"stream": true`` and a ``result`` each, and the
stream ends with ``{"id": 7, "ok": true, "done": true}`` (or an error line). ``cancel`` with
``{"id": 7}`` ends a stream early; closing the connection ends them all.

Error codes: bad-request, unknown-method, not-leader, no-leader, timeout, proposal-lost, busy,
not-found, stopping, removed (this machine is no longer a member; only ``status`` and ``ping``
answer), internal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.errors import BAD_REQUEST, INTERNAL, UNKNOWN_METHOD, AgentError

API_VERSION = 1
MAX_REQUEST = 2 * 1024 * 1024
"""Bytes in one request line; larger is refused with bad-request and the connection closed."""

Handler = Callable[[dict[str, Any]], Awaitable[Any] | AsyncIterator[Any]]
log = logging.getLogger("shoal.api")


class ControlServer:
    """Serves a handler table on a unix socket."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind privately, then move the socket into place: it is never reachable at wider
        permissions, not even between bind and chmod."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists() or self.path.is_symlink():
            if await _socket_alive(self.path):
                raise AgentError(
                    BAD_REQUEST,
                    f"another agent is already serving {self.path}; stop it first",
                )
            self.path.unlink()
        private = Path(tempfile.mkdtemp(prefix=".ctl-", dir=self.path.parent))
        tmp = private / "s"
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(tmp), limit=MAX_REQUEST
            )
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(private)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        lock = asyncio.Lock()
        pending: set[asyncio.Task[None]] = set()
        by_id: dict[Any, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # line longer than the limit
                    await _send(writer, lock, _error(None, BAD_REQUEST, "request too large"))
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                req = asyncio.create_task(self._one(line, writer, lock, by_id))
                pending.add(req)
                req.add_done_callback(pending.discard)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for req in pending:
                req.cancel()
            self._conns.discard(task)
            writer.close()

    async def _one(
        self,
        line: bytes,
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
        by_id: dict[Any, asyncio.Task[None]],
    ) -> None:
        req_id: Any = None
        try:
            try:
                req = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise AgentError(BAD_REQUEST, f"request is not valid JSON: {exc}")
            if not isinstance(req, dict):
                raise AgentError(BAD_REQUEST, "request must be a JSON object")
            req_id = req.get("id")
            if req.get("v", API_VERSION) != API_VERSION:
                raise AgentError(
                    BAD_REQUEST,
                    f"unsupported API version {req.get('v')!r}; this agent speaks {API_VERSION}",
                )
            method = req.get("method")
            params = req.get("params", {})
            if not isinstance(method, str):
                raise AgentError(BAD_REQUEST, "request needs a string 'method'")
            if not isinstance(params, dict):
                raise AgentError(BAD_REQUEST, "'params' must be an object")
            if method == "cancel":
                target = by_id.get(params.get("id"))
                if target is not None:
                    target.cancel()
                response = {"v": API_VERSION, "id": req_id, "ok": True, "result": {}}
            else:
                handler = self.handlers.get(method)
                if handler is None:
                    known = ", ".join(sorted([*self.handlers, "cancel"]))
                    raise AgentError(UNKNOWN_METHOD, f"unknown method {method!r}; known: {known}")
                outcome = handler(params)
                if inspect.isasyncgen(outcome):
                    task = asyncio.current_task()
                    assert task is not None
                    by_id[req_id] = task
                    try:
                        await self._stream(req_id, outcome, writer, lock)
                    finally:
                        by_id.pop(req_id, None)
                    response = {"v": API_VERSION, "id": req_id, "ok": True, "done": True}
                else:
                    result = await outcome  # type: ignore[misc]
                    response = {"v": API_VERSION, "id": req_id, "ok": True, "result": result}
        except AgentError as exc:
            response = _error(req_id, exc.code, exc.message, **exc.details)
        except asyncio.CancelledError:
            if req_id is None or writer.is_closing():
                raise
            response = {"v": API_VERSION, "id": req_id, "ok": True, "done": True}
        except Exception as exc:
            log.exception("request failed")
            response = _error(req_id, INTERNAL, f"internal error: {exc}")
        with contextlib.suppress(ConnectionError):
            await _send(writer, lock, response)


    async def _stream(
        self,
        req_id: Any,
        items: AsyncIterator[Any],
        writer: asyncio.StreamWriter,
        lock: asyncio.Lock,
    ) -> None:
        try:
            async for item in items:
                line = {"v": API_VERSION, "id": req_id, "ok": True, "stream": True, "result": item}
                await _send(writer, lock, line)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()


def _error(req_id: Any, code: str, message: str, **details: Any) -> dict[str, Any]:
    error = {"code": code, "message": message, **details}
    return {"v": API_VERSION, "id": req_id, "ok": False, "error": error}


async def _send(writer: asyncio.StreamWriter, lock: asyncio.Lock, obj: dict[str, Any]) -> None:
    async with lock:
        writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await writer.drain()


async def _socket_alive(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


# --- parameter helpers shared by handler tables ---------------------------------------------------


def param(params: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    """Fetch and type-check one parameter; a wrong one is a bad-request naming it."""
    if name not in params or params[name] is None:
        if default is ...:
            raise AgentError(BAD_REQUEST, f"missing parameter {name!r}")
        return default
    value = params[name]
    wrong_bool = kind in (int, float) and isinstance(value, bool)
    if wrong_bool or not isinstance(value, kind if kind is not float else (int, float)):
        raise AgentError(
            BAD_REQUEST, f"parameter {name!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value


def data_param(params: dict[str, Any]) -> bytes:
    """A payload as ``data`` (UTF-8 text) or ``data_b64`` (any bytes)."""
    if "data_b64" in params:
        try:
            return base64.b64decode(param(params, "data_b64", str), validate=True)
        except ValueError:
            raise AgentError(BAD_REQUEST, "parameter 'data_b64' is not valid base64")
    return param(params, "data", str).encode()
