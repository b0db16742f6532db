"""What the leader knows about one follower's log, and how fast it may send to it.

A follower is in one of three states (as etcd's tracker names them):

* ``PROBE`` — the leader does not know where the follower's log matches; it sends one append at
  a time and waits for the answer (or a heartbeat response) before sending another.
* ``REPLICATE`` — the logs match up to ``match``; appends are pipelined, ``next`` advances
  optimistically, and at most ``max_inflight`` appends may be unacknowledged.
* ``SNAPSHOT`` — the follower needs entries the leader has compacted; a snapshot is on its way
  and nothing else is sent until the follower acknowledges it.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    """Replication progress of one peer, as tracked by the leader."""

    __slots__ = (
        "inflight",
        "lease_ack",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_elapsed",
        "state",
    )

    def __init__(self, next_index: int, match: int = 0) -> None:
        self.match = match
        """Highest index known to be stored on the peer."""
        self.next = next_index
        """Index of the next entry to send."""
        self.state = ProgressState.PROBE
        self.probe_sent = False
        """PROBE only: an append is out and unanswered, so the flow is paused."""
        self.inflight: deque[int] = deque()
        """REPLICATE only: last index of each unacknowledged append, oldest first."""
        self.pending_snapshot = 0
        """SNAPSHOT only: index of the snapshot that was sent."""
        self.snapshot_elapsed = 0
        """SNAPSHOT only: ticks since the snapshot was sent (to retry a lost one)."""
        self.recent_active = False
        """Heard from within the current check-quorum period."""
        self.lease_ack = -1
        """Leader tick at which the newest heartbeat this peer acknowledged was sent (lease
        reads: the peer will not help elect anyone else for an election timeout after it)."""

    def __repr__(self) -> str:
        return f"Progress({self.state.value}, match={self.match}, next={self.next})"

    # --- state changes ---

    def become_probe(self) -> None:
        """Fall back to one-at-a-time probing from just after the known match."""
        self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        """The logs are known to match up to ``match``: start pipelining after it."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        """A snapshot at ``index`` is being sent; hold everything else until it lands."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.probe_sent = False
        self.inflight.clear()

    # --- flow control ---

    def is_paused(self, max_inflight: int) -> bool:
        """True if the leader must not send another append now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def sent(self, last: int | None) -> None:
        """An append was sent whose last entry is ``last`` (None: it carried no entries)."""
        if self.state is ProgressState.REPLICATE:
            if last is not None:
                self.next = last + 1
                self.inflight.append(last)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def update(self, index: int) -> bool:
        """The peer stored everything up to ``index``; True if that is news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        return updated

    def decrease_to(self, rejected: int, match_hint: int) -> bool:
        """An append at ``rejected`` (its prev index) was refused; move ``next`` back.

        ``match_hint`` is the leader's best guess of the last matching index (fast back-off).
        Returns False for a stale rejection (one that says nothing new), which is ignored.
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
