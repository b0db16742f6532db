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
"""

from __future__ import annotations

import heapq
import json
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.raft.core import (
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    ReadState,
    Ready,
    Role,
)
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
from agent.raft.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
)

TICK = 10
"""Virtual time units between two ticks of a node (message latency is a few units)."""

MAX_READY_ROUNDS = 50
"""A node that still has a Ready after this many rounds in one step is spinning: a core bug."""


class SimError(AssertionError):
    """The core broke the driving contract (not a Raft safety property, but just as fatal)."""


# --- faults -------------------------------------------------------------------------------------


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


# --- per-node durable and volatile state --------------------------------------------------------


@dataclass(slots=True)
class Disk:
    """What survives a crash: the last hard state, the latest snapshot and the log after it."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    """Contiguous, starting right after the snapshot (or at index 1)."""

    @property
    def snap_index(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    @property
    def snap_term(self) -> int:
        return self.snapshot.meta.term if self.snapshot is not None else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def entry(self, index: int) -> Entry | None:
        """The stored entry at ``index`` (None when compacted away or beyond the end)."""
        pos = index - self.snap_index - 1
        if 0 <= pos < len(self.entries):
            return self.entries[pos]
        return None

    def term_at(self, index: int) -> int | None:
        """The term at ``index``, known for the snapshot point and the stored entries."""
        if index == self.snap_index:
            return self.snap_term
        found = self.entry(index)
        return found.term if found is not None else None

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``; a stored suffix from ``entries[0].index`` on is replaced."""
        first = entries[0].index
        skip = max(0, self.snap_index + 1 - first)
        keep = max(0, first + skip - self.snap_index - 1)
        del self.entries[keep:]
        self.entries.extend(entries[skip:])

    def install(self, snap: Snapshot) -> None:
        """Store a snapshot received from the leader. Entries after it survive only when the log
        already held the snapshot's last entry (same index and term), as in the Raft paper §7."""
        matches = self.term_at(snap.meta.index) == snap.meta.term
        self.entries = [e for e in self.entries if e.index > snap.meta.index] if matches else []
        self.snapshot = snap

    def compact(self, snap: Snapshot) -> None:
        """Store a snapshot this node took itself and drop the entries it covers."""
        self.snapshot = snap
        self.entries = [e for e in self.entries if e.index > snap.meta.index]


@dataclass(slots=True)
class StateMachine:
    """The replicated state machine: the ordered list of commands it has applied."""

    applied: int = 0
    commands: list[tuple[int, bytes]] = field(default_factory=list)

    def apply(self, entry: Entry) -> None:
        self.applied = entry.index
        if entry.kind is EntryKind.NORMAL and entry.data:
            self.commands.append((entry.index, entry.data))

    def serialize(self) -> bytes:
        return json.dumps([[i, d.decode("latin-1")] for i, d in self.commands]).encode()

    @classmethod
    def restore(cls, snap: Snapshot | None) -> StateMachine:
        if snap is None:
            return cls()
        raw = json.loads(snap.data) if snap.data else []
        return cls(snap.meta.index, [(int(i), str(d).encode("latin-1")) for i, d in raw])


@dataclass(slots=True)
class SimNode:
    """One machine: a disk that survives crashes, and a Raft node + state machine that do not."""

    id: str
    config: RaftConfig
    initial_conf: ConfState
    """What the runtime passes as ``conf`` on every start (a snapshot's conf overrides it)."""
    disk: Disk = field(default_factory=Disk)
    raft: RaftNode | None = None
    sm: StateMachine = field(default_factory=StateMachine)
    incarnation: int = 0
    tick_period: int = TICK
    reads: list[ReadState] = field(default_factory=list)
    """ReadStates received and waiting for the state machine to reach their index."""

    @property
    def alive(self) -> bool:
        return self.raft is not None

    def node(self) -> RaftNode:
        """The running Raft node (the caller knows this machine is up)."""
        if self.raft is None:
            raise SimError(f"{self.id} is down")
        return self.raft


