"""Transactions: every compare target and operator, branches, nesting and the duplicate rule."""

from __future__ import annotations

from typing import Any

import pytest

from tests.oracle.backends import BackendError
from tests.oracle.conftest import Oracle, kv

# (target, result, value, outcome on the existing key, outcome on a missing key).
# The key is put twice (revisions 1 and 2, the second with a lease): value b"b", version 2,
# create 1, mod 2. Revisions are relative (0 stays 0); "L" stands for the lease's id.
# A value compare on a missing key is false whatever the operator: etcd cannot tell a
# missing value from an empty one, so it refuses to say either.
COMPARES: list[tuple[str, str, Any, bool, bool]] = [
    ("value", "=", b"b", True, False),
    ("value", "=", b"", False, False),
    ("value", "!=", b"b", False, False),
    ("value", "!=", b"zz", True, False),
    ("value", "<", b"c", True, False),
    ("value", "<", b"b", False, False),
    ("value", ">", b"a", True, False),
    ("value", ">", b"bb", False, False),
    ("version", "=", 2, True, False),
    ("version", "=", 0, False, True),
    ("version", "!=", 0, True, False),
    ("version", "<", 3, True, True),
    ("version", "<", 2, False, True),
    ("version", ">", 1, True, False),
    ("version", ">", 0, True, False),
    ("create", "=", 1, True, False),
    ("create", "=", 0, False, True),
    ("create", "!=", 1, False, True),
    ("create", "<", 2, True, True),
    ("create", ">", 0, True, False),
    ("mod", "=", 2, True, False),
    ("mod", "!=", 2, False, True),
    ("mod", "<", 2, False, True),
    ("mod", ">", 1, True, False),
    ("mod", "=", 0, False, True),
    ("lease", "=", "L", True, False),
    ("lease", "=", 0, False, True),
    ("lease", "!=", 0, True, False),
    ("lease", ">", 0, True, False),
    ("lease", "<", "L", False, True),
]


def _value(o: Oracle, target: str, value: Any, lease: int) -> Any:
    if value == "L":
        return lease
    if target in ("create", "mod") and value:
        return o.base + value
    return value


def test_compare_targets_and_operators(oracle: Oracle) -> None:
    o = oracle
    key, missing = o.k("x"), o.k("missing")

    async def body() -> None:
        lease = (await o.b.lease_grant(60))["id"]
        try:
            await o.b.put(key, b"a")
            await o.b.put(key, b"b", lease=lease)
            got: dict[str, bool] = {}
            want: dict[str, bool] = {}
            for target, result, value, on_key, on_missing in COMPARES:
                for k, expected in ((key, on_key), (missing, on_missing)):
                    cmp = {"key": k, "target": target, "result": result}
                    cmp["value"] = _value(o, target, value, lease)
                    name = f"{k[len(o.prefix) :].decode()} {target} {result} {value!r}"
                    got[name] = (await o.b.txn([cmp], [], []))["succeeded"]
                    want[name] = expected
            assert got == want
            # Nothing was written: compares alone never move the revision.
            assert (await o.b.get(key))["revision"] == o.base + 2
        finally:
            await o.b.lease_revoke(lease)

    o.run(body(), timeout=60)


def test_compare_over_a_range(oracle: Oracle) -> None:
    """With range_end, a compare holds only if it holds for every key in the range."""
    o = oracle

    async def body() -> None:
        await o.b.put(o.k("r/a"), b"same")
        await o.b.put(o.k("r/b"), b"same")
        await o.b.put(o.k("r/c"), b"other")
        lo, hi = o.k("r/"), o.k("r0")

        async def holds(target: str, result: str, value: Any, span: tuple[bytes, bytes]) -> bool:
            cmp: dict[str, Any] = {"key": span[0], "range_end": span[1]}
            cmp |= {"target": target, "result": result, "value": value}
            return bool((await o.b.txn([cmp], [], []))["succeeded"])

        r, nothing = (lo, hi), (o.k("s/"), o.k("s0"))
        assert await holds("version", "=", 1, r)
        assert not await holds("value", "=", b"same", r)
        assert await holds("value", "!=", b"nothing", r)
        assert await holds("mod", "<", o.base + 4, r)
        assert not await holds("mod", "<", o.base + 3, r)
        assert await holds("create", ">", o.base, r)
        # An empty range compares like a missing key.
        assert await holds("version", "=", 0, nothing)
        assert not await holds("value", "!=", b"x", nothing)

    o.run(body())


