"""The Raft state machine: pure, deterministic, free of I/O.

API CONTRACT (filled in by the core's implementation; signatures are fixed, others depend on them).

It never touches sockets, clocks, files or asyncio. It is driven from outside:

* ``tick()`` advances logical time by one tick (the runtime calls it every ``tick_interval``).
* ``step(msg)`` feeds one message received from a peer.
* ``propose(data)`` / ``propose_conf_change(cc)`` append to the leader's log.
* ``read_index(ctx)`` asks for a linearizable read point.
* ``transfer_leadership(target)``, ``campaign()``, ``report_unreachable(peer)``.

and hands back work in a :class:`Ready` bundle. The runtime's loop is::

    if node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)   # fsync; entries may overwrite a suffix
        transport.send(rd.messages)                            # only after persisting
        for entry in rd.committed: state_machine.apply(entry)  # in order
        node.advance(rd)                                       # acknowledges all of the above

Randomness (election timeouts) comes only from the injected ``random.Random``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from agent.raft.messages import Message
from agent.raft.types import ConfChange, ConfState, Entry, HardState, Snapshot


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """Raised by ``propose*``, ``transfer_leadership`` on a node that is not the leader (or is
    transferring leadership). ``leader`` is the id of the known leader, or None."""

    def __init__(self, leader: str | None, message: str = "") -> None:
        super().__init__(message or (f"not the leader; the leader is {leader}" if leader else "no leader is known"))
        self.leader = leader


class ProposalDropped(Exception):
    """A proposal the node cannot take now (e.g. a conf change while another is pending, a
    removed node, a leader transfer in progress). The message says why."""


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
    against disrupting a leader that is alive for the others)."""


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
    hard_state: HardState | None = None
    """Changed hard state to persist (None: unchanged)."""
    entries: list[Entry] = field(default_factory=list)
    """Entries to append durably. entries[0].index may be <= the last stored index: the stored
    suffix from that index on is replaced (a follower resolving a conflict)."""
    snapshot: Snapshot | None = None
    """A snapshot received from the leader: persist it, restore the state machine from it, and
    drop the stored log up to its index."""
    messages: list[Message] = field(default_factory=list)
    """To send after persisting."""
    committed: list[Entry] = field(default_factory=list)
    """To apply in order (after the snapshot, if any)."""
    read_states: list[ReadState] = field(default_factory=list)
    soft_state: SoftState | None = None


class RaftNode:
    """One member's Raft state machine."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        *,
        conf: ConfState,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: list[Entry] | None = None,
        applied: int | None = None,
    ) -> None:
        """Start fresh (``conf`` = the initial members) or restart from what was persisted.

        On restart pass the stored hard state, the latest snapshot (its meta.conf overrides
        ``conf``) and the stored entries after it. ``applied`` defaults to the snapshot index:
        committed entries after it are handed out again in the first Ready for re-application.
        CONF_CHANGE entries up to the stored commit index are re-applied to the membership at
        construction so the node knows its members at once.
        """
        raise NotImplementedError

    # --- inputs ---
    def tick(self) -> None: ...
    def step(self, msg: Message) -> None:
        """Feed a peer message. Messages from unknown or removed nodes, for another node, or
        stale in term are ignored (never raise on peer input)."""
    def propose(self, data: bytes) -> int:
        """Append ``data`` on the leader; return its log index. Raises NotLeader / ProposalDropped."""
        raise NotImplementedError
    def propose_conf_change(self, cc: ConfChange) -> int:
        """One membership change at a time: raises ProposalDropped while one is pending (appended
        but not yet applied) or before the leader has committed an entry of its own term."""
        raise NotImplementedError
    def read_index(self, ctx: str) -> None:
        """Request a read point; it arrives as a ReadState in a later Ready (on a follower, via
        the leader). Silently dropped if no leader is known (the caller times out/retries)."""
    def campaign(self) -> None:
        """Start an election now (a test or operator hook)."""
    def transfer_leadership(self, target: str) -> None:
        """Leader only: hand leadership to ``target`` (caught up first, then TimeoutNow);
        proposals are refused meanwhile; abandoned after an election timeout."""
    def report_unreachable(self, peer: str) -> None:
        """The transport lost its connection to ``peer``. A leader probes it again; a follower
        whose leader it is arms a fast election (see RaftConfig.fast_failover_ticks)."""
    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine has applied ``index`` and serialized itself as ``data``: keep that
        snapshot (for lagging followers), drop log entries up to ``index`` and return it for the
        runtime to persist."""
        raise NotImplementedError

    # --- outputs ---
    def has_ready(self) -> bool:
        raise NotImplementedError
    def ready(self) -> Ready:
        raise NotImplementedError
    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied. Committed CONF_CHANGE
        entries take effect in the membership here."""

    # --- introspection (read-only properties) ---
    # id, term, role, leader, commit, applied, last_index, conf (ConfState), vote,
    # is_removed (this node was removed from the membership),
    # progress() -> dict[peer, (match, next)] on the leader,
    # learner_caught_up(peer) -> bool on the leader.
