"""A deterministic, seeded simulation of a Raft cluster around the pure core.

The simulator drives :class:`~agent.raft.core.RaftNode` instances exactly as the agent's runtime
does — persist, send, apply, advance — but over a virtual clock and a virtual network, so a bug
that needs one message in ten thousand to be late shows up in a test run and replays exactly from
its seed. Every source of randomness is a :class:`random.Random` seeded from the schedule's seed
and every collection that is iterated is sorted, so a replay does not depend on
``PYTHONHASHSEED``.

What it models:

* **Time.** A global clock in abstract units; each node ticks every ``TICK`` units (with an
  optional per-node skew). One *step* is one instant at which something happens: every event due
  then runs, then every node's Ready is carried out, then the observer checks the invariants.
* **Network.** Every message gets a delivery time; it may be dropped, delayed, duplicated, and so
  reordered. Partitions and one-way cuts are checked both when a message is sent and when it
  arrives, so a message in flight when a partition forms is lost, as on a real network.
* **Disks.** Each node has an in-memory "disk" holding exactly what its Readies asked to persist.
  A crash throws away the ``RaftNode`` (and so anything not yet persisted, when a slow disk left a
  Ready waiting) and the state machine; a restart builds a new ``RaftNode`` from the disk alone.

The simulator knows nothing about correctness: a :class:`SimObserver` (the checker in
``invariants.py``) is told about every persist, apply, read and role change.

The parts, one module each: ``sim_clock`` (virtual time, the event heap), ``sim_net`` (the
network and its faults), ``sim_node`` (a machine: disk, state machine, and carrying out a
Ready), ``sim_observer`` (the hooks) and ``sim_trace`` (trace lines). This module holds
:class:`Sim`, which ties them together, and re-exports their public names: tests import from
here.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from agent.raft.core import (
    NotLeader,
    ProposalDropped,
    RaftConfig,
    Role,
)
from agent.raft.messages import Message
from agent.raft.types import ConfChange, ConfState, HardState, Snapshot
from tests.raft.sim_clock import EV_CALL, EV_DELIVER, EV_TICK, TICK, Event, SimClock
from tests.raft.sim_net import Faults, SimNetwork
from tests.raft.sim_node import (
    Disk,
    SimError,
    SimNode,
    StateMachine,
    bootstrap_entries,
    default_config,
    with_config,
)
from tests.raft.sim_observer import SimObserver
from tests.raft.sim_trace import describe, describe_message

__all__ = [
    "MAX_READY_ROUNDS",
    "TICK",
    "Disk",
    "Event",
    "Faults",
    "Sim",
    "SimClock",
    "SimError",
    "SimNetwork",
    "SimNode",
    "SimObserver",
    "StateMachine",
    "bootstrap_entries",
    "default_config",
    "describe_message",
    "with_config",
]

MAX_READY_ROUNDS = 50
"""A node that still has a Ready after this many rounds in one step is spinning: a core bug."""


class Sim(SimNetwork):
    """A cluster of simulated machines on a simulated network, driven step by step."""

    def __init__(
        self,
        seed: int,
        ids: Sequence[str],
        *,
        faults: Faults | None = None,
        config: Callable[[str], RaftConfig] = default_config,
        observer: SimObserver | None = None,
        tick_skew: int = 0,
        bootstrap_log: bool = False,
        trace_len: int = 40,
    ) -> None:
        self.seed = seed
        self.faults = faults or Faults()
        self.make_config = config
        self.observer = observer or SimObserver()
        self.tick_skew = tick_skew
        self.rng = random.Random(f"{seed}/net")
        self.now = 0
        self.steps = 0
        self._seq = 0
        self._events = []
        self.nodes = {}
        self.cuts = set()
        self.sent = Counter()
        self.delivered = Counter()
        self.trace: deque[tuple[Any, ...]] = deque(maxlen=trace_len)
        self._read_seq = 0
        self._dirty: set[str] = set()
        if bootstrap_log:
            # The agent's way (agent/node.py): founders start from identical committed
            # CONF_CHANGE entries and an empty ``conf``, so joiners learn members from the log.
            founders = bootstrap_entries(ids)
            for node_id in ids:
                disk = Disk(HardState(term=1, commit=len(founders)), None, list(founders))
                self.add_node(node_id, ConfState(), disk)
        else:
            for node_id in ids:
                self.add_node(node_id, ConfState(voters=frozenset(ids)))

    # --- building the cluster ---

    def add_node(self, node_id: str, conf: ConfState, disk: Disk | None = None) -> SimNode:
        """Create and start a machine (empty disk by default) that passes ``conf`` at every
        start."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} exists")
        node = SimNode(node_id, self.make_config(node_id), conf, disk or Disk())
        self.nodes[node_id] = node
        self._start(node)
        return node

    def _start(self, node: SimNode) -> None:
        node.boot(random.Random(f"{self.seed}/{node.id}/{node.incarnation}"))
        skew = self.rng.randint(-self.tick_skew, self.tick_skew) if self.tick_skew else 0
        node.tick_period = TICK + skew
        first_tick = self.now + self.rng.randint(1, node.tick_period)
        self._push(first_tick, EV_TICK, node.id, node.incarnation)
        if node.disk.snapshot is not None:
            self.observer.on_restore(self, node, node.disk.snapshot)
        self._touched(node)

    def alive(self) -> list[SimNode]:
        return [self.nodes[i] for i in sorted(self.nodes) if self.nodes[i].raft is not None]

    # --- crashes ---

    def crash(self, node_id: str) -> None:
        """Stop ``node_id``: its Raft node, state machine and unpersisted work are gone."""
        node = self.nodes[node_id]
        if node.raft is None:
            return
        self.observer.on_crash(self, node)
        node.raft = None
        node.reads = []
        self.note("crash", node_id)

    def restart(self, node_id: str) -> None:
        """Start ``node_id`` again from what its disk holds."""
        node = self.nodes[node_id]
        if node.raft is not None:
            return
        node.incarnation += 1
        self.note("restart", f"{node_id} #{node.incarnation}")
        self._start(node)

    # --- clients ---

    def leader(self) -> SimNode | None:
        """The live node that believes it leads, at the highest term (None if there is none)."""
        best: SimNode | None = None
        for node in self.alive():
            raft = node.node()
            if raft.role is Role.LEADER and (best is None or raft.term > best.node().term):
                best = node
        return best

    def propose(self, data: bytes, via: str | None = None) -> tuple[str, int] | None:
        """Offer a command to ``via`` (default: the leader); (node, index) if it took it."""
        node = self.nodes[via] if via is not None else self.leader()
        if node is None or node.raft is None:
            return None
        try:
            index = node.raft.propose(data)
        except (NotLeader, ProposalDropped):
            return None
        self.note("propose", f"{node.id} @{index} {data.decode(errors='replace')}")
        self.observer.on_propose(self, node, index, data)
        self._touched(node)
        return node.id, index

    def propose_conf_change(self, cc: ConfChange, via: str | None = None) -> int | None:
        node = self.nodes[via] if via is not None else self.leader()
        if node is None or node.raft is None:
            return None
        try:
            index = node.raft.propose_conf_change(cc)
        except (NotLeader, ProposalDropped):
            return None
        self.note("conf-change", f"{node.id} @{index} {cc.op.value} {cc.node}")
        self._touched(node)
        return index

    def read(self, via: str) -> str | None:
        """Ask ``via`` for a linearizable read point; the ctx to look for, if it is up."""
        node = self.nodes[via]
        if node.raft is None:
            return None
        self._read_seq += 1
        ctx = f"r{self._read_seq}"
        self.observer.on_read_request(self, node, ctx)
        node.raft.read_index(ctx)
        self._touched(node)
        return ctx

    def campaign(self, node_id: str) -> None:
        """Make ``node_id`` start an election now (scripted stories pick their leaders)."""
        node = self.nodes[node_id]
        node.node().campaign()
        self._touched(node)

    def transfer(self, target: str) -> bool:
        """Ask the leader to hand leadership to ``target``; False if there is no leader."""
        node = self.leader()
        if node is None:
            return False
        try:
            node.node().transfer_leadership(target)
        except (NotLeader, ProposalDropped):
            return False
        self.note("transfer", f"{node.id}->{target}")
        self._touched(node)
        return True

    def compact(self, node_id: str) -> Snapshot | None:
        """Snapshot ``node_id``'s state machine and compact its log, as the runtime does."""
        node = self.nodes[node_id]
        if node.raft is None or node.sm.applied <= node.disk.snap_index:
            return None
        snap = node.raft.compact(node.sm.applied, node.sm.serialize())
        if snap.meta.index != node.sm.applied:
            raise SimError(f"{node_id}: compact({node.sm.applied}) gave index {snap.meta.index}")
        node.disk.compact(snap)
        self.note("compact", f"{node_id} @{snap.meta.index}")
        self.observer.on_compact(self, node, snap)
        self._touched(node)
        return snap

    # --- running ---

    def run_for(self, duration: int) -> None:
        end = self.now + duration
        while self._events and self._events[0][0] <= end:
            self.step()
        self.now = max(self.now, end)

    def run_until(self, done: Callable[[], bool], timeout: int, every: int = TICK) -> bool:
        """Step until ``done()`` (checked every ``every`` units); False if ``timeout`` passed."""
        end = self.now + timeout
        next_check = self.now
        while self.now <= end:
            if self.now >= next_check:
                if done():
                    return True
                next_check = self.now + every
            if not self._events:
                return done()
            self.step()
        return done()

    def step(self) -> None:
        """Run everything due at the next instant, carry out the Readies, check invariants."""
        events = self._events
        now = events[0][0]
        self.now = now
        self.steps += 1
        while events and events[0][0] == now:
            _, _, kind, a, b = heapq.heappop(events)
            if kind == EV_DELIVER:
                self._deliver(a)
            elif kind == EV_TICK:
                self._tick(a, b)
            elif kind == EV_CALL:
                a()
            else:
                self._report_unreachable(a, b)
        self.observer.on_step(self, self._ready_phase())

    def settle(self) -> None:
        """Carry out every pending Ready now (scripted tests call this after direct inputs)."""
        saved, self.faults.slow_disk = self.faults.slow_disk, 0.0
        try:
            settled = self._ready_phase()
        finally:
            self.faults.slow_disk = saved
        self.observer.on_step(self, settled)

    def note(self, what: str, detail: str) -> None:
        """Add a line to the trace shown when a schedule fails."""
        self.trace.append((self.now, what, detail))

    def format_trace(self) -> str:
        lines = (f"  t={t:<6} {what:<10} {describe(detail)}" for t, what, detail in self.trace)
        return "\n".join(lines)

    # --- internals ---

    def _tick(self, node_id: str, incarnation: int) -> None:
        node = self.nodes[node_id]
        if node.raft is None or node.incarnation != incarnation:
            return
        node.raft.tick()
        self._touched(node)
        self._push(self.now + node.tick_period, EV_TICK, node_id, incarnation)

    def _deliver(self, msg: Message) -> None:
        """A message is due: lost if its link was cut while it was in flight, or if its
        destination is down; otherwise the destination steps it."""
        node = self.nodes.get(msg.dst)
        if node is None or node.raft is None or (msg.src, msg.dst) in self.cuts:
            return
        self.delivered[(msg.src, msg.dst)] += 1
        self.trace.append((self.now, "deliver", msg))
        self.observer.on_deliver(self, msg)
        node.raft.step(msg)
        self._touched(node)

    def _touched(self, node: SimNode) -> None:
        """``node.raft`` got an input: it may have a Ready now; let the observer look at it."""
        self._dirty.add(node.id)
        self.observer.on_input(self, node)

    def _ready_phase(self) -> list[SimNode]:
        """Carry out the Readies of every node that got input; return the nodes now settled."""
        slow = self.faults.slow_disk
        dirty, self._dirty = self._dirty, set()
        settled = []
        for node_id in sorted(dirty):
            node = self.nodes[node_id]
            raft = node.raft
            if raft is None:
                continue
            if slow and self.rng.random() < slow:
                self._dirty.add(node_id)  # the disk is slow: try again next step
                continue
            rounds = 0
            while raft.has_ready():
                rounds += 1
                if rounds > MAX_READY_ROUNDS:
                    raise SimError(f"{node_id} still has a Ready after {MAX_READY_ROUNDS} rounds")
                node.carry_out(self, raft, raft.ready())
            self._dirty.discard(node_id)
            settled.append(node)
        return settled