def test_all_compares_must_hold(oracle: Oracle) -> None:
    o = oracle
    k = o.k("k")

    async def body() -> None:
        await o.b.put(k, b"v")
        ok = {"key": k, "target": "version", "result": "=", "value": 1}
        bad = {"key": k, "target": "value", "result": "=", "value": b"w"}
        assert (await o.b.txn([ok, ok], [], []))["succeeded"]
        assert not (await o.b.txn([ok, bad], [], []))["succeeded"]
        assert (await o.b.txn([], [], []))["succeeded"]  # no compares: success

    o.run(body())


def test_success_and_failure_branches(oracle: Oracle) -> None:
    """One revision for all of a branch's writes; later ops see earlier ones in the branch."""
    o = oracle
    a, b, c = o.k("a"), o.k("b"), o.k("c")

    async def body() -> None:
        await o.b.put(a, b"1")  # 1
        await o.b.put(c, b"gone")  # 2
        create_b = {"key": b, "target": "create", "result": "=", "value": 0}
        success: list[dict[str, Any]] = [
            {"op": "put", "key": b, "value": b"new", "prev_kv": True},
            {"op": "put", "key": a, "value": b"2", "prev_kv": True},
            {"op": "delete_range", "key": c, "prev_kv": True},
            {"op": "range", "key": o.k(""), "range_end": o.end},
        ]
        failure: list[dict[str, Any]] = [{"op": "range", "key": b}]
        first = o.rel(await o.b.txn([create_b], success, failure))
        assert first == {
            "revision": 3,
            "succeeded": True,
            "responses": [
                {"op": "put", "revision": 3, "prev_kv": None},
                {"op": "put", "revision": 3, "prev_kv": kv(a, b"1", 1, 1, 1)},
                {
                    "op": "delete_range",
                    "revision": 3,
                    "deleted": 1,
                    "prev_kvs": [kv(c, b"gone", 2, 2, 1)],
                },
                {
                    "op": "range",
                    "revision": 3,
                    "kvs": [kv(a, b"2", 1, 3, 2), kv(b, b"new", 3, 3, 1)],
                    "count": 2,
                    "more": False,
                },
            ],
        }
        second = o.rel(await o.b.txn([create_b], success, failure))
        assert second == {
            "revision": 3,
            "succeeded": False,
            "responses": [
                {
                    "op": "range",
                    "revision": 3,
                    "kvs": [kv(b, b"new", 3, 3, 1)],
                    "count": 1,
                    "more": False,
                }
            ],
        }

    o.run(body())


def test_nested_txn(oracle: Oracle) -> None:
    """Nested compares see the state before the outer txn; all writes share one revision."""
    o = oracle
    a, b = o.k("a"), o.k("b")

    async def body() -> None:
        await o.b.put(a, b"1")  # 1
        a_missing = {"key": a, "target": "version", "result": "=", "value": 0}
        inner = {
            "op": "txn",
            "compare": [a_missing],
            "success": [{"op": "put", "key": b, "value": b"a was missing"}],
            "failure": [
                {"op": "put", "key": b, "value": b"a was there"},
                {"op": "range", "key": b},
            ],
        }
        res = o.rel(await o.b.txn([], [{"op": "delete_range", "key": a}, inner], []))
        assert res["revision"] == 2 and res["succeeded"]
        assert [r["op"] for r in res["responses"]] == ["delete_range", "txn"]
        nested = res["responses"][1]
        assert nested["succeeded"] is False
        assert [r["op"] for r in nested["responses"]] == ["put", "range"]
        assert nested["responses"][1]["kvs"] == [kv(b, b"a was there", 2, 2, 1)]
        got = o.rel(await o.b.get(o.k(""), o.end))
        assert got["kvs"] == [kv(b, b"a was there", 2, 2, 1)]

    o.run(body())


