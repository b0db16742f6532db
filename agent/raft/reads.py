"""Linearizable reads (Raft thesis §6.4): ReadIndex, and leader-lease reads.

A read is served at the leader's commit index once the leader knows it still leads: after a
heartbeat round acknowledged by a quorum (ReadIndex), or at once while its lease holds (lease
reads, with check-quorum). A follower forwards its read to the leader and gets the index back.
Heartbeats carry the context of the newest pending read or, with lease reads, a stamp of the
leader's clock.
"""

from __future__ import annotations

from agent.raft.interface import ReadState, Role
from agent.raft.messages import HeartbeatResponse, ReadIndexRequest, ReadIndexResponse
from agent.raft.progress import Progress
from agent.raft.quorum import has_quorum, majority
from agent.raft.state import RaftState

LEASE_STAMP = "\x00lease:"
"""Prefix of the heartbeat ctx a leader with lease reads uses to time its lease; client read
contexts are never sent in heartbeats in that mode unless a read fell back to a quorum round."""


class ReadsMixin(RaftState):
    """Read points for clients; touches ``_reads``, ``_reads_waiting_commit``, the followers'
    ``lease_ack`` and ``_read_states``."""

    def read_index(self, ctx: str) -> None:
        """Request a read point; it arrives as a ReadState in a later Ready (on a follower, via
        the leader). Silently dropped if no leader is known (the caller times out/retries)."""
        if self._removed:
            return
        if self._role is Role.LEADER:
            self._leader_read(ctx, self._id)
        elif self._leader is not None:
            self._send(ReadIndexRequest(term=self._term, src=self._id, dst=self._leader, ctx=ctx))

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

    def _heartbeat_ctx(self) -> str:
        """What the next heartbeat carries: the newest pending read's ctx (acks of it confirm
        every earlier read too), else, with lease reads, a stamp of the leader's clock."""
        ctx = self._reads.last_ctx()
        if not ctx and self._lease_reads_on():
            ctx = f"{LEASE_STAMP}{self._leader_ticks}"
        return ctx

    def _heartbeat_acked(self, pr: Progress, msg: HeartbeatResponse) -> None:
        """A follower echoed a heartbeat's ctx: renew its lease stamp, or count its ack for the
        pending reads (releasing those a quorum has now confirmed)."""
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
