"""Transactions: static checks, compare evaluation and the branch plan, as etcd 3.4 does them.

The order matters because users can observe it:

1. Static checks, before looking at any state: at most MAX_TXN_OPS compares/ops per level,
   non-empty keys, put sizes, then the duplicate rule ("etcdserver: duplicate key given in
   txn request": a key put twice, or put and deleted, in what could run together), then the
   reserved prefix (in every branch, so a refusal never depends on the data).
2. Every compare — including those of nested txns — is evaluated on the state *before* the
   txn, fixing which branch runs at each level (the :class:`Plan`).
3. The ops on that path are checked against that same state (leases exist, ``ignore_value``
   keys exist, read revisions are retained); any failure refuses the whole txn unchanged.
4. Only then does the store execute, at one revision, reads seeing earlier writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.kv.errors import (
    BAD_COMMAND,
    DUPLICATE_KEY,
    KEY_NOT_FOUND,
    LEASE_PROVIDED,
    TOO_MANY_OPS,
    VALUE_PROVIDED,
    KVError,
)
from agent.kv.keys import check_key, check_reserved, check_value, check_write_key
from agent.kv.leases import LeaseTable
from agent.kv.model import (
    COMPARE_RESULTS,
    COMPARE_TARGETS,
    Compare,
    DeleteRangeRequest,
    KeyValue,
    Op,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from agent.kv.mvcc import MVCCIndex
from agent.kv.ranges import check_range_request, check_range_revision

MAX_TXN_OPS = 128


# --- static checks ----------------------------------------------------------------------


def check_put_request(req: PutRequest) -> None:
    check_write_key(req.key)
    check_value(req.value)
    if req.ignore_value and req.value:
        raise KVError(
            VALUE_PROVIDED,
            "etcdserver: value is provided (ignore_value keeps the current value; send no value)",
        )
    if req.ignore_lease and req.lease:
        raise KVError(
            LEASE_PROVIDED,
            "etcdserver: lease is provided (ignore_lease keeps the current lease; send lease 0)",
        )


def check_compare(c: Compare) -> None:
    check_key(c.key, "compare key")
    if c.target not in COMPARE_TARGETS:
        raise KVError(
            BAD_COMMAND,
            f"unknown compare target {c.target!r}; use one of {', '.join(COMPARE_TARGETS)}",
        )
    if c.result not in COMPARE_RESULTS:
        raise KVError(
            BAD_COMMAND,
            f"unknown compare result {c.result!r}; use one of {', '.join(COMPARE_RESULTS)}",
        )
    wants_bytes = c.target == "value"
    if wants_bytes != isinstance(c.value, bytes) or isinstance(c.value, bool):
        kind = "bytes" if wants_bytes else "an integer"
        raise KVError(BAD_COMMAND, f"a {c.target!r} compare needs {kind} to compare against")


def check_txn_request(txn: TxnRequest) -> None:
    """Counts, keys and sizes at every level (etcd's checkTxnRequest)."""
    n = max(len(txn.compare), len(txn.success), len(txn.failure))
    if n > MAX_TXN_OPS:
        raise KVError(
            TOO_MANY_OPS,
            f"etcdserver: too many operations in txn request ({n}; the limit is {MAX_TXN_OPS} "
            "per level) — split it",
            limit=MAX_TXN_OPS,
        )
    for c in txn.compare:
        check_compare(c)
    for op in (*txn.success, *txn.failure):
        if isinstance(op, RangeRequest):
            check_range_request(op)
        elif isinstance(op, PutRequest):
            check_put_request(op)
        elif isinstance(op, DeleteRangeRequest):
            check_key(op.key)
        elif isinstance(op, TxnRequest):
            check_txn_request(op)
        else:
            raise KVError(BAD_COMMAND, f"unknown txn operation {type(op).__name__}")


Interval = tuple[bytes, bytes | None]  # [start, end) taken literally; None = the point start


def _hits(dels: list[Interval], key: bytes) -> bool:
    for start, end in dels:
        if (end is None and key == start) or (end is not None and start <= key < end):
            return True
    return False


def _duplicate() -> KVError:
    return KVError(
        DUPLICATE_KEY,
        "etcdserver: duplicate key given in txn request (a txn may write each key once: "
        "it may not put a key twice, or put a key it also deletes)",
    )


def _intervals(ops: tuple[Op, ...]) -> tuple[set[bytes], list[Interval]]:
    """Puts and deletes of one branch; raise when they overlap as etcd's checkIntervals does.

    A delete's range_end is taken literally (so ``b"\\0"`` spans nothing here), as in etcd.
    """
    dels: list[Interval] = [
        (op.key, op.range_end or None) for op in ops if isinstance(op, DeleteRangeRequest)
    ]
    puts: set[bytes] = set()
    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        then_puts, then_dels = _intervals(op.success)
        else_puts, else_dels = _intervals(op.failure)
        for k in then_puts:
            if k in puts or _hits(dels, k):
                raise _duplicate()
            puts.add(k)
        for k in else_puts:
            if (k in puts and k not in then_puts) or _hits(dels, k):
                raise _duplicate()
            puts.add(k)
        dels += then_dels + else_dels
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or _hits(dels, op.key):
                raise _duplicate()
            puts.add(op.key)
    return puts, dels


def check_duplicates(txn: TxnRequest) -> None:
    _intervals(txn.success)
    _intervals(txn.failure)


def has_writes(txn: TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        if isinstance(op, PutRequest | DeleteRangeRequest):
            return True
        if isinstance(op, TxnRequest) and has_writes(op):
            return True
    return False


def check_reserved_writes(txn: TxnRequest, allow_reserved: bool) -> None:
    for op in (*txn.success, *txn.failure):
        if isinstance(op, PutRequest):
            check_reserved(op.key, b"", allow_reserved)
        elif isinstance(op, DeleteRangeRequest):
            check_reserved(op.key, op.range_end, allow_reserved)
        elif isinstance(op, TxnRequest):
            check_reserved_writes(op, allow_reserved)


def check_static(txn: TxnRequest, allow_reserved: bool) -> None:
    check_txn_request(txn)
    check_duplicates(txn)
    check_reserved_writes(txn, allow_reserved)


# --- compares and the plan --------------------------------------------------------------


def _compare_kv(c: Compare, kv: KeyValue | None) -> bool:
    if c.target == "value":
        assert isinstance(c.value, bytes)
        have: bytes | int = kv.value if kv else b""
    elif c.target == "version":
        have = kv.version if kv else 0
    elif c.target == "create":
        have = kv.create_revision if kv else 0
    elif c.target == "mod":
        have = kv.mod_revision if kv else 0
    else:
        have = kv.lease if kv else 0
    want = c.value
    if c.result == "=":
        return have == want
    if c.result == "!=":
        return have != want
    if c.result == "<":
        return have < want  # type: ignore[operator]
    return have > want  # type: ignore[operator]


def compare_holds(index: MVCCIndex, c: Compare) -> bool:
    """One compare against the current state; over a range it must hold for every key.

    A missing key (or an empty range) compares as version/create/mod/lease 0; a value
    compare against nothing is always false (etcd cannot tell "absent" from "empty").
    """
    kvs = index.range(c.key, c.range_end)
    if not kvs:
        return c.target != "value" and _compare_kv(c, None)
    return all(_compare_kv(c, kv) for kv in kvs)


@dataclass(slots=True)
class Plan:
    """Which branch runs, for this txn and (in order) each nested txn of that branch."""

    succeeded: bool
    nested: list[Plan] = field(default_factory=list)


def make_plan(index: MVCCIndex, txn: TxnRequest) -> Plan:
    ok = all(compare_holds(index, c) for c in txn.compare)
    ops = txn.success if ok else txn.failure
    return Plan(ok, [make_plan(index, op) for op in ops if isinstance(op, TxnRequest)])


def path_ops(txn: TxnRequest, plan: Plan) -> Iterator[Op]:
    """The non-txn ops that will run, depth first in execution order."""
    nested = iter(plan.nested)
    for op in txn.success if plan.succeeded else txn.failure:
        if isinstance(op, TxnRequest):
            yield from path_ops(op, next(nested))
        else:
            yield op


def check_path(
    index: MVCCIndex,
    leases: LeaseTable,
    txn: TxnRequest,
    plan: Plan,
    revision: int,
    compact_revision: int,
) -> None:
    """Refuse the txn if an op on its path would fail (checked on the pre-txn state)."""
    if has_writes(txn):
        for op in path_ops(txn, plan):
            if isinstance(op, PutRequest):
                check_put_state(index, leases, op)
    for op in path_ops(txn, plan):
        if isinstance(op, RangeRequest):
            check_range_revision(op.revision, revision, compact_revision)


def check_put_state(index: MVCCIndex, leases: LeaseTable, req: PutRequest) -> None:
    if (req.ignore_value or req.ignore_lease) and index.get(req.key) is None:
        raise KVError(
            KEY_NOT_FOUND,
            "etcdserver: key not found (ignore_value/ignore_lease need the key to exist)",
        )
    if req.lease:
        leases.require(req.lease)
