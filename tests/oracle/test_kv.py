"""Revisions and ranges, asserted identically against shoal and etcd 3.4.

Revisions are relative to each test's start (``o.rel``), so the numbers below read as "the
first write of this test is revision 1".
"""

from __future__ import annotations

import pytest

from tests.oracle.backends import BackendError
from tests.oracle.conftest import Oracle, kv


def test_revisions_across_put_delete_recreate(oracle: Oracle) -> None:
    """version counts puts since creation; a delete resets it and re-creation starts anew."""
    o, k = oracle, oracle.k("a")

    async def body() -> None:
        assert o.rel(await o.b.put(k, b"1")) == {"revision": 1, "prev_kv": None}
        assert o.rel(await o.b.put(k, b"2", prev_kv=True)) == {
            "revision": 2,
            "prev_kv": kv(k, b"1", 1, 1, 1),
        }
        assert o.rel(await o.b.delete(k, prev_kv=True)) == {
            "revision": 3,
            "deleted": 1,
            "prev_kvs": [kv(k, b"2", 1, 2, 2)],
        }
        # Deleting what is not there changes nothing and does not move the revision.
        assert o.rel(await o.b.delete(k)) == {"revision": 3, "deleted": 0, "prev_kvs": []}
        assert o.rel(await o.b.put(k, b"3")) == {"revision": 4, "prev_kv": None}
        got = o.rel(await o.b.get(k))
        assert got == {"revision": 4, "kvs": [kv(k, b"3", 4, 4, 1)], "count": 1, "more": False}

    o.run(body())


def test_empty_value_and_ignore_value(oracle: Oracle) -> None:
    """An empty value is a value; ignore_value rewrites the current one at a new revision."""
    o, k = oracle, oracle.k("a")

    async def body() -> None:
        await o.b.put(k, b"")
        await o.b.put(k, b"kept")
        assert o.rel(await o.b.put(k, ignore_value=True, prev_kv=True))["prev_kv"] == kv(
            k, b"kept", 1, 2, 2
        )
        assert o.rel((await o.b.get(k))["kvs"]) == [kv(k, b"kept", 1, 3, 3)]
        with pytest.raises(BackendError) as err:
            await o.b.put(o.k("missing"), ignore_value=True)
        assert err.value.code == "key-not-found"
        with pytest.raises(BackendError) as err:
            await o.b.put(k, b"x", ignore_value=True)
        assert err.value.code == "value-provided"

    o.run(body())


def test_empty_key_is_refused(oracle: Oracle) -> None:
    async def body() -> None:
        for call in (oracle.b.put(b"", b"v"), oracle.b.get(b""), oracle.b.delete(b"")):
            with pytest.raises(BackendError) as err:
                await call
            assert err.value.code == "empty-key"

    oracle.run(body())


def test_delete_range_prefix_with_prev_kv(oracle: Oracle) -> None:
    """One delete of a range is one revision; prev_kvs come in key order."""
    o = oracle

    async def body() -> None:
        for name in ("d/b", "d/a", "d/c", "e"):
            await o.b.put(o.k(name), name.encode())
        res = o.rel(await o.b.delete(o.k("d/"), o.k("d0"), prev_kv=True))
        assert res == {
            "revision": 5,
            "deleted": 3,
            "prev_kvs": [
                kv(o.k("d/a"), b"d/a", 2, 2, 1),
                kv(o.k("d/b"), b"d/b", 1, 1, 1),
                kv(o.k("d/c"), b"d/c", 3, 3, 1),
            ],
        }
        left = await o.b.get(o.k(""), o.end)
        assert [x["key"] for x in left["kvs"]] == [o.k("e")]

    o.run(body())


def test_range_from_key_with_nul_range_end(oracle: Oracle) -> None:
    """range_end "\\0" means every key >= key (bounded here by the test's own prefix)."""
    o = oracle

    async def body() -> None:
        for name in ("a", "b", "c"):
            await o.b.put(o.k(name), b"v")
        got = await o.b.get(o.k("b"), b"\0", keys_only=True)
        assert [x["key"] for x in got["kvs"] if x["key"].startswith(o.prefix)] == [
            o.k("b"),
            o.k("c"),
        ]

    o.run(body())


async def _fill(o: Oracle) -> None:
    """Five keys whose key order, creation order, version and value order all differ."""
    for name, value in (("c", b"3"), ("a", b"5"), ("e", b"1"), ("b", b"4"), ("d", b"2")):
        await o.b.put(o.k(name), value)
    await o.b.put(o.k("e"), b"1")  # e: version 2
    await o.b.put(o.k("a"), b"5")  # a: version 2, newest mod


