"""The event log: every applied change in revision order, for watches to replay and follow.

Events share their KeyValue objects with the MVCC index, so keeping them costs little beyond
the index's own history; both shrink together when the store compacts. After compaction at
revision c the log keeps the batch at c only as etcd can still serve it: the PUT events whose
version is the one kept at c, without prev_kv (that older state is gone).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from agent.kv.keys import in_span
from agent.kv.model import Event

Subscriber = Callable[[int, list[Event]], None]


class EventLog:
    """Batches of events, one batch per revision, oldest first."""

    def __init__(self) -> None:
        self._revs: list[int] = []
        self._batches: list[list[Event]] = []

    def append(self, revision: int, events: list[Event]) -> None:
        self._revs.append(revision)
        self._batches.append(events)

    def since(self, start: int, key: bytes, range_end: bytes) -> list[Event]:
        """Events at revisions >= ``start`` for keys selected by (key, range_end)."""
        out: list[Event] = []
        for batch in self._batches[bisect_left(self._revs, start) :]:
            for ev in batch:
                if in_span(ev.kv.key, key, range_end):
                    out.append(ev)
        return out

    def compact(self, revision: int) -> None:
        i = bisect_left(self._revs, revision)
        del self._revs[:i]
        del self._batches[:i]
        if self._revs and self._revs[0] == revision:
            last = {ev.kv.key: ev for ev in self._batches[0]}
            self._batches[0] = [Event("PUT", ev.kv) for ev in last.values() if ev.type == "PUT"]
            if not self._batches[0]:
                del self._revs[0]
                del self._batches[0]

    def batches(self) -> list[tuple[int, list[Event]]]:
        return list(zip(self._revs, self._batches, strict=True))

    def columns(self) -> tuple[list[int], list[list[Event]]]:
        """(revisions, batches) as parallel lists — a cheap view for snapshots."""
        return self._revs, self._batches

    def event_count(self) -> int:
        return sum(len(b) for b in self._batches)

    def clear(self) -> None:
        self._revs = []
        self._batches = []
