"""Unit tests of the Raft core's parts and of behaviour the paper leaves to the implementation:
flow control, fast back-off, the Ready contract, robustness against odd peer input."""

from __future__ import annotations

import random

import pytest

from agent.raft.core import RaftConfig, RaftNode, Ready, Role
from agent.raft.log import RaftLog
from agent.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from agent.raft.progress import Progress, ProgressState
from agent.raft.quorum import VoteResult, committed_index, has_quorum, majority, vote_result
from agent.raft.readonly import ReadOnlyQueue
from agent.raft.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from tests.raft.netutil import Network

ABC = ["a", "b", "c"]


def voters(*ids: str) -> ConfState:
    return ConfState(voters=frozenset(ids))


def node(node_id: str = "b", **kwargs: object) -> RaftNode:
    return RaftNode(RaftConfig(id=node_id), random.Random(1), conf=voters(*ABC), **kwargs)  # type: ignore[arg-type]


# --- quorum -------------------------------------------------------------------------------------


def test_majority_and_committed_index() -> None:
    assert [majority(n) for n in range(1, 6)] == [1, 2, 2, 3, 3]
    assert committed_index(["a", "b", "c"], {"a": 5, "b": 3, "c": 1}) == 3
    assert committed_index(["a", "b", "c", "d"], {"a": 5, "b": 4, "c": 2}) == 2
    assert committed_index([], {}) == 0


def test_vote_result_ignores_non_voters() -> None:
    vs = ["a", "b", "c"]
    assert vote_result(vs, {"a": True}) is VoteResult.PENDING
    assert vote_result(vs, {"a": True, "b": True}) is VoteResult.WON
    assert vote_result(vs, {"a": True, "b": False, "c": False}) is VoteResult.LOST
    assert vote_result(vs, {"a": True, "x": True, "y": True}) is VoteResult.PENDING
    assert has_quorum(vs, {"a", "c"}) and not has_quorum(vs, {"a", "x"})


# --- log ----------------------------------------------------------------------------------------


def make_log(terms: list[int], offset: int = 0, offset_term: int = 0) -> RaftLog:
    return RaftLog(offset, offset_term, [Entry(t, offset + 1 + i) for i, t in enumerate(terms)])


def test_log_terms_slices_and_compaction() -> None:
    log = make_log([1, 1, 2, 3, 3])
    assert (log.first_index, log.last_index, log.last_term) == (1, 5, 3)
    assert [log.term(i) for i in range(7)] == [0, 1, 1, 2, 3, 3, None]
    assert [e.index for e in log.slice(2, 4)] == [2, 3]
    log.compact(3)
    assert (log.offset, log.offset_term, log.term(2), log.term(3)) == (3, 2, None, 2)
    assert [e.index for e in log.slice(1, 10)] == [4, 5]


def test_log_rejects_a_gap_in_stored_entries() -> None:
    with pytest.raises(ValueError):
        RaftLog(0, 0, [Entry(1, 1), Entry(1, 3)])


def test_log_back_off_search_finds_the_last_entry_of_an_older_term() -> None:
    log = make_log([1, 1, 2, 2, 2, 5, 5], offset=0)
    assert log.last_at_or_below(7, 4) == 5
    assert log.last_at_or_below(7, 1) == 2
    assert log.last_at_or_below(3, 9) == 3
    assert log.last_at_or_below(99, 5) == 7
    compacted = make_log([4, 4], offset=10, offset_term=3)
    assert compacted.last_at_or_below(12, 3) == 10
    assert compacted.last_at_or_below(12, 2) == 9  # below what it holds: needs a snapshot


def test_log_batches_respect_count_and_bytes_but_always_move_one() -> None:
    log = RaftLog(0, 0, [Entry(1, i, b"x" * 40) for i in range(1, 11)])
    assert len(log.batch(1, 100, 100)) == 2
    assert len(log.batch(1, 3, 10_000)) == 3
    assert len(log.batch(1, 100, 10)) == 1


def test_log_overwrite_pulls_back_the_durable_watermarks() -> None:
    log = make_log([1, 1, 1, 1])
    log.append(Entry(1, 5))
    assert log.take_unhanded() == [Entry(1, 5)]
    log.replace_from([Entry(2, 3)])
    assert (log.handed, log.persisted, log.last_index) == (2, 2, 3)
    assert log.take_unhanded() == [Entry(2, 3)]
    log.stable_to([Entry(1, 5)])  # an acknowledgement for entries since overwritten
    assert log.persisted == 2
    log.stable_to([Entry(2, 3)])
    assert log.persisted == 3


