"""Taking a snapshot without stopping the node, and the log tail that makes it possible.

Serializing a large state machine takes far longer than the event loop may be held (at 50k
keys, a fifth of a second: every request, heartbeat and watch in flight would wait). So a
snapshot is taken in three moves by the runtime (agent/node.py):

1. **capture**, on the loop, between two Readies, at the applied index ``I``: the state machine
   freezes its state (:meth:`SteppedSnapshots.snapshot_steps`, a few pointer copies);
2. **encode**, interleaved with the loop's other work, one small step at a time and never more
   than about half of the loop's time, while Raft carries on and the machine keeps applying
   entries (:class:`SnapshotJob`);
3. **finish**, back between two Readies, at the applied index ``J >= I``: the snapshot claims
   ``J``, as the Raft core requires of a compaction, so it carries the image at ``I`` followed by
   the entries ``I+1..J`` applied meanwhile — the *tail* (:func:`with_tail`). Restoring
   (:func:`restore_machine`) loads the image and applies the tail, which gives the state at
   ``J`` exactly.

The tail travels inside the state machine's bytes of the runtime snapshot, behind its own magic,
so an agent too old to know it refuses the snapshot (the KV store finds a bad magic) instead of
silently restoring a state that is short of the tail. A snapshot with an empty tail is the
machine's bytes unchanged.

Encoding in steps on the loop rather than in a thread: a thread needs the GIL for all but the
compression and hands it back to the loop only every switch interval (5 ms), while steps of
under a millisecond bound each hold of the loop by themselves. Encoding 50k keys next to a loop
that wakes every millisecond, the loop waited at most 2 to 4 ms this way, 4 to 9 ms with a
thread, and 150 to 165 ms for the whole encoding at once (bench/snapshot_bench.py; results in
bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, Protocol, cast

from agent.raft.types import Entry, EntryKind
from agent.statemachine import StateMachine

Steps = Generator[None, None, list[bytes]]
"""An encoding under way: each ``next()`` does one short step; it ends (StopIteration) with the
encoding in pieces, which the runtime joins with its own header and the tail in one copy, in a
thread (``b"".join`` of large pieces does not hold the GIL)."""

TAIL_MAGIC = b"SHOALTL1"
_TAIL_SIZE = struct.Struct(">I")


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


def tail_prefix(tail: Iterable[Entry]) -> bytes:
    """What goes before the image in the state machine's part of a snapshot: the state-machine
    entries of ``tail`` (applied after the image was captured) to apply on top of it. Empty
    when there are none, so the machine's part is then its image exactly."""
    commands = [
        [e.index, base64.b64encode(e.data).decode("ascii")]
        for e in tail
        if e.kind is EntryKind.NORMAL and e.data
    ]
    if not commands:
        return b""
    blob = json.dumps(commands, separators=(",", ":")).encode()
    return TAIL_MAGIC + _TAIL_SIZE.pack(len(blob)) + blob


def split_tail(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split the state machine's part of a snapshot into the tail's (index, command) pairs to
    apply and the image.

    Raises:
        ValueError: the tail is damaged.
    """
    if not data.startswith(TAIL_MAGIC):
        return [], data
    start = len(TAIL_MAGIC) + _TAIL_SIZE.size
    if len(data) < start:
        raise ValueError("snapshot tail is cut short")
    (size,) = _TAIL_SIZE.unpack_from(data, len(TAIL_MAGIC))
    try:
        raw: Any = json.loads(data[start : start + size])
        tail = [(int(index), base64.b64decode(command, validate=True)) for index, command in raw]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"snapshot tail is damaged: {exc}") from exc
    return tail, data[start + size :]


def restore_machine(machine: StateMachine, data: bytes) -> None:
    """Load the state machine's part of a snapshot: the image, then the tail's entries."""
    tail, image = split_tail(data)
    machine.restore(image)
    for index, command in tail:
        machine.apply(index, command)


class SnapshotJob:
    """One snapshot under way: the machine frozen at ``index`` (captured when the job is made,
    on the loop) and encoded by a task that does one step at a time between the loop's other
    work."""

    def __init__(self, index: int, machine: StateMachine, on_done: Callable[[], None]) -> None:
        self.index = index
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

    async def assemble(self, header: bytes, tail: Iterable[Entry]) -> bytes:
        """The snapshot's bytes: ``header``, the tail, the encoded image (the task must be done;
        its error is raised here), copied once, in a thread."""
        parts = [header, tail_prefix(tail), *self.task.result()]
        return await asyncio.to_thread(b"".join, parts)

    def timings(self) -> str:
        held = max(self.capture_s, self.longest_step_s)
        return (
            f"held the event loop at most {held * 1000:.1f} ms at a time (capture "
            f"{self.capture_s * 1000:.1f}, longest of {self.steps} steps "
            f"{self.longest_step_s * 1000:.1f}), {(time.perf_counter() - self.started) * 1000:.0f}"
            " ms in all"
        )
