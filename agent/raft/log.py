"""The in-memory Raft log: entries after the latest snapshot, and how much of them is durable.

The log is a Python list addressed through an offset (the snapshot's index), so appending,
looking up a term and slicing a batch for a follower are O(1) or O(batch), never O(log length).
Terms in a Raft log never decrease with the index, which lets the conflict searches behind fast
back-off use binary search.

Two watermarks track the hand-off to the runtime: ``handed`` is the last index given out in a
Ready, ``persisted`` the last one the runtime confirmed on disk (through ``advance``). A follower
that overwrites a conflicting suffix pulls both back, so the replacement entries are handed out
again and the runtime overwrites its stored suffix.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from agent.raft.types import Entry


def _term_of(entry: Entry) -> int:
    return entry.term


class RaftLog:
    """Entries ``offset+1 .. last_index``; ``(offset, offset_term)`` is the snapshot point."""

    __slots__ = ("_entries", "_offset", "_offset_term", "handed", "persisted")

    def __init__(
        self, offset: int = 0, offset_term: int = 0, entries: Sequence[Entry] = ()
    ) -> None:
        """Build a log from persisted state (everything passed in counts as durable).

        Raises:
            ValueError: ``entries`` are not contiguous from ``offset + 1`` (a corrupt store).
        """
        self._offset = offset
        self._offset_term = offset_term
        self._entries: list[Entry] = [e for e in entries if e.index > offset]
        for pos, entry in enumerate(self._entries):
            if entry.index != offset + 1 + pos:
                raise ValueError(
                    f"stored log is not contiguous: expected index {offset + 1 + pos}, "
                    f"found {entry.index}"
                )
        self.handed = self.last_index
        """Last index handed out in a Ready (entries after it are still to be persisted)."""
        self.persisted = self.last_index
        """Last index the runtime confirmed durable."""

    # --- reading ---

    @property
    def offset(self) -> int:
        """Index of the snapshot point: entries at or below it are compacted away."""
        return self._offset

    @property
    def offset_term(self) -> int:
        return self._offset_term

    @property
    def first_index(self) -> int:
        return self._offset + 1

    @property
    def last_index(self) -> int:
        return self._offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._offset_term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted away or beyond the end."""
        pos = index - self._offset - 1
        if pos < 0:
            return self._offset_term if pos == -1 else None
        if pos < len(self._entries):
            return self._entries[pos].term
        return None

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi`` that are still in memory."""
        start = max(lo - self._offset - 1, 0)
        stop = max(min(hi - self._offset - 1, len(self._entries)), 0)
        return self._entries[start:stop]

    def batch(self, lo: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Up to ``max_count`` entries from ``lo`` whose payloads fit in ``max_bytes``.

        At least one entry is returned when any exists, so an oversized entry still moves.
        """
        ents = self.slice(lo, lo + max(max_count, 1))
        if max_bytes <= 0 or len(ents) <= 1:
            return ents
        size = 0
        for n, entry in enumerate(ents):
            size += len(entry.data)
            if size > max_bytes and n > 0:
                return ents[:n]
        return ents

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction (§5.4.1): is a log ending at (index, term) at least as new?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def last_at_or_below(self, index: int, term: int) -> int:
        """The largest index ``<= index`` whose term is ``<= term``.

        This is the fast back-off search on both sides: the follower's hint and the leader's
        answer to it. Terms never decrease along a log, so a binary search finds it. When even
        the snapshot point is too new, ``offset - 1`` says "somewhere below what I still hold".
        An ``index`` already below the snapshot point is returned as is.
        """
        if index < self._offset:
            return index
        hi = min(index, self.last_index) - self._offset
        pos = bisect_right(self._entries, term, 0, hi, key=_term_of)
        if pos > 0:
            return self._offset + pos
        return self._offset if self._offset_term <= term else self._offset - 1

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first of ``entries`` that is new or differs from ours; 0 if none."""
        for entry in entries:
            if self.term(entry.index) != entry.term:
                return entry.index
        return 0

    # --- writing ---

    def append(self, entry: Entry) -> None:
        """Add the next entry (the leader's own proposals)."""
        self._entries.append(entry)

    def replace_from(self, entries: Sequence[Entry]) -> bool:
        """Store ``entries``, overwriting our suffix from ``entries[0].index`` on.

        The caller has checked that ``entries[0]`` directly follows a matching entry and that
        nothing committed is overwritten. Returns True if existing entries were dropped.
        """
        first = entries[0].index
        keep = first - self._offset - 1
        truncated = keep < len(self._entries)
        if truncated:
            del self._entries[keep:]
            self.handed = min(self.handed, first - 1)
            self.persisted = min(self.persisted, first - 1)
        self._entries.extend(entries)
        return truncated

    def take_unhanded(self) -> list[Entry]:
        """Entries not yet handed to the runtime; they count as handed from now on."""
        ents = self.slice(self.handed + 1, self.last_index + 1)
        self.handed = self.last_index
        return ents

    def stable_to(self, entries: Sequence[Entry]) -> None:
        """The runtime persisted ``entries``; count those still in our log as durable.

        Entries overwritten since they were handed out (a conflict resolved in between) do
        not count: their replacements will be handed out again.
        """
        for entry in reversed(entries):
            if self.term(entry.index) == entry.term:
                if entry.index > self.persisted:
                    self.persisted = min(entry.index, self.handed)
                return

    def compact(self, index: int) -> None:
        """Drop entries up to ``index`` (which must be in memory) after a snapshot there."""
        term = self.term(index)
        if term is None or index <= self._offset:
            return
        del self._entries[: index - self._offset]
        self._offset = index
        self._offset_term = term

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot point (a snapshot installed from the leader)."""
        self._entries = []
        self._offset = index
        self._offset_term = term
        self.handed = index
        self.persisted = index
