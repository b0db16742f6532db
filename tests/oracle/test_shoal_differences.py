"""Where shoal differs from etcd 3.4 on purpose (or harmlessly), each shown side by side.

Every test here says what etcd does, what shoal does instead, and why. Everything else in
this directory asserts that the two agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.client import ControlError
from tests.oracle.backends import BackendError, EtcdBackend, ShoalBackend, b64
from tests.oracle.conftest import Oracle

MAX_KEY = 1536
MAX_VALUE = 1024 * 1024


async def _code(call: Any) -> str:
    try:
        await call
    except BackendError as exc:
        return exc.code
    return "ok"


def test_key_size_limit(both: tuple[Oracle, Oracle]) -> None:
    """etcd 3.4 takes any key that fits in a 1.5 MiB request; shoal caps keys at 1536 bytes.

    Why: keys are held in memory by every agent, sorted and copied into every event and
    snapshot; a short cap (etcd's own docs advise small keys) fails loudly at the write
    instead of slowly everywhere else.
    """
    shoal, etcd = both

    async def body(o: Oracle) -> tuple[str, str]:
        fits = o.k("k" * (MAX_KEY - len(o.prefix)))
        too_long = fits + b"k"
        return await _code(o.b.put(fits, b"v")), await _code(o.b.put(too_long, b"v"))

    assert shoal.run(body(shoal)) == ("ok", "key-too-long")
    assert etcd.run(body(etcd)) == ("ok", "ok")


def test_value_size_limit(both: tuple[Oracle, Oracle]) -> None:
    """etcd 3.4 takes values up to its 1.5 MiB request limit; shoal caps values at 1 MiB.

    Why: a value is replicated through the Raft log as base64 JSON, so 1 MiB of value is
    ~1.4 MB on the wire and in the WAL; the cap keeps every entry under the request limit with
    room for the key and the rest of the command, and the error says where to put large data.
    """
    shoal, etcd = both

    async def body(o: Oracle) -> tuple[str, str]:
        at_limit = await _code(o.b.put(o.k("v"), b"x" * MAX_VALUE))
        over = await _code(o.b.put(o.k("v"), b"x" * (MAX_VALUE + 1)))
        await o.b.delete(o.k("v"))
        return at_limit, over

    assert shoal.run(body(shoal)) == ("ok", "value-too-large")
    assert etcd.run(body(etcd)) == ("ok", "ok")


def test_reserved_prefix_needs_allow_reserved(shoal: Oracle) -> None:
    """etcd has no reserved keys; shoal keeps the cluster's own state under /_shoal/.

    Why: the machine registry, unit state and service announcements live in the same store
    (so they are watchable), and a stray ``del --prefix /`` must not wipe them. Writes touching
    the prefix — directly, through a range, or inside a txn — need allow_reserved=true.
    Reads and watches need nothing: everything the cluster knows stays visible.
    """
    o = shoal
    key = b"/_shoal/oracle-test/" + o.prefix

    async def body() -> None:
        assert await _code(o.b.put(key, b"v")) == "reserved-prefix"
        # A range that reaches into the prefix (chosen so a regression could delete nothing of
        # the cluster's: only the key "/_shoal/" itself lies inside it).
        assert await _code(o.b.delete(b"/_shoak", b"/_shoal/\0")) == "reserved-prefix"
        assert await _code(o.b.txn([], [{"op": "put", "key": key}], [])) == "reserved-prefix"
        # Refused in either branch, so the refusal never depends on the data.
        never = [{"key": key, "target": "version", "result": "<", "value": 0}]
        assert await _code(o.b.txn(never, [], [{"op": "delete_range", "key": key}])) == (
            "reserved-prefix"
        )
        await o.b.put(key, b"v", allow_reserved=True)
        assert [x["value"] for x in (await o.b.get(key))["kvs"]] == [b"v"]
        assert (await o.b.delete(key, allow_reserved=True))["deleted"] == 1

    o.run(body())


def test_lease_ids_are_assigned_in_order(both: tuple[Oracle, Oracle]) -> None:
    """etcd derives lease ids from the member id and the clock (large, unpredictable numbers);
    shoal hands out the next id of a counter that only moves up.

    Why: the id is chosen inside the replicated state machine, so it must be deterministic on
    every agent; small ids are also easier to read in ``lease list``. Both are nonzero, unique
    and accepted back from the client in the same way.
    """
    shoal, etcd = both

    async def grant_two(o: Oracle) -> tuple[int, int]:
        first, second = (await o.b.lease_grant(60))["id"], (await o.b.lease_grant(60))["id"]
        for lease in (first, second):
            await o.b.lease_revoke(lease)
        return first, second

    ours = shoal.run(grant_two(shoal))
    theirs = etcd.run(grant_two(etcd))
    assert ours[1] == ours[0] + 1 and ours[0] > 0
    assert theirs[0] != theirs[1] and min(theirs) > 0


def test_error_texts_keep_etcds_words_and_add_the_numbers(both: tuple[Oracle, Oracle]) -> None:
    """Both say "required revision has been compacted"; shoal adds which revision was asked for
    and the oldest one kept, so a client knows where to resume without another round trip."""
    shoal, etcd = both

    async def compacted(o: Oracle) -> str:
        await o.b.put(o.k("k"), b"1")
        await o.b.put(o.k("k"), b"2")
        await o.b.compact(o.base + 2)
        try:
            await o.b.get(o.k("k"), revision=o.base + 1)
        except BackendError as exc:
            assert exc.code == "compacted"
            return exc.message
        raise AssertionError("the read below the compaction point was served")

    ours, theirs = shoal.run(compacted(shoal)), etcd.run(compacted(etcd))
    assert "required revision has been compacted" in ours
    assert "required revision has been compacted" in theirs
    assert f"asked for {shoal.base + 1}" in ours and f"kept is {shoal.base + 2}" in ours


def test_watch_below_compaction_is_refused_up_front(
    shoal: Oracle, shoal_backend: ShoalBackend
) -> None:
    """etcd accepts the watch (created) and then cancels it with compact_revision; shoal
    refuses the stream itself with "compacted" and the same number in the details.

    Why: the control API has one error path for every request, so a client handles a watch
    it cannot have like any other refused request (backends.py maps both to one error).
    """
    o = shoal

    async def body() -> None:
        await o.b.put(o.k("k"), b"1")
        await o.b.put(o.k("k"), b"2")
        await o.b.compact(o.base + 2)
        cluster = shoal_backend.cluster
        client = await cluster.client(shoal_backend.reader)
        stream = client.stream("kv.watch", key=b64(o.k("k")), start_revision=o.base + 1)
        with pytest.raises(ControlError) as err:
            await anext(stream)
        assert err.value.code == "compacted"
        assert err.value.details["compact_revision"] == o.base + 2

    o.run(body())


def test_keepalive_of_a_dead_lease_is_an_error(both: tuple[Oracle, Oracle]) -> None:
    """etcd answers a keep-alive for a revoked or expired lease with TTL 0 (etcdctl then says
    "lease expired or revoked"); shoal answers with the lease-not-found error.

    Why: one error path for every request again; a TTL of 0 is easy to mistake for success.
    """
    shoal, etcd = both

    async def revoked(o: Oracle) -> int:
        lease = (await o.b.lease_grant(60))["id"]
        await o.b.lease_revoke(lease)
        return lease

    assert isinstance(shoal.b, ShoalBackend) and isinstance(etcd.b, EtcdBackend)
    lease = shoal.run(revoked(shoal))
    with pytest.raises(ControlError) as err:
        shoal.run(shoal.b.cluster.call_leader("lease.keepalive", id=lease))
    assert err.value.code == "lease-not-found"
    lease = etcd.run(revoked(etcd))
    raw = etcd.run(etcd.b._post("/v3/lease/keepalive", {"ID": str(lease)}))
    assert int(raw.get("TTL", 0)) == 0 and "error" not in raw


def test_nested_txn_header_revision(both: tuple[Oracle, Oracle]) -> None:
    """etcd 3.4 leaves a nested txn response's header empty (revision 0); shoal fills in the
    txn's revision, like every other response. Harmless and more useful; the differential
    test blanks this one field."""
    shoal, etcd = both
    nested = [{"op": "txn", "compare": [], "success": [], "failure": []}]

    async def header(o: Oracle) -> int:
        await o.b.put(o.k("k"), b"v")
        res = await o.b.txn([], nested, [])
        return int(res["responses"][0]["revision"])

    assert shoal.run(header(shoal)) == shoal.base + 1
    assert etcd.run(header(etcd)) == 0
