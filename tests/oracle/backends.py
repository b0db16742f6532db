"""One small async interface to an etcd-like store, and two stores behind it: shoal and etcd 3.4.

The oracle tests are written once against :class:`Backend` and run against both, so any
difference between shoal's store and the real etcd shows up as the same assertion failing on
one side only. Both implementations normalize what they return into plain Python values in
shoal's shape — keys and values as ``bytes``, revisions as ``int``, absent fields filled with
etcd's zero values, errors as :class:`BackendError` with shoal's stable codes — because etcd's
JSON gateway omits zero-valued fields and spells int64s as strings, and the tests should
compare meaning, not encodings.

Requests use shoal's parameter names (``sort_target="mod"``, ``{"op": "put", ...}``); the etcd
backend translates them to the gateway's protobuf-JSON names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from agent.client import ControlClient, ControlError
from shell.devcluster import LocalCluster

KV = dict[str, Any]
"""{key: bytes, value: bytes, create_revision, mod_revision, version, lease}."""
Event = dict[str, Any]
"""{type: "PUT" | "DELETE", kv: KV, prev_kv: KV | None}."""
Op = dict[str, Any]
"""A txn op in shoal's shape with bytes keys: {"op": "put", "key": b"k", "value": b"v"}."""
Compare = dict[str, Any]
"""{key: bytes, target, result, value: bytes | int, range_end?: bytes}."""


class BackendError(Exception):
    """A request was refused; ``code`` is shoal's stable error code (etcd's text is mapped)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message


class Watch(Protocol):
    async def events(self, n: int, timeout: float = 5.0) -> list[Event]:
        """The next ``n`` events, flattened across batches; raise BackendError on cancel."""
        ...

    async def quiet(self, wait: float = 0.3) -> list[Event]:
        """Whatever events arrive within ``wait`` seconds (to assert that nothing does)."""
        ...

    async def close(self) -> None: ...


class Backend(Protocol):
    name: str

    async def put(self, key: bytes, value: bytes = b"", **opts: Any) -> dict[str, Any]: ...
    async def get(self, key: bytes, range_end: bytes = b"", **opts: Any) -> dict[str, Any]: ...
    async def delete(self, key: bytes, range_end: bytes = b"", **opts: Any) -> dict[str, Any]: ...
    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op]
    ) -> dict[str, Any]: ...
    async def compact(self, revision: int) -> dict[str, Any]: ...
    async def lease_grant(self, ttl: int, lease_id: int = 0) -> dict[str, Any]: ...
    async def lease_revoke(self, lease_id: int) -> dict[str, Any]: ...
    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]: ...
    async def lease_ttl(self, lease_id: int, keys: bool = False) -> dict[str, Any]: ...
    async def watch(
        self, key: bytes, range_end: bytes = b"", start_revision: int = 0, prev_kv: bool = False
    ) -> Watch: ...
    async def close(self) -> None: ...


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def norm_kv(raw: dict[str, Any] | None) -> KV | None:
    """A KeyValue from either side's JSON, with zero values filled in and ints as ints."""
    if raw is None:
        return None
    return {
        "key": unb64(raw.get("key")),
        "value": unb64(raw.get("value")),
        "create_revision": int(raw.get("create_revision", 0)),
        "mod_revision": int(raw.get("mod_revision", 0)),
        "version": int(raw.get("version", 0)),
        "lease": int(raw.get("lease", 0)),
    }


def _kvs(raw: list[dict[str, Any]] | None) -> list[KV]:
    return [kv for kv in map(norm_kv, raw or []) if kv is not None]


def _revision(raw: dict[str, Any]) -> int:
    return int((raw.get("header") or {}).get("revision", 0))


def norm_range(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "revision": _revision(raw),
        "kvs": _kvs(raw.get("kvs")),
        "count": int(raw.get("count", 0)),
        "more": bool(raw.get("more", False)),
    }


def norm_put(raw: dict[str, Any]) -> dict[str, Any]:
    return {"revision": _revision(raw), "prev_kv": norm_kv(raw.get("prev_kv"))}


def norm_delete(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "revision": _revision(raw),
        "deleted": int(raw.get("deleted", 0)),
        "prev_kvs": _kvs(raw.get("prev_kvs")),
    }


def norm_event(raw: dict[str, Any]) -> Event:
    return {
        "type": raw.get("type", "PUT"),
        "kv": norm_kv(raw.get("kv") or {}),
        "prev_kv": norm_kv(raw.get("prev_kv")),
    }