# --- progress and read queue --------------------------------------------------------------------


def test_progress_probe_sends_one_at_a_time_and_replicate_fills_a_window() -> None:
    pr = Progress(next_index=5)
    assert not pr.is_paused(2)
    pr.sent(6)
    assert pr.is_paused(2)  # probe: wait for the answer
    pr.update(6)
    pr.become_replicate()
    pr.sent(7)
    pr.sent(8)
    assert pr.is_paused(2) and pr.next == 9
    pr.update(7)
    assert not pr.is_paused(2)


def test_progress_ignores_stale_rejections() -> None:
    pr = Progress(next_index=10, match=4)
    pr.become_replicate()
    assert not pr.decrease_to(rejected=3, match_hint=0)  # below match: old news
    assert pr.decrease_to(rejected=8, match_hint=0)
    assert pr.next == 5
    pr.state = ProgressState.PROBE
    assert not pr.decrease_to(rejected=7, match_hint=0)  # not the probe we sent


def test_read_queue_releases_in_order_through_the_acknowledged_request() -> None:
    q = ReadOnlyQueue()
    assert q.add("r1", "a", 5, "a") and q.add("r2", "b", 6, "a")
    assert not q.add("r1", "a", 7, "a")
    assert q.ack("r2", "b") == {"a", "b"}
    released = q.release_through("r2")
    assert [(r.ctx, r.origin, r.index) for r in released] == [("r1", "a", 5), ("r2", "b", 6)]
    assert len(q) == 0 and q.ack("r1", "c") is None


# --- the Ready contract -------------------------------------------------------------------------


def run_ready(n: RaftNode) -> Ready:
    rd = n.ready()
    n.advance(rd)
    return rd


def test_an_idle_node_has_no_ready_and_hard_state_is_reported_only_on_change() -> None:
    n = node("a")
    assert not n.has_ready()
    n.campaign()
    assert n.has_ready()
    rd = run_ready(n)
    assert rd.hard_state is None  # pre-vote changes neither term nor vote
    assert rd.soft_state is not None and rd.soft_state.role is Role.PRE_CANDIDATE
    assert not n.has_ready()


def test_a_single_node_commits_only_what_it_has_persisted() -> None:
    net = Network(["a"])
    a = net.nodes["a"]
    a.campaign()
    rd = a.ready()
    assert rd.entries and not rd.committed  # the no-op is not durable yet
    a.advance(rd)
    rd = a.ready()
    assert [e.index for e in rd.committed] == [1]
    a.advance(rd)
    index = a.propose(b"x")
    rd = a.ready()
    assert [e.index for e in rd.entries] == [index] and not rd.committed
    a.advance(rd)
    assert [e.data for e in run_ready(a).committed] == [b"x"]
    assert a.applied == index


def test_follower_acks_go_out_with_the_entries_they_acknowledge() -> None:
    b = node("b")
    b.step(
        AppendRequest(
            term=1,
            src="a",
            dst="b",
            prev_index=0,
            prev_term=0,
            entries=(Entry(1, 1), Entry(1, 2)),
            commit=1,
        )
    )
    b.step(
        AppendRequest(
            term=1, src="a", dst="b", prev_index=2, prev_term=1, entries=(Entry(1, 3),), commit=2
        )
    )
    rd = b.ready()
    assert [e.index for e in rd.entries] == [1, 2, 3]
    acks = [m for m in rd.messages if isinstance(m, AppendResponse)]
    assert [m.index for m in acks] == [3]  # two acks coalesced into one
    assert [e.index for e in rd.committed] == [1, 2]
    assert rd.hard_state == HardState(1, None, 2)


def test_restart_does_not_apply_a_committed_membership_change_twice() -> None:
    add_d = Entry(1, 2, ConfChange(ConfChangeOp.ADD_LEARNER, "d").encode(), EntryKind.CONF_CHANGE)
    remove_d = Entry(1, 3, ConfChange(ConfChangeOp.REMOVE, "d").encode(), EntryKind.CONF_CHANGE)
    n = node("a", hard_state=HardState(1, None, 3), entries=[Entry(1, 1), add_d, remove_d])
    assert n.conf == voters(*ABC)  # add then remove, replayed at construction
    rd = run_ready(n)
    assert [e.index for e in rd.committed] == [1, 2, 3]
    assert n.conf == voters(*ABC) and n.applied == 3


