"""Virtual time for the simulator: one event heap shared by deliveries, ticks and scheduled calls.

Events are ordered by (time, sequence number). The sequence number makes the order total, so a
run pops its events in the same order every time, whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

TICK = 10
"""Virtual time units between two ticks of a node (message latency is a few units)."""

EV_DELIVER, EV_TICK, EV_CALL, EV_UNREACHABLE = 0, 1, 2, 3
"""What an event does: deliver a message, tick a node, run a call, report a broken link."""

Event = tuple[Any, ...]
"""(time, seq, kind, a, b) in the event heap; ``seq`` makes the order total and deterministic."""


class SimClock:
    """The clock part of :class:`~tests.raft.sim.Sim`: the current time and the event heap
    (``Sim.step`` pops and runs the events)."""

    now: int
    steps: int
    _seq: int
    _events: list[Event]

    def at(self, time: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual ``time`` (a workload action or fault)."""
        self._push(max(time, self.now), EV_CALL, fn, None)

    def after(self, delay: int, fn: Callable[[], None]) -> None:
        self.at(self.now + delay, fn)

    def _push(self, time: int, kind: int, a: Any, b: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (time, self._seq, kind, a, b))
