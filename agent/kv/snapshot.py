"""Snapshot encoding: the store's whole state as compressed, columnar JSON (never pickle).

Inside ``MAGIC`` + zlib: counters, leases, then history in two parts —

- ``base``: versions no retained event carries (each key's version kept at the compaction
  point, when it is older than that point);
- ``events``: every retained event in order, with ``batches`` giving each revision and how
  many events it holds. Replaying them onto ``base`` rebuilds both the per-key history and
  the event log, including each event's prev_kv (the key's previous version), so history is
  written once, not twice. A DELETE is the tombstone version (version 0).

Each part is stored column by column (keys, create, mod, version, values, lease) so encoding
and decoding run mostly inside C (zip, map, json) rather than per-field Python calls — that
is what keeps tens of thousands of keys well under a second. Bytes are latin-1 strings:
lossless, and for mostly-ASCII data several times smaller and faster than base64.
"""

from __future__ import annotations

import gc
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from agent.kv.errors import BAD_SNAPSHOT, KVError
from agent.kv.history import EventLog
from agent.kv.leases import LeaseTable
from agent.kv.model import Event, KeyValue
from agent.kv.mvcc import MVCCIndex

MAGIC = b"SHOALKV1"
FORMAT_VERSION = 1
_COLUMNS = ("keys", "create", "mod", "version", "values", "lease")


@dataclass(frozen=True, slots=True)
class Meta:
    revision: int
    compacted: int
    applied_index: int
    next_lease_id: int


def _columns(kvs: list[KeyValue]) -> dict[str, list[Any]]:
    if not kvs:
        return {name: [] for name in _COLUMNS}
    keys, create, mod, version, values, lease = zip(*kvs, strict=True)
    return {
        "keys": list(map(bytes.decode, keys, repeat("latin-1"))),
        "create": list(create),
        "mod": list(mod),
        "version": list(version),
        "values": list(map(bytes.decode, values, repeat("latin-1"))),
        "lease": list(lease),
    }


def dump(meta: Meta, index: MVCCIndex, leases: LeaseTable, events: EventLog) -> bytes:
    with _gc_paused():
        return _dump(meta, index, leases, events)


def _dump(meta: Meta, index: MVCCIndex, leases: LeaseTable, events: EventLog) -> bytes:
    revs, batches = events.columns()
    carried_kvs = [ev.kv for batch in batches for ev in batch]
    carried = set(map(id, carried_kvs))
    base = [kv for _, hist in index.history() for kv in hist if id(kv) not in carried]
    doc = {
        "v": FORMAT_VERSION,
        "revision": meta.revision,
        "compacted": meta.compacted,
        "applied_index": meta.applied_index,
        "next_lease_id": meta.next_lease_id,
        "leases": [[lease.id, lease.ttl] for lease in leases.all()],
        "base": _columns(base),
        "events": _columns(carried_kvs),
        "batch_revs": revs,
        "batch_sizes": list(map(len, batches)),
    }
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return MAGIC + zlib.compress(raw, 1)


Loaded = tuple[
    Meta, dict[bytes, list[KeyValue]], list[tuple[int, int]], list[tuple[int, list[Event]]]
]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic GC while building a large acyclic object graph.

    Restoring creates a few objects per version; the collector would otherwise rescan the
    growing heap many times over (a third of restore time). Nothing built here is cyclic.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(data: bytes) -> Loaded:
    """Decode a snapshot; empty data is a fresh store. Raises KVError(bad-snapshot)."""
    with _gc_paused():
        return _load(data)


def _load(data: bytes) -> Loaded:
    if not data:
        return Meta(1, -1, 0, 1), {}, [], []
    if not data.startswith(MAGIC):
        raise KVError(BAD_SNAPSHOT, "not a KV store snapshot (bad magic)")
    try:
        doc = json.loads(zlib.decompress(data[len(MAGIC) :]))
        if doc.get("v") != FORMAT_VERSION:
            raise KVError(
                BAD_SNAPSHOT,
                f"snapshot format {doc.get('v')!r} is not supported (this agent reads "
                f"{FORMAT_VERSION}); upgrade the agent",
            )
        return _decode(doc)
    except KVError:
        raise
    except Exception as exc:  # any malformed content: one clear error, state untouched
        raise KVError(BAD_SNAPSHOT, f"corrupt KV snapshot: {exc!r}") from exc


def _ints(col: Any) -> list[int]:
    if not isinstance(col, list) or not set(map(type, col)) <= {int}:
        raise TypeError("expected a list of integers")
    return col


def _bytes(col: Any) -> list[bytes]:
    if not isinstance(col, list) or not set(map(type, col)) <= {str}:
        raise TypeError("expected a list of strings")
    return list(map(str.encode, col, repeat("latin-1")))


def _kvs(cols: dict[str, Any]) -> list[KeyValue]:
    keys, values = _bytes(cols["keys"]), _bytes(cols["values"])
    ints = [_ints(cols[name]) for name in ("create", "mod", "version", "lease")]
    if len({len(keys), len(values), *map(len, ints)}) > 1:
        raise ValueError("columns of different lengths")
    create, mod, version, lease = ints
    return list(map(KeyValue, keys, create, mod, version, values, lease))


def _decode(doc: dict[str, Any]) -> Loaded:
    meta = Meta(
        *(_ints([doc[k]])[0] for k in ("revision", "compacted", "applied_index", "next_lease_id"))
    )
    leases = [(_ints([i])[0], _ints([ttl])[0]) for i, ttl in doc["leases"]]
    hist: dict[bytes, list[KeyValue]] = {}
    for kv in _kvs(doc["base"]):
        hist.setdefault(kv.key, []).append(kv)
    kvs = iter(_kvs(doc["events"]))
    revs, sizes = _ints(doc["batch_revs"]), _ints(doc["batch_sizes"])
    if len(revs) != len(sizes):
        raise ValueError("batch columns of different lengths")
    batches: list[tuple[int, list[Event]]] = []
    for rev, size in zip(revs, sizes, strict=True):
        events: list[Event] = []
        for _ in range(size):
            kv = next(kvs)
            if kv.mod_revision != rev:
                raise ValueError(f"event at {kv.mod_revision} filed under revision {rev}")
            versions = hist.get(kv.key)
            if versions is None:
                versions = hist[kv.key] = []
            prev = versions[-1] if versions and rev > meta.compacted else None
            if prev is not None and prev.is_tombstone:
                prev = None
            events.append(Event("DELETE" if kv.is_tombstone else "PUT", kv, prev))
            versions.append(kv)
        batches.append((rev, events))
    if next(kvs, None) is not None:
        raise ValueError("more events than the batches account for")
    return meta, hist, leases, batches
