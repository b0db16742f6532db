"""Taking a snapshot without stopping the node.

Serializing a large state machine takes far longer than the event loop may be held (at 50k
keys, a fifth of a second: every request, heartbeat and watch in flight would wait). So a
snapshot is taken in three moves by the runtime (agent/node.py):

1. **capture**, on the loop, between two Readies, at the applied index ``I``: the state machine
   freezes its state (:meth:`SteppedSnapshots.snapshot_steps`, a few pointer copies), and the
   runtime its snapshot header (address book, removed members);
2. **encode**, interleaved with the loop's other work, one small step at a time and never more
   than about half of the loop's time, while Raft carries on and the machine keeps applying
   entries (:class:`SnapshotJob`);
3. **finish**, back between two Readies: the snapshot claims ``I``, the index of its image,
   as etcd's do (the Raft core's ``create_snapshot``/``compact`` take any applied index after
   the current snapshot). It is written to its file and synced first; only then does the core
   compact its log through ``I`` and the WAL is cut, so nothing ever sees a compacted log whose
   snapshot is not durable. The entries after ``I`` stay in the log. If a membership change
   was applied after ``I`` the core does not know the membership at ``I`` and refuses: the
   snapshot is dropped and the next one taken afresh.

Encoding in steps on the loop rather than in a thread: a thread needs the GIL for all but the
compression and hands it back to the loop only every switch interval (5 ms), while steps of
under a millisecond bound each hold of the loop by themselves. Encoding 50k keys next to a loop
that wakes every millisecond, the loop waited at most 2 to 4 ms this way, 4 to 9 ms with a
thread, and 150 to 165 ms for the whole encoding at once (bench/snapshot_bench.py; results in
bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import Protocol, cast

from agent.statemachine import StateMachine

Steps = Generator[None, None, list[bytes]]
"""An encoding under way: each ``next()`` does one short step; it ends (StopIteration) with the
encoding in pieces, which the runtime joins with its own header in one copy, in a thread
(``b"".join`` of large pieces does not hold the GIL)."""


class SteppedSnapshots(Protocol):
    """A state machine that can freeze its state now and encode it later, in steps."""

    def snapshot_steps(self) -> Steps:
        """Freeze the state at the last applied index, cheaply, now; return its encoding as
        steps that stay correct while more entries are applied meanwhile."""
        ...


def snapshot_steps(machine: StateMachine) -> Steps:
    """The machine's snapshot of this moment as steps: its own if it has them, else its whole
    ``snapshot()`` taken now, in one go."""
    if hasattr(machine, "snapshot_steps"):
        return cast(SteppedSnapshots, machine).snapshot_steps()
    return _ready(machine.snapshot())


def _ready(data: bytes) -> Steps:
    return [data]
    yield  # a generator that has nothing left to do


class SnapshotJob:
    """One snapshot under way: the machine frozen at ``index`` (captured when the job is made,
    on the loop, with the runtime's ``header`` of that moment) and encoded by a task that does
    one step at a time between the loop's other work."""

    def __init__(
        self,
        index: int,
        machine: StateMachine,
        header: bytes,
        on_done: Callable[[], None],
    ) -> None:
        self.index = index
        self.header = header
        self.started = time.perf_counter()
        steps = snapshot_steps(machine)
        self.capture_s = time.perf_counter() - self.started
        self.steps = 0
        self.longest_step_s = 0.0
        self.task = asyncio.ensure_future(self._encode(steps))
        self.task.add_done_callback(lambda _: on_done())

    async def _encode(self, steps: Steps) -> list[bytes]:
        while True:
            t = time.perf_counter()
            try:
                next(steps)
            except StopIteration as done:
                return cast(list[bytes], done.value)
            finally:
                took = time.perf_counter() - t
                self.steps += 1
                self.longest_step_s = max(self.longest_step_s, took)
            # Rest as long as the step took: encoding gets at most about half of the loop's
            # time, and leaves the CPU to the requests it would otherwise slow down.
            await asyncio.sleep(took)

    async def assemble(self) -> bytes:
        """The snapshot's bytes: the header, then the encoded image (the task must be done; its
        error is raised here), copied once, in a thread."""
        parts = [self.header, *self.task.result()]
        return await asyncio.to_thread(b"".join, parts)

    def timings(self) -> str:
        held = max(self.capture_s, self.longest_step_s)
        return (
            f"held the event loop at most {held * 1000:.1f} ms at a time (capture "
            f"{self.capture_s * 1000:.1f}, longest of {self.steps} steps "
            f"{self.longest_step_s * 1000:.1f}), {(time.perf_counter() - self.started) * 1000:.0f}"
            " ms in all"
        )