# --- shoal ---------------------------------------------------------------------------------------


def _shoal_op(op: Op) -> dict[str, Any]:
    """A txn op with its byte fields base64-encoded (and nested txns converted too)."""
    out: dict[str, Any] = {}
    for name, value in op.items():
        if name in ("compare", "success", "failure"):
            convert = _shoal_compare if name == "compare" else _shoal_op
            out[name] = [convert(x) for x in value]
        elif isinstance(value, bytes):
            out[name] = b64(value)
        else:
            out[name] = value
    return out


def _shoal_compare(c: Compare) -> dict[str, Any]:
    return {k: b64(v) if isinstance(v, bytes) else v for k, v in c.items()}


def _norm_shoal_txn(raw: dict[str, Any]) -> dict[str, Any]:
    norm = {"put": norm_put, "delete_range": norm_delete, "range": norm_range, "txn": None}
    responses = []
    for r in raw.get("responses", []):
        fn = norm[r["op"]]
        responses.append({"op": r["op"], **(fn(r) if fn else _norm_shoal_txn(r))})
    return {
        "revision": _revision(raw),
        "succeeded": bool(raw.get("succeeded", False)),
        "responses": responses,
    }


def _shoal_error(exc: ControlError) -> BackendError:
    return BackendError(exc.code, exc.message)


