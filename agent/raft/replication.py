"""The leader's side of log replication.

Proposals go into the leader's log; pending work is recorded as flags (``_send_all``,
``_send_to``) and turned into at most one append per follower when the runtime asks for a Ready,
so proposals made between two Readies travel together. Each follower's
:class:`~agent.raft.progress.Progress` paces what is sent (probe, pipelined replicate, or
snapshot); a rejected append backs ``next`` off using the follower's hint (fast log back-off: a
conflicting term at a time, not an entry at a time); the commit index moves to what a quorum
stores, but only through an entry of the leader's own term (§5.4.2, figure 8).
"""

from __future__ import annotations

from agent.raft.interface import NotLeader, ProposalDropped, Role
from agent.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    SnapshotRequest,
)
from agent.raft.progress import Progress, ProgressState
from agent.raft.quorum import committed_index
from agent.raft.state import RaftState
from agent.raft.types import Entry, EntryKind

SNAPSHOT_RETRY_ELECTIONS = 5
"""A follower that has not acknowledged a snapshot after this many election timeouts is probed
again (the snapshot may have been lost); the transport's report_unreachable is faster."""


class ReplicationMixin(RaftState):
    """Leader only: proposals, heartbeats, appends and snapshots out, acknowledgements in, and
    the commit index; touches the log, ``_progress``, the send flags and ``_commit``."""

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

    def _tick_leader(self) -> None:
        cfg = self._cfg
        self._leader_ticks += 1
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        self._tick_transfer()
        if self._election_elapsed >= cfg.election_ticks:
            self._election_elapsed = 0
            if cfg.check_quorum and not self._check_quorum():
                return
        retry = SNAPSHOT_RETRY_ELECTIONS * cfg.election_ticks
        for peer, pr in self._progress.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= retry:
                    pr.become_probe()
                    self._send_to[peer] = True
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._heartbeat_ctx())

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

    def _answered(self, peer: str) -> Progress | None:
        """``peer`` answered this leader: mark it active (for check-quorum, and so snapshots go
        to it again) and return its progress; None when not leading or not a member."""
        if self._role is not Role.LEADER:
            return None
        pr = self._progress.get(peer)
        if pr is not None:
            pr.recent_active = True
        return pr

    def _on_append_response(self, msg: AppendResponse) -> None:
        pr = self._answered(msg.src)
        if pr is None:
            return
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
        pr = self._answered(msg.src)
        if pr is None:
            return
        pr.probe_sent = False
        if (
            pr.state is ProgressState.REPLICATE
            and pr.inflight
            and (len(pr.inflight) >= self._cfg.max_inflight_appends)
        ):
            pr.inflight.popleft()  # unstick a window whose acks were lost
        if pr.match < self._log.last_index:
            self._send_to[msg.src] = True
        self._heartbeat_acked(pr, msg)
