"""Leadership transfer (Raft thesis §3.10).

The leader stops taking proposals, brings the target's log up to date, then sends it TimeoutNow;
the target campaigns at once, skipping pre-vote and overriding the other followers' lease. A
transfer that has not completed within an election timeout is abandoned.
"""

from __future__ import annotations

from agent.raft.interface import NotLeader, ProposalDropped, Role
from agent.raft.messages import TimeoutNow
from agent.raft.state import RaftState


class TransferMixin(RaftState):
    """Handing leadership over; touches ``_transfer_target``, ``_transfer_elapsed`` and, on the
    target, ``_timeout_now_term``."""

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

    def _tick_transfer(self) -> None:
        """Leader tick: give up a transfer whose target has not taken over in time."""
        if self._transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_ticks:
                self._transfer_target = None  # the target did not take over in time

    def _send_timeout_now(self, target: str) -> None:
        self._send(TimeoutNow(term=self._term, src=self._id, dst=target))

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
