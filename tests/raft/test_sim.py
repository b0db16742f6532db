"""The simulator does what it claims, the checker catches what it claims, and scripted stories.

The randomized suite is only as good as these: a partition that leaked traffic or a crash that
kept unpersisted entries would make thousands of green schedules mean nothing, and a checker
that cannot fail proves nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.raft.core import RaftConfig, RaftNode, Role
from agent.raft.messages import Heartbeat, Message, SnapshotRequest
from agent.raft.types import ConfState, Entry, HardState
from tests.raft.invariants import Checker, InvariantViolation, check_converged, converged
from tests.raft.sim import TICK, Faults, Sim, SimNode, SimObserver, with_config

IDS3 = ["n1", "n2", "n3"]
IDS5 = ["n1", "n2", "n3", "n4", "n5"]
ROOT = Path(__file__).resolve().parents[2]


class Counting(SimObserver):
    """Counts deliveries of one particular message object."""

    def __init__(self, watched: Message) -> None:
        self.watched = watched
        self.count = 0
        self.times: list[int] = []

    def on_deliver(self, sim: Sim, msg: Message) -> None:
        if msg is self.watched:
            self.count += 1
            self.times.append(sim.now)


def stale(src: str, dst: str) -> Message:
    """A message every node ignores (term 0), used to probe the network alone."""
    return Heartbeat(term=0, src=src, dst=dst, commit=0)


def elect(sim: Sim, timeout: int = 100 * TICK) -> SimNode:
    """Run until a leader has committed an entry of its own term; return it."""

    def ready() -> bool:
        leader = sim.leader()
        return leader is not None and leader.node().commit >= 1 and converged_enough(sim)

    assert sim.run_until(ready, timeout), "no leader elected"
    leader = sim.leader()
    assert leader is not None
    return leader


def converged_enough(sim: Sim) -> bool:
    leader = sim.leader()
    if leader is None:
        return False
    raft = leader.node()
    return raft.commit == raft.last_index


def commit_all(sim: Sim, checker: Checker, timeout: int = 200 * TICK) -> None:
    assert sim.run_until(lambda: converged(sim, checker), timeout), "cluster did not converge"
    check_converged(sim, checker)


def propose_n(sim: Sim, prefix: str, n: int, via: str | None = None) -> list[tuple[str, int]]:
    accepted = []
    for i in range(n):
        got = sim.propose(f"{prefix}-{i}".encode(), via=via)
        assert got is not None, f"{via or 'the leader'} refused a proposal"
        accepted.append(got)
        sim.run_for(2)
    return accepted


def commands(node: SimNode) -> list[bytes]:
    return [data for _, data in node.sm.commands]


# --- the network --------------------------------------------------------------------------------


def test_message_is_delivered_once_after_latency() -> None:
    probe = stale("n1", "n2")
    counter = Counting(probe)
    sim = Sim(1, IDS3, observer=counter)
    sim.send(probe)
    sim.run_for(TICK)
    assert counter.count == 1
    assert 1 <= counter.times[0] <= Faults().max_latency


def test_duplicate_delivers_twice_and_drop_delivers_nothing() -> None:
    probe = stale("n1", "n2")
    counter = Counting(probe)
    sim = Sim(1, IDS3, observer=counter, faults=Faults(duplicate=1.0))
    sim.send(probe)
    sim.run_for(TICK)
    assert counter.count == 2

    dropped = Counting(probe)
    sim = Sim(1, IDS3, observer=dropped, faults=Faults(drop=1.0))
    sim.send(probe)
    sim.run_for(TICK)
    assert dropped.count == 0


def test_delays_reorder_messages() -> None:
    sim = Sim(3, IDS3, faults=Faults(delay=0.5, max_delay=100))
    first, second = stale("n1", "n2"), stale("n1", "n2")
    arrivals: list[Message] = []

    class Order(SimObserver):
        def on_deliver(self, sim: Sim, msg: Message) -> None:
            if msg is first or msg is second:
                arrivals.append(msg)

    sim.observer = Order()
    reordered = 0
    for _ in range(40):
        arrivals.clear()
        sim.send(first)
        sim.send(second)
        sim.run_for(200)
        assert len(arrivals) == 2
        reordered += arrivals[0] is second
    assert reordered > 0, "random delays never reordered two messages on one link"


def test_partition_blocks_traffic_both_ways_and_heal_restores_it() -> None:
    sim = Sim(2, IDS3)
    leader = elect(sim).id
    rest = [n for n in IDS3 if n != leader]
    sim.partition([leader], rest)
    before = sim.delivered.copy()
    sim.run_for(30 * TICK)
    for other in rest:
        assert sim.delivered[(leader, other)] == before[(leader, other)]
        assert sim.delivered[(other, leader)] == before[(other, leader)]
    assert sim.delivered[(rest[0], rest[1])] > before[(rest[0], rest[1])]
    sim.heal()
    sim.run_for(30 * TICK)
    assert sum(sim.delivered[(leader, o)] - before[(leader, o)] for o in rest) > 0
    assert sum(sim.delivered[(o, leader)] - before[(o, leader)] for o in rest) > 0


def test_message_in_flight_is_lost_when_a_partition_forms() -> None:
    probe = stale("n1", "n2")
    counter = Counting(probe)
    sim = Sim(1, IDS3, observer=counter, faults=Faults(min_latency=5, max_latency=5))
    sim.send(probe)
    sim.partition(["n1"], ["n2", "n3"])
    sim.run_for(TICK)
    assert counter.count == 0


def test_one_way_cut_blocks_only_one_direction() -> None:
    sim = Sim(4, IDS3)
    leader = elect(sim)
    follower = next(n for n in IDS3 if n != leader.id)
    sim.cut(leader.id, follower)
    before = sim.delivered.copy()
    sim.run_for(40 * TICK)
    assert sim.delivered[(leader.id, follower)] == before[(leader.id, follower)]
    assert sim.delivered[(follower, leader.id)] > before[(follower, leader.id)]


# --- crashes and disks --------------------------------------------------------------------------


def test_crash_loses_what_was_not_persisted() -> None:
    sim = Sim(5, IDS3)
    leader = elect(sim)
    last = leader.node().last_index
    assert sim.propose(b"never-persisted") == (leader.id, last + 1)
    sim.crash(leader.id)  # before any Ready was carried out
    assert leader.disk.last_index == last
    sim.restart(leader.id)
    assert leader.node().last_index == last
    assert leader.node().role is Role.FOLLOWER


def test_stalled_disk_holds_back_messages_and_a_crash_loses_its_backlog() -> None:
    checker = Checker()
    sim = Sim(8, IDS3, observer=checker)
    leader = elect(sim)
    last = leader.disk.last_index
    sent = sum(sim.sent.values())
    sim.faults.slow_disk = 1.0  # no Ready is carried out: nothing persisted, nothing sent
    got = sim.propose(b"stalled")
    assert got is not None
    sim.run_for(10 * TICK)
    assert sum(sim.sent.values()) == sent
    assert leader.node().last_index == got[1] and leader.disk.last_index == last
    assert leader.node().commit < got[1]
    sim.crash(leader.id)
    sim.faults.slow_disk = 0.0
    sim.restart(leader.id)
    assert leader.node().last_index == last
    commit_all(sim, checker)
    assert all(b"stalled" not in commands(node) for node in sim.nodes.values())


def test_crash_keeps_what_was_persisted_and_rebuilds_the_state_machine() -> None:
    checker = Checker()
    sim = Sim(6, IDS3, observer=checker)
    elect(sim)
    propose_n(sim, "kept", 5)
    commit_all(sim, checker)
    node = sim.nodes["n2"]
    applied, before = node.sm.applied, commands(node)
    assert len(before) == 5
    sim.crash("n2")
    assert node.raft is None
    sim.restart("n2")
    assert node.sm.applied == 0 and node.sm.commands == []  # volatile state is gone
    assert node.node().last_index == applied  # the log is not
    assert node.node().term == node.disk.hard_state.term
    sim.settle()  # committed entries are handed out again
    assert commands(node) == before


def test_restart_from_snapshot_restores_state_then_reapplies() -> None:
    checker = Checker()
    sim = Sim(7, IDS3, observer=checker)
    elect(sim)
    propose_n(sim, "a", 4)
    commit_all(sim, checker)
    snap = sim.compact("n3")
    assert snap is not None and sim.nodes["n3"].disk.snapshot == snap
    propose_n(sim, "b", 3)
    commit_all(sim, checker)
    want = commands(sim.nodes["n3"])
    sim.crash("n3")
    sim.restart("n3")
    node = sim.nodes["n3"]
    assert node.sm.applied == snap.meta.index
    assert len(node.sm.commands) == 4
    sim.settle()
    assert commands(node) == want


def test_same_seed_replays_exactly_whatever_the_hash_seed() -> None:
    code = (
        "from tests.raft.test_randomized import run_schedule; "
        "print([run_schedule(s) for s in (0, 7, 13, 35)])"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        outputs.add(run.stdout)
    assert len(outputs) == 1


# --- the checker can fail -----------------------------------------------------------------------


def fake(node_id: str, role: Role, term: int, **extra: Any) -> SimNode:
    raft = SimpleNamespace(role=role, term=term, commit=0, applied=0, snapshot=None, **extra)
    return SimNode(node_id, RaftConfig(id=node_id), ConfState(), raft=cast(RaftNode, raft))


def test_checker_catches_two_leaders_in_one_term() -> None:
    checker, sim = Checker(), Sim(1, [])
    checker.on_input(sim, fake("n1", Role.LEADER, 3, last_index=0))
    with pytest.raises(InvariantViolation, match="two leaders in term 3"):
        checker.on_input(sim, fake("n2", Role.LEADER, 3, last_index=0))


def test_checker_catches_log_matching_violation() -> None:
    checker, sim = Checker(), Sim(1, [])
    a, b = fake("n1", Role.FOLLOWER, 2), fake("n2", Role.FOLLOWER, 2)
    checker.on_persist_entries(sim, a, [Entry(1, 1, b"x"), Entry(2, 2, b"y")])
    a.disk.append([Entry(1, 1, b"x"), Entry(2, 2, b"y")])
    checker.on_persist_entries(sim, b, [Entry(1, 1, b"x")])
    b.disk.append([Entry(1, 1, b"x")])
    with pytest.raises(InvariantViolation, match="log matching"):
        checker.on_persist_entries(sim, b, [Entry(2, 2, b"z")])


def test_checker_catches_divergent_state_machines() -> None:
    checker, sim = Checker(), Sim(1, [])
    a, b = fake("n1", Role.FOLLOWER, 1), fake("n2", Role.FOLLOWER, 1)
    a.disk.append([Entry(1, 1, b"x")])
    b.disk.append([Entry(1, 1, b"y")])
    checker.on_apply(sim, a, Entry(1, 1, b"x"))
    with pytest.raises(InvariantViolation, match="state machine safety"):
        checker.on_apply(sim, b, Entry(1, 1, b"y"))


def test_checker_catches_a_changed_vote_and_an_overwritten_commit() -> None:
    checker, sim = Checker(), Sim(1, [])
    a = fake("n1", Role.FOLLOWER, 1)
    a.disk.hard_state = HardState(term=4, vote="n2", commit=0)
    with pytest.raises(InvariantViolation, match="changed its vote"):
        checker.on_persist_hard_state(sim, a, HardState(term=4, vote="n3", commit=0))
    a.disk.append([Entry(term=1, index=1, data=b"x"), Entry(term=1, index=2, data=b"y")])
    a.disk.hard_state = HardState(term=4, vote="n2", commit=2)
    with pytest.raises(InvariantViolation, match="overwrites committed entry 2"):
        checker.on_persist_entries(sim, a, [Entry(term=3, index=2, data=b"z")])


def test_checker_catches_a_new_leader_missing_a_committed_entry() -> None:
    checker, sim = Checker(), Sim(1, [])
    a = fake("n1", Role.FOLLOWER, 1)
    a.disk.append([Entry(1, 1, b"x")])
    checker.on_apply(sim, a, Entry(1, 1, b"x"))
    b = fake("n2", Role.LEADER, 2, last_index=0, log_entries=lambda lo, hi: [])
    with pytest.raises(InvariantViolation, match="leader completeness"):
        checker.on_input(sim, b)


# --- scripted stories ---------------------------------------------------------------------------


def test_isolated_leader_is_replaced_and_loses_its_uncommitted_entry() -> None:
    checker = Checker()
    sim = Sim(11, IDS3, observer=checker)
    old = elect(sim)
    propose_n(sim, "before", 3)
    commit_all(sim, checker)
    sim.isolate(old.id)
    assert sim.propose(b"orphan", via=old.id) is not None
    commit_before = old.node().commit
    sim.run_for(60 * TICK)
    new = sim.leader()
    assert new is not None and new.id != old.id
    assert new.node().term > old.disk.hard_state.term
    assert old.node().commit == commit_before  # it cannot commit alone
    propose_n(sim, "after", 3)
    sim.heal()
    commit_all(sim, checker)
    assert old.node().role is Role.FOLLOWER
    for node in sim.nodes.values():
        assert b"orphan" not in commands(node)
        assert commands(node)[-3:] == [b"after-0", b"after-1", b"after-2"]
    assert b"orphan" not in checker.acked and len(checker.acked) == 6


def test_minority_partition_cannot_commit_but_majority_can() -> None:
    checker = Checker()
    sim = Sim(12, IDS5, observer=checker)
    old = elect(sim)
    propose_n(sim, "base", 2)
    commit_all(sim, checker)
    minority = [old.id, next(n for n in IDS5 if n != old.id)]
    majority = [n for n in IDS5 if n not in minority]
    sim.partition(minority, majority)
    stuck = sim.propose(b"minority-write", via=old.id)
    assert stuck is not None
    sim.run_for(50 * TICK)
    assert all(b"minority-write" not in commands(sim.nodes[n]) for n in IDS5)
    assert old.node().commit < stuck[1]
    new = sim.leader()
    assert new is not None and new.id in majority
    propose_n(sim, "majority", 2)
    sim.heal()
    commit_all(sim, checker)
    for node_id in IDS5:
        assert commands(sim.nodes[node_id])[-2:] == [b"majority-0", b"majority-1"]
        assert b"minority-write" not in commands(sim.nodes[node_id])


@pytest.mark.parametrize("appends_reach_followers", [True, False])
def test_leader_crash_mid_replication(appends_reach_followers: bool) -> None:
    checker = Checker()
    sim = Sim(13, IDS3, observer=checker)
    old = elect(sim)
    propose_n(sim, "base", 2)
    commit_all(sim, checker)
    if not appends_reach_followers:
        sim.isolate(old.id)
    got = sim.propose(b"in-flight")
    assert got is not None
    sim.settle()  # persisted on the leader, appends on the wire (or into the cut)
    sim.crash(old.id)
    sim.heal()
    sim.run_for(40 * TICK)
    sim.restart(old.id)
    propose_n(sim, "later", 2)
    commit_all(sim, checker)
    logs = {tuple(commands(sim.nodes[n])) for n in IDS3}
    assert len(logs) == 1
    survived = b"in-flight" in next(iter(logs))
    if not appends_reach_followers:
        assert not survived, "an entry only the crashed leader held was committed"
    assert checker.acked.keys() >= {b"later-0", b"later-1"}


def test_lagging_follower_catches_up_by_snapshot() -> None:
    installs: list[str] = []

    class Watch(Checker):
        def on_deliver(self, sim: Sim, msg: Message) -> None:
            if isinstance(msg, SnapshotRequest):
                installs.append(msg.dst)

    checker = Watch()
    sim = Sim(14, IDS3, observer=checker)
    leader = elect(sim)
    lagging = next(n for n in IDS3 if n != leader.id)
    sim.crash(lagging)
    propose_n(sim, "missed", 10)
    assert sim.run_until(
        lambda: all(
            sim.nodes[n].sm.applied == leader.node().last_index for n in IDS3 if n != lagging
        ),
        50 * TICK,
    )
    for node_id in IDS3:
        if node_id != lagging:
            assert sim.compact(node_id) is not None
    sim.restart(lagging)
    commit_all(sim, checker)
    assert lagging in installs
    assert commands(sim.nodes[lagging]) == [f"missed-{i}".encode() for i in range(10)]
    assert sim.nodes[lagging].disk.snapshot is not None


def test_old_term_entry_on_a_majority_is_not_committed_figure_8() -> None:
    """Raft paper figure 8: a leader must not commit an entry of an earlier term by counting
    replicas, because a node holding a newer-term entry at that index can still win."""
    checker = Checker()
    config = with_config(
        election_ticks=1000,  # nobody campaigns unless the story says so
        pre_vote=False,
        check_quorum=False,
        max_entries_per_append=1,
        max_inflight_appends=1,
    )
    sim = Sim(21, IDS5, observer=checker, config=config)
    nodes = sim.nodes

    def lead(node_id: str) -> None:
        for _ in range(3):
            sim.campaign(node_id)
            if sim.run_until(lambda: nodes[node_id].node().role is Role.LEADER, 20 * TICK, 1):
                return
        raise AssertionError(f"{node_id} could not win an election")

    # (a) n1 leads and gets entry A onto n2 only.
    lead("n1")
    assert sim.run_until(lambda: converged(sim, checker), 50 * TICK)
    sim.partition(["n1", "n2"], ["n3", "n4", "n5"])
    assert sim.propose(b"A", via="n1") == ("n1", 2)
    assert sim.run_until(lambda: nodes["n2"].disk.last_index == 2, 10 * TICK, 1)
    sim.crash("n1")
    # (b) n5 wins with n3 and n4, appends its no-op B at index 2, and crashes before sending it.
    sim.campaign("n5")
    voted = ("n3", "n4")
    assert sim.run_until(
        lambda: all(nodes[v].disk.hard_state.vote == "n5" for v in voted), 10 * TICK, 1
    )
    for voter in voted:
        sim.cut("n5", voter)
    assert sim.run_until(lambda: nodes["n5"].node().role is Role.LEADER, 10 * TICK, 1)
    b_term = nodes["n5"].node().term
    assert nodes["n5"].disk.term_at(2) == b_term
    sim.crash("n5")
    # (c) n1 comes back, wins term 3 and copies A to n3: A is on a majority (n1, n2, n3)...
    sim.heal()
    sim.restart("n1")
    lead("n1")
    sim.cut("n1", "n4")
    assert sim.run_until(lambda: nodes["n3"].disk.term_at(2) == 1, 20 * TICK, 1)
    sim.cut("n1", "n3")
    sim.run_for(5 * TICK)
    assert [nodes[n].disk.term_at(2) for n in ("n1", "n2", "n3")] == [1, 1, 1]
    # ...but it is of term 1, and n1's own entry of term 3 is on n1 and n2 only: no commit.
    assert nodes["n1"].node().commit < 2
    sim.crash("n1")
    # (d) n5 can still win (n3 and n4 have no newer last term) and replace A by B: that is
    # why A must not have been committed.
    sim.heal()
    sim.restart("n5")
    lead("n5")
    assert sim.run_until(lambda: nodes["n3"].disk.term_at(2) == b_term, 20 * TICK)
    sim.restart("n1")
    commit_all(sim, checker)
    assert all(b"A" not in commands(nodes[n]) for n in IDS5)


@pytest.mark.parametrize("offset", range(0, 12 * TICK, 7))
def test_isolated_leader_never_serves_a_stale_lease_read(offset: int) -> None:
    """With lease reads the old leader answers without a quorum round, so its lease must end
    before the others can elect a new leader and commit a write. Whatever the phase of the
    partition against the leader's ticks, no read it serves may miss such a write."""
    checker = Checker()
    sim = Sim(100 + offset, IDS3, observer=checker, config=with_config(lease_reads=True))
    assert sim.run_until(lambda: converged(sim, checker), 100 * TICK)
    sim.run_for(offset)
    old = sim.leader()
    assert old is not None
    sim.isolate(old.id)
    served = checker.reads_served
    for i in range(60):
        sim.propose(f"w{i}".encode())  # to the newest leader
        sim.read(old.id)
        sim.run_for(TICK // 2)
    new = sim.leader()
    assert new is not None and new.id != old.id
    assert checker.reads_served > served, "the old leader never served a read from its lease"