def test_restart_with_an_applied_index_skips_what_was_applied() -> None:
    n = node(
        "a", hard_state=HardState(1, None, 3), entries=[Entry(1, i) for i in (1, 2, 3)], applied=2
    )
    assert [e.index for e in n.ready().committed] == [3]


# --- replication flow control -------------------------------------------------------------------


def test_the_inflight_window_bounds_unacknowledged_appends() -> None:
    net = Network(ABC, max_inflight_appends=2, max_entries_per_append=1)
    net.elect("a")
    net.drop = lambda m: isinstance(m, AppendResponse)  # b and c never answer
    for i in range(10):
        net.propose("a", b"%d" % i)
        net.deliver()
    appends = [m for m in net.sent if isinstance(m, AppendRequest) and m.dst == "b" and m.entries]
    # One probe (the no-op, acknowledged before the drop) then at most two in flight.
    assert len([m for m in appends if m.entries[0].index > 1]) == 2


def test_heartbeats_carry_only_what_the_follower_is_known_to_hold() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.crash("c")
    net.propose("a", b"x")
    net.deliver()
    net.restart("c")
    net.drop = lambda m: isinstance(m, AppendRequest)
    beats = []
    a.tick()
    beats = [m for m in net.take() if isinstance(m, Heartbeat)]
    assert {m.dst: m.commit for m in beats} == {"b": a.commit, "c": 1}


def test_a_replicating_follower_falls_back_to_probing_when_unreachable() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.propose("a", b"x")
    net.deliver()
    a.report_unreachable("b")
    net.crash("b")
    net.propose("a", b"y")
    net.propose("a", b"z")
    sent = [m for m in net.take() if isinstance(m, AppendRequest) and m.dst == "b"]
    net.propose("a", b"w")
    sent += [m for m in net.take() if isinstance(m, AppendRequest) and m.dst == "b"]
    assert len(sent) == 1  # probing: one append, then wait for an answer


def test_fast_back_off_repairs_a_long_divergent_log_in_a_few_round_trips() -> None:
    net = Network(ABC, pre_vote=False, check_quorum=False)
    net.load("a", [1] * 5 + [3] * 5, term=3)
    net.load("b", [1] * 5 + [3] * 5, term=3)
    net.load("c", [1] * 5 + [2] * 1000, term=2)  # a thousand entries of a dead term
    net.elect("a")
    net.deliver()
    rejections = [m for m in net.sent if isinstance(m, AppendResponse) and m.reject]
    assert 1 <= len(rejections) <= 2
    assert [e.term for e in net.nodes["c"].log_entries(1, 100)] == [1] * 5 + [3] * 5 + [4]


def test_a_follower_far_ahead_in_an_old_term_is_also_repaired_quickly() -> None:
    net = Network(ABC, pre_vote=False, check_quorum=False)
    net.load("a", [1] * 3 + [4] * 300, term=4)
    net.load("b", [1] * 3 + [4] * 300, term=4)
    net.load("c", [1] * 3 + [2] * 100 + [3] * 100, term=3)
    net.elect("a")
    net.deliver()
    assert len([m for m in net.sent if isinstance(m, AppendResponse) and m.reject]) <= 3
    assert net.nodes["c"].last_index == net.nodes["a"].last_index


def test_a_lost_snapshot_is_sent_again() -> None:
    net = Network(ABC, election_ticks=5)
    a = net.elect("a")
    net.crash("c")
    for i in range(5):
        net.propose("a", b"%d" % i)
    net.deliver()
    a.compact(a.applied, b"img")
    net.restart("c")
    net.drop = lambda m: isinstance(m, SnapshotRequest)
    net.tick(3)
    assert net.count(SnapshotRequest) == 1
    net.drop = None
    net.tick(30)
    assert net.count(SnapshotRequest) == 2
    assert net.nodes["c"].commit == a.commit


def test_a_snapshot_older_than_the_followers_commit_is_ignored() -> None:
    b = node("b", hard_state=HardState(1, None, 3), entries=[Entry(1, i) for i in (1, 2, 3)])
    snap = Snapshot(SnapshotMeta(2, 1, voters(*ABC)), b"old")
    b.step(SnapshotRequest(term=1, src="a", dst="b", snapshot=snap))
    rd = b.ready()
    assert rd.snapshot is None and b.last_index == 3
    assert [m.index for m in rd.messages if isinstance(m, AppendResponse)] == [3]


