"""One simulated machine: what survives a crash (its disk), what does not (the Raft node and the
state machine), and how it carries out a Ready, exactly as the agent's runtime does.

A crash throws away the ``RaftNode`` (and so anything not yet persisted, when a slow disk left a
Ready waiting) and the state machine; a restart builds a new ``RaftNode`` from the disk alone.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agent.raft.core import RaftConfig, RaftNode, ReadState, Ready
from agent.raft.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
)
from tests.raft.sim_clock import TICK

if TYPE_CHECKING:
    from tests.raft.sim import Sim


class SimError(AssertionError):
    """The core broke the driving contract (not a Raft safety property, but just as fatal)."""


@dataclass(slots=True)
class Disk:
    """What survives a crash: the last hard state, the latest snapshot and the log after it."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    """Contiguous, starting right after the snapshot (or at index 1)."""

    @property
    def snap_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    @property
    def snap_term(self) -> int:
        return self.snapshot.meta.term if self.snapshot is not None else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def entry(self, index: int) -> Entry | None:
        """The stored entry at ``index`` (None when compacted away or beyond the end)."""
        pos = index - self.snap_index - 1
        if 0 <= pos < len(self.entries):
            return self.entries[pos]
        return None

    def term_at(self, index: int) -> int | None:
        """The term at ``index``, known for the snapshot point and the stored entries."""
        if index == self.snap_index:
            return self.snap_term
        found = self.entry(index)
        return found.term if found is not None else None

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``; a stored suffix from ``entries[0].index`` on is replaced."""
        first = entries[0].index
        skip = max(0, self.snap_index + 1 - first)
        keep = max(0, first + skip - self.snap_index - 1)
        del self.entries[keep:]
        self.entries.extend(entries[skip:])

    def install(self, snap: Snapshot) -> None:
        """Store a snapshot received from the leader. Entries after it survive only when the log
        already held the snapshot's last entry (same index and term), as in the Raft paper §7."""
        matches = self.term_at(snap.meta.index) == snap.meta.term
        self.entries = [e for e in self.entries if e.index > snap.meta.index] if matches else []
        self.snapshot = snap

    def compact(self, snap: Snapshot) -> None:
        """Store a snapshot this node took itself and drop the entries it covers."""
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]


@dataclass(slots=True)
class StateMachine:
    """The replicated state machine: the ordered list of commands it has applied."""

    applied: int = 0
    commands: list[tuple[int, bytes]] = field(default_factory=list)

    def apply(self, entry: Entry) -> None:
        self.applied = entry.index
        if entry.kind is EntryKind.NORMAL and entry.data:
            self.commands.append((entry.index, entry.data))

    def serialize(self) -> bytes:
        return json.dumps([[i, d.decode("latin-1")] for i, d in self.commands]).encode()

    @classmethod
    def restore(cls, snap: Snapshot | None) -> StateMachine:
        if snap is None:
            return cls()
        raw = json.loads(snap.data) if snap.data else []
        return cls(snap.meta.index, [(int(i), str(d).encode("latin-1")) for i, d in raw])


@dataclass(slots=True)
class SimNode:
    """One machine: a disk that survives crashes, and a Raft node + state machine that do not."""

    id: str
    config: RaftConfig
    initial_conf: ConfState
    """What the runtime passes as ``conf`` on every start (a snapshot's conf overrides it)."""
    disk: Disk = field(default_factory=Disk)
    raft: RaftNode | None = None
    sm: StateMachine = field(default_factory=StateMachine)
    incarnation: int = 0
    tick_period: int = TICK
    reads: list[ReadState] = field(default_factory=list)
    """ReadStates received and waiting for the state machine to reach their index."""

    @property
    def alive(self) -> bool:
        return self.raft is not None

    def node(self) -> RaftNode:
        """The running Raft node (the caller knows this machine is up)."""
        if self.raft is None:
            raise SimError(f"{self.id} is down")
        return self.raft

    def boot(self, rng: random.Random) -> None:
        """Start a new Raft node and state machine from what the disk holds."""
        disk = self.disk
        self.raft = RaftNode(
            self.config,
            rng,
            conf=self.initial_conf,
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
        )
        self.sm = StateMachine.restore(disk.snapshot)
        self.reads = []

    def carry_out(self, sim: Sim, raft: RaftNode, rd: Ready) -> None:
        """Do what the agent's runtime does with a Ready: persist, send, apply, advance."""
        obs = sim.observer
        disk = self.disk
        # 1. persist
        if rd.snapshot is not None:
            obs.on_persist_snapshot(sim, self, rd.snapshot)
            disk.install(rd.snapshot)
        if rd.entries:
            obs.on_persist_entries(sim, self, rd.entries)
            disk.append(rd.entries)
        if rd.hard_state is not None:
            obs.on_persist_hard_state(sim, self, rd.hard_state)
            disk.hard_state = rd.hard_state
        # 2. send
        for msg in rd.messages:
            obs.on_send(sim, self, msg)
            sim.send(msg)
        # 3. apply
        if rd.snapshot is not None:
            self.sm = StateMachine.restore(rd.snapshot)
            sim.note("install", f"{self.id} snapshot @{rd.snapshot.meta.index}")
            obs.on_restore(sim, self, rd.snapshot)
        sm = self.sm
        for entry in rd.committed:
            obs.on_apply(sim, self, entry)
            sm.apply(entry)
            if entry.kind is EntryKind.CONF_CHANGE:
                cc = ConfChange.decode(entry.data)
                sim.note("conf", f"{self.id} applies @{entry.index} {cc.op.value} {cc.node}")
        for rs in rd.read_states:
            obs.on_read_state(sim, self, rs)
            self.reads.append(rs)
        if self.reads:
            waiting = []
            for rs in self.reads:
                if rs.index <= sm.applied:
                    obs.on_read_served(sim, self, rs)
                else:
                    waiting.append(rs)
            self.reads = waiting
        if rd.soft_state is not None:
            ss = rd.soft_state
            sim.note("role", f"{self.id} {ss.role.value} term={ss.term} leader={ss.leader}")
        # 4. acknowledge
        raft.advance(rd)
        obs.on_input(sim, self)


def default_config(node_id: str) -> RaftConfig:
    return RaftConfig(id=node_id)


def bootstrap_entries(ids: Iterable[str]) -> list[Entry]:
    """One committed term-1 PROMOTE entry per founding member, in sorted order."""
    return [
        Entry(1, index, ConfChange(ConfChangeOp.PROMOTE, node_id).encode(), EntryKind.CONF_CHANGE)
        for index, node_id in enumerate(sorted(ids), start=1)
    ]


def with_config(**overrides: Any) -> Callable[[str], RaftConfig]:
    """A config factory: every node gets ``RaftConfig(id=..., **overrides)``."""
    base = RaftConfig(id="")

    def make(node_id: str) -> RaftConfig:
        return replace(base, id=node_id, **overrides)

    return make
