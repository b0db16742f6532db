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
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.raft.log import RaftLog
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
from agent.raft.progress import Progress, ProgressState
from agent.raft.quorum import VoteResult, committed_index, has_quorum, majority, vote_result
from agent.raft.readonly import ReadOnlyQueue
from agent.raft.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)


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


_LEADER_TRAFFIC = (AppendRequest, Heartbeat, SnapshotRequest)
"""Messages only a leader sends; accepted from any sender whose term is current, since a
lagging member may not yet know a newly added leader (Raft thesis §4.1)."""

LEASE_STAMP = "\x00lease:"
"""Prefix of the heartbeat ctx a leader with lease reads uses to time its lease; client read
contexts are never sent in heartbeats in that mode unless a read fell back to a quorum round."""

SNAPSHOT_RETRY_ELECTIONS = 5
"""A follower that has not acknowledged a snapshot after this many election timeouts is probed
again (the snapshot may have been lost); the transport's report_unreachable is faster."""


def _decode_conf_change(entry: Entry) -> ConfChange | None:
    try:
        return ConfChange.decode(entry.data)
    except (ValueError, KeyError, TypeError):
        return None  # a malformed entry changes nothing, on every node alike


class RaftNode:
    """One member's Raft state machine."""

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
        """Last index handed out in Ready.committed (``_applied`` once acknowledged)."""

        # Membership: ``_conf`` is what the node acts on (changes up to the commit index at
        # start, then each change as it is applied); ``_applied_conf`` is exactly the
        # membership as of the applied index, which is what a snapshot must record.
        self._conf = base_conf
        self._conf_index = self._log.offset
        self._applied_conf = base_conf
        self._applied_conf_index = self._log.offset
        for entry in self._log.slice(self._log.offset + 1, self._commit + 1):
            if entry.kind is EntryKind.CONF_CHANGE:
                cc = _decode_conf_change(entry)
                if cc is None:
                    continue
                self._conf = cc.apply_to(self._conf)
                self._conf_index = entry.index
                if entry.index <= self._applied:
                    self._applied_conf = cc.apply_to(self._applied_conf)
                    self._applied_conf_index = entry.index
        self._voters: list[str] = []
        self._members: list[str] = []
        self._was_member = False
        self._removed = False
        self._refresh_conf()

        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._draw_timeout()
        self._fast_failover = False
        self._votes: dict[str, bool] = {}
        self._timeout_now_term = -1
        """Term of a TimeoutNow still to act on (-1: none)."""

        # Leader state.
        self._progress: dict[str, Progress] = {}
        self._send_all = False
        """Every follower may have new entries to receive."""
        self._send_all_force = False
        """Every follower should get an append even without entries (the commit moved)."""
        self._send_to: dict[str, bool] = {}
        """Followers to consider sending to, and whether to send even an empty append."""
        self._pending_conf_index = 0
        self._transfer_target: str | None = None
        self._transfer_elapsed = 0
        self._leader_ticks = 0
        """Ticks since this node became leader: the clock of its lease."""
        self._reads = ReadOnlyQueue()
        self._reads_waiting_commit: list[tuple[str, str]] = []

        # Hand-off to the runtime.
        self._outbox: list[Message] = []
        self._read_states: list[ReadState] = []
        self._snapshot_to_hand: Snapshot | None = None
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

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a membership change on the leader; return its log index.

        One change at a time: refused while one is pending (appended but not yet applied) or
        before the leader has applied an entry of its own term, and refused when it makes no
        sense for the current membership (promoting a non-learner, removing a non-member or
        the last voter, adding an existing member).

        Raises:
            NotLeader: this node is not the leader.
            ProposalDropped: the change cannot be taken now; the message says why.
        """
        self._check_can_propose()
        if self._pending_conf_index > self._applied:
            raise ProposalDropped(
                "a membership change is still in progress (or the new leader has not yet "
                "applied an entry of its term); retry shortly"
            )
        conf = self._conf
        node = cc.node
        if cc.op is ConfChangeOp.ADD_LEARNER and node in conf.members:
            role = "voter" if node in conf.voters else "learner"
            raise ProposalDropped(f"{node} is already a {role}")
        if cc.op is ConfChangeOp.PROMOTE and node not in conf.learners:
            why = "already a voter" if node in conf.voters else "not a learner; add it first"
            raise ProposalDropped(f"cannot promote {node}: {why}")
        if cc.op is ConfChangeOp.REMOVE:
            if node not in conf.members:
                raise ProposalDropped(f"{node} is not a member")
            if conf.voters == {node}:
                raise ProposalDropped(f"{node} is the last voter; it cannot be removed")
        index = self._append_own(cc.encode(), EntryKind.CONF_CHANGE)
        self._pending_conf_index = index
        return index

    def read_index(self, ctx: str) -> None:
        """Request a read point; it arrives as a ReadState in a later Ready (on a follower, via
        the leader). Silently dropped if no leader is known (the caller times out/retries)."""
        if self._removed:
            return
        if self._role is Role.LEADER:
            self._leader_read(ctx, self._id)
        elif self._leader is not None:
            self._send(ReadIndexRequest(term=self._term, src=self._id, dst=self._leader, ctx=ctx))

    def campaign(self) -> None:
        """Start an election now (a test or operator hook); pre-vote first when enabled."""
        if self._role is not Role.LEADER and self._promotable():
            self._start_election()

    def transfer_leadership(self, target: str) -> None:
        """Leader only: hand leadership to ``target`` (caught up first, then TimeoutNow);
        proposals are refused meanwhile; abandoned after an election timeout.

        Raises:
            NotLeader: this node is not the leader.
            ProposalDropped: ``target`` is not a voter, or this node was removed.
        """
        if self._removed:
            raise ProposalDropped("this node was removed from the cluster")
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if target == self._id:
            self._transfer_target = None
            return
        if target not in self._conf.voters:
            raise ProposalDropped(f"{target} is not a voter; leadership can only go to a voter")
        if self._transfer_target == target:
            return
        self._transfer_target = target
        self._transfer_elapsed = 0
        if self._progress[target].match == self._log.last_index:
            self._send_timeout_now(target)
        else:
            self._send_to[target] = False

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

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine has applied ``index`` and serialized itself as ``data``: keep that
        snapshot (for lagging followers), drop log entries up to ``index`` and return it for the
        runtime to persist.

        ``index`` must be the applied index (``self.applied``): the snapshot records the
        membership in force there, which the core knows exactly only at that point.

        Raises:
            ValueError: ``index`` is not the applied index.
        """
        if index != self._applied:
            raise ValueError(f"compact({index}): only the applied index {self._applied} can be")
        term = self._log.term(index)
        if term is None:  # cannot happen: offset <= applied <= last
            raise ValueError(f"compact({index}): the entry is not in the log")
        snap = Snapshot(SnapshotMeta(index, term, self._applied_conf), data)
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

    def learner_caught_up(self, peer: str) -> bool:
        """Leader only: is ``peer`` replicating and within one append batch of the commit?

        A learner that passes can be promoted without making the cluster wait for it.
        """
        pr = self._progress.get(peer) if self._role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.REPLICATE:
            return False
        return pr.match + self._cfg.max_entries_per_append >= self._commit

    # ========================================================================= internals ====

    # --- state ---

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._commit)

    def _soft_state(self) -> SoftState:
        return SoftState(self._role, self._leader, self._term)

    def _draw_timeout(self) -> int:
        ticks = self._cfg.election_ticks
        return self._rng.randrange(ticks, 2 * ticks)

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._draw_timeout()
        self._fast_failover = False

    def _in_lease(self) -> bool:
        """Heard from a live leader (or are it) within the last election timeout."""
        return self._leader is not None and self._election_elapsed < self._cfg.election_ticks

    def _promotable(self) -> bool:
        return not self._removed and self._id in self._conf.voters

    def _send(self, msg: Message) -> None:
        self._outbox.append(msg)

    def _committed_in_term(self) -> bool:
        return self._log.term(self._commit) == self._term

    # --- role changes ---

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self._term:
            self._term = term
            self._vote = None
        self._role = Role.FOLLOWER
        self._leader = leader
        self._reset_timers()
        self._votes = {}
        self._clear_leader_state()

    def _clear_leader_state(self) -> None:
        self._progress = {}
        self._send_all = self._send_all_force = False
        self._send_to = {}
        self._transfer_target = None
        self._reads.clear()
        self._reads_waiting_commit = []

    def _start_election(self) -> None:
        if self._has_unapplied_conf_change():
            return  # our membership may be about to change: campaign once it has
        if self._cfg.pre_vote:
            self._campaign_pre()
        else:
            self._campaign_real(transfer=False)

    def _has_unapplied_conf_change(self) -> bool:
        lo = max(self._applied, self._conf_index) + 1
        return any(e.kind is EntryKind.CONF_CHANGE for e in self._log.slice(lo, self._commit + 1))

    def _campaign_pre(self) -> None:
        """Thesis §9.6: ask whether we could win before disturbing anyone's term."""
        self._role = Role.PRE_CANDIDATE
        self._leader = None
        self._reset_timers()
        self._votes = {self._id: True}
        if vote_result(self._voters, self._votes) is VoteResult.WON:
            self._campaign_real(transfer=False)
            return
        self._request_votes(self._term + 1, pre_vote=True, transfer=False)

    def _campaign_real(self, transfer: bool) -> None:
        self._term += 1
        self._vote = self._id
        self._role = Role.CANDIDATE
        self._leader = None
        self._reset_timers()
        self._votes = {self._id: True}
        if vote_result(self._voters, self._votes) is VoteResult.WON:
            self._become_leader()
            return
        self._request_votes(self._term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, pre_vote: bool, transfer: bool) -> None:
        last_index, last_term = self._log.last_index, self._log.last_term
        for voter in self._voters:
            if voter != self._id:
                self._send(
                    VoteRequest(
                        term=term,
                        src=self._id,
                        dst=voter,
                        last_index=last_index,
                        last_term=last_term,
                        pre_vote=pre_vote,
                        transfer=transfer,
                    )
                )

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader = self._id
        self._leader_ticks = 0
        self._reset_timers()
        self._votes = {}
        self._clear_leader_state()
        self._sync_progress()
        for peer, pr in self._progress.items():
            pr.recent_active = peer == self._id  # followers prove themselves by answering
        me = self._progress[self._id]
        me.match = self._log.persisted
        me.become_replicate()
        # §8 / figure 8: an entry of our own term, so earlier entries can commit through it.
        self._pending_conf_index = self._append_own(b"", EntryKind.NORMAL)

    def _sync_progress(self) -> None:
        """Track exactly the current members, in sorted order (new ones start probing)."""
        old = self._progress
        nxt = self._log.last_index + 1
        fresh: dict[str, Progress] = {}
        for member in self._members:
            pr = old.get(member)
            if pr is None:
                pr = Progress(nxt)
                pr.recent_active = True  # give a new member a full period to answer
            fresh[member] = pr
        self._progress = fresh

    # --- membership ---

    def _refresh_conf(self) -> None:
        self._voters = sorted(self._conf.voters)
        self._members = sorted(self._conf.members)
        if self._id in self._conf.members:
            self._was_member = True
            self._removed = False
        elif self._was_member:
            self._removed = not self._readded_later()

    def _readded_later(self) -> bool:
        """Is this node added back by a change already in the log after the one just applied?

        A machine removed and later re-added under the same name replays its old removal when
        it catches up from the log; it must not take that for its own removal.
        """
        for entry in self._log.slice(self._conf_index + 1, self._log.last_index + 1):
            if entry.kind is EntryKind.CONF_CHANGE:
                cc = _decode_conf_change(entry)
                if cc is not None and cc.node == self._id and cc.op is not ConfChangeOp.REMOVE:
                    return True
        return False

    def _apply_conf_entry(self, entry: Entry) -> None:
        cc = _decode_conf_change(entry)
        if cc is None:
            return
        if entry.index > self._applied_conf_index:
            self._applied_conf = cc.apply_to(self._applied_conf)
            self._applied_conf_index = entry.index
        if entry.index <= self._conf_index:
            return  # already applied when the node started
        self._conf = cc.apply_to(self._conf)
        self._conf_index = entry.index
        self._refresh_conf()
        if self._role is Role.LEADER:
            self._leader_conf_changed()
        elif self._role is not Role.FOLLOWER and not self._promotable():
            self._become_follower(self._term, None)

    def _leader_conf_changed(self) -> None:
        if self._id not in self._conf.voters:
            # Removed (thesis §4.2.2): step down, handing over to an up-to-date voter at once.
            best = max(
                (v for v in self._voters if v in self._progress),
                key=lambda v: self._progress[v].match,
                default=None,
            )
            if best is not None and self._progress[best].match == self._log.last_index:
                self._send_timeout_now(best)
            self._become_follower(self._term, None)
            return
        self._sync_progress()
        if self._transfer_target is not None and self._transfer_target not in self._conf.voters:
            self._transfer_target = None
        self._send_all = True
        self._maybe_commit()

    # --- leader ---

    def _check_can_propose(self) -> None:
        if self._removed:
            raise ProposalDropped("this node was removed from the cluster")
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transfer_target is not None:
            raise ProposalDropped(
                f"leadership is being transferred to {self._transfer_target}; retry there"
            )

    def _append_own(self, data: bytes, kind: EntryKind) -> int:
        index = self._log.last_index + 1
        self._log.append(Entry(self._term, index, data, kind))
        self._send_all = True
        return index

    def _tick_leader(self) -> None:
        cfg = self._cfg
        self._leader_ticks += 1
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_ticks:
                self._transfer_target = None  # the target did not take over in time
        if self._election_elapsed >= cfg.election_ticks:
            self._election_elapsed = 0
            if cfg.check_quorum:
                active = [p for p, pr in self._progress.items() if pr.recent_active]
                if not has_quorum(self._voters, {*active, self._id}):
                    self._become_follower(self._term, None)
                    return
                for peer, pr in self._progress.items():
                    pr.recent_active = peer == self._id
        retry = SNAPSHOT_RETRY_ELECTIONS * cfg.election_ticks
        for peer, pr in self._progress.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= retry:
                    pr.become_probe()
                    self._send_to[peer] = True
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            ctx = self._reads.last_ctx()
            if not ctx and self._lease_reads_on():
                ctx = f"{LEASE_STAMP}{self._leader_ticks}"
            self._broadcast_heartbeat(ctx)

    def _broadcast_heartbeat(self, ctx: str) -> None:
        for peer, pr in self._progress.items():
            if peer != self._id:
                self._send(
                    Heartbeat(
                        term=self._term,
                        src=self._id,
                        dst=peer,
                        commit=min(pr.match, self._commit),
                        ctx=ctx,
                    )
                )

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum stores, if it is of our term (figure 8)."""
        match = {v: self._progress[v].match for v in self._voters if v in self._progress}
        index = committed_index(self._voters, match)
        if index <= self._commit or self._log.term(index) != self._term:
            return False
        first_in_term = not self._committed_in_term()
        self._commit = index
        self._send_all_force = True
        if first_in_term:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for ctx, origin in waiting:
                self._leader_read(ctx, origin)
        return True

    def _flush_appends(self) -> None:
        """Turn pending replication work into at most one append per follower."""
        if not (self._send_all or self._send_all_force or self._send_to):
            return
        send_to, send_all, force_all = self._send_to, self._send_all, self._send_all_force
        self._send_to = {}
        self._send_all = self._send_all_force = False
        if self._role is not Role.LEADER:
            return
        for peer, pr in self._progress.items():
            if peer == self._id:
                continue
            forced = send_to.get(peer)
            if send_all or force_all or forced is not None:
                self._send_append(peer, pr, force_all or bool(forced))

    def _send_append(self, peer: str, pr: Progress, force: bool) -> None:
        cfg = self._cfg
        if pr.is_paused(cfg.max_inflight_appends):
            return
        log = self._log
        if pr.next > log.last_index + 1:
            pr.next = log.last_index + 1
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            self._send_snapshot(peer, pr)
            return
        ents = log.batch(pr.next, cfg.max_entries_per_append, cfg.max_bytes_per_append)
        if not ents and not force:
            return
        self._send(
            AppendRequest(
                term=self._term,
                src=self._id,
                dst=peer,
                prev_index=prev,
                prev_term=prev_term,
                entries=tuple(ents),
                commit=self._commit,
            )
        )
        pr.sent(ents[-1].index if ents else None)

    def _send_snapshot(self, peer: str, pr: Progress) -> None:
        snap = self._snapshot
        if snap is None or not pr.recent_active:
            return  # nothing to send yet, or the peer seems down: wait until it answers
        pr.become_snapshot(snap.meta.index)
        self._send(SnapshotRequest(term=self._term, src=self._id, dst=peer, snapshot=snap))

    def _send_timeout_now(self, target: str) -> None:
        self._send(TimeoutNow(term=self._term, src=self._id, dst=target))

    def _leader_read(self, ctx: str, origin: str) -> None:
        """Thesis §6.4: serve at the commit index once leadership is confirmed."""
        if not self._committed_in_term():
            self._reads_waiting_commit.append((ctx, origin))
            return
        index = self._commit
        if self._voters == [self._id] or self._lease_valid():
            self._release_read(ctx, origin, index)
        elif self._reads.add(ctx, origin, index, self._id):
            self._broadcast_heartbeat(ctx)

    def _lease_reads_on(self) -> bool:
        return self._cfg.lease_reads and self._cfg.check_quorum

    def _lease_valid(self) -> bool:
        """May a read be served from the leader lease alone, without a quorum round?

        A voter that acknowledged a heartbeat sent at leader tick ``t`` helps elect nobody
        else (check-quorum lease) until an election timeout after it received it. Once a quorum
        has acknowledged heartbeats sent at ``t`` or later, no other leader can exist before
        about ``t + election_ticks``; two ticks of margin cover tick phase and clock drift.
        Never during a leadership transfer, whose TimeoutNow overrides the followers' lease.
        """
        if not self._lease_reads_on() or self._transfer_target is not None:
            return False
        now = self._leader_ticks
        stamps = sorted(
            (now if v == self._id else self._progress[v].lease_ack)
            for v in self._voters
            if v in self._progress
        )
        if len(stamps) < len(self._voters):
            return False
        acked = stamps[len(stamps) - majority(len(stamps))]
        return acked >= 0 and now - acked < self._cfg.election_ticks - 2

    def _release_read(self, ctx: str, origin: str, index: int) -> None:
        if origin == self._id:
            self._read_states.append(ReadState(ctx, index))
        else:
            self._send(
                ReadIndexResponse(term=self._term, src=self._id, dst=origin, ctx=ctx, index=index)
            )

    # --- follower ---

    def _accept_leader(self, leader: str) -> bool:
        """A valid leader of our term spoke: follow it and restart the election timer."""
        if self._role is Role.LEADER:
            return False  # two leaders in one term cannot happen; ignore a confused peer
        if self._role is not Role.FOLLOWER:
            self._become_follower(self._term, leader)
        self._leader = leader
        self._election_elapsed = 0
        if self._fast_failover:
            self._fast_failover = False
            self._timeout = self._draw_timeout()
        return True

    def _commit_to(self, index: int) -> None:
        if index > self._commit:
            self._commit = index

    def _respond_append(self, dst: str, index: int) -> None:
        """Acknowledge an append; consecutive acks to one leader collapse into the last one."""
        out = self._outbox
        if out:
            prev = out[-1]
            if (
                isinstance(prev, AppendResponse)
                and not prev.reject
                and prev.dst == dst
                and prev.term == self._term
                and prev.index <= index
            ):
                out.pop()
        self._send(AppendResponse(term=self._term, src=self._id, dst=dst, index=index))

    def _withdraw_acks_from(self, index: int) -> None:
        """Drop queued acks that vouch for entries at or after ``index``, just overwritten.

        They answered an older leader and have not left yet; sent after this Ready they would
        claim entries no longer on disk (as if lost in the network, which Raft tolerates).
        """
        self._outbox = [
            m
            for m in self._outbox
            if not (isinstance(m, AppendResponse) and not m.reject and m.index >= index)
        ]

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

    # ========================================================================== handlers ====

    def _on_vote_request(self, msg: VoteRequest) -> None:
        can_vote = (
            self._vote == msg.src
            or (self._vote is None and self._leader is None)
            or (msg.pre_vote and msg.term > self._term)
        )
        if msg.pre_vote and not msg.transfer and self._in_lease():
            can_vote = False
        if can_vote and self._log.is_up_to_date(msg.last_index, msg.last_term):
            if msg.pre_vote:
                reply = VoteResponse(
                    term=msg.term, src=self._id, dst=msg.src, granted=True, pre_vote=True
                )
            else:
                self._vote = msg.src
                self._election_elapsed = 0
                reply = VoteResponse(term=self._term, src=self._id, dst=msg.src, granted=True)
        else:
            reply = VoteResponse(
                term=self._term, src=self._id, dst=msg.src, granted=False, pre_vote=msg.pre_vote
            )
        self._send(reply)

    def _on_vote_response(self, msg: VoteResponse) -> None:
        if msg.src not in self._conf.voters:
            return
        if self._role is Role.PRE_CANDIDATE:
            expected = self._term + 1 if msg.granted else self._term
            if not msg.pre_vote or msg.term != expected:
                return
        elif self._role is Role.CANDIDATE:
            if msg.pre_vote or msg.term != self._term:
                return
        else:
            return
        self._votes.setdefault(msg.src, msg.granted)
        result = vote_result(self._voters, self._votes)
        if result is VoteResult.WON:
            if self._role is Role.PRE_CANDIDATE:
                self._campaign_real(transfer=False)
            else:
                self._become_leader()
        elif result is VoteResult.LOST:
            self._become_follower(self._term, None)

    def _on_append(self, msg: AppendRequest) -> None:
        if not self._accept_leader(msg.src):
            return
        ents = msg.entries
        prev, prev_term = msg.prev_index, msg.prev_term
        if ents:
            expected, term = prev + 1, prev_term
            for entry in ents:
                if entry.index != expected or entry.term < term or entry.term > msg.term:
                    return  # malformed: not a contiguous, term-ordered run after prev
                expected, term = expected + 1, entry.term
        log = self._log
        commit = self._commit
        if prev < commit:
            # Everything up to our commit index matches any leader's log (§5.4): skip it.
            skip = commit - prev
            if skip >= len(ents):
                self._respond_append(msg.src, commit)
                return
            ents = ents[skip:]
            prev, prev_term = commit, log.term(commit) or 0
        if log.term(prev) != prev_term:
            hint = log.last_at_or_below(prev, prev_term)
            self._send(
                AppendResponse(
                    term=self._term,
                    src=self._id,
                    dst=msg.src,
                    index=msg.prev_index,
                    reject=True,
                    hint_index=max(hint, 0),
                    hint_term=log.term(hint) or 0,
                )
            )
            return
        conflict = log.find_conflict(ents)
        if conflict:
            if conflict <= commit:
                return  # would overwrite a committed entry: never (a confused peer)
            if log.replace_from(ents[conflict - ents[0].index :]):
                self._withdraw_acks_from(conflict)
        last_new = prev + len(ents)
        self._commit_to(min(msg.commit, last_new))
        self._respond_append(msg.src, last_new)

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        if not self._accept_leader(msg.src):
            return
        # The leader sends min(commit, our match), which our log is known to hold.
        self._commit_to(min(msg.commit, self._log.last_index))
        self._send(HeartbeatResponse(term=self._term, src=self._id, dst=msg.src, ctx=msg.ctx))

    def _on_snapshot(self, msg: SnapshotRequest) -> None:
        if not self._accept_leader(msg.src):
            return
        snap = msg.snapshot
        meta = snap.meta
        if meta.term > msg.term:
            return
        if meta.index <= self._commit:
            self._respond_append(msg.src, self._commit)
            return
        if self._log.term(meta.index) == meta.term:
            # We hold the snapshot's last entry: the log is good; just commit through it.
            self._commit_to(meta.index)
            self._respond_append(msg.src, self._commit)
            return
        self._withdraw_acks_from(self._commit + 1)  # our uncommitted suffix is discarded
        self._log.restore(meta.index, meta.term)
        self._commit = self._applying = meta.index
        self._snapshot = self._snapshot_to_hand = snap
        self._conf = self._applied_conf = meta.conf
        self._conf_index = self._applied_conf_index = meta.index
        self._refresh_conf()
        self._respond_append(msg.src, meta.index)

    def _on_timeout_now(self, msg: TimeoutNow) -> None:
        # Thesis §3.10: the leader handed over; campaign at once, skipping pre-vote.
        if self._role is Role.FOLLOWER and msg.src == self._leader and self._promotable():
            self._timeout_now_term = self._term
            self._maybe_take_over()

    def _maybe_take_over(self) -> None:
        """Campaign on a TimeoutNow of this term, once no membership change awaits applying
        (the leader may hand over right as it applies a change we have not applied yet)."""
        if (
            self._timeout_now_term == self._term
            and self._role is Role.FOLLOWER
            and self._promotable()
            and not self._has_unapplied_conf_change()
        ):
            self._timeout_now_term = -1
            self._campaign_real(transfer=True)

    def _on_append_response(self, msg: AppendResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if msg.reject:
            if pr.state is ProgressState.SNAPSHOT:
                return  # answers an append sent before the snapshot
            hint = min(msg.hint_index, msg.index)
            match_hint = self._log.last_at_or_below(hint, msg.hint_term)
            if pr.decrease_to(msg.index, match_hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_to[msg.src] = True
            return
        if msg.index > self._log.last_index:
            return  # acknowledges entries we never had: a confused peer
        updated = pr.update(msg.index)
        if not (updated or (pr.state is ProgressState.PROBE and msg.index == pr.match)):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            if pr.match >= self._log.offset:
                pr.become_replicate()
        if updated and msg.src in self._conf.voters:
            self._maybe_commit()
        self._send_to.setdefault(msg.src, False)
        if msg.src == self._transfer_target and pr.match == self._log.last_index:
            self._send_timeout_now(msg.src)

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        if (
            pr.state is ProgressState.REPLICATE
            and pr.inflight
            and (len(pr.inflight) >= self._cfg.max_inflight_appends)
        ):
            pr.inflight.popleft()  # unstick a window whose acks were lost
        if pr.match < self._log.last_index:
            self._send_to[msg.src] = True
        if msg.ctx.startswith(LEASE_STAMP):
            stamp = msg.ctx[len(LEASE_STAMP) :]
            if stamp.isdigit() and int(stamp) <= self._leader_ticks:
                pr.lease_ack = max(pr.lease_ack, int(stamp))
        elif msg.ctx and msg.src in self._conf.voters:
            acks = self._reads.ack(msg.ctx, msg.src)
            if acks is not None and has_quorum(self._voters, acks):
                for req in self._reads.release_through(msg.ctx):
                    self._release_read(req.ctx, req.origin, req.index)

    def _on_read_index_request(self, msg: ReadIndexRequest) -> None:
        if self._role is Role.LEADER:
            self._leader_read(msg.ctx, msg.src)

    def _on_read_index_response(self, msg: ReadIndexResponse) -> None:
        if self._role is Role.FOLLOWER and msg.src == self._leader:
            self._read_states.append(ReadState(msg.ctx, msg.index))


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