def test_an_installed_snapshot_replaces_a_divergent_log_and_its_membership() -> None:
    b = node("b", hard_state=HardState(2, None, 1), entries=[Entry(1, 1), Entry(2, 2)])
    conf = ConfState(voters=frozenset({"a", "b", "c"}), learners=frozenset({"d"}))
    snap = Snapshot(SnapshotMeta(10, 3, conf), b"img")
    b.step(SnapshotRequest(term=3, src="a", dst="b", snapshot=snap))
    rd = run_ready(b)
    assert rd.snapshot == snap and rd.committed == []
    assert (b.commit, b.applied, b.first_index, b.last_index, b.conf) == (10, 10, 11, 10, conf)
    assert b.term_at(2) is None


# --- membership edge cases ----------------------------------------------------------------------


def test_a_new_member_with_no_membership_follows_any_leader_and_never_campaigns() -> None:
    d = RaftNode(RaftConfig(id="d"), random.Random(1), conf=ConfState())
    for _ in range(100):
        d.tick()
    assert d.role is Role.FOLLOWER and not d.has_ready()
    d.step(
        AppendRequest(
            term=5, src="x", dst="d", prev_index=0, prev_term=0, entries=(Entry(5, 1),), commit=1
        )
    )
    assert d.term == 5 and d.leader == "x" and d.commit == 1
    d.step(VoteRequest(term=9, src="y", dst="d", last_index=9, last_term=9))
    assert d.term == 5  # not a member it knows: ignored


def test_a_removed_node_ignores_everything_but_leader_traffic() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.deliver()
    a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "c"))
    net.deliver()
    c = net.nodes["c"]
    assert c.is_removed
    c.campaign()
    c.read_index("r")
    c.step(VoteRequest(term=50, src="b", dst="c", last_index=99, last_term=99))
    assert c.role is Role.FOLLOWER and c.term == a.term
    assert not c.has_ready()


def test_a_readded_node_does_not_take_its_old_removal_for_its_own() -> None:
    net = Network(ABC, bootstrap=True)
    a = net.elect("a")
    net.deliver()
    a.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "c"))
    net.deliver()
    net.crash("c")
    a.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "c"))
    net.deliver()
    net.add("c", ConfState())  # the machine comes back with a wiped disk
    net.down.discard("c")
    net.tick(3)
    c = net.nodes["c"]
    assert not c.is_removed and c.conf.learners == {"c"}
    assert c.commit == a.commit


def test_learner_caught_up_reports_a_lagging_learner_as_not_ready() -> None:
    net = Network(
        ABC,
        conf=ConfState(voters=frozenset({"a", "b"}), learners=frozenset({"c"})),
        max_entries_per_append=4,
    )
    a = net.elect("a")
    net.deliver()
    assert a.learner_caught_up("c")
    net.crash("c")
    for i in range(20):
        net.propose("a", b"%d" % i)
    net.deliver()
    assert not a.learner_caught_up("c")
    assert not net.nodes["b"].learner_caught_up("c")  # only the leader knows


# --- robustness ---------------------------------------------------------------------------------


def test_messages_for_others_from_strangers_or_of_stale_terms_change_nothing() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.deliver()
    b = net.nodes["b"]
    state = (b.term, b.vote, b.commit, b.last_index, b.leader)
    b.step(VoteRequest(term=9, src="a", dst="c", last_index=9, last_term=9))  # not for b
    b.step(VoteRequest(term=9, src="zz", dst="b", last_index=9, last_term=9))  # a stranger
    b.step(AppendResponse(term=9, src="zz", dst="b", index=4))
    b.step(
        AppendRequest(
            term=0, src="a", dst="b", prev_index=0, prev_term=0, entries=(Entry(0, 1),), commit=0
        )
    )  # stale
    b.step(ReadIndexResponse(term=a.term, src="c", dst="b", ctx="x", index=1))  # not the leader
    assert (b.term, b.vote, b.commit, b.last_index, b.leader) == state
    replies = [m for m in b.ready().messages]
    assert len(replies) == 1 and isinstance(replies[0], HeartbeatResponse)  # to the stale one


