"""The Raft log's KV commands: a small versioned JSON codec (bytes as base64, never pickle).

One command per log entry, e.g.::

    {"v":1,"op":"put","key":"Zm9v","value":"YmFy","lease":7}
    {"v":1,"op":"txn","compare":[{"key":"Zm9v","target":"version","result":"=","value":0}],
     "success":[{"op":"put","key":"Zm9v","value":"MQ=="}],"failure":[]}
    {"v":1,"op":"compact","revision":42}
    {"v":1,"op":"lease_grant","id":0,"ttl":10}   lease_revoke / lease_expire: {"id": N}

Fields equal to their default are left out when encoding. Decoding is strict — unknown
fields, wrong types and bad base64 are refused with a precise ``bad-command`` error naming the
field — because a log entry that means different things to different agent versions would
split the cluster's state. ``lease_expire`` does what ``lease_revoke`` does; it exists so the
log shows that the leader expired the lease rather than a client revoking it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, cast

from agent.kv.errors import BAD_COMMAND, UNSUPPORTED_VERSION, KVError
from agent.kv.model import (
    COMPARE_RESULTS,
    COMPARE_TARGETS,
    SORT_ORDERS,
    SORT_TARGETS,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Op,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
)

VERSION = 1
MAX_TXN_DEPTH = 32


@dataclass(frozen=True, slots=True)
class PutCommand:
    request: PutRequest
    allow_reserved: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeCommand:
    request: DeleteRangeRequest
    allow_reserved: bool = False


@dataclass(frozen=True, slots=True)
class TxnCommand:
    request: TxnRequest
    allow_reserved: bool = False


@dataclass(frozen=True, slots=True)
class CompactCommand:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrantCommand:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeCommand:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseExpireCommand:
    id: int


Command = (
    PutCommand
    | DeleteRangeCommand
    | TxnCommand
    | CompactCommand
    | LeaseGrantCommand
    | LeaseRevokeCommand
    | LeaseExpireCommand
)


# --- encoding ---------------------------------------------------------------------------


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _put_fields(o: dict[str, Any], r: PutRequest) -> None:
    o["key"] = _b64(r.key)
    if r.value:
        o["value"] = _b64(r.value)
    for name in ("lease", "prev_kv", "ignore_value", "ignore_lease"):
        if getattr(r, name):
            o[name] = getattr(r, name)


def _op_json(op: Op) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if isinstance(op, PutRequest):
        o["op"] = "put"
        _put_fields(o, op)
    elif isinstance(op, DeleteRangeRequest):
        o.update(op="delete_range", key=_b64(op.key))
        if op.range_end:
            o["range_end"] = _b64(op.range_end)
        if op.prev_kv:
            o["prev_kv"] = True
    elif isinstance(op, RangeRequest):
        o.update(op="range", key=_b64(op.key))
        if op.range_end:
            o["range_end"] = _b64(op.range_end)
        for name, default in _RANGE_DEFAULTS.items():
            if getattr(op, name) != default:
                o[name] = getattr(op, name)
    else:
        o["op"] = "txn"
        o["compare"] = [_compare_json(c) for c in op.compare]
        o["success"] = [_op_json(x) for x in op.success]
        o["failure"] = [_op_json(x) for x in op.failure]
    return o


_RANGE_DEFAULTS: dict[str, Any] = {
    "limit": 0,
    "revision": 0,
    "sort_order": "none",
    "sort_target": "key",
    "keys_only": False,
    "count_only": False,
}


def _compare_json(c: Compare) -> dict[str, Any]:
    o: dict[str, Any] = {"key": _b64(c.key), "target": c.target, "result": c.result}
    o["value"] = _b64(c.value) if isinstance(c.value, bytes) else c.value
    if c.range_end:
        o["range_end"] = _b64(c.range_end)
    return o


def encode(cmd: Command) -> bytes:
    """The log entry bytes for ``cmd``."""
    o: dict[str, Any] = {"v": VERSION}
    if isinstance(cmd, PutCommand | DeleteRangeCommand | TxnCommand):
        o.update(_op_json(cmd.request))
        if cmd.allow_reserved:
            o["allow_reserved"] = True
    elif isinstance(cmd, CompactCommand):
        o.update(op="compact", revision=cmd.revision)
    elif isinstance(cmd, LeaseGrantCommand):
        o.update(op="lease_grant", id=cmd.id, ttl=cmd.ttl)
    elif isinstance(cmd, LeaseRevokeCommand):
        o.update(op="lease_revoke", id=cmd.id)
    else:
        o.update(op="lease_expire", id=cmd.id)
    return json.dumps(o, separators=(",", ":")).encode()


# --- decoding ---------------------------------------------------------------------------


def _bad(path: str, what: str) -> KVError:
    return KVError(BAD_COMMAND, f"bad KV command: {path} {what}", field=path)


class _Fields:
    """Typed, strict access to one JSON object; ``done`` refuses fields nobody read."""

    def __init__(self, obj: Any, path: str) -> None:
        if not isinstance(obj, dict):
            raise _bad(path, "must be an object")
        self.obj: dict[str, Any] = obj
        self.path = path
        self.seen: set[str] = set()

    def _get(self, name: str, required: bool) -> Any:
        self.seen.add(name)
        if name not in self.obj:
            if required:
                raise _bad(f"{self.path}.{name}", "is required")
            return None
        return self.obj[name]

    def bytes_(self, name: str, required: bool = False) -> bytes:
        v = self._get(name, required)
        if v is None:
            return b""
        if not isinstance(v, str):
            raise _bad(f"{self.path}.{name}", "must be a base64 string")
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"{self.path}.{name}", "is not valid base64")

    def int_(self, name: str, required: bool = False) -> int:
        v = self._get(name, required)
        if v is None:
            return 0
        if not isinstance(v, int) or isinstance(v, bool):
            raise _bad(f"{self.path}.{name}", "must be an integer")
        if not -(2**63) <= v < 2**63:
            raise _bad(f"{self.path}.{name}", "does not fit in 64 bits")
        return v

    def bool_(self, name: str) -> bool:
        v = self._get(name, False)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise _bad(f"{self.path}.{name}", "must be true or false")
        return v

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        v = self._get(name, default is None)
        if v is None:
            assert default is not None
            return default
        if v not in choices:
            raise _bad(f"{self.path}.{name}", f"must be one of {', '.join(choices)}")
        return cast(str, v)

    def list_(self, name: str) -> list[Any]:
        v = self._get(name, False)
        if v is None:
            return []
        if not isinstance(v, list):
            raise _bad(f"{self.path}.{name}", "must be a list")
        return v

    def done(self) -> None:
        extra = sorted(set(self.obj) - self.seen)
        if extra:
            raise _bad(self.path, f"has unknown field(s) {', '.join(map(repr, extra))}")


_OPS = ("put", "delete_range", "range", "txn")


def _op(f: _Fields) -> Op:
    kind = f.choice("op", _OPS)
    op: Op
    if kind == "put":
        op = PutRequest(
            f.bytes_("key", True),
            f.bytes_("value"),
            f.int_("lease"),
            f.bool_("prev_kv"),
            f.bool_("ignore_value"),
            f.bool_("ignore_lease"),
        )
    elif kind == "delete_range":
        op = DeleteRangeRequest(f.bytes_("key", True), f.bytes_("range_end"), f.bool_("prev_kv"))
    elif kind == "range":
        op = RangeRequest(
            f.bytes_("key", True),
            f.bytes_("range_end"),
            f.int_("limit"),
            f.int_("revision"),
            cast(SortOrder, f.choice("sort_order", SORT_ORDERS, "none")),
            cast(SortTarget, f.choice("sort_target", SORT_TARGETS, "key")),
            f.bool_("keys_only"),
            f.bool_("count_only"),
        )
    else:
        if f.path.count("[") >= MAX_TXN_DEPTH:
            raise _bad(f.path, f"nests txns deeper than {MAX_TXN_DEPTH} levels")
        op = TxnRequest(
            tuple(
                _compare(_Fields(c, f"{f.path}.compare[{i}]"))
                for i, c in enumerate(f.list_("compare"))
            ),
            _ops(f, "success"),
            _ops(f, "failure"),
        )
    return op


def _ops(f: _Fields, name: str) -> tuple[Op, ...]:
    out: list[Op] = []
    for i, raw in enumerate(f.list_(name)):
        sub = _Fields(raw, f"{f.path}.{name}[{i}]")
        out.append(_op(sub))
        sub.done()
    return tuple(out)


def _compare(f: _Fields) -> Compare:
    key = f.bytes_("key", True)
    target = f.choice("target", COMPARE_TARGETS)
    result = f.choice("result", COMPARE_RESULTS)
    value: bytes | int = f.bytes_("value") if target == "value" else f.int_("value")
    c = Compare(
        key, cast(CompareTarget, target), cast(CompareResult, result), value, f.bytes_("range_end")
    )
    f.done()
    return c


_TOP_OPS = ("put", "delete_range", "txn", "compact", "lease_grant", "lease_revoke", "lease_expire")


def decode(data: bytes) -> Command:
    """Parse one log entry; raises KVError(bad-command / unsupported-version)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KVError(BAD_COMMAND, f"bad KV command: not JSON ({exc})")
    f = _Fields(obj, "command")
    version = f._get("v", True)
    if version != VERSION:
        raise KVError(
            UNSUPPORTED_VERSION,
            f"KV command version {version!r} is not supported (this agent speaks {VERSION}); "
            "upgrade the agents so they all speak the same version",
            version=version,
        )
    kind = f.choice("op", _TOP_OPS)
    cmd: Command
    if kind in ("put", "delete_range", "txn"):
        request = _op(f)
        allow = f.bool_("allow_reserved")
        if isinstance(request, PutRequest):
            cmd = PutCommand(request, allow)
        elif isinstance(request, DeleteRangeRequest):
            cmd = DeleteRangeCommand(request, allow)
        else:
            assert isinstance(request, TxnRequest)
            cmd = TxnCommand(request, allow)
    elif kind == "compact":
        cmd = CompactCommand(f.int_("revision", True))
    elif kind == "lease_grant":
        cmd = LeaseGrantCommand(f.int_("id"), f.int_("ttl", True))
    elif kind == "lease_revoke":
        cmd = LeaseRevokeCommand(f.int_("id", True))
    else:
        cmd = LeaseExpireCommand(f.int_("id", True))
    f.done()
    return cmd


def decode_range(params: dict[str, Any], path: str = "params") -> RangeRequest:
    """A range request from API parameters, checked as strictly as a log command."""
    f = _Fields({**params, "op": "range"}, path)
    request = _op(f)
    f.done()
    assert isinstance(request, RangeRequest)
    return request
