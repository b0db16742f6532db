"""Membership changes: learners, promotion and removal, one server at a time.

As in etcd, a change takes effect when its CONF_CHANGE entry is applied (not when appended), on
every node alike; the leader accepts a new change only once the previous one has been applied.
A removed leader steps down, handing over at once to an up-to-date voter (thesis §4.2.2).
"""

from __future__ import annotations

from agent.raft.interface import ProposalDropped, Role, SnapshotConfChanged
from agent.raft.progress import ProgressState
from agent.raft.state import RaftState
from agent.raft.types import ConfChange, ConfChangeOp, ConfState, Entry, EntryKind


def _decode_conf_change(entry: Entry) -> ConfChange | None:
    try:
        return ConfChange.decode(entry.data)
    except (ValueError, KeyError, TypeError):
        return None  # a malformed entry changes nothing, on every node alike


class MembershipMixin(RaftState):
    """Proposing and applying conf changes; touches ``_conf`` (and the sorted ``_voters`` and
    ``_members`` derived from it), ``_applied_conf``, ``_removed`` and, on a leader, the
    followers tracked in ``_progress``."""

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

    def learner_caught_up(self, peer: str) -> bool:
        """Leader only: is ``peer`` replicating and within one append batch of the commit?

        A learner that passes can be promoted without making the cluster wait for it.
        """
        pr = self._progress.get(peer) if self._role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.REPLICATE:
            return False
        return pr.match + self._cfg.max_entries_per_append >= self._commit

    def _restore_conf(self, conf: ConfState) -> None:
        """Set the membership at start: ``conf`` (the snapshot's, or the initial members), then
        every CONF_CHANGE up to the stored commit index.

        ``_conf`` is what the node acts on (changes up to the commit index at start, then each
        change as it is applied); ``_applied_conf`` is exactly the membership as of the applied
        index, which is what a snapshot must record.
        """
        self._conf = conf
        self._conf_index = self._log.offset
        self._applied_conf = conf
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
        self._voters = []
        self._members = []
        self._was_member = False
        self._removed = False
        self._refresh_conf()

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

    def _conf_at(self, index: int) -> ConfState:
        """The membership in force at the applied ``index``: the applied membership, provided no
        change was applied after ``index`` (the core keeps no older memberships).

        Raises:
            SnapshotConfChanged: a change was applied after ``index``.
        """
        if index < self._applied_conf_index:
            raise SnapshotConfChanged(
                f"compact({index}): a membership change was applied after it (at index "
                f"{self._applied_conf_index}), so the membership at {index} is not known"
            )
        return self._applied_conf

    def _has_unapplied_conf_change(self) -> bool:
        """Is a committed CONF_CHANGE still to be applied (the membership about to change)?"""
        lo = max(self._applied, self._conf_index) + 1
        return any(e.kind is EntryKind.CONF_CHANGE for e in self._log.slice(lo, self._commit + 1))

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