def random_message(rng: random.Random, ids: list[str], term: int, last: int) -> Message:
    src, dst = rng.choice(ids), rng.choice(ids)
    t = rng.randint(0, term + 2)
    i = rng.randint(0, last + 3)
    entries = tuple(Entry(rng.randint(0, t), i + 1 + k) for k in range(rng.randint(0, 3)))
    snap = Snapshot(SnapshotMeta(i, rng.randint(0, t), voters(*rng.sample(ids, 2))), b"")
    choices: list[Message] = [
        VoteRequest(t, src, dst, i, rng.randint(0, t), rng.random() < 0.5, rng.random() < 0.2),
        VoteResponse(t, src, dst, rng.random() < 0.5, rng.random() < 0.5),
        AppendRequest(t, src, dst, i, rng.randint(0, t), entries, rng.randint(0, last + 3)),
        AppendResponse(t, src, dst, i, rng.random() < 0.5, rng.randint(0, i), rng.randint(0, t)),
        Heartbeat(t, src, dst, rng.randint(0, last + 3), rng.choice(["", "r1"])),
        HeartbeatResponse(t, src, dst, rng.choice(["", "r1"])),
        SnapshotRequest(t, src, dst, snap),
        TimeoutNow(t, src, dst),
        ReadIndexRequest(t, src, dst, "r1"),
        ReadIndexResponse(t, src, dst, "r1", i),
    ]
    return rng.choice(choices)


@pytest.mark.parametrize("seed", range(5))
def test_step_never_raises_and_local_invariants_hold_under_junk_input(seed: int) -> None:
    rng = random.Random(seed)
    ids = [*ABC, "zz"]
    net = Network(ABC, seed=seed)
    net.elect("a")
    for i in range(5):
        net.propose("a", b"%d" % i)
    net.deliver()
    commits = {n: net.nodes[n].commit for n in ABC}
    for _ in range(2000):
        target = net.nodes[rng.choice(ABC)]
        msg = random_message(rng, ids, target.term, target.last_index)
        target.step(msg)
        if rng.random() < 0.1:
            target.tick()
        net.process_all()
        net.queue.clear()
        for n in ABC:
            x = net.nodes[n]
            assert x.applied <= x.commit <= x.last_index
            assert x.commit >= commits[n]
            commits[n] = x.commit


def test_runs_are_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[Message]:
        net = Network(["a", "b", "c", "d", "e"], seed=seed)
        net.tick_until(lambda: net.leader() is not None)
        leader = net.leader()
        assert leader is not None
        for i in range(20):
            net.propose(leader, b"%d" % i)
        net.isolate(leader)
        net.tick(40)
        return net.sent

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_check_quorum_counts_learners_out() -> None:
    net = Network(
        ABC,
        conf=ConfState(voters=frozenset({"a", "b"}), learners=frozenset({"c"})),
        election_ticks=5,
    )
    a = net.elect("a")
    net.crash("b")
    net.tick(12)
    assert a.role is Role.FOLLOWER  # c still answers, but a learner is no quorum


def test_an_ack_never_vouches_for_entries_the_leader_did_not_send() -> None:
    # b holds a stale term-2 entry at index 3; a probe that matches at index 2 must be
    # acknowledged at 2, or the leader would count b's stale entry toward its own index 3.
    b = node("b", hard_state=HardState(3, None, 1), entries=[Entry(1, 1), Entry(1, 2), Entry(2, 3)])
    b.step(AppendRequest(term=3, src="a", dst="b", prev_index=2, prev_term=1, entries=(), commit=1))
    (ack,) = b.ready().messages
    assert isinstance(ack, AppendResponse) and not ack.reject and ack.index == 2
    assert b.last_index == 3  # nothing conflicting was sent, so nothing is truncated yet


def test_an_ack_queued_for_an_old_leader_is_withdrawn_when_its_entries_are_overwritten() -> None:
    b = node("b", hard_state=HardState(1, None, 1), entries=[Entry(1, 1)])
    b.step(
        AppendRequest(
            term=1,
            src="a",
            dst="b",
            prev_index=1,
            prev_term=1,
            entries=(Entry(1, 2), Entry(1, 3)),
            commit=1,
        )
    )
    # Before that ack leaves, c wins term 2 and its append replaces index 2 and 3.
    b.step(
        AppendRequest(
            term=2, src="c", dst="b", prev_index=1, prev_term=1, entries=(Entry(2, 2),), commit=1
        )
    )
    rd = b.ready()
    acks = [(m.dst, m.index) for m in rd.messages if isinstance(m, AppendResponse)]
    assert acks == [("c", 2)]  # no ack of index 3 to a: it is no longer stored
    assert [(e.index, e.term) for e in rd.entries] == [(2, 2)]