class PumpedWatch:
    """Events read by one background task into a queue, so a timed-out wait loses nothing.

    (Cancelling a read in the middle of a stream would close shoal's stream generator or cut
    an HTTP chunk in half; a pump that is only cancelled on close avoids both.)
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event | BackendError] = asyncio.Queue()
        self._buffer: list[Event] = []
        self._error: BackendError | None = None
        self._task: asyncio.Task[None] | None = None

    async def _batches(self) -> AsyncIterator[list[Event]]:
        """Yield each batch of events after creation; raise BackendError when canceled."""
        raise NotImplementedError
        yield []

    def start_pump(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for batch in self._batches():
                for ev in batch:
                    self._queue.put_nowait(ev)
        except BackendError as exc:
            self._queue.put_nowait(exc)

    async def _take(self) -> None:
        if self._error is not None:
            raise self._error
        item = await self._queue.get()
        if isinstance(item, BackendError):
            self._error = item
            raise item
        self._buffer.append(item)

    async def events(self, n: int, timeout: float = 5.0) -> list[Event]:
        async def fill() -> None:
            while len(self._buffer) < n:
                await self._take()

        await asyncio.wait_for(fill(), timeout)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    async def quiet(self, wait: float = 0.3) -> list[Event]:
        async def drain() -> None:
            while True:
                await self._take()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain(), wait)
        out, self._buffer = self._buffer, []
        return out

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class ShoalWatch(PumpedWatch):
    def __init__(self, client: ControlClient, stream: AsyncIterator[Any]) -> None:
        super().__init__()
        self._client = client
        self._stream = stream
        self._early: BackendError | None = None

    async def open(self) -> None:
        """Wait for the "created" reply, so that later writes are surely seen."""
        try:
            first = await asyncio.wait_for(anext(self._stream), 10.0)
        except ControlError as exc:
            self._early = _shoal_error(exc)  # surfaces from events(), as etcd's cancel does
        else:
            if not first.get("created"):
                raise AssertionError(f"shoal's watch did not start with created: {first}")
        self.start_pump()

    async def _batches(self) -> AsyncIterator[list[Event]]:
        if self._early is not None:
            raise self._early
        try:
            async for item in self._stream:
                yield [norm_event(e) for e in item.get("events", [])]
        except ControlError as exc:
            raise _shoal_error(exc)

    async def close(self) -> None:
        await super().close()
        await self._client.close()


class ShoalBackend:
    """shoal's store on three real agents on loopback.

    Writes go to the leader. Reads and watches go to a follower on purpose: its reads are
    linearizable through ReadIndex, so a stale follower read would show up as a disagreement
    with etcd rather than pass silently.
    """

    name = "shoal"

    def __init__(self, root: Path, nodes: int = 3) -> None:
        # 50 ms ticks make elections and lease checks quick; a 1 s election timeout keeps the
        # leader stable when the machine is busy with the rest of the test run.
        self.cluster = LocalCluster(root, nodes, tick_ms=50, election_ticks=20)
        self.reader = ""
        self._watches: list[ShoalWatch] = []

    async def start(self) -> None:
        leader = await self.cluster.start(timeout=30.0)
        self.reader = next((n for n in self.cluster.ids if n != leader), leader)

    async def _write(self, method: str, **params: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.cluster.call_leader(method, **params)
        except ControlError as exc:
            raise _shoal_error(exc)
        return result

    async def _read(self, method: str, **params: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.cluster.call(self.reader, method, **params)
        except ControlError as exc:
            raise _shoal_error(exc)
        return result

    async def put(self, key: bytes, value: bytes = b"", **opts: Any) -> dict[str, Any]:
        return norm_put(await self._write("kv.put", key=b64(key), value=b64(value), **opts))

    async def get(self, key: bytes, range_end: bytes = b"", **opts: Any) -> dict[str, Any]:
        if range_end:
            opts["range_end"] = b64(range_end)
        return norm_range(await self._read("kv.get", key=b64(key), **opts))

    async def delete(self, key: bytes, range_end: bytes = b"", **opts: Any) -> dict[str, Any]:
        if range_end:
            opts["range_end"] = b64(range_end)
        return norm_delete(await self._write("kv.delete", key=b64(key), **opts))

    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op]
    ) -> dict[str, Any]:
        raw = await self._write(
            "kv.txn",
            compare=[_shoal_compare(c) for c in compare],
            success=[_shoal_op(o) for o in success],
            failure=[_shoal_op(o) for o in failure],
        )
        return _norm_shoal_txn(raw)

    async def compact(self, revision: int) -> dict[str, Any]:
        return {"revision": _revision(await self._write("kv.compact", revision=revision))}

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> dict[str, Any]:
        raw = await self._write("lease.grant", ttl=ttl, id=lease_id)
        return {"id": int(raw["id"]), "ttl": int(raw["ttl"])}

    async def lease_revoke(self, lease_id: int) -> dict[str, Any]:
        return {"revision": _revision(await self._write("lease.revoke", id=lease_id))}

    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]:
        raw = await self._write("lease.keepalive", id=lease_id)
        return {"id": int(raw["id"]), "ttl": int(raw["ttl"])}

    async def lease_ttl(self, lease_id: int, keys: bool = False) -> dict[str, Any]:
        raw = await self._read("lease.ttl", id=lease_id, keys=keys)
        return {
            "id": int(raw["id"]),
            "ttl": int(raw["ttl"]),
            "granted_ttl": int(raw.get("granted_ttl", 0)),
            "keys": sorted(unb64(k) for k in raw.get("keys", [])),
        }

    async def watch(
        self, key: bytes, range_end: bytes = b"", start_revision: int = 0, prev_kv: bool = False
    ) -> ShoalWatch:
        # A watch is served from the follower's own store, which may not yet have applied the
        # last write the leader acknowledged (a compaction, say). etcd promises no more for a
        # watch on a lagging member, so first catch the follower up with a linearizable read:
        # the test then watches a store at least as new as its own last write, as on etcd.
        await self._read("kv.get", key=b64(key), count_only=True)
        # A connection per watch, so closing one never disturbs the calls on the shared one.
        client = await ControlClient.connect(str(self.cluster.socket_path(self.reader)))
        params: dict[str, Any] = {"key": b64(key), "prev_kv": prev_kv}
        if range_end:
            params["range_end"] = b64(range_end)
        if start_revision:
            params["start_revision"] = start_revision
        w = ShoalWatch(client, client.stream("kv.watch", **params))
        self._watches.append(w)
        await w.open()
        return w

    async def close(self) -> None:
        for w in self._watches:
            await w.close()
        await self.cluster.close()
        await self.cluster.stop()


# --- etcd ----------------------------------------------------------------------------------------

_ETCD_ERRORS = {
    "required revision has been compacted": "compacted",
    "required revision is a future revision": "future-revision",
    "requested lease not found": "lease-not-found",
    "lease already exists": "lease-exists",
    "duplicate key given in txn request": "duplicate-key",
    "key is not provided": "empty-key",
    "too many operations in txn request": "too-many-ops",
    "key not found": "key-not-found",
    "value is provided": "value-provided",
    "lease is provided": "lease-provided",
    "request is too large": "request-too-large",
    "too large lease TTL": "lease-ttl-too-large",
}

_TARGET_FIELDS = {
    "value": "value",
    "version": "version",
    "create": "create_revision",
    "mod": "mod_revision",
    "lease": "lease",
}
"""Which Compare field carries the operand for each target (target names are upper-cased)."""
_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def etcd_error(message: str) -> BackendError:
    for text, code in _ETCD_ERRORS.items():
        if text in message:
            return BackendError(code, message)
    return BackendError("etcd-other", message)


def _etcd_fields(params: dict[str, Any]) -> dict[str, Any]:
    """shoal's parameter names and values as the gateway spells them."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if name == "sort_order" or name == "sort_target":
            out[name] = value.upper()
        elif isinstance(value, bytes):
            out[name] = b64(value)
        else:
            out[name] = value
    return out


