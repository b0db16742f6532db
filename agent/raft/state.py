"""The fields of one Raft node, and the few small helpers every part of it uses.

:class:`~agent.raft.core.RaftNode` is assembled from mixins, one module per job: ``election``,
``replication``, ``follower``, ``reads``, ``membership`` and ``transfer``. They all work on one
set of fields, so the fields are declared once, here, with what each one means;
``RaftNode.__init__`` sets them (the membership through ``MembershipMixin._restore_conf``). The
operations one job borrows from another are named here as well (for the type checker only, under
``TYPE_CHECKING``): that list is the whole of the coupling between the modules; each is
defined in the module noted beside it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from agent.raft.interface import RaftConfig, ReadState, Role, SoftState
from agent.raft.log import RaftLog
from agent.raft.messages import HeartbeatResponse, Message
from agent.raft.progress import Progress
from agent.raft.readonly import ReadOnlyQueue
from agent.raft.types import ConfState, EntryKind, HardState, Snapshot


class RaftState:
    """The state of one member, shared by the mixins that make up ``RaftNode``."""

    # --- identity and persistent state ---
    _cfg: RaftConfig
    _id: str
    _rng: random.Random
    """The only source of randomness (election timeouts), injected so runs replay."""
    _log: RaftLog
    _snapshot: Snapshot | None
    _term: int
    _vote: str | None
    _commit: int
    _applied: int
    _applying: int
    """Last index handed out in Ready.committed (``_applied`` once acknowledged)."""

    # --- membership (see membership.py) ---
    _conf: ConfState
    """The membership this node acts on."""
    _conf_index: int
    _applied_conf: ConfState
    """Exactly the membership as of the applied index: what a snapshot must record."""
    _applied_conf_index: int
    """Index of the last applied membership change (or of the snapshot the log starts at):
    ``_applied_conf`` is the membership at every applied index from here on, so a snapshot may
    be taken at any of them (``compact``)."""
    _voters: list[str]
    _members: list[str]
    _was_member: bool
    _removed: bool

    # --- role and election timer (see election.py) ---
    _role: Role
    _leader: str | None
    _election_elapsed: int
    _heartbeat_elapsed: int
    _timeout: int
    _fast_failover: bool
    _votes: dict[str, bool]
    _timeout_now_term: int
    """Term of a TimeoutNow still to act on (-1: none)."""

    # --- leader state (see replication.py, reads.py, transfer.py) ---
    _progress: dict[str, Progress]
    _send_all: bool
    """Every follower may have new entries to receive."""
    _send_all_force: bool
    """Every follower should get an append even without entries (the commit moved)."""
    _send_to: dict[str, bool]
    """Followers to consider sending to, and whether to send even an empty append."""
    _pending_conf_index: int
    _transfer_target: str | None
    _transfer_elapsed: int
    _leader_ticks: int
    """Ticks since this node became leader: the clock of its lease."""
    _reads: ReadOnlyQueue
    _reads_waiting_commit: list[tuple[str, str]]

    # --- hand-off to the runtime (see core.py) ---
    _outbox: list[Message]
    _read_states: list[ReadState]
    _snapshot_to_hand: Snapshot | None
    _prev_hs: HardState
    _prev_soft: SoftState

    if TYPE_CHECKING:
        # What one job calls in another.
        def _become_follower(self, term: int, leader: str | None) -> None: ...  # election
        def _campaign_real(self, transfer: bool) -> None: ...  # election
        def _check_quorum(self) -> bool: ...  # election
        def _check_can_propose(self) -> None: ...  # replication
        def _append_own(self, data: bytes, kind: EntryKind) -> int: ...  # replication
        def _sync_progress(self) -> None: ...  # replication
        def _maybe_commit(self) -> bool: ...  # replication
        def _broadcast_heartbeat(self, ctx: str) -> None: ...  # replication
        def _leader_read(self, ctx: str, origin: str) -> None: ...  # reads
        def _heartbeat_ctx(self) -> str: ...  # reads
        def _heartbeat_acked(self, pr: Progress, msg: HeartbeatResponse) -> None: ...  # reads
        def _refresh_conf(self) -> None: ...  # membership
        def _has_unapplied_conf_change(self) -> bool: ...  # membership
        def _tick_transfer(self) -> None: ...  # transfer
        def _send_timeout_now(self, target: str) -> None: ...  # transfer

    def _draw_timeout(self) -> int:
        ticks = self._cfg.election_ticks
        return self._rng.randrange(ticks, 2 * ticks)

    def _promotable(self) -> bool:
        return not self._removed and self._id in self._conf.voters

    def _send(self, msg: Message) -> None:
        self._outbox.append(msg)

    def _committed_in_term(self) -> bool:
        return self._log.term(self._commit) == self._term
