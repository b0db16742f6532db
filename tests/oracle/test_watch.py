"""Watch event sequences: history replay, live events, prev_kv, deletes, ranges and txns."""

from __future__ import annotations

from typing import Any

from tests.oracle.conftest import Oracle, kv


def _put(o: Oracle, k: bytes, value: bytes, create: int, mod: int, version: int) -> dict[str, Any]:
    return {"type": "PUT", "kv": kv(k, value, create, mod, version), "prev_kv": None}


def _tomb(k: bytes, mod: int) -> dict[str, Any]:
    """A DELETE event's kv: only key and mod_revision are set, as in etcd."""
    return kv(k, b"", 0, mod, 0)


def test_replay_from_the_past_then_live(oracle: Oracle) -> None:
    o = oracle
    a, b = o.k("w/a"), o.k("w/b")

    async def body() -> None:
        await o.b.put(a, b"1")  # 1
        await o.b.put(o.k("other"), b"not watched")  # 2
        await o.b.put(a, b"2")  # 3
        await o.b.delete(a)  # 4
        w = await o.b.watch(o.k("w/"), o.k("w0"), start_revision=o.base + 1)
        try:
            assert o.rel(await w.events(3)) == [
                _put(o, a, b"1", 1, 1, 1),
                _put(o, a, b"2", 1, 3, 2),
                {"type": "DELETE", "kv": _tomb(a, 4), "prev_kv": None},
            ]
            await o.b.put(b, b"live")  # 5
            assert o.rel(await w.events(1)) == [_put(o, b, b"live", 5, 5, 1)]
            assert await w.quiet() == []
        finally:
            await w.close()

    o.run(body())


def test_prev_kv_on_puts_and_deletes(oracle: Oracle) -> None:
    o = oracle
    k = o.k("k")

    async def body() -> None:
        w = await o.b.watch(k, prev_kv=True)
        try:
            await o.b.put(k, b"1")  # 1
            await o.b.put(k, b"2")  # 2
            await o.b.delete(k)  # 3
            await o.b.put(k, b"3")  # 4
            assert o.rel(await w.events(4)) == [
                {"type": "PUT", "kv": kv(k, b"1", 1, 1, 1), "prev_kv": None},
                {"type": "PUT", "kv": kv(k, b"2", 1, 2, 2), "prev_kv": kv(k, b"1", 1, 1, 1)},
                {"type": "DELETE", "kv": _tomb(k, 3), "prev_kv": kv(k, b"2", 1, 2, 2)},
                {"type": "PUT", "kv": kv(k, b"3", 4, 4, 1), "prev_kv": None},
            ]
        finally:
            await w.close()

    o.run(body())


def test_a_key_watch_sees_only_its_key(oracle: Oracle) -> None:
    o = oracle

    async def body() -> None:
        w = await o.b.watch(o.k("k"))
        try:
            await o.b.put(o.k("k2"), b"longer key")
            await o.b.put(o.k("j"), b"before")
            await o.b.put(o.k("k"), b"mine")
            assert [e["kv"]["value"] for e in await w.events(1)] == [b"mine"]
            assert await w.quiet() == []
        finally:
            await w.close()

    o.run(body())


def test_range_delete_and_txn_events_share_a_revision(oracle: Oracle) -> None:
    """A multi-key write is one revision; its events come in the order the ops applied."""
    o = oracle
    a, b, c = o.k("a"), o.k("b"), o.k("c")

    async def body() -> None:
        w = await o.b.watch(o.k(""), o.end, prev_kv=True)
        try:
            ops = [
                {"op": "put", "key": c, "value": b"c"},
                {"op": "put", "key": a, "value": b"a"},
                {"op": "range", "key": a},
                {"op": "put", "key": b, "value": b"b"},
            ]
            await o.b.txn([], ops, [])  # 1
            await o.b.delete(a, o.k("c"))  # 2: a and b, in key order
            assert o.rel(await w.events(5)) == [
                {"type": "PUT", "kv": kv(c, b"c", 1, 1, 1), "prev_kv": None},
                {"type": "PUT", "kv": kv(a, b"a", 1, 1, 1), "prev_kv": None},
                {"type": "PUT", "kv": kv(b, b"b", 1, 1, 1), "prev_kv": None},
                {"type": "DELETE", "kv": _tomb(a, 2), "prev_kv": kv(a, b"a", 1, 1, 1)},
                {"type": "DELETE", "kv": _tomb(b, 2), "prev_kv": kv(b, b"b", 1, 1, 1)},
            ]
        finally:
            await w.close()

    o.run(body())


def test_watch_from_a_future_revision_waits_for_it(oracle: Oracle) -> None:
    o = oracle
    k = o.k("k")

    async def body() -> None:
        w = await o.b.watch(k, start_revision=o.base + 3)
        try:
            await o.b.put(k, b"1")
            await o.b.put(k, b"2")
            assert await w.quiet() == []
            await o.b.put(k, b"3")
            assert [e["kv"]["value"] for e in await w.events(1)] == [b"3"]
        finally:
            await w.close()

    o.run(body())


def test_failed_txn_and_noop_delete_emit_nothing(oracle: Oracle) -> None:
    o = oracle
    k = o.k("k")

    async def body() -> None:
        w = await o.b.watch(k)
        try:
            never = {"key": k, "target": "version", "result": ">", "value": 5}
            await o.b.txn([never], [{"op": "put", "key": k}], [{"op": "range", "key": k}])
            await o.b.delete(k)
            assert await w.quiet() == []
        finally:
            await w.close()

    o.run(body())