def _etcd_compare(c: Compare) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": b64(c["key"]),
        "target": c["target"].upper(),
        "result": _RESULTS[c["result"]],
    }
    value = c["value"]
    out[_TARGET_FIELDS[c["target"]]] = b64(value) if isinstance(value, bytes) else str(value)
    if c.get("range_end"):
        out["range_end"] = b64(c["range_end"])
    return out


def _etcd_op(op: Op) -> dict[str, Any]:
    fields = {k: v for k, v in op.items() if k != "op"}
    kind = op["op"]
    if kind == "txn":
        return {
            "request_txn": {
                "compare": [_etcd_compare(c) for c in fields.get("compare", [])],
                "success": [_etcd_op(o) for o in fields.get("success", [])],
                "failure": [_etcd_op(o) for o in fields.get("failure", [])],
            }
        }
    return {f"request_{kind}": _etcd_fields(fields)}


def _norm_etcd_txn(raw: dict[str, Any]) -> dict[str, Any]:
    responses = []
    for r in raw.get("responses", []):
        ((name, body),) = r.items()
        kind = name.removeprefix("response_")
        if kind == "put":
            responses.append({"op": kind, **norm_put(body)})
        elif kind == "delete_range":
            responses.append({"op": kind, **norm_delete(body)})
        elif kind == "range":
            responses.append({"op": kind, **norm_range(body)})
        else:
            responses.append({"op": kind, **_norm_etcd_txn(body)})
    return {
        "revision": _revision(raw),
        "succeeded": bool(raw.get("succeeded", False)),
        "responses": responses,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdWatch(PumpedWatch):
    """One /v3/watch stream: a raw HTTP/1.1 request whose chunked response is NDJSON."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self._reader = reader
        self._writer = writer
        self._lines = b""

    async def _message(self) -> dict[str, Any]:
        while b"\n" not in self._lines:
            size_line = await self._reader.readline()
            if not size_line:
                raise BackendError("connection-lost", "etcd closed the watch stream")
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                raise BackendError("connection-lost", "etcd ended the watch stream")
            self._lines += await self._reader.readexactly(size)
            await self._reader.readexactly(2)
        line, self._lines = self._lines.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise etcd_error(str(msg["error"].get("message", msg["error"])))
        result: dict[str, Any] = msg["result"]
        return result

    async def open(self) -> None:
        status = await self._reader.readline()
        if b" 200 " not in status:
            raise AssertionError(f"etcd refused the watch: {status!r}")
        while (await self._reader.readline()).strip():
            pass  # the response headers; the body is chunked
        first = await asyncio.wait_for(self._message(), 10.0)
        if not first.get("created"):
            raise AssertionError(f"etcd's watch did not start with created: {first}")
        self.start_pump()

    async def _batches(self) -> AsyncIterator[list[Event]]:
        while True:
            msg = await self._message()
            if msg.get("canceled"):
                if "compact_revision" in msg:
                    raise BackendError(
                        "compacted",
                        f"watch canceled: compacted (compact_revision {msg['compact_revision']})",
                    )
                raise BackendError("canceled", str(msg.get("cancel_reason", msg)))
            yield [norm_event(e) for e in msg.get("events", [])]

    async def close(self) -> None:
        await super().close()
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class EtcdBackend:
    """A single-member etcd 3.4 on loopback, spoken to through its v3 JSON gateway."""

    name = "etcd"

    def __init__(self, root: Path, binary: str = "etcd") -> None:
        self.root = root
        self.binary = binary
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._watches: list[EtcdWatch] = []

    @property
    def log_path(self) -> Path:
        return self.root / "etcd.log"

    async def start(self, timeout: float = 20.0) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--name=oracle",
                    f"--data-dir={self.root / 'data'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=oracle={peer}",
                    "--initial-cluster-state=new",
                    "--listen-metrics-urls=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("ETCD")},
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log_path.read_text()[-2000:]}")
            try:
                await self.get(b"/oracle-ready")
                return
            except (OSError, http.client.HTTPException, BackendError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd did not answer within {timeout}s")
                await asyncio.sleep(0.1)

    def _post_blocking(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=10)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        text = data.decode()
        if path == "/v3/lease/keepalive":  # a stream even for one request: {"result": ...}
            text = text.strip().splitlines()[0] if text.strip() else "{}"
        msg: dict[str, Any] = json.loads(text) if text.strip() else {}
        if "result" in msg and isinstance(msg["result"], dict):
            msg = msg["result"]
        err = msg.get("error")
        if err:
            raise etcd_error(str(err.get("message", err) if isinstance(err, dict) else err))
        if resp.status != 200:
            raise BackendError("etcd-other", f"HTTP {resp.status}: {text[:300]}")
        return msg

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._post_blocking, path, body)

    async def put(self, key: bytes, value: bytes = b"", **opts: Any) -> dict[str, Any]:
        body = _etcd_fields({"key": key, "value": value, **opts})
        return norm_put(await self._post("/v3/kv/put", body))

    async def get(self, key: bytes, range_end: bytes = b"", **opts: Any) -> dict[str, Any]:
        body = _etcd_fields({"key": key, **opts})
        if range_end:
            body["range_end"] = b64(range_end)
        return norm_range(await self._post("/v3/kv/range", body))

    async def delete(self, key: bytes, range_end: bytes = b"", **opts: Any) -> dict[str, Any]:
        body = _etcd_fields({"key": key, **opts})
        if range_end:
            body["range_end"] = b64(range_end)
        return norm_delete(await self._post("/v3/kv/deleterange", body))

    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op]
    ) -> dict[str, Any]:
        body = {
            "compare": [_etcd_compare(c) for c in compare],
            "success": [_etcd_op(o) for o in success],
            "failure": [_etcd_op(o) for o in failure],
        }
        return _norm_etcd_txn(await self._post("/v3/kv/txn", body))

    async def compact(self, revision: int) -> dict[str, Any]:
        raw = await self._post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return {"revision": _revision(raw)}

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> dict[str, Any]:
        raw = await self._post("/v3/lease/grant", {"TTL": str(ttl), "ID": str(lease_id)})
        return {"id": int(raw["ID"]), "ttl": int(raw.get("TTL", 0))}

    async def lease_revoke(self, lease_id: int) -> dict[str, Any]:
        return {"revision": _revision(await self._post("/v3/lease/revoke", {"ID": str(lease_id)}))}

    async def lease_keepalive(self, lease_id: int) -> dict[str, Any]:
        raw = await self._post("/v3/lease/keepalive", {"ID": str(lease_id)})
        ttl = int(raw.get("TTL", 0))
        if ttl <= 0:  # etcd answers a keep-alive for a dead lease with TTL 0, not an error
            raise BackendError("lease-not-found", f"lease {lease_id} expired or revoked (TTL 0)")
        return {"id": int(raw["ID"]), "ttl": ttl}

    async def lease_ttl(self, lease_id: int, keys: bool = False) -> dict[str, Any]:
        raw = await self._post("/v3/lease/timetolive", {"ID": str(lease_id), "keys": keys})
        return {
            "id": int(raw.get("ID", 0)),
            "ttl": int(raw.get("TTL", 0)),
            "granted_ttl": int(raw.get("grantedTTL", 0)),
            "keys": sorted(unb64(k) for k in raw.get("keys", [])),
        }

    async def watch(
        self, key: bytes, range_end: bytes = b"", start_revision: int = 0, prev_kv: bool = False
    ) -> EtcdWatch:
        create: dict[str, Any] = {"key": b64(key), "prev_kv": prev_kv}
        if range_end:
            create["range_end"] = b64(range_end)
        if start_revision:
            create["start_revision"] = str(start_revision)
        body = json.dumps({"create_request": create}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.client_port)
        head = (
            f"POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1:{self.client_port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        w = EtcdWatch(reader, writer)
        self._watches.append(w)
        await w.open()
        return w

    async def close(self) -> None:
        for w in self._watches:
            await w.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)


def etcd_binary() -> str | None:
    """The etcd 3.4 server (Debian's etcd-server), or None when it is not installed."""
    return shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)


def temp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
