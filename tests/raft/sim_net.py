"""The simulated network: latency, loss, duplication, delay (and so reordering), partitions and
one-way cuts.

Every message gets a delivery time when it is sent; it may be dropped, delayed or duplicated, and
so reordered. Partitions and cuts are checked both when a message is sent (here) and when it
arrives (``Sim._deliver``), so a message in flight when a partition forms is lost, as on a real
network. A send into a cut link or to a dead node may be reported back to the sender, as the
agent's transport does when a connection breaks.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.raft.messages import Message
from tests.raft.sim_clock import EV_DELIVER, EV_UNREACHABLE, TICK, SimClock

if TYPE_CHECKING:
    from tests.raft.sim_node import SimNode


@dataclass(slots=True)
class Faults:
    """How hostile the network and disks are right now; the nemesis changes it mid-run."""

    drop: float = 0.0
    """Probability that a message is lost."""
    duplicate: float = 0.0
    """Probability that a message is delivered twice (each copy with its own latency)."""
    delay: float = 0.0
    """Probability that a message gets up to ``max_delay`` extra units of latency."""
    max_delay: int = 4 * TICK
    min_latency: int = 1
    max_latency: int = 4
    slow_disk: float = 0.0
    """Probability that a node's pending Ready waits for a later step (so a crash can lose it)."""
    report_unreachable: float = 0.0
    """Probability that a send into a cut link or to a dead node is reported to the sender, as
    the transport does when a connection breaks."""


class SimNetwork(SimClock):
    """The network part of :class:`~tests.raft.sim.Sim`: which links are cut, what each link
    carried, and what happens to a message on the way. ``Sim.__init__`` sets the fields."""

    nodes: dict[str, SimNode]
    faults: Faults
    rng: random.Random
    """Draws every network fault (and the nodes' tick phases and disk stalls)."""
    cuts: set[tuple[str, str]]
    """Directed links (src, dst) that carry nothing."""
    sent: Counter[tuple[str, str]]
    delivered: Counter[tuple[str, str]]

    if TYPE_CHECKING:  # defined by Sim

        def note(self, what: str, detail: str) -> None: ...
        def _touched(self, node: SimNode) -> None: ...

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network into ``groups`` (nodes not named form one more group together)."""
        sets = [sorted(set(g)) for g in groups]
        named = {n for g in sets for n in g}
        rest = sorted(n for n in self.nodes if n not in named)
        if rest:
            sets.append(rest)
        self.cuts = set()
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.cuts.add((x, y))
                        self.cuts.add((y, x))
        self.note("partition", " | ".join(",".join(g) for g in sets))

    def cut(self, src: str, dst: str) -> None:
        """Cut one direction only: ``src`` can no longer reach ``dst`` (the reverse still works)."""
        self.cuts.add((src, dst))
        self.note("cut", f"{src}-x->{dst}")

    def isolate(self, node_id: str) -> None:
        self.partition([node_id])

    def heal(self) -> None:
        self.cuts = set()
        self.note("heal", "")

    def send(self, msg: Message) -> None:
        """Put ``msg`` on the network (subject to the current faults and cuts)."""
        link = (msg.src, msg.dst)
        self.sent[link] += 1
        faults = self.faults
        rng = self.rng
        dst = self.nodes.get(msg.dst)
        if link in self.cuts or dst is None or dst.raft is None:
            if faults.report_unreachable and rng.random() < faults.report_unreachable:
                src = self.nodes[msg.src]
                self._push(self.now + 1, EV_UNREACHABLE, (msg.src, src.incarnation), msg.dst)
            return
        if faults.drop and rng.random() < faults.drop:
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        for _ in range(copies):
            latency = rng.randint(faults.min_latency, faults.max_latency)
            if faults.delay and rng.random() < faults.delay:
                latency += rng.randint(0, faults.max_delay)
            self._push(self.now + latency, EV_DELIVER, msg, None)

    def _report_unreachable(self, src: tuple[str, int], dst: str) -> None:
        node = self.nodes[src[0]]
        if node.raft is None or node.incarnation != src[1]:
            return
        node.raft.report_unreachable(dst)
        self._touched(node)
