"""Compaction: what stays readable, and the compacted / future-revision errors.

Compaction is global to a store, so each test compacts only up to revisions it wrote itself;
later tests start above that and never read below their own start.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.oracle.backends import BackendError
from tests.oracle.conftest import Oracle, kv


async def _code(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except BackendError as exc:
        return exc.code
    return "ok"


def test_reads_below_the_compaction_point_are_refused(oracle: Oracle) -> None:
    o = oracle
    k = o.k("k")

    async def body() -> None:
        for value in (b"1", b"2", b"3"):
            await o.b.put(k, value)  # revisions 1, 2, 3
        await o.b.delete(k)  # 4
        await o.b.put(k, b"5")  # 5
        assert o.rel(await o.b.compact(o.base + 3)) == {"revision": 5}
        assert await _code(o.b.get(k, revision=o.base + 2)) == "compacted"
        # The compaction revision itself is still readable, as is everything after it.
        assert o.rel((await o.b.get(k, revision=o.base + 3))["kvs"]) == [kv(k, b"3", 1, 3, 3)]
        assert (await o.b.get(k, revision=o.base + 4))["kvs"] == []
        assert o.rel((await o.b.get(k))["kvs"]) == [kv(k, b"5", 5, 5, 1)]
        assert await _code(o.b.get(k, revision=o.base + 6)) == "future-revision"
        # A txn whose read is below the point is refused whole.
        reads: list[dict[str, Any]] = [
            {"op": "put", "key": o.k("x")},
            {"op": "range", "key": k, "revision": o.base},
        ]
        assert await _code(o.b.txn([], reads, [])) == "compacted"
        assert (await o.b.get(o.k("x")))["kvs"] == []

    o.run(body())


def test_compacting_again_or_ahead_is_refused(oracle: Oracle) -> None:
    o = oracle

    async def body() -> None:
        for i in range(3):
            await o.b.put(o.k("k"), str(i).encode())
        await o.b.compact(o.base + 2)
        assert await _code(o.b.compact(o.base + 2)) == "compacted"
        assert await _code(o.b.compact(o.base + 1)) == "compacted"
        assert await _code(o.b.compact(o.base + 4)) == "future-revision"
        assert await _code(o.b.compact(o.base + 3)) == "ok"  # up to the current revision

    o.run(body())


def test_watch_from_a_compacted_revision_is_canceled(oracle: Oracle) -> None:
    """Neither store can replay what compaction dropped; the watch ends with "compacted"."""
    o = oracle
    k = o.k("k")

    async def body() -> None:
        for value in (b"1", b"2", b"3"):
            await o.b.put(k, value)
        await o.b.compact(o.base + 2)
        w = await o.b.watch(k, start_revision=o.base + 1)
        try:
            with pytest.raises(BackendError) as err:
                await w.events(1)
            assert err.value.code == "compacted"
        finally:
            await w.close()
        # From the compaction revision itself, the history kept is replayed.
        w = await o.b.watch(k, start_revision=o.base + 2)
        try:
            got = [e["kv"]["value"] for e in await w.events(2)]
            assert got == [b"2", b"3"]
        finally:
            await w.close()

    o.run(body())


def test_replay_across_the_compaction_point(oracle: Oracle) -> None:
    """At the compaction revision only its surviving PUTs replay, without prev_kv (the state
    before it is gone; a DELETE there is dropped); later events keep their prev_kv."""
    o = oracle
    a, b, c = o.k("a"), o.k("b"), o.k("c")

    async def body() -> None:
        for key in (a, b, c):
            await o.b.put(key, b"1")  # 1, 2, 3
        mixed: list[dict[str, Any]] = [
            {"op": "put", "key": a, "value": b"2"},
            {"op": "delete_range", "key": b},
            {"op": "put", "key": c, "value": b"2"},
        ]
        await o.b.txn([], mixed, [])  # 4
        await o.b.put(c, b"3")  # 5
        await o.b.delete(a)  # 6
        await o.b.compact(o.base + 4)
        w = await o.b.watch(o.k(""), o.end, start_revision=o.base + 4, prev_kv=True)
        try:
            assert o.rel(await w.events(4)) == [
                {"type": "PUT", "kv": kv(a, b"2", 1, 4, 2), "prev_kv": None},
                {"type": "PUT", "kv": kv(c, b"2", 3, 4, 2), "prev_kv": None},
                {"type": "PUT", "kv": kv(c, b"3", 3, 5, 3), "prev_kv": kv(c, b"2", 3, 4, 2)},
                {"type": "DELETE", "kv": kv(a, b"", 0, 6, 0), "prev_kv": kv(a, b"2", 1, 4, 2)},
            ]
            assert await w.quiet() == []
        finally:
            await w.close()

    o.run(body())
