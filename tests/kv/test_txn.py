"""Transactions: every compare target and result, missing keys, branches, atomicity, refusals."""

from __future__ import annotations

import pytest

from agent.kv import (
    Compare,
    DeleteRangeRequest,
    KVError,
    KVStore,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from agent.kv.model import DeleteRangeResponse, PutResponse, RangeResponse, TxnResponse

from .helpers import observable, values


@pytest.fixture
def store() -> KVStore:
    s = KVStore()
    lease = s.lease_grant(7, 60).id
    s.put(b"k", b"a")  # rev 2
    s.put(b"other", b"x")  # rev 3
    s.put(b"k", b"b", lease=lease)  # rev 4: k version 2, create 2, mod 4, lease 7
    return s


CASES = [
    ("value", "=", b"b", True),
    ("value", "=", b"a", False),
    ("value", "!=", b"a", True),
    ("value", "<", b"c", True),
    ("value", "<", b"b", False),
    ("value", ">", b"a", True),
    ("value", ">", b"bb", False),
    ("version", "=", 2, True),
    ("version", "!=", 2, False),
    ("version", "<", 3, True),
    ("version", ">", 2, False),
    ("create", "=", 2, True),
    ("create", ">", 1, True),
    ("create", "<", 2, False),
    ("create", "!=", 3, True),
    ("mod", "=", 4, True),
    ("mod", "<", 4, False),
    ("mod", ">", 3, True),
    ("mod", "!=", 4, False),
    ("lease", "=", 7, True),
    ("lease", "!=", 0, True),
    ("lease", ">", 7, False),
    ("lease", "<", 8, True),
]


@pytest.mark.parametrize(("target", "result", "value", "expected"), CASES)
def test_compare_on_an_existing_key(
    store: KVStore, target: str, result: str, value: bytes | int, expected: bool
) -> None:
    resp = store.txn(
        [Compare(b"k", target, result, value)],  # type: ignore[arg-type]
        [PutRequest(b"went", b"success")],
        [PutRequest(b"went", b"failure")],
    )
    assert resp.succeeded is expected
    assert store.get(b"went").value == (b"success" if expected else b"failure")  # type: ignore[union-attr]


MISSING = [
    ("version", "=", 0, True),
    ("version", ">", 0, False),
    ("version", "<", 1, True),
    ("create", "=", 0, True),
    ("mod", "=", 0, True),
    ("mod", "!=", 0, False),
    ("lease", "=", 0, True),
    ("value", "=", b"", False),  # a value compare against a missing key is always false
    ("value", "!=", b"x", False),
    ("value", "<", b"zzz", False),
]


@pytest.mark.parametrize(("target", "result", "value", "expected"), MISSING)
def test_compare_on_a_missing_key(
    store: KVStore, target: str, result: str, value: bytes | int, expected: bool
) -> None:
    resp = store.txn([Compare(b"nope", target, result, value)])  # type: ignore[arg-type]
    assert resp.succeeded is expected


def test_create_if_absent_idiom(store: KVStore) -> None:
    def create(key: bytes) -> bool:
        return store.txn([Compare(key, "create", "=", 0)], [PutRequest(key, b"mine")]).succeeded

    assert create(b"lock") is True
    assert create(b"lock") is False
    assert store.get(b"lock").version == 1  # type: ignore[union-attr]


def test_range_compare_applies_to_every_key() -> None:
    s = KVStore()
    s.put(b"p/1", b"x")
    s.put(b"p/2", b"x")
    s.put(b"p/3", b"y")
    assert s.txn([Compare(b"p/", "value", "=", b"x", range_end=b"p/3")]).succeeded
    assert not s.txn([Compare(b"p/", "value", "=", b"x", range_end=b"p0")]).succeeded
    assert s.txn([Compare(b"p/", "version", ">", 0, range_end=b"p0")]).succeeded
    # an empty range compares like a missing key
    assert s.txn([Compare(b"q/", "version", "=", 0, range_end=b"q0")]).succeeded
    assert not s.txn([Compare(b"q/", "value", "=", b"", range_end=b"q0")]).succeeded


def test_all_compares_must_hold(store: KVStore) -> None:
    ok = Compare(b"k", "version", "=", 2)
    bad = Compare(b"k", "value", "=", b"zzz")
    assert store.txn([ok, ok]).succeeded
    assert not store.txn([ok, bad]).succeeded
    assert store.txn([]).succeeded  # no compares: success


def test_writes_share_one_revision_and_reads_see_them(store: KVStore) -> None:
    resp = store.txn(
        [],
        [
            RangeRequest(b"k"),
            PutRequest(b"n1", b"1"),
            PutRequest(b"k", b"c"),
            DeleteRangeRequest(b"other"),
            RangeRequest(b"\0", b"\0"),
        ],
    )
    assert resp.revision == 5
    assert store.revision == 5
    before, put1, _, deleted, after = resp.responses
    assert isinstance(before, RangeResponse) and before.revision == 4
    assert isinstance(deleted, DeleteRangeResponse)
    assert (deleted.revision, deleted.deleted) == (5, 1)
    assert before.kvs[0].value == b"b"
    assert isinstance(put1, PutResponse) and put1.revision == 5
    assert isinstance(after, RangeResponse) and after.revision == 5
    assert [(kv.key, kv.value, kv.mod_revision) for kv in after.kvs] == [
        (b"k", b"c", 5),
        (b"n1", b"1", 5),
    ]
    assert store.get(b"k").version == 3  # type: ignore[union-attr]


def test_read_only_txn_and_deletes_of_nothing_do_not_bump(store: KVStore) -> None:
    assert store.txn([], [RangeRequest(b"k")]).revision == 4
    assert store.txn([], [DeleteRangeRequest(b"absent")]).revision == 4
    assert store.revision == 4


def test_failure_branch_runs_when_compare_fails(store: KVStore) -> None:
    resp = store.txn(
        [Compare(b"k", "value", "=", b"nope")],
        [PutRequest(b"s", b"1")],
        [PutRequest(b"f", b"1"), RangeRequest(b"f")],
    )
    assert not resp.succeeded
    assert len(resp.responses) == 2
    assert store.get(b"s") is None and store.get(b"f") is not None


def test_nested_txn_compares_see_the_state_before_the_txn(store: KVStore) -> None:
    inner = TxnRequest(
        (Compare(b"fresh", "version", "=", 0),),
        (PutRequest(b"inner", b"then"),),
        (PutRequest(b"inner", b"else"),),
    )
    resp = store.txn([], [PutRequest(b"fresh", b"1"), inner])
    assert resp.succeeded
    nested = resp.responses[1]
    assert isinstance(nested, TxnResponse) and nested.succeeded
    assert values(store)[b"inner"] == b"then"
    assert store.revision == 5


@pytest.mark.parametrize(
    "ops",
    [
        [PutRequest(b"a", b"1"), PutRequest(b"a", b"2")],
        [PutRequest(b"a", b"1"), DeleteRangeRequest(b"a")],
        [DeleteRangeRequest(b"a", b"c"), PutRequest(b"b", b"1")],
        [PutRequest(b"a", b"1"), TxnRequest((), (PutRequest(b"a", b"2"),))],
        [DeleteRangeRequest(b"a"), TxnRequest((), (), (PutRequest(b"a", b"2"),))],
        [
            TxnRequest((), (PutRequest(b"a", b"1"),)),
            TxnRequest((), (), (PutRequest(b"a", b"2"),)),
        ],
    ],
)
def test_duplicate_keys_are_refused(store: KVStore, ops: list[object]) -> None:
    before = observable(store)
    with pytest.raises(KVError) as err:
        store.txn([], ops)  # type: ignore[arg-type]
    assert err.value.code == "duplicate-key"
    assert "duplicate key given in txn request" in err.value.message
    assert observable(store) == before


def test_the_same_key_in_exclusive_branches_is_fine(store: KVStore) -> None:
    inner = TxnRequest((), (PutRequest(b"a", b"1"),), (PutRequest(b"a", b"2"),))
    store.txn([], [inner], [PutRequest(b"a", b"3")])
    assert values(store)[b"a"] == b"1"


def test_a_txn_refused_midway_changes_nothing(store: KVStore) -> None:
    before = observable(store)
    with pytest.raises(KVError) as err:
        store.txn([], [PutRequest(b"first", b"1"), PutRequest(b"second", b"2", lease=404)])
    assert err.value.code == "lease-not-found"
    with pytest.raises(KVError) as err:
        store.txn([], [PutRequest(b"first", b"1"), RangeRequest(b"k", revision=99)])
    assert err.value.code == "future-revision"
    assert observable(store) == before


def test_too_many_ops(store: KVStore) -> None:
    ops = [PutRequest(f"k{i}".encode(), b"v") for i in range(129)]
    with pytest.raises(KVError) as err:
        store.txn([], ops)  # type: ignore[arg-type]
    assert err.value.code == "too-many-ops"
    store.txn([], ops[:128])  # type: ignore[arg-type]
    assert store.revision == 5


def test_reserved_writes_are_refused_in_any_branch(store: KVStore) -> None:
    with pytest.raises(KVError) as err:
        store.txn([], [PutRequest(b"ok", b"1")], [PutRequest(b"/_shoal/x", b"1")])
    assert err.value.code == "reserved-prefix"
    assert store.get(b"ok") is None
    store.txn([], [PutRequest(b"/_shoal/x", b"1")], allow_reserved=True)
    assert store.get(b"/_shoal/x") is not None
    # compares and reads on reserved keys need no flag
    assert store.txn([Compare(b"/_shoal/x", "version", "=", 1)], [RangeRequest(b"/_shoal/x")])


def test_delete_from_key_then_put_in_one_txn_is_allowed_as_in_etcd() -> None:
    # etcd's duplicate check reads a b"\0" range_end literally, so this is not a duplicate;
    # the put then re-creates the key inside the same revision.
    s = KVStore()
    s.put(b"b", b"old")
    resp = s.txn([], [DeleteRangeRequest(b"a", b"\0"), PutRequest(b"b", b"new")])
    assert resp.revision == 3
    kv = s.get(b"b")
    assert kv is not None and (kv.value, kv.create_revision, kv.version) == (b"new", 3, 1)
    assert [(e.type, e.kv.key) for e in s.events_since(3)] == [("DELETE", b"b"), ("PUT", b"b")]
    restored = KVStore()
    restored.restore(s.snapshot())
    assert restored.get(b"b") == kv
    s.compact(3)
    assert s.range(b"b", revision=3).kvs == (kv,)
