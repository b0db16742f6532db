"""A small deterministic in-memory network for scripted Raft tests.

Each node gets a :class:`MemStorage` "disk" and a list of applied entries, and every Ready is
carried out exactly as the runtime does: persist, send, apply, advance. Messages travel through
one FIFO queue; ``deliver()`` runs until nothing is left to do. Faults are explicit and scripted:
cut links, isolated nodes, a predicate that drops chosen messages, crashes and restarts.
(The fault-injecting randomized simulator lives in ``sim.py``.)
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from agent.raft.core import RaftConfig, RaftNode, ReadState, Ready, Role
from agent.raft.messages import Message
from agent.raft.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
)


@dataclass
class MemStorage:
    """What a node persisted: survives ``crash``/``restart``."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            keep = max(0, first - self.offset - 1)
            del self.entries[keep:]
            self.entries.extend(e for e in rd.entries if e.index > self.offset)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]


Drop = Callable[[Message], bool]


class Network:
    """Nodes wired together by a FIFO queue, driven until quiet."""

    def __init__(
        self,
        ids: Iterable[str],
        *,
        seed: int = 1,
        conf: ConfState | None = None,
        bootstrap: bool = False,
        **config: Any,
    ) -> None:
        """Start ``ids`` as one cluster.

        With ``bootstrap`` every node starts as the agent's runtime starts a new cluster: its
        disk holds one committed PROMOTE entry per initial voter at term 1 and it passes an
        empty ``conf``, so members added later learn the membership from the log.
        """
        self.ids = sorted(ids)
        self.seed = seed
        self.config_overrides = config
        self.conf = conf or ConfState(voters=frozenset(self.ids))
        self.nodes: dict[str, RaftNode] = {}
        self.storage: dict[str, MemStorage] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.queue: deque[Message] = deque()
        self.sent: list[Message] = []
        """Every message any node emitted, in order (tests count them)."""
        self.cut_links: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.drop: Drop | None = None
        self._starts = 0
        for node_id in self.ids:
            self.add(node_id, self.conf)
        if bootstrap:
            entries = [
                Entry(1, i, ConfChange(ConfChangeOp.PROMOTE, v).encode(), EntryKind.CONF_CHANGE)
                for i, v in enumerate(sorted(self.conf.voters), start=1)
            ]
            self.conf = ConfState()
            for node_id in self.ids:
                hs = HardState(1, None, len(entries))
                self.storage[node_id] = MemStorage(hs, None, list(entries))  # a disk each
                self.restart(node_id)

    # --- building ---

    def config(self, node_id: str) -> RaftConfig:
        return replace(RaftConfig(id=node_id), **self.config_overrides)

    def add(self, node_id: str, conf: ConfState) -> RaftNode:
        """Start a node with an empty disk (a new machine joining passes an empty conf)."""
        if node_id not in self.ids:
            self.ids = sorted([*self.ids, node_id])
        self.storage[node_id] = MemStorage()
        self.applied[node_id] = []
        self.read_states[node_id] = []
        self._starts += 1
        rng = random.Random(f"{self.seed}/{node_id}/{self._starts}")
        node = RaftNode(self.config(node_id), rng, conf=conf)
        self.nodes[node_id] = node
        return node

    def crash(self, node_id: str) -> None:
        """Lose the node's memory (its disk survives); it receives nothing until restarted."""
        self.down.add(node_id)

    def restart(self, node_id: str, conf: ConfState | None = None) -> RaftNode:
        """Start the node again from its disk alone, as the runtime does after a crash."""
        disk = self.storage[node_id]
        self._starts += 1
        rng = random.Random(f"{self.seed}/{node_id}/{self._starts}")
        node = RaftNode(
            self.config(node_id),
            rng,
            conf=conf if conf is not None else self.conf,
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
        )
        self.nodes[node_id] = node
        self.applied[node_id] = [e for e in self.applied[node_id] if e.index <= disk.offset]
        self.down.discard(node_id)
        return node

    def load(
        self, node_id: str, terms: list[int], term: int, commit: int = 0, vote: str | None = None
    ) -> RaftNode:
        """Give ``node_id`` a stored log (``terms[i]`` is the term of index i+1) and restart it.

        This is how a test sets up the logs of the paper's figures.
        """
        self.storage[node_id] = MemStorage(
            HardState(term, vote, commit), None, [Entry(t, i + 1) for i, t in enumerate(terms)]
        )
        self.applied[node_id] = []
        return self.restart(node_id)

    # --- faults ---

    def cut(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` in both directions."""
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, node_id: str) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut(node_id, other)

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop = None

    def blocked(self, msg: Message) -> bool:
        return (
            (msg.src, msg.dst) in self.cut_links
            or msg.dst in self.down
            or msg.dst not in self.nodes
            or (self.drop is not None and self.drop(msg))
        )

    # --- driving ---

    def live(self) -> list[str]:
        return [i for i in self.ids if i not in self.down]

    def process(self, node_id: str) -> int:
        """Carry out all of one node's Readies; queue their messages. Returns Readies handled."""
        node = self.nodes[node_id]
        handled = 0
        while node.has_ready():
            rd = node.ready()
            handled += 1
            self.storage[node_id].save(rd)
            self.sent.extend(rd.messages)
            self.queue.extend(rd.messages)
            if rd.snapshot is not None:
                self.applied[node_id] = []
            self.applied[node_id].extend(rd.committed)
            self.read_states[node_id].extend(rd.read_states)
            node.advance(rd)
            assert handled < 1000, f"{node_id} never runs out of Readies"
        return handled

    def process_all(self) -> int:
        return sum(self.process(i) for i in self.live())

    def deliver(self, max_messages: int = 200_000) -> int:
        """Run Readies and deliver messages until the network is quiet; messages delivered."""
        delivered = 0
        while True:
            self.process_all()
            if not self.queue:
                return delivered
            while self.queue:
                msg = self.queue.popleft()
                if self.blocked(msg):
                    continue
                self.nodes[msg.dst].step(msg)
                delivered += 1
                assert delivered < max_messages, "the network never goes quiet"
            # Readies are processed at the top of the loop.

    def take(self) -> list[Message]:
        """Process Readies and hand back the queued messages instead of delivering them."""
        self.process_all()
        out = list(self.queue)
        self.queue.clear()
        return out

    def send(self, msgs: Iterable[Message]) -> None:
        """Deliver chosen messages (e.g. from ``take``), in order, then run until quiet."""
        for msg in msgs:
            if not self.blocked(msg):
                self.nodes[msg.dst].step(msg)
        self.deliver()

    def tick(self, n: int = 1, ids: Iterable[str] | None = None) -> None:
        """Tick the given (default: all live) nodes ``n`` times, delivering after each tick."""
        targets = list(ids) if ids is not None else self.live()
        for _ in range(n):
            for node_id in targets:
                self.nodes[node_id].tick()
            self.deliver()

    def elect(self, node_id: str) -> RaftNode:
        """Make ``node_id`` campaign and run the election to completion."""
        self.nodes[node_id].campaign()
        self.deliver()
        node = self.nodes[node_id]
        assert node.role is Role.LEADER, f"{node_id} did not win: {node.role}"
        return node

    def tick_until(self, done: Callable[[], bool], limit: int = 500) -> int:
        """Tick everyone until ``done()``; the number of ticks it took."""
        for n in range(limit):
            if done():
                return n
            self.tick()
        raise AssertionError(f"condition not reached within {limit} ticks")

    # --- looking ---

    def leader(self) -> str | None:
        leaders = [i for i in self.live() if self.nodes[i].role is Role.LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda i: self.nodes[i].term)

    def propose(self, node_id: str, data: bytes) -> int:
        return self.nodes[node_id].propose(data)

    def data(self, node_id: str) -> list[bytes]:
        """The user payloads ``node_id`` applied, in order (no-ops and conf changes skipped)."""
        return [e.data for e in self.applied[node_id] if e.kind is EntryKind.NORMAL and e.data]

    def count(self, kind: type[Message], src: str | None = None, dst: str | None = None) -> int:
        return sum(
            1
            for m in self.sent
            if isinstance(m, kind)
            and (src is None or m.src == src)
            and (dst is None or m.dst == dst)
        )
