"""Plain data the Raft core consumes and produces: log entries, hard state, snapshots, membership.

These types are shared by the pure core, the write-ahead log and the wire codec, so they carry no
behaviour beyond small conveniences. Node ids are short strings (``node1``): the same name is the
host name, the agent's id and what every command shows.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0
    """Opaque bytes for the state machine (an empty payload is the leader's no-op)."""
    CONF_CHANGE = 1
    """An encoded :class:`ConfChange`; takes effect when applied."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the replicated log."""

    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any vote or append reply leaves the node."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership of the cluster: voters decide, learners only receive the log."""

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, list[str]]:
        return {"voters": sorted(self.voters), "learners": sorted(self.learners)}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> ConfState:
        return cls(frozenset(data.get("voters", ())), frozenset(data.get("learners", ())))

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners


class ConfChangeOp(enum.Enum):
    """Membership changes, one at a time (single-server changes, Raft thesis §4)."""

    ADD_LEARNER = "add-learner"
    """A new machine joins without a vote and catches up."""
    PROMOTE = "promote"
    """A learner that has caught up becomes a voter."""
    REMOVE = "remove"
    """A voter or learner leaves; a removed node stops taking part."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change as stored in a CONF_CHANGE log entry."""

    op: ConfChangeOp
    node: str
    context: dict[str, str] = field(default_factory=dict)
    """Free-form details for the runtime (e.g. the new member's peer address)."""

    def encode(self) -> bytes:
        return json.dumps(
            {"op": self.op.value, "node": self.node, "context": self.context},
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        raw = json.loads(data)
        context = raw.get("context") or {}
        if not isinstance(raw.get("node"), str) or not isinstance(context, dict):
            raise ValueError("malformed conf change")
        return cls(
            ConfChangeOp(raw["op"]), raw["node"], {str(k): str(v) for k, v in context.items()}
        )

    def apply_to(self, conf: ConfState) -> ConfState:
        """Return the membership after this change (idempotent where that makes sense)."""
        if self.op is ConfChangeOp.ADD_LEARNER:
            if self.node in conf.voters:
                return conf
            return ConfState(conf.voters, conf.learners | {self.node})
        if self.op is ConfChangeOp.PROMOTE:
            return ConfState(conf.voters | {self.node}, conf.learners - {self.node})
        return ConfState(conf.voters - {self.node}, conf.learners - {self.node})


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot stands in the log, and the membership at that point."""

    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to ``meta.index``."""

    meta: SnapshotMeta
    data: bytes = b""
