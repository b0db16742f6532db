"""The Raft-facing machine: the command codec, error results for bad commands, idempotence."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent.kv import (
    Command,
    CompactCommand,
    Compare,
    DeleteRangeCommand,
    DeleteRangeRequest,
    KVStateMachine,
    LeaseExpireCommand,
    LeaseGrantCommand,
    LeaseRevokeCommand,
    PutCommand,
    PutRequest,
    RangeRequest,
    TxnCommand,
    TxnRequest,
    decode_command,
    encode_command,
)

from .helpers import observable


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def raw(**fields: Any) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def test_commands_round_trip_through_the_codec() -> None:
    nested = TxnRequest(
        (Compare(b"k", "mod", "<", 9, range_end=b"l"),),
        (DeleteRangeRequest(b"a", b"\0", prev_kv=True),),
        (RangeRequest(b"r", b"s", 3, 2, "descend", "value", True, False),),
    )
    cmds: list[Command] = [
        PutCommand(PutRequest(b"\x00\xffbin", b"v" * 10, 5, True), allow_reserved=True),
        PutCommand(PutRequest(b"k", ignore_value=True, ignore_lease=True)),
        DeleteRangeCommand(DeleteRangeRequest(b"a", b"b", True)),
        TxnCommand(TxnRequest((Compare(b"k", "value", "=", b"x"),), (nested,), ())),
        CompactCommand(7),
        LeaseGrantCommand(0, 10),
        LeaseRevokeCommand(3),
        LeaseExpireCommand(4),
    ]
    for cmd in cmds:
        data = encode_command(cmd)
        assert json.loads(data)["v"] == 1
        assert decode_command(data) == cmd


def test_apply_returns_json_results_with_the_header() -> None:
    m = KVStateMachine()
    r = m.apply(1, encode_command(PutCommand(PutRequest(b"k", b"v"))))
    assert r == {"header": {"revision": 2}}
    r = m.apply(2, encode_command(LeaseGrantCommand(0, 30)))
    assert r == {"header": {"revision": 2}, "id": 1, "ttl": 30}
    txn = TxnRequest(
        (Compare(b"k", "value", "=", b"v"),),
        (PutRequest(b"k2", b"x", lease=1), RangeRequest(b"k", b"l")),
    )
    r = m.apply(3, encode_command(TxnCommand(txn)))
    assert r["header"] == {"revision": 3} and r["succeeded"] is True
    assert r["responses"][0] == {"op": "put", "header": {"revision": 3}}
    rng = r["responses"][1]
    assert rng["op"] == "range" and rng["count"] == 2 and rng["more"] is False
    assert rng["kvs"][1] == {
        "key": b64(b"k2"),
        "create_revision": 3,
        "mod_revision": 3,
        "version": 1,
        "value": b64(b"x"),
        "lease": 1,
    }
    r = m.apply(4, encode_command(LeaseExpireCommand(1)))
    assert r == {"header": {"revision": 4}, "deleted": 1}
    r = m.apply(5, encode_command(CompactCommand(3)))
    assert r == {"header": {"revision": 4}}
    json.dumps(r)  # everything is JSON-able
    assert m.store.applied_index == 5


BAD: list[tuple[bytes, str, str]] = [
    (b"\xff\xfe not json", "bad-command", "not JSON"),
    (b"[1, 2]", "bad-command", "must be an object"),
    (json.dumps({"op": "put"}).encode(), "bad-command", "command.v is required"),
    (json.dumps({"v": 2, "op": "put"}).encode(), "unsupported-version", "version 2"),
    (raw(op="launch"), "bad-command", "command.op must be one of"),
    (raw(op="range", key=b64(b"k")), "bad-command", "command.op must be one of"),
    (raw(op="put", value=b64(b"v")), "bad-command", "command.key is required"),
    (raw(op="put", key="***"), "bad-command", "command.key is not valid base64"),
    (raw(op="put", key=b64(b"k"), lease="7"), "bad-command", "command.lease must be an integer"),
    (raw(op="put", key=b64(b"k"), lease=2**64), "bad-command", "does not fit in 64 bits"),
    (raw(op="put", key=b64(b"k"), prev_kv=1), "bad-command", "must be true or false"),
    (raw(op="put", key=b64(b"k"), colour="red"), "bad-command", "unknown field(s) 'colour'"),
    (
        raw(op="txn", success=[{"op": "put", "key": b64(b"k"), "vaule": b64(b"x")}]),
        "bad-command",
        "command.success[0] has unknown field(s) 'vaule'",
    ),
    (
        raw(
            op="txn",
            compare=[{"key": b64(b"k"), "target": "version", "result": "=", "value": b64(b"x")}],
        ),
        "bad-command",
        "command.compare[0].value must be an integer",
    ),
    (
        raw(op="txn", compare=[{"key": b64(b"k"), "target": "age", "result": "="}]),
        "bad-command",
        "command.compare[0].target must be one of",
    ),
    (raw(op="put", key=b64(b"")), "empty-key", "key is not provided"),
    (raw(op="put", key=b64(b"/_shoal/m")), "reserved-prefix", "allow_reserved"),
    (raw(op="put", key=b64(b"k"), lease=42), "lease-not-found", "lease 42"),
    (
        raw(op="txn", success=[{"op": "put", "key": b64(b"k")}, {"op": "put", "key": b64(b"k")}]),
        "duplicate-key",
        "duplicate key",
    ),
    (raw(op="compact", revision=99), "future-revision", "future revision"),
    (raw(op="lease_revoke", id=77), "lease-not-found", "lease 77"),
    (raw(op="lease_grant", id=0), "bad-command", "command.ttl is required"),
    (raw(op="delete_range", key=b64(b"\0"), range_end=b64(b"\0")), "reserved-prefix", "/_shoal/"),
]


@pytest.mark.parametrize(("data", "code", "phrase"), BAD)
def test_bad_commands_change_nothing_and_say_why(data: bytes, code: str, phrase: str) -> None:
    m = KVStateMachine()
    m.apply(1, encode_command(PutCommand(PutRequest(b"k", b"v"))))
    m.apply(2, encode_command(LeaseGrantCommand(5, 60)))
    before = observable(m.store)
    result = m.apply(3, data)
    assert result["error"]["code"] == code
    assert phrase in result["error"]["message"]
    assert result["header"] == {"revision": 2}
    assert observable(m.store) == before
    json.dumps(result)
    # the node carries on: the next command applies normally
    assert "error" not in m.apply(4, encode_command(PutCommand(PutRequest(b"k", b"w"))))


def test_deeply_nested_txn_is_refused_not_a_crash() -> None:
    op: dict[str, Any] = {"op": "put", "key": b64(b"k")}
    for _ in range(200):
        op = {"op": "txn", "success": [op]}
    result = KVStateMachine().apply(1, raw(**op))
    assert result["error"]["code"] == "bad-command"


def test_replayed_indexes_are_skipped() -> None:
    m = KVStateMachine()
    put = encode_command(PutCommand(PutRequest(b"k", b"v")))
    m.apply(5, put)
    assert m.store.get(b"k").version == 1  # type: ignore[union-attr]
    result = m.apply(5, put)
    assert result["error"]["code"] == "already-applied"
    assert m.store.get(b"k").version == 1  # type: ignore[union-attr]
    assert m.store.applied_index == 5


def test_same_log_gives_the_same_state_on_every_member() -> None:
    log: list[Command] = [
        LeaseGrantCommand(0, 10),
        PutCommand(PutRequest(b"a", b"1", lease=1)),
        PutCommand(PutRequest(b"b", b"1")),
        TxnCommand(TxnRequest((Compare(b"a", "version", "=", 1),), (PutRequest(b"c", b"2"),))),
        LeaseExpireCommand(1),
        CompactCommand(3),
    ]
    members = [KVStateMachine() for _ in range(3)]
    for i, cmd in enumerate(log, start=1):
        results = {json.dumps(m.apply(i, encode_command(cmd)), sort_keys=True) for m in members}
        assert len(results) == 1
    snaps = {m.snapshot() for m in members}
    assert len(snaps) == 1
