"""What the Raft core and its runtime exchange: the config a node is built with, the Ready
bundles it hands back, its roles, and the errors its inputs raise.

Kept apart from ``core.py`` so that the modules ``RaftNode`` is assembled from can name these
types without importing the class they are part of. ``agent.raft.core`` re-exports them all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.raft.messages import Message
from agent.raft.types import Entry, HardState, Snapshot


class Role(enum.Enum):
    """What a node is doing in the current term (pre-candidates have not raised it yet)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """Raised by ``propose*``, ``transfer_leadership`` on a node that is not the leader.

    ``leader`` is the id of the known leader, or None.
    """

    def __init__(self, leader: str | None, message: str = "") -> None:
        super().__init__(
            message
            or (f"not the leader; the leader is {leader}" if leader else "no leader is known")
        )
        self.leader = leader


class ProposalDropped(Exception):
    """A proposal the node cannot take now (e.g. a conf change while another is pending, a
    removed node, a leader transfer in progress). The message says why."""


class SnapshotConfChanged(ValueError):
    """``compact``/``create_snapshot`` at an index before the last applied membership change:
    the node no longer knows the membership in force there, which the snapshot must record.
    Take the snapshot again at a later applied index."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: str
    election_ticks: int = 10
    """A follower that hears no leader for a random time in [election_ticks, 2*election_ticks)
    ticks starts an election (100 ms ticks → 1 s, as etcd)."""
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    """Serve ReadIndex from the leader lease without a heartbeat round (needs check_quorum)."""
    max_entries_per_append: int = 512
    max_bytes_per_append: int = 1 << 20
    max_inflight_appends: int = 256
    fast_failover_ticks: int = 3
    """After ``report_unreachable(leader)`` a follower campaigns within a random
    [1, fast_failover_ticks] ticks instead of a full election timeout (pre-vote still guards
    against disrupting a leader that is alive for the others). Off when ``lease_reads`` is on:
    a lease is only sound if every follower honours it for a full election timeout."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read point: once the state machine has applied ``index``, a read tagged
    ``ctx`` may be served locally."""

    ctx: str
    index: int


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth showing (role, leader, term); reported in Ready when it changes."""

    role: Role
    leader: str | None
    term: int


@dataclass(slots=True)
class Ready:
    """One batch of work for the runtime: persist, then send, then apply, then ``advance``."""

    hard_state: HardState | None = None
    """Changed hard state to persist (None: unchanged)."""
    entries: list[Entry] = field(default_factory=list)
    """Entries to append durably. entries[0].index may be <= the last stored index: the stored
    suffix from that index on is replaced (a follower resolving a conflict)."""
    snapshot: Snapshot | None = None
    """A snapshot received from the leader: persist it, restore the state machine from it, and
    drop the stored log (the core only hands one out when its log did not already hold the
    snapshot's last entry, so every stored entry is superseded). Store it before ``entries``,
    which then continue right after it."""
    messages: list[Message] = field(default_factory=list)
    """To send after persisting."""
    committed: list[Entry] = field(default_factory=list)
    """To apply in order (after the snapshot, if any)."""
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: SoftState | None = None
