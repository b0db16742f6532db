"""Shared helpers for the KV tests: a store's whole observable state, for "nothing changed"."""

from __future__ import annotations

from typing import Any

from agent.kv import KVStore


def observable(store: KVStore) -> tuple[Any, ...]:
    """Everything a client could see: revision, every key, history, leases, compaction point."""
    everything = store.range(b"\0", b"\0")
    events = store.events_since(max(store.compact_revision, 1))
    leases = [store.lease_time_to_live(i, keys=True) for i in store.leases()]
    return store.revision, store.compact_revision, everything.kvs, tuple(events), tuple(leases)


def values(store: KVStore, key: bytes = b"\0", range_end: bytes = b"\0") -> dict[bytes, bytes]:
    return {kv.key: kv.value for kv in store.range(key, range_end).kvs}
