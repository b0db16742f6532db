"""Multi-version key index: every key's retained versions, and sorted key sets for ranges.

Layout, chosen for O(log n) point work and bisect ranges with only the standard library:

- ``_current``: live key -> its latest KeyValue (a dict, so a point get is O(1));
- ``_live``: the live keys, sorted — current-revision ranges walk it;
- ``_hist``: key -> its retained versions, oldest first (tombstones have version 0);
- ``_all``: every key that has retained history, sorted — for reads at past revisions.

The sorted sets are :class:`SortedKeys` (short sorted sublists), so an insert or removal
moves at most a few hundred pointers however many keys there are.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from itertools import islice

from agent.kv.keys import span
from agent.kv.model import KeyValue, tombstone
from agent.kv.sortedkeys import SortedKeys


def _mod(kv: KeyValue) -> int:
    return kv.mod_revision


class MVCCIndex:
    """Versions of every key; knows nothing about revisions' bookkeeping or validation."""

    def __init__(self) -> None:
        self._current: dict[bytes, KeyValue] = {}
        self._live = SortedKeys()
        self._hist: dict[bytes, list[KeyValue]] = {}
        self._all = SortedKeys()

    # --- writes ---------------------------------------------------------------------------

    def put(self, kv: KeyValue) -> KeyValue | None:
        """Record a new version; return the previous live version (None if created)."""
        key = kv.key
        hist = self._hist.get(key)
        if hist is None:
            self._hist[key] = [kv]
            self._all.add(key)
        else:
            hist.append(kv)
        prev = self._current.get(key)
        if prev is None:
            self._live.add(key)
        self._current[key] = kv
        return prev

    def delete(self, key: bytes, revision: int) -> KeyValue:
        """Record the deletion of a live key; return the tombstone (the DELETE event's kv)."""
        dead = tombstone(key, revision)
        self._hist[key].append(dead)
        del self._current[key]
        self._live.discard(key)
        return dead

    # --- reads ----------------------------------------------------------------------------

    def get(self, key: bytes) -> KeyValue | None:
        return self._current.get(key)

    def get_at(self, key: bytes, revision: int) -> KeyValue | None:
        """The version visible at ``revision`` (None if absent or deleted then)."""
        hist = self._hist.get(key)
        if not hist:
            return None
        i = bisect_right(hist, revision, key=_mod)
        if i == 0:
            return None
        kv = hist[i - 1]
        return None if kv.is_tombstone else kv

    def _keys(self, keys: SortedKeys, key: bytes, range_end: bytes) -> Iterator[bytes]:
        start, end, single = span(key, range_end)
        if single:
            return iter((start,) if start in keys else ())
        return keys.irange(start, end)

    def iter_range(
        self, key: bytes, range_end: bytes, revision: int | None = None
    ) -> Iterator[KeyValue]:
        """Visible versions in key order; ``revision`` None means the current state."""
        if revision is None:
            current = self._current
            for k in self._keys(self._live, key, range_end):
                yield current[k]
            return
        for k in self._keys(self._all, key, range_end):
            kv = self.get_at(k, revision)
            if kv is not None:
                yield kv

    def range(
        self, key: bytes, range_end: bytes, revision: int | None = None, limit: int = 0
    ) -> list[KeyValue]:
        found = self.iter_range(key, range_end, revision)
        return list(islice(found, limit) if limit > 0 else found)

    def count(self, key: bytes, range_end: bytes, revision: int | None = None) -> int:
        if revision is None:
            start, end, single = span(key, range_end)
            if single:
                return 1 if start in self._current else 0
            return self._live.count(start, end)
        return sum(1 for _ in self.iter_range(key, range_end, revision))

    def live_count(self) -> int:
        return len(self._current)

    def record_count(self) -> int:
        """How many versions are retained (what compaction shrinks)."""
        return sum(len(h) for h in self._hist.values())

    # --- compaction and snapshots ---------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Drop versions older than ``revision``, keeping each key's version visible at it.

        The newest version at or below ``revision`` survives unless it is a tombstone; a key
        left with no versions disappears from the index entirely.
        """
        emptied: list[bytes] = []
        for key, hist in self._hist.items():
            i = bisect_right(hist, revision, key=_mod)
            if i == 0:
                continue
            keep_from = i - 1 if not hist[i - 1].is_tombstone else i
            if keep_from == len(hist):
                emptied.append(key)
            elif keep_from > 0:
                # a new list, not ``del hist[:keep_from]``: a frozen snapshot may still be
                # encoding the old one (see frozen())
                self._hist[key] = hist[keep_from:]
        for key in emptied:
            del self._hist[key]
            self._all.discard(key)

    def frozen(self) -> tuple[SortedKeys, dict[bytes, list[KeyValue]]]:
        """Copies of the sorted keys with history and of the key -> versions dict, for a
        snapshot encoded while writes go on (agent/kv/snapshot.py): O(keys) pointer copies.

        The version lists themselves are shared, which is sound because a list is only
        appended to after this (by newer revisions); compaction swaps in a new list.
        """
        return self._all.copy(), dict(self._hist)

    def load(self, histories: dict[bytes, list[KeyValue]]) -> None:
        """Replace everything with the given per-key versions (oldest first)."""
        self._hist = {k: v for k, v in histories.items() if v}
        self._all = SortedKeys(self._hist)
        self._current = {k: v[-1] for k, v in self._hist.items() if not v[-1].is_tombstone}
        self._live = SortedKeys(self._current)
