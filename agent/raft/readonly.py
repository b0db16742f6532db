"""Pending ReadIndex requests on the leader (Raft thesis §6.4).

A read may be served at the commit index the leader had when the read arrived, once the leader
has confirmed — by a heartbeat round acknowledged by a quorum — that it was still the leader at
that moment. Requests are confirmed in arrival order: an acknowledgement of a later request's
heartbeat proves leadership at a later time, so it confirms every earlier request too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRequest:
    """One read waiting for its quorum round."""

    ctx: str
    origin: str
    """The node whose client asked: the leader itself, or a follower to answer."""
    index: int
    """The leader's commit index when the request arrived: the read point."""
    acks: set[str] = field(default_factory=set)


class ReadOnlyQueue:
    """Reads in arrival order, keyed by their context tag."""

    __slots__ = ("_by_ctx", "_order")

    def __init__(self) -> None:
        self._by_ctx: dict[str, ReadRequest] = {}
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, ctx: str, origin: str, index: int, self_id: str) -> bool:
        """Queue a read; False if ``ctx`` is already pending (a duplicate is ignored)."""
        if ctx in self._by_ctx:
            return False
        self._by_ctx[ctx] = ReadRequest(ctx, origin, index, {self_id})
        self._order.append(ctx)
        return True

    def ack(self, ctx: str, voter: str) -> set[str] | None:
        """Record ``voter``'s heartbeat acknowledgement; the acks so far, or None if unknown."""
        req = self._by_ctx.get(ctx)
        if req is None:
            return None
        req.acks.add(voter)
        return req.acks

    def release_through(self, ctx: str) -> list[ReadRequest]:
        """Remove and return every request up to and including ``ctx``, oldest first."""
        if ctx not in self._by_ctx:
            return []
        out: list[ReadRequest] = []
        while self._order:
            head = self._order.popleft()
            out.append(self._by_ctx.pop(head))
            if head == ctx:
                break
        return out

    def last_ctx(self) -> str:
        """The newest pending ctx ("" if none): heartbeats carry it so a lost round recovers."""
        return self._order[-1] if self._order else ""

    def pending(self) -> list[ReadRequest]:
        """All pending requests, oldest first (to re-check them when the quorum changes)."""
        return [self._by_ctx[c] for c in self._order]

    def clear(self) -> None:
        self._by_ctx.clear()
        self._order.clear()
