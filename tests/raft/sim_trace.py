"""One-line descriptions of messages and events, for the trace shown when a schedule fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotRequest,
    VoteRequest,
    VoteResponse,
)
from agent.raft.types import Entry


def _entries(entries: Sequence[Entry]) -> str:
    if not entries:
        return "[]"
    first, last = entries[0], entries[-1]
    if len(entries) == 1:
        return f"[{first.index}/t{first.term}]"
    return f"[{first.index}/t{first.term}..{last.index}/t{last.term}]"


def describe_message(msg: Message) -> str:
    """A one-line summary of a message for failure traces."""
    head = f"{type(msg).__name__} {msg.src}->{msg.dst} t{msg.term}"
    if isinstance(msg, AppendRequest):
        tail = f"prev={msg.prev_index}/t{msg.prev_term} {_entries(msg.entries)} commit={msg.commit}"
    elif isinstance(msg, AppendResponse):
        tail = f"index={msg.index}" + (
            f" REJECT hint={msg.hint_index}/t{msg.hint_term}" if msg.reject else ""
        )
    elif isinstance(msg, VoteRequest):
        kind = "pre-vote" if msg.pre_vote else "vote"
        tail = f"{kind} last={msg.last_index}/t{msg.last_term}"
        tail += " transfer" if msg.transfer else ""
    elif isinstance(msg, VoteResponse):
        tail = ("pre-vote " if msg.pre_vote else "") + ("granted" if msg.granted else "REJECTED")
    elif isinstance(msg, Heartbeat):
        tail = f"commit={msg.commit}" + (f" ctx={msg.ctx}" if msg.ctx else "")
    elif isinstance(msg, HeartbeatResponse):
        tail = f"ctx={msg.ctx}" if msg.ctx else ""
    elif isinstance(msg, SnapshotRequest):
        meta = msg.snapshot.meta
        tail = f"@{meta.index}/t{meta.term} voters={sorted(meta.conf.voters)}"
    elif isinstance(msg, ReadIndexRequest):
        tail = f"ctx={msg.ctx}"
    elif isinstance(msg, ReadIndexResponse):
        tail = f"ctx={msg.ctx} index={msg.index}"
    else:
        tail = ""
    return f"{head} {tail}".rstrip()


def describe(detail: Any) -> str:
    """A trace detail as shown: a message summarized, anything else as is."""
    if isinstance(detail, Message):
        return describe_message(detail)
    return str(detail)
