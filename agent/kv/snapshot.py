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

Taking a snapshot is two moves so that a running agent never stops for it: :func:`capture`
freezes the state in a few milliseconds, and :func:`encode_steps` builds the bytes from that
frozen state in steps of well under a millisecond, which the agent interleaves with its other
work while the store keeps applying writes (agent/snapshotting.py).
"""

from __future__ import annotations

import gc
import json
import zlib
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice, repeat
from operator import itemgetter
from typing import Any, TypeVar, cast

from agent.kv.errors import BAD_SNAPSHOT, KVError
from agent.kv.history import EventLog
from agent.kv.leases import LeaseTable
from agent.kv.model import Event, KeyValue
from agent.kv.mvcc import MVCCIndex
from agent.kv.sortedkeys import SortedKeys

T = TypeVar("T")

MAGIC = b"SHOALKV1"
FORMAT_VERSION = 1
_COLUMNS = ("keys", "create", "mod", "version", "values", "lease")


@dataclass(frozen=True, slots=True)
class Meta:
    revision: int
    compacted: int
    applied_index: int
    next_lease_id: int


@dataclass(frozen=True, slots=True)
class Frozen:
    """The store as it was at ``meta.revision``, captured without touching a single version.

    Capturing copies only containers — the sorted key runs, the key -> versions dict and the
    event log's two lists — in C, a few milliseconds for 50k keys. The KeyValue and Event
    objects are immutable and shared with the live store. What keeps the copy consistent while
    the store moves on: a key's version list is only ever appended to (versions newer than
    ``meta.revision``, which encoding leaves out), compaction replaces a key's list rather
    than cutting it, restore replaces whole containers, and lease ids and TTLs are copied here.
    So the encoding may go on, in steps or in another thread, while writes are applied.
    """

    meta: Meta
    leases: list[tuple[int, int]]
    keys: SortedKeys
    histories: dict[bytes, list[KeyValue]]
    revs: list[int]
    batches: list[list[Event]]


def capture(meta: Meta, index: MVCCIndex, leases: LeaseTable, events: EventLog) -> Frozen:
    keys, histories = index.frozen()
    revs, batches = events.columns()
    return Frozen(
        meta,
        [(lease.id, lease.ttl) for lease in leases.all()],
        keys,
        histories,
        revs[:],
        batches[:],
    )


CHUNK = 512
"""Versions per step while encoding. One step (a json.dumps, a map over a chunk, compressing
what has accumulated) takes well under a millisecond, and encoding yields between steps."""
_COMPRESS_AT = 32 * 1024

Steps = Generator[None, None, list[bytes]]
"""An encoding under way: each ``next()`` does one step. It ends (StopIteration) with the
snapshot in pieces, to be joined by whoever adds to it; ``b"".join`` of large pieces copies
without holding the GIL, so a thread can do it while the event loop goes on."""


def encode(frozen: Frozen) -> bytes:
    """The snapshot bytes of a captured state, all at once (format 1, what ``load`` reads)."""
    steps = encode_steps(frozen)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return b"".join(cast(list[bytes], done.value))


def encode_steps(frozen: Frozen) -> Steps:
    """:func:`encode` in steps of at most CHUNK versions.

    It reads only what :func:`capture` froze, so the steps may run in a worker thread or be
    interleaved with the event loop's other work while the store keeps applying writes; the
    result is the document of the moment of the capture either way.
    """
    meta = frozen.meta
    carried: list[KeyValue] = []
    # by events, not batches: one txn's batch may hold many events
    for events in _chunks(chain.from_iterable(frozen.batches)):
        carried += [ev.kv for ev in events]
        yield
    # Events are kept from the compaction point on (at it, only the versions kept there), so
    # the versions no event carries are exactly those older than it.
    compacted = meta.compacted
    base: list[KeyValue] = []
    if compacted > 0:
        for keys in _chunks(iter(frozen.keys)):
            base += [kv for kv in _visible(frozen, keys) if kv.mod_revision < compacted]
            yield
    sink = _Sink()
    head = {
        "v": FORMAT_VERSION,
        "revision": meta.revision,
        "compacted": meta.compacted,
        "applied_index": meta.applied_index,
        "next_lease_id": meta.next_lease_id,
        "leases": [list(lease) for lease in frozen.leases],
    }
    sink.write(_json(head)[:-1] + ',"base":')
    yield from _write_columns(sink, base)
    sink.write(',"events":')
    yield from _write_columns(sink, carried)
    sink.write(',"batch_revs":')
    yield from _write_list(sink, frozen.revs, list)
    sink.write(',"batch_sizes":')
    yield from _write_list(sink, frozen.batches, lambda chunk: list(map(len, chunk)))
    sink.write("}")
    yield from sink.finish()
    return sink.parts


def _chunks(items: Iterator[T]) -> Iterator[list[T]]:
    while chunk := list(islice(items, CHUNK)):
        yield chunk


def _mod(kv: KeyValue) -> int:
    return kv.mod_revision


def _visible(frozen: Frozen, keys: list[bytes]) -> list[KeyValue]:
    """The versions of ``keys`` up to the frozen revision, in key order, oldest first."""
    rev = frozen.meta.revision
    histories = frozen.histories
    out: list[KeyValue] = []
    for key in keys:
        hist = histories[key]
        if hist[-1].mod_revision > rev:  # appended after the capture
            hist = hist[: bisect_right(hist, rev, key=_mod)]
        out += hist
    return out


class _Sink:
    """JSON text in, zlib out, a piece at a time."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(1)
        self.parts: list[bytes] = [MAGIC]
        self._pending: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        self._pending.append(text)
        self._size += len(text)
        if self._size >= _COMPRESS_AT:
            self._flush()

    def _flush(self) -> None:
        self.parts.append(self._z.compress("".join(self._pending).encode()))
        self._pending, self._size = [], 0

    def finish(self) -> Iterator[None]:
        self._flush()
        yield
        self.parts.append(self._z.flush())
        yield


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _write_list(
    sink: _Sink, items: list[Any], convert: Callable[[list[Any]], list[Any]]
) -> Iterator[None]:
    """``json.dumps(convert(items))``, CHUNK items per step."""
    sink.write("[")
    for i in range(0, len(items), CHUNK):
        if i:
            sink.write(",")
        sink.write(_json(convert(items[i : i + CHUNK]))[1:-1])
        yield
    sink.write("]")


def _latin1(values: Iterable[bytes]) -> list[str]:
    return list(map(bytes.decode, values, repeat("latin-1")))


_CONVERT: dict[str, Callable[[list[KeyValue]], list[Any]]] = {
    "keys": lambda kvs: _latin1(map(itemgetter(0), kvs)),
    "create": lambda kvs: list(map(itemgetter(1), kvs)),
    "mod": lambda kvs: list(map(itemgetter(2), kvs)),
    "version": lambda kvs: list(map(itemgetter(3), kvs)),
    "values": lambda kvs: _latin1(map(itemgetter(4), kvs)),
    "lease": lambda kvs: list(map(itemgetter(5), kvs)),
}


def _write_columns(sink: _Sink, kvs: list[KeyValue]) -> Iterator[None]:
    for n, name in enumerate(_COLUMNS):
        sink.write(("{" if n == 0 else ",") + _json(name) + ":")
        yield from _write_list(sink, kvs, _CONVERT[name])
    sink.write("}")


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
