"""A follower's side of replication: appends, heartbeats and snapshots from the leader.

An append is accepted only where it continues the log (§5.3): otherwise it is rejected with a
hint (our last index at or below the leader's ``prev`` whose term is not newer than ``prev``'s),
so the leader can skip a whole conflicting term at once. Entries up to the commit index are
never rewritten; acknowledgements still queued for entries a new leader just overwrote are
withdrawn, since they would vouch for entries no longer on disk.
"""

from __future__ import annotations

from agent.raft.interface import Role
from agent.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    SnapshotRequest,
)
from agent.raft.state import RaftState


class FollowerMixin(RaftState):
    """Handles leader traffic; touches the log, ``_commit``, the snapshot and the outbox."""

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
