"""Raft's safety properties, checked incrementally while a simulation runs.

:class:`Checker` watches every persist, apply, read and role change of a simulated cluster
(:class:`~tests.raft.sim.Sim`) and raises :class:`InvariantViolation` the moment one of these
breaks (Raft paper, figure 3):

1. **Election safety** — at most one leader per term, over the whole history.
2. **Log matching** — two logs holding an entry with the same index and term hold the same entry
   and the same entries before it. Checked inductively: every persisted entry is recorded as
   ``(index, term) -> (data, kind, term of the entry before it)`` and that map may never get two
   values for one key.
3. **Leader completeness** — a node that becomes leader of term ``t`` holds every entry known to
   be committed in a term before ``t``. (An entry handed out as committed by a node at term ``o``
   was committed in a term ``<= o``, so only entries whose first such observation has ``o < t``
   are demanded.)
4. **State machine safety** — no two nodes apply different entries at one index, and a snapshot
   restores exactly the commands applied up to its index.
5. **Durability** — a node's persisted term never decreases, it never changes its vote within
   a term (nor grants two candidates one term, even across a crash), a vote or an append
   acknowledgement leaves only once the disk backs it, and no entry known as committed is
   overwritten.
6. **Monotonicity** — commit and applied never go backwards within one incarnation of a node.

It also acts as the clients' notary: a command is *acknowledged* when the node that accepted it
applies it at the index it promised; reads must see every write that could have been observed
before they were issued (linearizability). :func:`check_converged` is the liveness check run at
the end of a schedule, after every fault is healed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NoReturn

from agent.raft.core import ReadState, Role
from agent.raft.messages import AppendResponse, Message, VoteResponse
from agent.raft.types import Entry, EntryKind, HardState, Snapshot
from tests.raft.sim import Sim, SimNode, SimObserver, StateMachine


class InvariantViolation(AssertionError):
    """A safety property of Raft does not hold."""


@dataclass(frozen=True, slots=True)
class _Committed:
    entry: Entry
    observed_term: int
    """The lowest term of a node that handed this entry out as committed."""


@dataclass(slots=True)
class _Mark:
    """What one incarnation of a node last showed, to catch anything going backwards."""

    incarnation: int
    role: Role
    term: int
    commit: int
    applied: int


class Checker(SimObserver):
    """Raises :class:`InvariantViolation` as soon as a Raft safety property breaks."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.log_map: dict[tuple[int, int], tuple[bytes, EntryKind, int]] = {}
        self.committed: dict[int, _Committed] = {}
        self.max_committed = 0
        self.max_commit_seen = 0
        """The highest commit index any node ever reported: a floor for every later read."""
        self.marks: dict[str, _Mark] = {}
        self.pending: dict[tuple[str, int, int], bytes] = {}
        """(node, incarnation, index) -> command a client is waiting on."""
        self.acked: dict[bytes, int] = {}
        """Acknowledged command -> its index, in acknowledgement order."""
        self.max_acked_index = 0
        self.reads: dict[str, tuple[str, int, int]] = {}
        """ctx -> (node, incarnation, floor) for reads not yet answered."""
        self.read_owner: dict[str, str] = {}
        self.votes: dict[tuple[str, int], str] = {}
        """(voter, term) -> the candidate it granted its vote to."""
        self.reads_served = 0
        self.elections = 0

    # --- helpers ---

    @staticmethod
    def fail(message: str) -> NoReturn:
        raise InvariantViolation(message)

    # --- 1, 3, 6: roles, leaders, monotonic commit/applied ---

    def on_input(self, sim: Sim, node: SimNode) -> None:
        raft = node.raft
        if raft is None:
            return
        role, term, commit, applied = raft.role, raft.term, raft.commit, raft.applied
        mark = self.marks.get(node.id)
        if mark is None or mark.incarnation != node.incarnation:
            mark = _Mark(node.incarnation, Role.FOLLOWER, 0, commit, applied)
            self.marks[node.id] = mark
        if commit < mark.commit:
            self.fail(f"{node.id}: commit went back from {mark.commit} to {commit}")
        if applied < mark.applied:
            self.fail(f"{node.id}: applied went back from {mark.applied} to {applied}")
        if term < mark.term:
            self.fail(f"{node.id}: term went back from {mark.term} to {term}")
        if role is Role.LEADER and (mark.role is not Role.LEADER or mark.term != term):
            self._new_leader(sim, node, term)
        mark.role, mark.term, mark.commit, mark.applied = role, term, commit, applied
        if commit > self.max_commit_seen:
            self.max_commit_seen = commit

    def _new_leader(self, sim: Sim, node: SimNode, term: int) -> None:
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            self.fail(f"two leaders in term {term}: {other} and {node.id}")
        self.elections += 1
        sim.note("leader", f"{node.id} term={term}")
        raft = node.node()
        snap = raft.snapshot
        snap_index = snap.meta.index if snap is not None else 0
        known = self.committed.get(snap_index)
        if snap is not None and known is not None and known.entry.term != snap.meta.term:
            self.fail(
                f"new leader {node.id} (term {term}) has a snapshot that disagrees with "
                f"the committed entry at {snap_index}"
            )
        demanded = [
            c
            for i, c in sorted(self.committed.items())
            if i > snap_index and c.observed_term < term
        ]
        if not demanded:
            return
        hi = demanded[-1].entry.index
        if raft.last_index < hi:
            self.fail(
                f"leader completeness: {node.id} became leader of term {term} with last "
                f"index {raft.last_index}, but index {hi} was committed earlier"
            )
        held = {e.index: e for e in raft.log_entries(snap_index + 1, hi + 1)}
        for c in demanded:
            mine = held.get(c.entry.index)
            if mine is None or mine.term != c.entry.term:
                got = f"term {mine.term}" if mine is not None else "nothing"
                self.fail(
                    f"leader completeness: {node.id} became leader of term {term} holding "
                    f"{got} at index {c.entry.index}, committed with term {c.entry.term}"
                )

    # --- 2, 5: persisted state ---

    def on_send(self, sim: Sim, node: SimNode, msg: Message) -> None:
        if isinstance(msg, VoteResponse):
            if msg.granted and not msg.pre_vote:
                hs = node.disk.hard_state
                if hs.term != msg.term or hs.vote != msg.dst:
                    self.fail(
                        f"{node.id} grants its term-{msg.term} vote to {msg.dst} with "
                        f"term={hs.term} vote={hs.vote} on disk"
                    )
                other = self.votes.setdefault((node.id, msg.term), msg.dst)
                if other != msg.dst:
                    self.fail(f"{node.id} voted for {other} and {msg.dst} in term {msg.term}")
        elif (
            isinstance(msg, AppendResponse) and not msg.reject and msg.index > node.disk.last_index
        ):
            self.fail(
                f"{node.id} acknowledges index {msg.index} to {msg.dst} with only "
                f"{node.disk.last_index} on disk"
            )

    def on_persist_hard_state(self, sim: Sim, node: SimNode, hs: HardState) -> None:
        old = node.disk.hard_state
        if hs.term < old.term:
            self.fail(f"{node.id}: persisted term went back from {old.term} to {hs.term}")
        if hs.term == old.term and old.vote is not None and hs.vote != old.vote:
            self.fail(f"{node.id}: changed its vote in term {hs.term} from {old.vote} to {hs.vote}")
        if hs.commit < old.commit:
            self.fail(f"{node.id}: persisted commit went back from {old.commit} to {hs.commit}")

    def on_persist_snapshot(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        meta = snap.meta
        if meta.index <= node.disk.snap_index:
            self.fail(
                f"{node.id}: told to install snapshot @{meta.index} over its own "
                f"@{node.disk.snap_index}"
            )
        known = self.committed.get(meta.index)
        if known is not None and known.entry.term != meta.term:
            self.fail(
                f"{node.id}: snapshot @{meta.index} has term {meta.term}, the committed "
                f"entry there has term {known.entry.term}"
            )

    def on_persist_entries(self, sim: Sim, node: SimNode, entries: list[Entry]) -> None:
        disk = node.disk
        first = entries[0].index
        if first > disk.last_index + 1:
            self.fail(
                f"{node.id}: asked to store entries from {first} after a log ending at "
                f"{disk.last_index} (a gap)"
            )
        if first <= disk.snap_index:
            self.fail(
                f"{node.id}: asked to store entry {first} at or below its snapshot "
                f"@{disk.snap_index}"
            )
        if first <= disk.last_index:
            self._check_truncation(node, entries)
        prev_term = disk.term_at(first - 1)
        if prev_term is None:
            self.fail(f"{node.id}: no term known for index {first - 1}")
        expect = first
        log_map = self.log_map
        for e in entries:
            if e.index != expect:
                self.fail(f"{node.id}: Ready.entries not contiguous ({e.index} after {expect - 1})")
            if e.term < prev_term:
                self.fail(
                    f"{node.id}: entry {e.index} has term {e.term} below its "
                    f"predecessor's {prev_term}"
                )
            value = (e.data, e.kind, prev_term)
            seen = log_map.setdefault((e.index, e.term), value)
            if seen != value:
                self.fail(
                    f"log matching: {node.id} stores entry {e.index}/t{e.term} "
                    f"(after term {prev_term}, {e.data!r}), another log has it after term "
                    f"{seen[2]} with {seen[0]!r}"
                )
            prev_term = e.term
            expect += 1

    def _check_truncation(self, node: SimNode, entries: list[Entry]) -> None:
        disk = node.disk
        first = entries[0].index
        for index in range(first, disk.last_index + 1):
            old = disk.entry(index)
            assert old is not None
            pos = index - first
            new = entries[pos] if pos < len(entries) else None
            if new is not None and new.term == old.term:
                continue
            known = self.committed.get(index)
            if index <= disk.hard_state.commit or (known and known.entry.term == old.term):
                self.fail(
                    f"{node.id}: overwrites committed entry {index}/t{old.term} with "
                    f"{'nothing' if new is None else f'term {new.term}'}"
                )

    # --- 4: applying ---

    def on_apply(self, sim: Sim, node: SimNode, entry: Entry) -> None:
        index = entry.index
        if index != node.sm.applied + 1:
            self.fail(f"{node.id}: handed entry {index} to apply after applying {node.sm.applied}")
        stored = node.disk.term_at(index)
        if stored != entry.term:
            self.fail(
                f"{node.id}: applies entry {index}/t{entry.term} but its disk holds "
                f"{'nothing' if stored is None else f'term {stored}'} there"
            )
        known = self.committed.get(index)
        term = node.node().term
        if known is None:
            self.committed[index] = _Committed(entry, term)
            if index > self.max_committed:
                self.max_committed = index
        elif known.entry != entry:
            self.fail(
                f"state machine safety: {node.id} applies {entry.index}/t{entry.term} "
                f"{entry.data!r}, another node applied {known.entry.index}/t"
                f"{known.entry.term} {known.entry.data!r}"
            )
        elif term < known.observed_term:
            self.committed[index] = _Committed(entry, term)
        cmd = self.pending.pop((node.id, node.incarnation, index), None)
        if cmd is not None and cmd == entry.data:
            if cmd in self.acked:
                self.fail(f"command {cmd!r} acknowledged twice")
            self.acked[cmd] = index
            if index > self.max_acked_index:
                self.max_acked_index = index
            sim.note("ack", f"{cmd.decode(errors='replace')} @{index} by {node.id}")

    def on_restore(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        want = self.expected_commands(snap.meta.index, f"{node.id} restoring a snapshot")
        if node.sm.commands != want:
            self.fail(
                f"state machine safety: {node.id} restored a snapshot @{snap.meta.index} "
                f"holding {len(node.sm.commands)} commands, the committed log has "
                f"{len(want)} up to there"
            )
        node_id, incarnation = node.id, node.incarnation
        for key in [
            k
            for k in self.pending
            if k[0] == node_id and k[1] == incarnation and k[2] <= snap.meta.index
        ]:
            del self.pending[key]  # its outcome arrived inside a snapshot: unknown to the client

    def on_compact(self, sim: Sim, node: SimNode, snap: Snapshot) -> None:
        if StateMachine.restore(snap).commands != node.sm.commands:
            self.fail(f"{node.id}: its snapshot @{snap.meta.index} does not restore its state")

    def expected_commands(self, upto: int, who: str) -> list[tuple[int, bytes]]:
        """The commands the committed log holds up to ``upto``, as a state machine lists them."""
        out = []
        for index in range(1, upto + 1):
            known = self.committed.get(index)
            if known is None:
                self.fail(f"{who}: index {index} is covered but no node ever applied it")
            e = known.entry
            if e.kind is EntryKind.NORMAL and e.data:
                out.append((index, e.data))
        return out

    # --- clients ---

    def on_propose(self, sim: Sim, node: SimNode, index: int, data: bytes) -> None:
        self.pending[(node.id, node.incarnation, index)] = data

    def on_read_request(self, sim: Sim, node: SimNode, ctx: str) -> None:
        floor = max([self.max_commit_seen] + [n.node().commit for n in sim.alive()])
        self.reads[ctx] = (node.id, node.incarnation, floor)
        self.read_owner[ctx] = node.id

    def on_read_state(self, sim: Sim, node: SimNode, rs: ReadState) -> None:
        if self.read_owner.get(rs.ctx) != node.id:
            self.fail(f"{node.id} got a read state for {rs.ctx!r} it never asked for")
        asked = self.reads.get(rs.ctx)
        if asked is None or asked[1] != node.incarnation:
            return  # answered already (a duplicated response), or asked before a crash
        if rs.index < asked[2]:
            self.fail(
                f"linearizability: read {rs.ctx} on {node.id} got read index {rs.index}, "
                f"but index {asked[2]} was committed before the read was issued"
            )

    def on_read_served(self, sim: Sim, node: SimNode, rs: ReadState) -> None:
        asked = self.reads.get(rs.ctx)
        if asked is None or asked[1] != node.incarnation:
            return
        del self.reads[rs.ctx]
        if node.sm.applied < asked[2]:
            self.fail(
                f"linearizability: read {rs.ctx} served by {node.id} at applied "
                f"{node.sm.applied} < {asked[2]}"
            )
        self.reads_served += 1

    def on_step(self, sim: Sim, settled: list[SimNode]) -> None:
        for node in settled:
            raft = node.node()
            if raft.applied != node.sm.applied:
                self.fail(
                    f"{node.id}: core says applied={raft.applied}, the state machine "
                    f"applied {node.sm.applied}"
                )
            if raft.last_index != node.disk.last_index:
                self.fail(
                    f"{node.id}: nothing left to persist, but the core's last index "
                    f"{raft.last_index} differs from the disk's {node.disk.last_index}"
                )


# --- liveness at the end of a schedule ----------------------------------------------------------


def converged(sim: Sim, checker: Checker) -> bool:
    """A leader exists and every live member has the same log, fully committed and applied."""
    leader = sim.leader()
    if leader is None:
        return False
    raft = leader.node()
    commit = raft.commit
    if raft.last_index != commit or commit < checker.max_acked_index:
        return False
    if raft.snapshot is None and commit == 0:
        return False
    for member in sorted(raft.conf.members):
        node = sim.nodes.get(member)
        if node is None or node.raft is None:
            return False
        other = node.raft
        if other.applied != commit or other.last_index != commit or other.conf != raft.conf:
            return False
    return True


def check_converged(sim: Sim, checker: Checker) -> None:
    """Every acknowledged command is applied exactly once, in one order, by every live member."""
    leader = sim.leader()
    if leader is None:
        checker.fail("no leader after healing every fault")
    raft = leader.node()
    members = sorted(raft.conf.members)
    for member in members:
        node = sim.nodes.get(member)
        if node is None or node.raft is None:
            checker.fail(f"member {member} of {leader.id}'s configuration is not running")
        if node.sm.applied != raft.commit:
            checker.fail(
                f"{member} applied {node.sm.applied}, the leader {leader.id} committed "
                f"{raft.commit} (last index {raft.last_index})"
            )
        if node.raft.conf != raft.conf:
            checker.fail(
                f"{member} believes the members are {node.raft.conf.to_dict()}, the "
                f"leader {leader.id} says {raft.conf.to_dict()}"
            )
    reference = sim.nodes[members[0]].sm.commands
    for member in members:
        commands = sim.nodes[member].sm.commands
        if commands != reference:
            checker.fail(f"{member} and {members[0]} applied different commands")
        counts = Counter(data for _, data in commands)
        twice = sorted(d for d, n in counts.items() if n > 1)
        if twice:
            checker.fail(f"{member} applied {twice[0]!r} {counts[twice[0]]} times")
    at = {data: index for index, data in reference}
    for cmd, index in checker.acked.items():
        if at.get(cmd) != index:
            checker.fail(
                f"acknowledged command {cmd!r} (index {index}) is "
                f"{'missing' if cmd not in at else f'at index {at[cmd]}'} on the members"
            )
