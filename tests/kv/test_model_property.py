"""Property: any sequence of writes leaves the store equal to a tiny model of the latest state.

The model is a dict key -> (value, create, mod, version, lease) plus a revision counter,
written from etcd's documented rules; after every step the store's current state, revision,
every retained historical state and a snapshot round trip must agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.kv import Compare, DeleteRangeRequest, KVError, KVStore, PutRequest
from agent.kv.keys import in_span

KEYS = [b"a", b"ab", b"b", b"b\xff", b"c"]
Row = tuple[bytes, int, int, int, int]  # value, create, mod, version, lease


@dataclass
class Model:
    revision: int = 1
    kvs: dict[bytes, Row] = field(default_factory=dict)
    leases: set[int] = field(default_factory=set)
    history: dict[int, dict[bytes, Row]] = field(default_factory=dict)
    compacted: int = 0

    def put(self, key: bytes, value: bytes, lease: int, rev: int) -> None:
        old = self.kvs.get(key)
        create, version = (old[1], old[3] + 1) if old else (rev, 1)
        self.kvs[key] = (value, create, rev, version, lease)

    def commit(self, changed: bool) -> None:
        if changed:
            self.revision += 1
            self.history[self.revision] = dict(self.kvs)


keys = st.sampled_from(KEYS)
ends = st.sampled_from([b"", b"", b"b", b"c", b"\0"])
step = st.one_of(
    st.tuples(st.just("put"), keys, st.binary(max_size=3), st.integers(0, 3)),
    st.tuples(st.just("delete"), keys, ends),
    st.tuples(st.just("cas"), keys, st.integers(0, 3), keys, st.binary(max_size=2)),
    st.tuples(st.just("grant"), st.integers(1, 3)),
    st.tuples(st.just("revoke"), st.integers(1, 3)),
    st.tuples(st.just("compact"), st.integers(0, 100)),
)


def check(store: KVStore, model: Model) -> None:
    assert store.revision == model.revision
    got = {
        kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        for kv in store.range(b"\0", b"\0").kvs
    }
    assert got == model.kvs
    for rev, state in model.history.items():
        if rev >= model.compacted:
            past = store.range(b"\0", b"\0", revision=rev).kvs
            assert {kv.key: kv.value for kv in past} == {k: v[0] for k, v in state.items()}
    assert set(store.leases()) == model.leases


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=30))
def test_store_matches_the_model(steps: list[Any]) -> None:
    store = KVStore()
    model = Model()
    model.history[1] = {}
    for s in steps:
        kind = s[0]
        rev = model.revision + 1
        if kind == "put":
            _, key, value, lease = s
            lease = lease if lease in model.leases else 0
            store.put(key, value, lease=lease)
            model.put(key, value, lease, rev)
            model.commit(True)
        elif kind == "delete":
            _, key, end = s
            doomed = [k for k in model.kvs if in_span(k, key, end)]
            assert store.delete_range(key, end).deleted == len(doomed)
            for k in doomed:
                del model.kvs[k]
            model.commit(bool(doomed))
        elif kind == "cas":
            _, key, version, target, value = s
            old = model.kvs.get(key)
            ok = (old[3] if old else 0) == version
            resp = store.txn(
                [Compare(key, "version", "=", version)],
                [PutRequest(target, value)],
                [DeleteRangeRequest(target)],
            )
            assert resp.succeeded is ok
            if ok:
                model.put(target, value, 0, rev)
                model.commit(True)
            else:
                model.commit(model.kvs.pop(target, None) is not None)
        elif kind == "grant":
            _, lease = s
            try:
                store.lease_grant(lease, 10)
            except KVError as err:
                assert err.code == "lease-exists" and lease in model.leases
            model.leases.add(lease)
        elif kind == "revoke":
            _, lease = s
            if lease not in model.leases:
                continue
            store.lease_revoke(lease)
            model.leases.discard(lease)
            doomed = [k for k, row in model.kvs.items() if row[4] == lease]
            for k in doomed:
                del model.kvs[k]
            model.commit(bool(doomed))
        else:
            target = max(1, min(s[1], model.revision))
            if target <= model.compacted:
                continue
            store.compact(target)
            model.compacted = target
        check(store, model)
    restored = KVStore()
    restored.restore(store.snapshot())
    check(restored, model)
    assert restored.events_since(max(model.compacted, 1)) == store.events_since(
        max(model.compacted, 1)
    )
