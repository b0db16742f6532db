"""The Raft state machine: pure, deterministic, free of I/O.

It never touches sockets, clocks, files or asyncio. It is driven from outside:

* ``tick()`` advances logical time by one tick (the runtime calls it every ``tick_interval``).
* ``step(msg)`` feeds one message received from a peer.
* ``propose(data)`` / ``propose_conf_change(cc)`` append to the leader's log.
* ``read_index(ctx)`` asks for a linearizable read point.
* ``transfer_leadership(target)``, ``campaign()``, ``report_unreachable(peer)``.

and hands back work in a :class:`Ready` bundle. The runtime's loop is::

    if node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)   # fsync; may overwrite a suffix
        transport.send(rd.messages)                            # only after persisting
        for entry in rd.committed: state_machine.apply(entry)  # in order
        node.advance(rd)                                       # acknowledges all of the above

Randomness (election timeouts) comes only from the injected ``random.Random``, and every set is
iterated in sorted order, so a run is reproducible from its inputs and seed.

Where this follows the Raft paper, the thesis and etcd's raft (whose design it borrows, not its
code): pre-vote and check-quorum (thesis §9.6), leader transfer (§3.10), single-server
membership changes that take effect when applied (as etcd), ReadIndex and lease reads (§6.4),
pipelined replication with probe/replicate/snapshot flow control, and fast log back-off.

Membership bootstrap: a new cluster's first log entries should be CONF_CHANGE entries naming the
initial members (the runtime writes them at term 1 and passes them as stored entries), so that a
member added later, starting with an empty ``conf``, learns the whole membership by replaying the
log. ``conf`` alone also works for the initial members themselves.

The node is one class assembled from a module per job (each a mixin over the shared fields of
``state.py``): ``election`` (roles, campaigns, votes, pre-vote, check-quorum), ``replication``
(the leader: appends, heartbeats, snapshots out, acknowledgements in, the commit index),
``follower`` (appends, heartbeats and snapshots in), ``reads`` (ReadIndex and lease reads),
``membership`` (conf changes) and ``transfer`` (leader transfer). This module holds what ties
them together: construction and restart, the inputs that are not one job's, message dispatch
and term checks, the Ready hand-off, and introspection. The types the runtime sees live in
``interface.py`` and are re-exported here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, ClassVar

from agent.raft.election import ElectionMixin
from agent.raft.follower import FollowerMixin
from agent.raft.interface import (
    NotLeader,
    ProposalDropped,
    RaftConfig,
    ReadState,
    Ready,
    Role,
    SnapshotConfChanged,
    SoftState,
)
from agent.raft.log import RaftLog
from agent.raft.membership import MembershipMixin
from agent.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from agent.raft.progress import ProgressState
from agent.raft.readonly import ReadOnlyQueue
from agent.raft.reads import LEASE_STAMP, ReadsMixin
from agent.raft.replication import SNAPSHOT_RETRY_ELECTIONS, ReplicationMixin
from agent.raft.transfer import TransferMixin
from agent.raft.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)

__all__ = [
    "LEASE_STAMP",
    "SNAPSHOT_RETRY_ELECTIONS",
    "NotLeader",
    "ProposalDropped",
    "RaftConfig",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotConfChanged",
    "SoftState",
]

_LEADER_TRAFFIC = (AppendRequest, Heartbeat, SnapshotRequest)
"""Messages only a leader sends; accepted from any sender whose term is current, since a
lagging member may not yet know a newly added leader (Raft thesis §4.1)."""


class RaftNode(
    ElectionMixin,
    ReplicationMixin,
    FollowerMixin,
    ReadsMixin,
    MembershipMixin,
    TransferMixin,
):
    """One member's Raft state machine.

    Public methods that belong to one job are defined in its module: ``propose_conf_change``
    and ``learner_caught_up`` (membership.py), ``read_index`` (reads.py) and
    ``transfer_leadership`` (transfer.py). ``_HANDLERS``, at the end of this module, maps each
    message type to the handler that takes it.
    """

    _HANDLERS: ClassVar[dict[type[Message], Callable[[RaftNode, Any], None]]]

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
        construction so the node knows its members at once (they are not applied twice when
        handed out again).

        Raises:
            ValueError: the config is inconsistent or the stored log is not contiguous.
        """
        if config.heartbeat_ticks < 1 or config.election_ticks <= config.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if config.fast_failover_ticks < 1 or config.max_inflight_appends < 1:
            raise ValueError("fast_failover_ticks and max_inflight_appends must be positive")
        self._cfg = config
        self._id = config.id
        self._rng = rng
        hs = hard_state or HardState()
        if snapshot is not None:
            meta = snapshot.meta
            self._log = RaftLog(meta.index, meta.term, entries or ())
            base_conf = meta.conf
        else:
            self._log = RaftLog(0, 0, entries or ())
            base_conf = conf
        self._snapshot = snapshot
        self._term = hs.term
        self._vote = hs.vote
        self._commit = min(max(hs.commit, self._log.offset), self._log.last_index)
        start = self._log.offset if applied is None else applied
        self._applied = min(max(start, self._log.offset), self._commit)
        self._applying = self._applied
        self._restore_conf(base_conf)

        # Role and election timer.
        self._role = Role.FOLLOWER
        self._leader = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._draw_timeout()
        self._fast_failover = False
        self._votes = {}
        self._timeout_now_term = -1

        # Leader state.
        self._progress = {}
        self._send_all = False
        self._send_all_force = False
        self._send_to = {}
        self._pending_conf_index = 0
        self._transfer_target = None
        self._transfer_elapsed = 0
        self._leader_ticks = 0
        self._reads = ReadOnlyQueue()
        self._reads_waiting_commit = []

        # Hand-off to the runtime.
        self._outbox = []
        self._read_states = []
        self._snapshot_to_hand = None
        self._prev_hs = hs
        self._prev_soft = self._soft_state()

    # ============================================================================ inputs ====

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self._removed:
            return
        if self._role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._timeout and self._promotable():
            self._election_elapsed = 0
            self._start_election()

    def step(self, msg: Message) -> None:
        """Feed a peer message; never raises on peer input.

        Ignored: messages for another node; messages of a stale term (answered where Raft says
        the sender must learn the newer term); anything but leader traffic from a node outside
        the membership, or at all once this node is removed. Leader traffic (append, heartbeat,
        snapshot) of a current term is accepted from any sender: a member that has not yet
        applied a change may not know its new leader, and Raft's safety does not depend on it.
        """
        if msg.dst != self._id or msg.src == self._id:
            return
        handler = self._HANDLERS.get(type(msg))
        if handler is None:
            return
        leader_traffic = isinstance(msg, _LEADER_TRAFFIC)
        if not leader_traffic and (self._removed or msg.src not in self._conf.members):
            return
        if msg.term > self._term:
            if isinstance(msg, VoteRequest):
                lease_applies = msg.pre_vote or self._cfg.check_quorum
                if lease_applies and not msg.transfer and self._in_lease():
                    return  # we hear from a live leader: do not let this node disrupt it
                if not msg.pre_vote:
                    self._become_follower(msg.term, None)
            elif isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
                pass  # carries the term we asked for; our term moves only if we campaign
            else:
                self._become_follower(msg.term, msg.src if leader_traffic else None)
        elif msg.term < self._term:
            self._answer_stale(msg)
            return
        handler(self, msg)

    def propose(self, data: bytes) -> int:
        """Append ``data`` on the leader; return its log index.

        Raises:
            NotLeader: this node is not the leader.
            ProposalDropped: this node was removed, or is handing leadership over.
        """
        self._check_can_propose()
        return self._append_own(data, EntryKind.NORMAL)

    def campaign(self) -> None:
        """Start an election now (a test or operator hook); pre-vote first when enabled."""
        if self._role is not Role.LEADER and self._promotable():
            self._start_election()

    def report_unreachable(self, peer: str) -> None:
        """The transport lost its connection to ``peer``. A leader probes it again; a follower
        whose leader it is arms a fast election (see RaftConfig.fast_failover_ticks)."""
        if self._role is Role.LEADER:
            pr = self._progress.get(peer)
            if pr is not None and pr.state is not ProgressState.PROBE:
                pr.become_probe()
        elif self._role is Role.FOLLOWER and peer == self._leader and not self._removed:
            if self._cfg.lease_reads and self._cfg.check_quorum:
                # A leader serving reads from its lease may be alive behind the broken link:
                # the followers' lease must run its full course before anyone replaces it.
                return
            # The lease is forgotten (elapsed >= election_ticks), so this node grants pre-votes,
            # and its own election fires within a few ticks.
            self._election_elapsed = max(self._election_elapsed, self._cfg.election_ticks)
            self._timeout = self._election_elapsed + self._rng.randint(
                1, self._cfg.fast_failover_ticks
            )
            self._fast_failover = True

    def create_snapshot(self, index: int, data: bytes) -> Snapshot:
        """The snapshot of the state machine as of the applied ``index``, serialized as
        ``data``, without compacting anything: what the runtime persists before it calls
        ``compact(index, data)`` (which returns the same snapshot).

        ``index`` may be any applied index still in the log (``first_index <= index <=
        applied``), as long as no membership change was applied after it: the snapshot
        records the membership in force at ``index``, and the core knows it exactly only from
        the last applied change on (``_applied_conf``). Like etcd's
        ``MemoryStorage.CreateSnapshot``, this lets the state machine be captured at one
        applied index and serialized while the node goes on applying entries.

        Raises:
            SnapshotConfChanged: a membership change was applied after ``index``.
            ValueError: ``index`` is not yet applied, or the log is already compacted through
                it (a snapshot at or after it exists).
        """
        if index > self._applied:
            raise ValueError(
                f"compact({index}): not applied yet (the applied index is {self._applied})"
            )
        if index <= self._log.offset:
            raise ValueError(
                f"compact({index}): the log is already compacted through {self._log.offset}"
            )
        term = self._log.term(index)
        if term is None:  # cannot happen: offset < index <= applied <= last
            raise ValueError(f"compact({index}): the entry is not in the log")
        return Snapshot(SnapshotMeta(index, term, self._conf_at(index)), data)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine as of the applied ``index`` is serialized as ``data``: keep that
        snapshot (for lagging followers), drop log entries up to ``index`` (those after it
        stay) and return it. See ``create_snapshot`` for which indexes are accepted; a refused
        compaction changes nothing.

        The runtime persists the snapshot before calling this (``create_snapshot`` gives it
        the same snapshot): once the log is compacted here, the entries up to ``index`` can be
        sent to a follower only as this snapshot.

        Raises:
            SnapshotConfChanged: a membership change was applied after ``index``.
            ValueError: ``index`` is not yet applied, or is not after the current snapshot.
        """
        snap = self.create_snapshot(index, data)
        self._log.compact(index)
        self._snapshot = snap
        return snap

    # =========================================================================== outputs ====

    def has_ready(self) -> bool:
        """True iff ``ready()`` would return something to do."""
        self._flush_appends()
        log = self._log
        return bool(
            self._outbox
            or self._read_states
            or self._snapshot_to_hand is not None
            or log.handed < log.last_index
            or self._commit > self._applying
            or self._hard_state() != self._prev_hs
            or self._soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        """Collect everything to persist, send and apply (see the module docstring)."""
        self._flush_appends()
        rd = Ready()
        hs = self._hard_state()
        if hs != self._prev_hs:
            rd.hard_state = hs
            self._prev_hs = hs
        soft = self._soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        rd.snapshot, self._snapshot_to_hand = self._snapshot_to_hand, None
        rd.entries = self._log.take_unhanded()
        rd.messages, self._outbox = self._outbox, []
        if self._commit > self._applying:
            rd.committed = self._log.slice(self._applying + 1, self._commit + 1)
            self._applying = self._commit
        rd.read_states, self._read_states = self._read_states, []
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied. Committed CONF_CHANGE
        entries take effect in the membership here."""
        if rd.snapshot is not None:
            self._applied = max(self._applied, rd.snapshot.meta.index)
        if rd.entries:
            self._log.stable_to(rd.entries)
        for entry in rd.committed:
            if entry.kind is EntryKind.CONF_CHANGE:
                self._apply_conf_entry(entry)
        if rd.committed:
            self._applied = max(self._applied, rd.committed[-1].index)
            if self._timeout_now_term >= 0:
                self._maybe_take_over()
        if self._role is Role.LEADER:
            me = self._progress[self._id]
            if self._log.persisted > me.match:
                me.match = self._log.persisted
                me.next = max(me.next, me.match + 1)
                self._maybe_commit()

    # ===================================================================== introspection ====

    @property
    def id(self) -> str:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> str | None:
        """The leader this node follows (itself when leading), or None."""
        return self._leader

    @property
    def vote(self) -> str | None:
        return self._vote

    @property
    def commit(self) -> int:
        return self._commit

    @property
    def applied(self) -> int:
        """Last index whose application the runtime acknowledged through ``advance``."""
        return self._applied

    @property
    def first_index(self) -> int:
        """First index still held in memory (one past the snapshot)."""
        return self._log.first_index

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def last_term(self) -> int:
        return self._log.last_term

    @property
    def conf(self) -> ConfState:
        """The membership this node acts on."""
        return self._conf

    @property
    def is_removed(self) -> bool:
        """This node applied a membership without itself after having been a member."""
        return self._removed

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot: taken by ``compact``, installed from a leader, or restored."""
        return self._snapshot

    @property
    def transfer_target(self) -> str | None:
        """Leader only: the voter leadership is being handed to, if a transfer is under way."""
        return self._transfer_target

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi`` still in memory (persisted or not yet)."""
        return self._log.slice(lo, hi)

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index`` (the snapshot point included), if known."""
        return self._log.term(index)

    def progress(self) -> dict[str, tuple[int, int]]:
        """Leader only: ``{peer: (match, next)}`` for every member, itself included."""
        if self._role is not Role.LEADER:
            return {}
        return {peer: (pr.match, pr.next) for peer, pr in self._progress.items()}

    # ========================================================================= internals ====

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._commit)

    def _soft_state(self) -> SoftState:
        return SoftState(self._role, self._leader, self._term)

    def _answer_stale(self, msg: Message) -> None:
        """Tell a sender of an old term about ours where it would otherwise never learn it."""
        if isinstance(msg, _LEADER_TRAFFIC):
            # A deposed leader (perhaps cut off by check-quorum elsewhere) must step down.
            self._send(HeartbeatResponse(term=self._term, src=self._id, dst=msg.src))
        elif isinstance(msg, VoteRequest):
            # §5.1: reject, with our term. A pre-candidate never raises its term by itself,
            # so without this it could not catch up with a cluster that moved on.
            self._send(
                VoteResponse(
                    term=self._term,
                    src=self._id,
                    dst=msg.src,
                    granted=False,
                    pre_vote=msg.pre_vote,
                )
            )


RaftNode._HANDLERS = {
    VoteRequest: RaftNode._on_vote_request,
    VoteResponse: RaftNode._on_vote_response,
    AppendRequest: RaftNode._on_append,
    AppendResponse: RaftNode._on_append_response,
    Heartbeat: RaftNode._on_heartbeat,
    HeartbeatResponse: RaftNode._on_heartbeat_response,
    SnapshotRequest: RaftNode._on_snapshot,
    TimeoutNow: RaftNode._on_timeout_now,
    ReadIndexRequest: RaftNode._on_read_index_request,
    ReadIndexResponse: RaftNode._on_read_index_response,
}
