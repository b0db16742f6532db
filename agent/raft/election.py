"""Roles and elections: how a node becomes follower, (pre-)candidate or leader.

Raft §5.2 with the thesis' additions: pre-vote (§9.6) asks whether a campaign could win before
it raises anyone's term, so a node that was cut off cannot disrupt a healthy cluster when it
returns; check-quorum has a leader step down when a quorum stops answering; and a follower that
heard from a live leader within an election timeout (its lease) refuses to help depose it.
"""

from __future__ import annotations

from agent.raft.interface import Role
from agent.raft.messages import VoteRequest, VoteResponse
from agent.raft.quorum import VoteResult, has_quorum, vote_result
from agent.raft.state import RaftState
from agent.raft.types import EntryKind


class ElectionMixin(RaftState):
    """Role changes, campaigns and votes; touches the role, term, vote and election timer, and
    resets the leader state whenever the role changes."""

    def _in_lease(self) -> bool:
        """Heard from a live leader (or are it) within the last election timeout."""
        return self._leader is not None and self._election_elapsed < self._cfg.election_ticks

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._draw_timeout()
        self._fast_failover = False

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

    def _check_quorum(self) -> bool:
        """Check-quorum, once per election timeout: step down unless a quorum answered since
        the last check, then start a new period. False when this node stepped down."""
        active = [p for p, pr in self._progress.items() if pr.recent_active]
        if not has_quorum(self._voters, {*active, self._id}):
            self._become_follower(self._term, None)
            return False
        for peer, pr in self._progress.items():
            pr.recent_active = peer == self._id
        return True

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