def _names(o: Oracle, res: dict[str, object]) -> str:
    kvs = res["kvs"]
    assert isinstance(kvs, list)
    return "".join(x["key"][len(o.prefix) :].decode() for x in kvs)


def test_prefix_range_limit_more_count(oracle: Oracle) -> None:
    o = oracle

    async def body() -> None:
        await _fill(o)
        await o.b.put(o.k("f"), b"outside")
        lo, hi = o.k(""), o.k("e\x00")
        full = await o.b.get(lo, hi)
        assert (_names(o, full), full["count"], full["more"]) == ("abcde", 5, False)
        cut = await o.b.get(lo, hi, limit=2)
        assert (_names(o, cut), cut["count"], cut["more"]) == ("ab", 5, True)
        exact = await o.b.get(lo, hi, limit=5)
        assert (_names(o, exact), exact["count"], exact["more"]) == ("abcde", 5, False)
        half_open = await o.b.get(o.k("b"), o.k("d"))
        assert _names(o, half_open) == "bc"
        backwards = await o.b.get(o.k("d"), o.k("b"))
        assert (backwards["kvs"], backwards["count"]) == ([], 0)

    o.run(body())


SORTS = [
    # (sort_order, sort_target, limit, expected keys) — see _fill for the data
    ("ascend", "key", 0, "abcde"),
    ("descend", "key", 0, "edcba"),
    ("ascend", "value", 0, "edcba"),
    ("descend", "value", 0, "abcde"),
    ("ascend", "create", 0, "caebd"),
    ("descend", "create", 0, "dbeac"),
    ("ascend", "mod", 0, "cbdea"),
    ("descend", "mod", 0, "aedbc"),
    ("ascend", "version", 0, "bcdae"),
    ("descend", "version", 0, "aebcd"),
    ("descend", "mod", 2, "ae"),
    ("ascend", "value", 3, "edc"),
    # No order but a non-key target: etcd sorts ascending only the first limit+1 keys it
    # fetched in key order (a 3.4 quirk users can observe), then cuts to the limit.
    ("none", "value", 0, "edcba"),
    ("none", "value", 2, "cb"),
    ("none", "create", 3, "cab"),
    ("none", "key", 2, "ab"),
]


@pytest.mark.parametrize(("order", "target", "limit", "expected"), SORTS)
def test_sort_orders_and_targets(
    oracle: Oracle, order: str, target: str, limit: int, expected: str
) -> None:
    o = oracle

    async def body() -> None:
        await _fill(o)
        res = await o.b.get(o.k(""), o.end, sort_order=order, sort_target=target, limit=limit)
        assert _names(o, res) == expected
        assert (res["count"], res["more"]) == (5, bool(limit) and limit < 5)

    o.run(body())


def test_keys_only_and_count_only(oracle: Oracle) -> None:
    o = oracle

    async def body() -> None:
        await _fill(o)
        lo, hi = o.k(""), o.end
        keys = o.rel(await o.b.get(lo, hi, keys_only=True, limit=1))
        assert keys["kvs"] == [kv(o.k("a"), b"", 2, 7, 2)]
        assert (keys["count"], keys["more"]) == (5, True)
        counted = o.rel(await o.b.get(lo, hi, count_only=True, limit=1))
        assert counted == {"revision": 7, "kvs": [], "count": 5, "more": False}

    o.run(body())


def test_historical_reads(oracle: Oracle) -> None:
    """A read at a past revision sees the store as it was, including deleted keys."""
    o = oracle
    k, j = o.k("k"), o.k("j")

    async def body() -> None:
        await o.b.put(k, b"1")  # 1
        await o.b.put(j, b"x")  # 2
        await o.b.put(k, b"2")  # 3
        await o.b.delete(k)  # 4
        await o.b.put(k, b"3")  # 5
        at = {r: o.rel(await o.b.get(k, revision=o.base + r)) for r in (1, 2, 3, 4, 5)}
        assert at[1]["kvs"] == [kv(k, b"1", 1, 1, 1)]
        assert at[2]["kvs"] == [kv(k, b"1", 1, 1, 1)]
        assert at[3]["kvs"] == [kv(k, b"2", 1, 3, 2)]
        assert at[4]["kvs"] == []
        assert at[5]["kvs"] == [kv(k, b"3", 5, 5, 1)]
        # The header always carries the current revision, not the one read at.
        assert {r["revision"] for r in at.values()} == {5}
        before = await o.b.get(o.k(""), o.end, revision=o.base + 2, count_only=True)
        assert before["count"] == 2
        with pytest.raises(BackendError) as err:
            await o.b.get(k, revision=o.base + 6)
        assert err.value.code == "future-revision"

    o.run(body())
