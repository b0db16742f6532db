"""Leases: attaching keys, revoking, expiry without keep-alives, and keep-alives extending them.

Lease ids differ between the stores (see test_shoal_differences.py), so the tests use whatever
id the grant returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.oracle.backends import BackendError
from tests.oracle.conftest import Oracle, kv


async def _code(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except BackendError as exc:
        return exc.code
    return "ok"


def test_revoke_deletes_the_leases_keys_in_one_revision(oracle: Oracle) -> None:
    o = oracle
    a, b, c = o.k("a"), o.k("b"), o.k("c")

    async def body() -> None:
        lease = (await o.b.lease_grant(60))["id"]
        await o.b.put(b, b"1", lease=lease)  # 1
        await o.b.put(a, b"2", lease=lease)  # 2
        await o.b.put(c, b"3", lease=lease)  # 3
        await o.b.put(c, b"4")  # 4: a put without a lease detaches c from it
        assert o.rel((await o.b.get(a))["kvs"]) == [kv(a, b"2", 2, 2, 1, lease)]
        ttl = await o.b.lease_ttl(lease, keys=True)
        assert (ttl["id"], ttl["granted_ttl"], ttl["keys"]) == (lease, 60, [a, b])
        w = await o.b.watch(o.k(""), o.end)
        try:
            assert o.rel(await o.b.lease_revoke(lease)) == {"revision": 5}
            events = o.rel(await w.events(2))
            assert [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"]) for e in events] == [
                ("DELETE", a, 5),
                ("DELETE", b, 5),
            ]
        finally:
            await w.close()
        assert [x["key"] for x in (await o.b.get(o.k(""), o.end))["kvs"]] == [c]
        gone = await o.b.lease_ttl(lease, keys=True)
        assert (gone["id"], gone["ttl"], gone["granted_ttl"], gone["keys"]) == (lease, -1, 0, [])
        assert await _code(o.b.lease_revoke(lease)) == "lease-not-found"
        assert await _code(o.b.lease_keepalive(lease)) == "lease-not-found"
        assert await _code(o.b.put(a, b"x", lease=lease)) == "lease-not-found"

    o.run(body())


def test_revoking_a_lease_without_keys_writes_nothing(oracle: Oracle) -> None:
    o = oracle

    async def body() -> None:
        lease = (await o.b.lease_grant(60))["id"]
        assert o.rel(await o.b.lease_revoke(lease)) == {"revision": 0}
        assert (await o.b.get(o.k("k")))["revision"] == o.base

    o.run(body())


def test_ignore_lease_keeps_the_lease(oracle: Oracle) -> None:
    o = oracle
    k = o.k("k")

    async def body() -> None:
        lease = (await o.b.lease_grant(60))["id"]
        try:
            await o.b.put(k, b"1", lease=lease)
            await o.b.put(k, b"2", ignore_lease=True)
            assert (await o.b.get(k))["kvs"][0]["lease"] == lease
            assert await _code(o.b.put(k, b"3", lease=lease, ignore_lease=True)) == (
                "lease-provided"
            )
            assert await _code(o.b.put(o.k("new"), b"3", ignore_lease=True)) == "key-not-found"
        finally:
            await o.b.lease_revoke(lease)

    o.run(body())


def test_grant_with_a_chosen_id_and_the_minimum_ttl(oracle: Oracle) -> None:
    o = oracle
    chosen = 0x0AC1E0000 + (1 if o.name == "shoal" else 2)

    async def body() -> None:
        assert await o.b.lease_grant(1, chosen) == {"id": chosen, "ttl": 2}  # raised to 2 s
        try:
            assert await _code(o.b.lease_grant(30, chosen)) == "lease-exists"
        finally:
            await o.b.lease_revoke(chosen)

    o.run(body())


def test_remaining_ttl_is_rounded_down(oracle: Oracle) -> None:
    """etcd 3.4 reports int64(remaining.Seconds()): just after a grant of 10 s, it says 9."""
    o = oracle

    async def body() -> None:
        lease = (await o.b.lease_grant(10))["id"]
        try:
            started = time.monotonic()
            ttl = await o.b.lease_ttl(lease)
            # truncated, not rounded: 9 within the first second (8 on a machine slow enough
            # to take longer, which tells nothing about rounding either way)
            expected = (9,) if time.monotonic() - started < 1 else (8, 9)
            assert ttl["ttl"] in expected and ttl["granted_ttl"] == 10
        finally:
            await o.b.lease_revoke(lease)

    o.run(body())


async def _gone(o: Oracle, key: bytes, within: float) -> float:
    """Poll until ``key`` is deleted; return how long that took (bounded by ``within``)."""
    started = time.monotonic()
    while (await o.b.get(key))["kvs"]:
        if time.monotonic() - started > within:
            raise AssertionError(f"{key!r} still exists after {within}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def test_expiry_without_keepalive_and_keepalive_extending(oracle: Oracle) -> None:
    """Two 2 s leases: the one kept alive outlives the other, then expires once left alone."""
    o = oracle
    idle, kept = o.k("idle"), o.k("kept")

    async def body() -> None:
        idle_lease = (await o.b.lease_grant(2))["id"]
        kept_lease = (await o.b.lease_grant(2))["id"]
        await o.b.put(idle, b"i", lease=idle_lease)
        await o.b.put(kept, b"k", lease=kept_lease)

        async def keep_alive() -> None:
            for _ in range(100):  # bounded; cancelled well before
                assert (await o.b.lease_keepalive(kept_lease)) == {"id": kept_lease, "ttl": 2}
                await asyncio.sleep(0.4)

        pump = asyncio.create_task(keep_alive())
        try:
            took = await _gone(o, idle, within=8.0)
            assert took > 1.0, "the idle lease expired before its TTL"
            await asyncio.sleep(1.5)  # past the idle lease's TTL again: kept must survive
            assert (await o.b.get(kept))["kvs"], "the kept-alive lease expired"
            assert (await o.b.lease_ttl(kept_lease))["ttl"] > 0
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await _gone(o, kept, within=8.0)
        for lease in (idle_lease, kept_lease):
            assert (await o.b.lease_ttl(lease))["ttl"] == -1
            assert await _code(o.b.lease_keepalive(lease)) == "lease-not-found"
        # Each expiry was one DELETE event at its own revision.
        w = await o.b.watch(o.k(""), o.end, start_revision=o.base + 1)
        try:
            events = o.rel(await w.events(4))
            assert [(e["type"], e["kv"]["key"]) for e in events] == [
                ("PUT", idle),
                ("PUT", kept),
                ("DELETE", idle),
                ("DELETE", kept),
            ]
            assert [e["kv"]["mod_revision"] for e in events] == [1, 2, 3, 4]
        finally:
            await w.close()

    o.run(body(), timeout=40)