class SimObserver:
    """Hooks the simulator calls; the default does nothing. ``invariants.Checker`` overrides."""

    def on_input(self, sim: Sim, node: SimNode) -> None:
        """After any call into ``node.raft`` (step, tick, propose, advance...)."""

    def on_deliver(self, sim: Sim, msg: Message) -> None:
        """A message reaches its (running) destination, just before the node steps it."""

    def on_send(self, sim: Sim, node: SimNode, msg: Message) -> None:
        """``node`` sends ``msg`` (its Ready was persisted just before)."""

    def on_persist_snapshot(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        """Before a snapshot from a Ready is stored on ``node.disk``."""

    def on_persist_entries(self, sim: Sim, node: SimNode, entries: list[Entry]) -> None:
        """Before entries from a Ready are stored on ``node.disk``."""

    def on_persist_hard_state(self, sim: Sim, node: SimNode, hs: HardState) -> None:
        """Before a hard state from a Ready is stored on ``node.disk``."""

    def on_restore(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        """After the state machine was rebuilt from a snapshot (received, or on restart)."""

    def on_apply(self, sim: Sim, node: SimNode, entry: Entry) -> None:
        """Before ``entry`` (from Ready.committed) is applied to ``node.sm``."""

    def on_read_state(self, sim: Sim, node: SimNode, rs: ReadState) -> None:
        """A ReadState arrived in a Ready."""

    def on_read_served(self, sim: Sim, node: SimNode, rs: ReadState) -> None:
        """The state machine reached ``rs.index``: the read is answered now."""

    def on_propose(self, sim: Sim, node: SimNode, index: int, data: bytes) -> None:
        """``node`` accepted a client command at ``index``."""

    def on_read_request(self, sim: Sim, node: SimNode, ctx: str) -> None:
        """A client asked ``node`` for a read point tagged ``ctx``."""

    def on_compact(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        """``node`` compacted its log into ``snap``."""

    def on_crash(self, sim: Sim, node: SimNode) -> None:
        """``node`` is about to lose its volatile state."""

    def on_step(self, sim: Sim, settled: list[SimNode]) -> None:
        """One instant of virtual time is over; ``settled`` nodes carried out every Ready they
        had (nodes that got no input since their last Ready are not listed)."""


# --- the simulator ------------------------------------------------------------------------------

_DELIVER, _TICK, _CALL, _UNREACHABLE = 0, 1, 2, 3

Event = tuple[Any, ...]
"""(time, seq, kind, a, b) in the event heap; ``seq`` makes the order total and deterministic."""


def default_config(node_id: str) -> RaftConfig:
    return RaftConfig(id=node_id)


class Sim:
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
        self._events: list[Event] = []
        self.nodes: dict[str, SimNode] = {}
        self.cuts: set[tuple[str, str]] = set()
        """Directed links (src, dst) that carry nothing."""
        self.sent: Counter[tuple[str, str]] = Counter()
        self.delivered: Counter[tuple[str, str]] = Counter()
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
        rng = random.Random(f"{self.seed}/{node.id}/{node.incarnation}")
        disk = node.disk
        node.raft = RaftNode(
            node.config,
            rng,
            conf=node.initial_conf,
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
        )
        node.sm = StateMachine.restore(disk.snapshot)
        node.reads = []
        skew = self.rng.randint(-self.tick_skew, self.tick_skew) if self.tick_skew else 0
        node.tick_period = TICK + skew
        first_tick = self.now + self.rng.randint(1, node.tick_period)
        self._push(first_tick, _TICK, node.id, node.incarnation)
        if disk.snapshot is not None:
            self.observer.on_restore(self, node, disk.snapshot)
        self._touched(node)

    def alive(self) -> list[SimNode]:
        return [self.nodes[i] for i in sorted(self.nodes) if self.nodes[i].raft is not None]

    # --- faults ---

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

    def at(self, time: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual ``time`` (a workload action or fault)."""
        self._push(max(time, self.now), _CALL, fn, None)

    def after(self, delay: int, fn: Callable[[], None]) -> None:
        self.at(self.now + delay, fn)

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
            if kind == _DELIVER:
                self._deliver(a)
            elif kind == _TICK:
                self._tick(a, b)
            elif kind == _CALL:
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
        lines = (f"  t={t:<6} {what:<10} {_describe(detail)}" for t, what, detail in self.trace)
        return "\n".join(lines)

    # --- internals ---

    def _push(self, time: int, kind: int, a: Any, b: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (time, self._seq, kind, a, b))

    def _tick(self, node_id: str, incarnation: int) -> None:
        node = self.nodes[node_id]
        if node.raft is None or node.incarnation != incarnation:
            return
        node.raft.tick()
        self._touched(node)
        self._push(self.now + node.tick_period, _TICK, node_id, incarnation)

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
                self._push(self.now + 1, _UNREACHABLE, (msg.src, src.incarnation), msg.dst)
            return
        if faults.drop and rng.random() < faults.drop:
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        for _ in range(copies):
            latency = rng.randint(faults.min_latency, faults.max_latency)
            if faults.delay and rng.random() < faults.delay:
                latency += rng.randint(0, faults.max_delay)
            self._push(self.now + latency, _DELIVER, msg, None)

    def _deliver(self, msg: Message) -> None:
        node = self.nodes.get(msg.dst)
        if node is None or node.raft is None or (msg.src, msg.dst) in self.cuts:
            return
        self.delivered[(msg.src, msg.dst)] += 1
        self.trace.append((self.now, "deliver", msg))
        self.observer.on_deliver(self, msg)
        node.raft.step(msg)
        self._touched(node)

    def _report_unreachable(self, src: tuple[str, int], dst: str) -> None:
        node = self.nodes[src[0]]
        if node.raft is None or node.incarnation != src[1]:
            return
        node.raft.report_unreachable(dst)
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
                self._handle_ready(node, raft, raft.ready())
            self._dirty.discard(node_id)
            settled.append(node)
        return settled

    def _handle_ready(self, node: SimNode, raft: RaftNode, rd: Ready) -> None:
        obs = self.observer
        disk = node.disk
        # 1. persist
        if rd.snapshot is not None:
            obs.on_persist_snapshot(self, node, rd.snapshot)
            disk.install(rd.snapshot)
        if rd.entries:
            obs.on_persist_entries(self, node, rd.entries)
            disk.append(rd.entries)
        if rd.hard_state is not None:
            obs.on_persist_hard_state(self, node, rd.hard_state)
            disk.hard_state = rd.hard_state
        # 2. send
        for msg in rd.messages:
            obs.on_send(self, node, msg)
            self.send(msg)
        # 3. apply
        if rd.snapshot is not None:
            node.sm = StateMachine.restore(rd.snapshot)
            self.note("install", f"{node.id} snapshot @{rd.snapshot.meta.index}")
            obs.on_restore(self, node, rd.snapshot)
        sm = node.sm
        for entry in rd.committed:
            obs.on_apply(self, node, entry)
            sm.apply(entry)
            if entry.kind is EntryKind.CONF_CHANGE:
                cc = ConfChange.decode(entry.data)
                self.note("conf", f"{node.id} applies @{entry.index} {cc.op.value} {cc.node}")
        for rs in rd.read_states:
            obs.on_read_state(self, node, rs)
            node.reads.append(rs)
        if node.reads:
            waiting = []
            for rs in node.reads:
                if rs.index <= sm.applied:
                    obs.on_read_served(self, node, rs)
                else:
                    waiting.append(rs)
            node.reads = waiting
        if rd.soft_state is not None:
            ss = rd.soft_state
            self.note("role", f"{node.id} {ss.role.value} term={ss.term} leader={ss.leader}")
        # 4. acknowledge
        raft.advance(rd)
        obs.on_input(self, node)


def bootstrap_entries(ids: Iterable[str]) -> list[Entry]:
    """One committed term-1 PROMOTE entry per founding member, in sorted order."""
    return [
        Entry(1, index, ConfChange(ConfChangeOp.PROMOTE, node_id).encode(), EntryKind.CONF_CHANGE)
        for index, node_id in enumerate(sorted(ids), start=1)
    ]


def with_config(**overrides: Any) -> Callable[[str], RaftConfig]:
    """A config factory: every node gets ``RaftConfig(id=..., **overrides)``."""
    base = RaftConfig(id="")

    def make(node_id: str) -> RaftConfig:
        return replace(base, id=node_id, **overrides)

    return make


# --- trace formatting ---------------------------------------------------------------------------


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


def _describe(detail: Any) -> str:
    if isinstance(detail, Message):
        return describe_message(detail)
    return str(detail)
