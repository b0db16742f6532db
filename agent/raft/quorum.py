"""Majority arithmetic: the only place that knows what "a quorum of voters" means.

Kept apart from the state machine so commit, election and read-index decisions all share one
small, obviously correct definition. Only voters count; learners never appear here.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Container, Mapping


class VoteResult(enum.Enum):
    """Outcome of an election as far as the votes received so far decide it."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(size: int) -> int:
    """How many voters out of ``size`` form a majority (1 for a single voter)."""
    return size // 2 + 1


def committed_index(voters: Collection[str], match: Mapping[str, int]) -> int:
    """The highest index that a majority of ``voters`` have stored.

    ``match`` maps a voter to the last index known to be on its disk (missing voters count as 0).
    With no voters at all nothing can be committed, so the answer is 0.
    """
    if not voters:
        return 0
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    return indexes[majority(len(indexes)) - 1]


def vote_result(voters: Collection[str], votes: Mapping[str, bool]) -> VoteResult:
    """Whether ``votes`` (voter -> granted) already win or lose an election among ``voters``.

    Votes from nodes that are not voters are ignored, so a stale or confused peer cannot tip it.
    """
    need = majority(len(voters))
    granted = rejected = 0
    for voter in voters:
        answer = votes.get(voter)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    if granted >= need:
        return VoteResult.WON
    if rejected > len(voters) - need:
        return VoteResult.LOST
    return VoteResult.PENDING


def has_quorum(voters: Collection[str], acked: Container[str]) -> bool:
    """True if a majority of ``voters`` are in ``acked`` (False when there are no voters)."""
    if not voters:
        return False
    return sum(1 for v in voters if v in acked) >= majority(len(voters))
