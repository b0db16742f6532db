"""Watches: many watchers fed from the one stream of applied events.

Every member applies the same log in the same order, so a watcher on any member sees every event
in revision order — a leader change does not reorder or repeat what this node applies. The hub
subscribes once to the store; each applied revision is matched against the watchers (exact-key
watchers by dict lookup, ranges by scan) and queued per watcher. A watcher that falls too far
behind is closed with the revision to resume from, rather than letting its queue grow without
bound. After a snapshot replaced the state, each watcher is caught up from the store's history.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

from agent.errors import AgentError
from agent.kv import Event, KVError, KVStore

WATCH_OVERFLOW = "watch-overflow"


class Watcher:
    """One watch: a key or range, and the events not yet delivered."""

    def __init__(
        self, hub: WatchHub, wid: int, key: bytes, range_end: bytes, prev_kv: bool, limit: int
    ) -> None:
        self.hub = hub
        self.id = wid
        self.key = key
        self.range_end = range_end
        self.prev_kv = prev_kv
        self.limit = limit
        self.next_revision = 0
        """The first revision not yet queued: a resumed watch starts here."""
        self.pending: deque[Event] = deque()
        self.error: AgentError | None = None
        self._ready = asyncio.Event()

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def push(self, events: Sequence[Event], revision: int) -> None:
        if self.error is not None:
            return
        for ev in events:
            if self.matches(ev.kv.key):
                self.pending.append(ev if self.prev_kv else ev._replace(prev_kv=None))
        self.next_revision = revision + 1
        if len(self.pending) > self.limit:
            first = self.pending[0].kv.mod_revision
            self.fail(
                AgentError(
                    WATCH_OVERFLOW,
                    f"the watcher fell more than {self.limit} events behind; "
                    f"resume with start_revision={first}",
                    resume_revision=first,
                )
            )
        if self.pending:
            self._ready.set()

    def fail(self, error: AgentError) -> None:
        self.error = error
        self.pending.clear()
        self._ready.set()
        self.hub.cancel(self)

    async def next(self, timeout: float | None = None) -> list[Event]:
        """Wait for events (an empty list after ``timeout``); raise the watcher's error."""
        if not self.pending and self.error is None:
            self._ready.clear()
            if timeout is None:
                await self._ready.wait()
            else:
                try:
                    await asyncio.wait_for(self._ready.wait(), timeout)
                except TimeoutError:
                    return []
        if self.error is not None:
            raise self.error
        out = list(self.pending)
        self.pending.clear()
        return out


class WatchHub:
    def __init__(self, store: KVStore, limit: int = 10000) -> None:
        self.store = store
        self.limit = limit
        self._ids = itertools.count(1)
        self._exact: dict[bytes, set[Watcher]] = {}
        self._ranges: set[Watcher] = set()
        self._unsubscribe = store.subscribe(self._on_events, self._on_restore)

    def __len__(self) -> int:
        return len(self._ranges) + sum(len(ws) for ws in self._exact.values())

    def watch(
        self, key: bytes, range_end: bytes = b"", start_revision: int = 0, prev_kv: bool = False
    ) -> Watcher:
        """Register a watcher; with ``start_revision`` > 0 history is replayed first (a
        compacted start raises the store's "compacted" error naming the oldest revision)."""
        w = Watcher(self, next(self._ids), key, range_end, prev_kv, self.limit)
        current = self.store.revision
        if 0 < start_revision <= current:
            history = self.store.events_since(start_revision, key, range_end)
            w.push(history, current)
            if w.error is not None:
                raise w.error
        w.next_revision = max(start_revision, current + 1)
        if range_end:
            self._ranges.add(w)
        else:
            self._exact.setdefault(key, set()).add(w)
        return w

    def cancel(self, w: Watcher) -> None:
        self._ranges.discard(w)
        exact = self._exact.get(w.key)
        if exact is not None:
            exact.discard(w)
            if not exact:
                del self._exact[w.key]

    def close(self) -> None:
        self._unsubscribe()

    def _on_events(self, revision: int, events: Sequence[Event]) -> None:
        touched: set[Watcher] = set(self._ranges)
        for ev in events:
            touched |= self._exact.get(ev.kv.key, set())
        for w in touched:
            if revision >= w.next_revision:
                w.push(events, revision)

    def _on_restore(self, revision: int) -> None:
        """A snapshot replaced the state: replay what each watcher missed from its history."""
        for w in list(self._ranges) + [w for ws in self._exact.values() for w in ws]:
            if w.next_revision > revision:
                continue
            try:
                missed = self.store.events_since(w.next_revision, w.key, w.range_end)
            except KVError as exc:
                w.fail(exc)
                continue
            w.push(missed, revision)