# (name, success ops, failure ops, refused as duplicate?) — keys are names under the prefix.
def _put(k: str) -> dict[str, Any]:
    return {"op": "put", "key": k, "value": b"v"}


def _del(k: str, end: str = "") -> dict[str, Any]:
    return {"op": "delete_range", "key": k, **({"range_end": end} if end else {})}


def _txn(success: list[Any], failure: list[Any] = []) -> dict[str, Any]:  # noqa: B006
    return {"op": "txn", "compare": [], "success": success, "failure": failure}


DUPLICATES: list[tuple[str, list[Any], list[Any], bool]] = [
    ("put twice", [_put("k"), _put("k")], [], True),
    ("put then delete", [_put("k"), _del("k")], [], True),
    ("delete then put", [_del("k"), _put("k")], [], True),
    ("put in both branches", [_put("k")], [_put("k")], False),
    ("delete twice", [_del("k"), _del("k")], [], False),
    ("put inside a deleted range", [_del("a", "c"), _put("b")], [], True),
    ("put beside a deleted range", [_del("a", "c"), _put("c")], [], False),
    ("outer put, nested put", [_put("k"), _txn([_put("k")])], [], True),
    ("nested put, outer put", [_txn([_put("k")]), _put("k")], [], True),
    ("nested then/else put", [_txn([_put("k")], [_put("k")])], [], False),
    ("outer delete, nested put", [_del("k"), _txn([_put("k")])], [], True),
    ("nested put, nested else delete", [_txn([_put("k")], [_del("k")])], [], False),
    ("two nested puts", [_txn([_put("k")]), _txn([_put("k")])], [], True),
    ("nested delete, outer put", [_txn([_del("k")]), _put("k")], [], True),
    ("nested deletes twice", [_txn([_del("k")]), _txn([_del("k")])], [], False),
]


def _under(o: Oracle, ops: list[Any]) -> list[Any]:
    out = []
    for op in ops:
        op = dict(op)
        for field in ("key", "range_end"):
            if field in op:
                op[field] = o.k(op[field])
        for branch in ("success", "failure"):
            if branch in op:
                op[branch] = _under(o, op[branch])
        out.append(op)
    return out


def test_duplicate_keys_in_a_txn(oracle: Oracle) -> None:
    """etcd refuses a txn that could write one key twice, before looking at any state."""
    o = oracle

    async def body() -> None:
        got: dict[str, bool] = {}
        for name, success, failure, _ in DUPLICATES:
            try:
                await o.b.txn([], _under(o, success), _under(o, failure))
                got[name] = False
            except BackendError as exc:
                assert exc.code == "duplicate-key", exc
                got[name] = True
        assert got == {name: dup for name, _, _, dup in DUPLICATES}

    o.run(body())


def test_txn_refusals_change_nothing(oracle: Oracle) -> None:
    """A txn refused on an op (a missing lease) writes nothing, not even its other ops."""
    o = oracle

    async def body() -> None:
        with pytest.raises(BackendError) as err:
            await o.b.txn(
                [],
                [
                    {"op": "put", "key": o.k("a")},
                    {"op": "put", "key": o.k("b"), "lease": 999_999_999},
                ],
                [],
            )
        assert err.value.code == "lease-not-found"
        got = await o.b.get(o.k(""), o.end)
        assert (got["kvs"], got["revision"]) == ([], o.base)

    o.run(body())
