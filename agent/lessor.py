"""Lease deadlines, kept by the leader alone.

A lease's existence, TTL and attached keys are replicated state (agent/kv). *When* it expires is
not: only the leader keeps a deadline per lease, and when one passes it proposes a
``lease_expire`` command through the log, so every member deletes the keys at the same revision.
Time is injected (``now`` callables return monotonic seconds) so this is tested without sleeping.

A new leader cannot know how much time its predecessor had left on each lease, so on promotion
it gives every lease its full TTL plus an election timeout — a lease may live a little longer
across a leader change, never shorter (etcd does the same).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable


class Lessor:
    def __init__(self, now: Callable[[], float], extend_on_promote: float) -> None:
        self._now = now
        self._extend = extend_on_promote
        self._deadlines: dict[int, float] = {}
        self._ttls: dict[int, int] = {}
        self._heap: list[tuple[float, int]] = []
        self._expiring: set[int] = set()
        self.primary = False
        """True while this node leads; only then do leases expire and keep-alives count."""

    def promote(self, leases: Iterable[tuple[int, int]]) -> None:
        """Become the lease keeper: every known (id, ttl) gets ttl + election timeout."""
        self.primary = True
        self._deadlines.clear()
        self._heap.clear()
        self._expiring.clear()
        base = self._now() + self._extend
        for lease_id, ttl in leases:
            self._ttls[lease_id] = ttl
            self._set(lease_id, base + ttl)

    def reset(self, leases: Iterable[tuple[int, int]]) -> None:
        """The state was replaced by a snapshot: these (id, ttl) are all the leases now."""
        leases = list(leases)
        self._ttls = dict(leases)
        if self.primary:
            self.promote(leases)

    def demote(self) -> None:
        self.primary = False
        self._deadlines.clear()
        self._heap.clear()
        self._expiring.clear()

    def granted(self, lease_id: int, ttl: int) -> None:
        """A grant was applied; on the leader its clock starts now."""
        self._ttls[lease_id] = ttl
        if self.primary:
            self._set(lease_id, self._now() + ttl)

    def revoked(self, lease_id: int) -> None:
        """A revoke or expiry was applied."""
        self._ttls.pop(lease_id, None)
        self._deadlines.pop(lease_id, None)
        self._expiring.discard(lease_id)

    def keep_alive(self, lease_id: int) -> int | None:
        """Refresh a lease to its full TTL; return the TTL, or None if unknown/not leader."""
        ttl = self._ttls.get(lease_id)
        if ttl is None or not self.primary:
            return None
        self._expiring.discard(lease_id)
        self._set(lease_id, self._now() + ttl)
        return ttl

    def remaining(self, lease_id: int) -> int | None:
        """Whole seconds left, truncated as etcd 3.4 reports them (9 just after a grant of 10),
        or None when this node cannot tell."""
        deadline = self._deadlines.get(lease_id)
        if deadline is None:
            return None
        return max(0, int(deadline - self._now()))

    def expired(self) -> list[int]:
        """Leases whose deadline passed and that are not already being expired."""
        now = self._now()
        out: list[int] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, lease_id = heapq.heappop(self._heap)
            if self._deadlines.get(lease_id) != deadline or lease_id in self._expiring:
                continue  # refreshed since, or already proposed
            self._expiring.add(lease_id)
            out.append(lease_id)
        return out

    def retry(self, lease_id: int) -> None:
        """An expiry proposal failed; try again at the next check."""
        if lease_id in self._expiring and lease_id in self._deadlines:
            self._expiring.discard(lease_id)
            self._set(lease_id, self._now())

    def _set(self, lease_id: int, deadline: float) -> None:
        self._deadlines[lease_id] = deadline
        heapq.heappush(self._heap, (deadline, lease_id))
        if len(self._heap) > 4 * len(self._deadlines) + 64:  # drop stale heap entries
            self._heap = [(d, i) for i, d in self._deadlines.items()]
            heapq.heapify(self._heap)
