"""Typed Raft messages and their wire codec.

Every message is a frozen dataclass with the sender's term and the source and destination node
ids. On the wire a message is one JSON object with a protocol version ``v`` and a type tag ``t``;
decoding is driven by a table from tag to class and validates every field's type, so a malformed
peer message is a :class:`ProtocolError`, never an exception deep inside the core. JSON rather than
pickle: a peer's bytes are data, never code.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from agent.raft.types import ConfState, Entry, EntryKind, Snapshot, SnapshotMeta

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change of a message's fields or meaning."""


class ProtocolError(ValueError):
    """A peer sent bytes that are not a valid message of our protocol version."""


@dataclass(frozen=True, slots=True)
class Message:
    """Fields every message carries."""

    TAG: ClassVar[str] = ""

    term: int
    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class VoteRequest(Message):
    """RequestVote (§5.2), or a pre-vote probe (thesis §9.6) when ``pre_vote`` is set."""

    TAG: ClassVar[str] = "vote"

    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False
    """Set when campaigning on a leader's TimeoutNow: voters then ignore their leader lease."""


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    TAG: ClassVar[str] = "vote-resp"

    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest(Message):
    """AppendEntries (§5.3): entries following (prev_index, prev_term), and the leader's commit."""

    TAG: ClassVar[str] = "append"

    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    """Reply to AppendRequest or SnapshotRequest.

    On success ``index`` is the last index now known to match the leader. On rejection ``index``
    echoes the request's prev_index and ``hint_index``/``hint_term`` let the leader skip a whole
    conflicting term at once (fast back-off): the follower's last index at or below prev_index
    whose term is at most prev_term.
    """

    TAG: ClassVar[str] = "append-resp"

    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Leader liveness and commit propagation; ``ctx`` tags a ReadIndex quorum check."""

    TAG: ClassVar[str] = "heartbeat"

    commit: int
    ctx: str = ""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    TAG: ClassVar[str] = "heartbeat-resp"

    ctx: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotRequest(Message):
    """InstallSnapshot (§7) for a follower whose next entry the leader has compacted away."""

    TAG: ClassVar[str] = "snapshot"

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leader transfer (thesis §3.10): the target campaigns at once."""

    TAG: ClassVar[str] = "timeout-now"


@dataclass(frozen=True, slots=True)
class ReadIndexRequest(Message):
    """A follower asks the leader for a read index on behalf of its client (thesis §6.4)."""

    TAG: ClassVar[str] = "read-index"

    ctx: str


@dataclass(frozen=True, slots=True)
class ReadIndexResponse(Message):
    TAG: ClassVar[str] = "read-index-resp"

    ctx: str
    index: int


@dataclass(frozen=True, slots=True)
class PeerCall(Message):
    """A request from one agent to another over the authenticated peer link — not a Raft
    message; the runtime serves it. Followers use it to forward proposals and lease keep-alives
    to the leader. ``body`` is a JSON object."""

    TAG: ClassVar[str] = "call"

    ctx: str
    method: str
    body: bytes


@dataclass(frozen=True, slots=True)
class PeerCallResponse(Message):
    """The answer to a :class:`PeerCall`: a JSON ``body``, or ``code``/``error`` on failure."""

    TAG: ClassVar[str] = "call-resp"

    ctx: str
    body: bytes = b""
    error: str = ""
    code: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TAG: cls
    for cls in (
        VoteRequest,
        VoteResponse,
        AppendRequest,
        AppendResponse,
        Heartbeat,
        HeartbeatResponse,
        SnapshotRequest,
        TimeoutNow,
        ReadIndexRequest,
        ReadIndexResponse,
        PeerCall,
        PeerCallResponse,
    )
}


# --- encoding -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encode_entry(entry: Entry) -> list[Any]:
    return [entry.term, entry.index, int(entry.kind), _b64(entry.data)]


def _encode_snapshot(snap: Snapshot) -> dict[str, Any]:
    meta = snap.meta
    return {
        "index": meta.index,
        "term": meta.term,
        "conf": meta.conf.to_dict(),
        "data": _b64(snap.data),
    }


def message_to_dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"v": PROTOCOL_VERSION, "t": msg.TAG}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if f.name == "entries":
            value = [_encode_entry(e) for e in value]
        elif f.name == "snapshot":
            value = _encode_snapshot(value)
        elif isinstance(value, bytes):
            value = _b64(value)
        out[f.name] = value
    return out


def encode(msg: Message) -> bytes:
    """Serialize a message to compact JSON bytes."""
    return json.dumps(message_to_dict(msg), separators=(",", ":")).encode()


# --- decoding -----------------------------------------------------------------------------------


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int subclass in Python; refuse it where an int is expected and vice versa.
    if isinstance(value, bool) and kind is int:
        raise ProtocolError(f"{what}: expected int, got bool")
    if not isinstance(value, kind):
        raise ProtocolError(
            f"{what}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    if isinstance(value, int) and value < 0:
        raise ProtocolError(f"{what}: must not be negative")
    return value


def _unb64(value: Any, what: str) -> bytes:
    _expect(value, str, what)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what}: not valid base64")


def _decode_entry(raw: Any) -> Entry:
    if not isinstance(raw, list) or len(raw) != 4:
        raise ProtocolError("entry: expected [term, index, kind, data]")
    term = _expect(raw[0], int, "entry.term")
    index = _expect(raw[1], int, "entry.index")
    try:
        kind = EntryKind(_expect(raw[2], int, "entry.kind"))
    except ValueError:
        raise ProtocolError(f"entry.kind: unknown kind {raw[2]!r}")
    return Entry(term, index, _unb64(raw[3], "entry.data"), kind)


def _decode_conf(raw: Any) -> ConfState:
    _expect(raw, dict, "snapshot.conf")
    voters = _expect(raw.get("voters", []), list, "conf.voters")
    learners = _expect(raw.get("learners", []), list, "conf.learners")
    for node in (*voters, *learners):
        _expect(node, str, "conf member")
    return ConfState(frozenset(voters), frozenset(learners))


def _decode_snapshot(raw: Any) -> Snapshot:
    _expect(raw, dict, "snapshot")
    meta = SnapshotMeta(
        _expect(raw.get("index"), int, "snapshot.index"),
        _expect(raw.get("term"), int, "snapshot.term"),
        _decode_conf(raw.get("conf")),
    )
    return Snapshot(meta, _unb64(raw.get("data"), "snapshot.data"))


_SCALARS: dict[str, type] = {"int": int, "bool": bool, "str": str}


def message_from_dict(raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise ProtocolError("message: expected a JSON object")
    if raw.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {raw.get('v')!r} (this agent speaks {PROTOCOL_VERSION})"
        )
    cls = MESSAGE_TYPES.get(raw.get("t"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown message type {raw.get('t')!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            if f.default is not dataclasses.MISSING:
                continue
            raise ProtocolError(f"{cls.TAG}: missing field {f.name!r}")
        value = raw[f.name]
        if f.name == "entries":
            _expect(value, list, "entries")
            value = tuple(_decode_entry(e) for e in value)
        elif f.name == "snapshot":
            value = _decode_snapshot(value)
        elif str(f.type) == "bytes":
            value = _unb64(value, f"{cls.TAG}.{f.name}")
        else:
            value = _expect(value, _SCALARS[str(f.type)], f"{cls.TAG}.{f.name}")
        kwargs[f.name] = value
    return cls(**kwargs)


def decode(data: bytes) -> Message:
    """Parse bytes from a peer; raise :class:`ProtocolError` on anything malformed."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not a JSON message: {exc}")
    return message_from_dict(raw)
