"""A sorted set of keys as a list of short sorted lists: O(log n + LOAD) insert and remove.

One flat sorted list costs an O(n) memmove per insert or removal — fine for thousands of keys,
but it dominated writes at 50k random keys, and deleting a large range one key at a time
became quadratic. Splitting into sublists of at most 2*LOAD keys, with each sublist's
largest key in ``_maxes``, bounds every memmove by LOAD pointers while keeping ranges a
bisect plus a forward walk. Positions (for counts) cost one pass over the sublist lengths,
n / LOAD additions.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator

LOAD = 512


class SortedKeys:
    def __init__(self, keys: Iterable[bytes] = ()) -> None:
        ordered = sorted(set(keys))
        self._lists: list[list[bytes]] = [
            ordered[i : i + LOAD] for i in range(0, len(ordered), LOAD)
        ]
        self._maxes: list[bytes] = [sub[-1] for sub in self._lists]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def copy(self) -> SortedKeys:
        """An independent copy: one slice per sublist, not one operation per key."""
        dup = SortedKeys()
        dup._lists = [sub[:] for sub in self._lists]
        dup._maxes = self._maxes[:]
        dup._len = self._len
        return dup

    def __iter__(self) -> Iterator[bytes]:
        for sub in self._lists:
            yield from sub

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return False
        sub = self._lists[i]
        j = bisect_left(sub, key)
        return j < len(sub) and sub[j] == key

    def add(self, key: bytes) -> None:
        """Insert a key that is not yet present."""
        if not self._maxes:
            self._lists.append([key])
            self._maxes.append(key)
        else:
            i = bisect_left(self._maxes, key)
            if i == len(self._maxes):
                i -= 1
                self._lists[i].append(key)
                self._maxes[i] = key
            else:
                insort(self._lists[i], key)
            sub = self._lists[i]
            if len(sub) > 2 * LOAD:
                self._lists[i : i + 1] = [sub[:LOAD], sub[LOAD:]]
                self._maxes[i : i + 1] = [sub[LOAD - 1], sub[-1]]
        self._len += 1

    def discard(self, key: bytes) -> None:
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return
        sub = self._lists[i]
        j = bisect_left(sub, key)
        if j == len(sub) or sub[j] != key:
            return
        del sub[j]
        self._len -= 1
        if not sub:
            del self._lists[i]
            del self._maxes[i]
        elif j == len(sub):
            self._maxes[i] = sub[-1]

    def _locate(self, key: bytes) -> tuple[int, int]:
        """(sublist, offset) of the first key >= ``key``."""
        i = bisect_left(self._maxes, key)
        if i == len(self._maxes):
            return i, 0
        return i, bisect_left(self._lists[i], key)

    def position(self, key: bytes) -> int:
        """How many keys are < ``key``."""
        i, j = self._locate(key)
        return sum(len(sub) for sub in self._lists[:i]) + j

    def irange(self, start: bytes, end: bytes | None) -> Iterator[bytes]:
        """Keys in [start, end), ascending; ``end`` None means no upper bound."""
        i, j = self._locate(start)
        lists = self._lists
        while i < len(lists):
            sub = lists[i]
            if end is not None and sub[-1] >= end:
                yield from sub[j : bisect_left(sub, end, j)]
                return
            yield from sub[j:] if j else sub
            i, j = i + 1, 0

    def count(self, start: bytes, end: bytes | None) -> int:
        lo = self.position(start)
        hi = self._len if end is None else self.position(end)
        return max(0, hi - lo)
