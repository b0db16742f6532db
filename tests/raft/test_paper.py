"""The Raft core against the Raft paper (Ongaro & Ousterhout) and thesis, section by section.

Each test names the section it checks. They run on the scripted network in ``netutil``: every
fault is explicit, so a failure reads as the story the paper tells.
"""

from __future__ import annotations

import random

import pytest

from agent.raft.core import (
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    ReadState,
    Role,
    SnapshotConfChanged,
)
from agent.raft.messages import (
    AppendRequest,
    AppendResponse,
    Heartbeat,
    SnapshotRequest,
    TimeoutNow,
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
    SnapshotMeta,
)
from tests.raft.netutil import Network

ABC = ["a", "b", "c"]
FIVE = ["s1", "s2", "s3", "s4", "s5"]


def leader_of(net: Network) -> str:
    leader = net.leader()
    assert leader is not None
    return leader


def terms(node: RaftNode) -> list[int]:
    return [e.term for e in node.log_entries(node.first_index, node.last_index + 1)]


# --- §5.1 terms ---------------------------------------------------------------------------------


def test_5_1_a_leader_seeing_a_higher_term_becomes_follower() -> None:
    net = Network(ABC)
    net.elect("a")
    a = net.nodes["a"]
    a.step(
        AppendRequest(
            term=a.term + 3, src="b", dst="a", prev_index=0, prev_term=0, entries=(), commit=0
        )
    )
    assert a.role is Role.FOLLOWER
    assert a.term == 4 and a.leader == "b" and a.vote is None


def test_5_1_a_stale_leader_learns_the_newer_term_from_any_member_it_contacts() -> None:
    net = Network(ABC, pre_vote=False, check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net.elect("b")  # b wins term 2 with c while a still thinks it leads term 1
    assert net.nodes["a"].role is Role.LEADER
    net.heal()
    net.tick()  # a's heartbeat reaches b and c, which answer with their newer term
    a = net.nodes["a"]
    assert a.role is Role.FOLLOWER and a.term == net.nodes["b"].term
    assert leader_of(net) == "b"


# --- §5.2 leader election -----------------------------------------------------------------------


def test_5_2_a_follower_campaigns_after_a_randomized_timeout_in_e_to_2e() -> None:
    timeouts = set()
    for seed in range(30):
        net = Network(ABC, seed=seed, election_ticks=10, pre_vote=False)
        a = net.nodes["a"]
        ticks = 0
        while a.role is Role.FOLLOWER:
            a.tick()
            ticks += 1
        assert 10 <= ticks < 20
        assert a.role is Role.CANDIDATE and a.term == 1 and a.vote == "a"
        timeouts.add(ticks)
    assert len(timeouts) > 3, "timeouts must be randomized, not fixed"


def test_5_2_candidate_asks_every_other_voter_and_wins_with_a_majority() -> None:
    net = Network(FIVE, pre_vote=False)
    net.crash("s4")
    net.crash("s5")
    net.nodes["s1"].campaign()
    msgs = net.take()
    assert sorted(m.dst for m in msgs if isinstance(m, VoteRequest)) == ["s2", "s3", "s4", "s5"]
    net.send(msgs)
    assert net.nodes["s1"].role is Role.LEADER  # 3 of 5 votes


def test_5_2_candidate_that_is_rejected_by_a_majority_steps_back() -> None:
    net = Network(ABC, pre_vote=False, check_quorum=False)
    net.load("b", [1, 1], term=1)
    net.load("c", [1, 1], term=1)
    net.load("a", [1], term=1)
    net.nodes["a"].campaign()
    net.deliver()
    a = net.nodes["a"]
    assert a.role is Role.FOLLOWER and a.term == 2  # b and c refused: a's log is behind


def test_5_2_each_server_votes_for_at_most_one_candidate_per_term() -> None:
    c = RaftNode(
        RaftConfig(id="c", pre_vote=False), random.Random(1), conf=ConfState(voters=frozenset(ABC))
    )
    c.step(VoteRequest(term=1, src="a", dst="c", last_index=0, last_term=0))
    c.step(VoteRequest(term=1, src="b", dst="c", last_index=0, last_term=0))
    c.step(VoteRequest(term=1, src="a", dst="c", last_index=0, last_term=0))  # a retries
    rd = c.ready()
    answers = [(m.dst, m.granted) for m in rd.messages if isinstance(m, VoteResponse)]
    assert answers == [("a", True), ("b", False), ("a", True)]
    # The vote is in the same Ready as the replies, so it is on disk before they leave.
    assert rd.hard_state == HardState(term=1, vote="a", commit=0)


def test_5_2_split_votes_are_retried_in_a_new_term() -> None:
    net = Network(["a", "b", "c", "d"], pre_vote=False)
    net.cut("a", "b")
    net.cut("c", "d")
    net.cut("a", "d")
    net.cut("b", "c")
    # a+c and b+d cannot reach a majority of four between them
    net.nodes["a"].campaign()
    net.nodes["b"].campaign()
    net.deliver()
    assert net.leader() is None
    net.heal()
    net.tick_until(lambda: net.leader() is not None)
    assert net.nodes[leader_of(net)].term >= 2


def test_5_2_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    net = Network(ABC, heartbeat_ticks=2)
    net.elect("a")
    before = net.count(Heartbeat, src="a")
    net.tick(6, ids=["a"])
    assert net.count(Heartbeat, src="a") - before == 3 * 2


# --- §5.3 log replication -----------------------------------------------------------------------


def test_5_3_an_entry_commits_once_a_majority_stores_it_and_then_everyone_applies_it() -> None:
    net = Network(FIVE)
    net.elect("s1")
    net.crash("s4")
    net.crash("s5")
    index = net.propose("s1", b"x")
    net.deliver()
    assert net.nodes["s1"].commit == index
    for node_id in ["s1", "s2", "s3"]:
        assert net.data(node_id) == [b"x"]


def test_5_3_without_a_majority_nothing_commits() -> None:
    net = Network(FIVE)
    net.elect("s1")
    for node_id in ["s3", "s4", "s5"]:
        net.crash(node_id)
    index = net.propose("s1", b"x")
    net.deliver()
    assert net.nodes["s1"].commit < index
    assert net.data("s1") == []


def test_5_3_the_leader_overwrites_a_followers_conflicting_suffix() -> None:
    # Figure 7: followers missing entries, with extra uncommitted entries, or both.
    net = Network(FIVE, pre_vote=False)
    net.load("s1", [1, 1, 1, 4, 4, 5, 5, 6, 6, 6], term=8)
    net.load("s2", [1, 1, 1, 4], term=4)  # (a) missing entries
    net.load("s3", [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], term=6)  # (c) one extra
    net.load("s4", [1, 1, 1, 4, 4, 4, 4], term=4)  # (e) conflicting run
    net.load("s5", [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], term=3)  # (f) long conflict
    net.elect("s1")
    net.propose("s1", b"after")
    net.deliver()
    expected = terms(net.nodes["s1"])
    assert expected == [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 9, 9]
    for node_id in FIVE:
        assert terms(net.nodes[node_id]) == expected, node_id
        assert net.nodes[node_id].commit == 12


def test_5_3_follower_truncation_is_handed_out_from_the_overwritten_index() -> None:
    f = RaftNode(
        RaftConfig(id="b"),
        random.Random(1),
        conf=ConfState(voters=frozenset(ABC)),
        hard_state=HardState(2, None, 1),
        entries=[Entry(1, 1), Entry(2, 2), Entry(2, 3)],
    )
    f.step(
        AppendRequest(
            term=3,
            src="a",
            dst="b",
            prev_index=1,
            prev_term=1,
            entries=(Entry(3, 2, b"new"),),
            commit=1,
        )
    )
    rd = f.ready()
    assert [(e.index, e.term) for e in rd.entries] == [(2, 3)]
    assert f.last_index == 2
    assert isinstance(rd.messages[0], AppendResponse) and rd.messages[0].index == 2


def test_5_3_an_old_duplicate_append_does_not_truncate_matching_entries() -> None:
    net = Network(ABC)
    net.elect("a")
    for i in range(3):
        net.propose("a", b"%d" % i)
    first = [m for m in net.take() if isinstance(m, AppendRequest) and m.dst == "b"]
    net.send(first)
    for i in range(3, 6):
        net.propose("a", b"%d" % i)
    net.deliver()
    b = net.nodes["b"]
    before = terms(b)
    net.send(first)  # the network delivers the old, shorter append again
    assert terms(b) == before and b.last_index == 7


def test_5_3_committed_entries_are_never_overwritten_even_by_a_confused_peer() -> None:
    b = RaftNode(
        RaftConfig(id="b"),
        random.Random(1),
        conf=ConfState(voters=frozenset(ABC)),
        hard_state=HardState(2, None, 2),
        entries=[Entry(1, 1), Entry(2, 2)],
    )
    b.step(
        AppendRequest(
            term=2, src="a", dst="b", prev_index=1, prev_term=1, entries=(Entry(3, 2),), commit=2
        )
    )
    assert b.term_at(2) == 2 and b.commit == 2


def test_5_3_proposals_are_batched_into_one_append_per_follower_per_ready() -> None:
    net = Network(FIVE)
    net.elect("s1")
    for i in range(64):
        net.propose("s1", b"p%d" % i)
    appends = [m for m in net.take() if isinstance(m, AppendRequest)]
    assert sorted(m.dst for m in appends) == ["s2", "s3", "s4", "s5"]
    assert all(len(m.entries) == 64 for m in appends)
    net.send(appends)
    assert net.nodes["s1"].commit == net.nodes["s1"].last_index


def test_5_3_appends_respect_the_entry_and_byte_limits() -> None:
    net = Network(ABC, max_entries_per_append=10, max_bytes_per_append=100)
    net.elect("a")
    for i in range(25):
        net.propose("a", b"%02d" % i)
    first = [m for m in net.take() if isinstance(m, AppendRequest)]
    assert [len(m.entries) for m in first] == [10, 10]
    net.send(first)
    net.propose("a", b"x" * 70)
    net.propose("a", b"y" * 70)
    net.deliver()
    big = [
        m
        for m in net.sent
        if isinstance(m, AppendRequest) and m.entries and len(m.entries[0].data) == 70
    ]
    assert big and all(len(m.entries) == 1 for m in big)  # 140 bytes would exceed 100
    assert net.data("b")[-2:] == [b"x" * 70, b"y" * 70]


# --- §5.4.1 election restriction ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate_last", "granted"),
    [((3, 2), True), ((2, 2), False), ((5, 1), False), ((1, 3), True)],
)
def test_5_4_1_votes_go_only_to_candidates_whose_log_is_at_least_as_up_to_date(
    candidate_last: tuple[int, int], granted: bool
) -> None:
    voter = RaftNode(
        RaftConfig(id="b", pre_vote=False),
        random.Random(1),
        conf=ConfState(voters=frozenset(ABC)),
        hard_state=HardState(2, None, 0),
        entries=[Entry(1, 1), Entry(2, 2), Entry(2, 3)],
    )
    last_index, last_term = candidate_last
    voter.step(VoteRequest(term=3, src="a", dst="b", last_index=last_index, last_term=last_term))
    (reply,) = voter.ready().messages
    assert isinstance(reply, VoteResponse) and reply.granted is granted


# --- §5.4.2 committing entries from previous terms (figure 8) -----------------------------------


def test_5_4_2_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    net = Network(FIVE, pre_vote=False, check_quorum=False)
    # (a)-(b): s1 led term 2 and stored index 2 on s2 only; s5 then led term 3 alone.
    net.load("s1", [1, 2], term=4, commit=1)
    net.load("s2", [1, 2], term=4, commit=1)
    net.load("s3", [1], term=4, commit=1)
    net.load("s4", [1], term=4, commit=1)
    net.load("s5", [1, 3], term=3, commit=1)
    net.crash("s5")
    # (c): s1 leads term 5; its own no-op (index 3) does not get out yet ...
    net.drop = lambda m: isinstance(m, AppendRequest) and any(e.term == 5 for e in m.entries)
    s1 = net.elect("s1")
    assert s1.term == 5
    # ... but its term-2 entry reaches s3, so a majority (s1, s2, s3) stores index 2.
    net.send(
        AppendRequest(
            term=5, src="s1", dst=dst, prev_index=1, prev_term=1, entries=(Entry(2, 2),), commit=1
        )
        for dst in ["s2", "s3"]
    )
    assert [net.nodes[i].term_at(2) for i in ["s1", "s2", "s3"]] == [2, 2, 2]
    assert s1.progress()["s3"][0] == 2
    assert s1.commit == 1, "a term-2 entry on a majority must not be committed by counting"
    # (d): s1 crashes; s5 can still win (s2, s3, s4 vote: its last term 3 beats 2) ...
    net.crash("s1")
    net.restart("s5")
    net.drop = None
    net.nodes["s5"].campaign()  # learns term 5 from the refusals
    net.deliver()
    net.elect("s5")
    net.deliver()
    # ... and overwrites index 2 everywhere: harmless, because it was never committed.
    for node_id in ["s2", "s3", "s4", "s5"]:
        assert net.nodes[node_id].term_at(2) == 3
    assert all(e.term != 2 for n in FIVE for e in net.applied[n])


def test_5_4_2_old_term_entries_commit_through_an_entry_of_the_current_term() -> None:
    net = Network(ABC, pre_vote=False)
    net.load("a", [1, 2], term=2)
    net.load("b", [1], term=2)
    net.load("c", [1], term=2)
    net.elect("a")
    net.deliver()
    a = net.nodes["a"]
    assert a.commit == 3 and a.term_at(3) == a.term
    assert [e.term for e in net.applied["b"]] == [1, 2, 3]


# --- §5.5 follower and candidate crashes --------------------------------------------------------


def test_5_5_duplicate_requests_are_harmless() -> None:
    net = Network(ABC)
    net.elect("a")
    net.propose("a", b"once")
    msgs = net.take()
    net.send(msgs + msgs)  # every message delivered twice
    net.deliver()
    for node_id in ABC:
        assert net.data(node_id) == [b"once"]
        assert net.nodes[node_id].last_index == 2


def test_5_5_a_crashed_follower_catches_up_after_restart() -> None:
    net = Network(ABC)
    net.elect("a")
    net.crash("c")
    for i in range(20):
        net.propose("a", b"%d" % i)
    net.deliver()
    net.restart("c")
    net.tick(3)
    assert net.data("c") == net.data("a")
    assert len(net.data("c")) == 20


def test_5_5_a_restarted_node_keeps_its_term_vote_log_and_membership() -> None:
    net = Network(ABC, bootstrap=True)
    net.elect("a")
    net.propose("a", b"kept")
    net.deliver()
    before = net.nodes["b"]
    node = net.restart("b", conf=ConfState())  # the stored state alone must be enough
    assert (node.term, node.vote, node.commit, node.last_index) == (
        before.term,
        before.vote,
        before.commit,
        before.last_index,
    )
    assert node.conf == ConfState(voters=frozenset(ABC))  # from the stored PROMOTE entries
    assert node.applied == 0
    rd = node.ready()
    normal = [e.data for e in rd.committed if e.kind is EntryKind.NORMAL and e.data]
    assert normal == [b"kept"]  # re-applied from the start


# --- §6 cluster membership changes --------------------------------------------------------------


def cc(op: ConfChangeOp, node: str) -> ConfChange:
    return ConfChange(op, node)


def test_6_a_learner_joins_catches_up_is_promoted_and_later_removed_while_proposals_flow() -> None:
    net = Network(ABC, bootstrap=True)
    net.elect("a")
    a = net.nodes["a"]
    for i in range(10):
        net.propose("a", b"before-%d" % i)
    net.deliver()
    net.add("d", ConfState())  # a new machine starts knowing nothing
    a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "d"))
    net.propose("a", b"during")
    net.deliver()
    net.tick(2)
    assert a.conf.learners == {"d"}
    assert a.learner_caught_up("d")
    assert net.data("d") == net.data("a")
    assert net.nodes["d"].conf == a.conf  # it learned the voters from the log
    a.propose_conf_change(cc(ConfChangeOp.PROMOTE, "d"))
    net.propose("a", b"after-promote")
    net.deliver()
    assert a.conf.voters == {"a", "b", "c", "d"}
    # Now a majority is 3 of 4: with b and c down, a and d cannot commit.
    net.crash("b")
    net.crash("c")
    index = net.propose("a", b"needs-three")
    net.deliver()
    assert a.commit < index
    net.restart("b")
    net.deliver()
    net.tick(2)
    assert a.commit >= index
    a.propose_conf_change(cc(ConfChangeOp.REMOVE, "d"))
    net.propose("a", b"after-remove")
    net.deliver()
    assert a.conf.voters == {"a", "b", "c"}
    assert net.nodes["d"].is_removed
    net.tick(50)
    assert net.nodes["d"].role is Role.FOLLOWER and leader_of(net) == "a"


def test_6_learners_never_vote_count_or_campaign() -> None:
    net = Network(ABC, conf=ConfState(voters=frozenset({"a", "b"}), learners=frozenset({"c"})))
    net.elect("a")
    net.crash("b")
    index = net.propose("a", b"x")
    net.deliver()
    assert net.nodes["a"].commit < index, "a learner's copy must not count toward a quorum"
    net.tick(100, ids=["c"])
    assert net.nodes["c"].role is Role.FOLLOWER and net.count(VoteRequest, src="c") == 0


def test_6_one_membership_change_at_a_time() -> None:
    net = Network(ABC)
    net.drop = lambda m: isinstance(m, AppendRequest)
    a = net.elect("a")
    with pytest.raises(ProposalDropped):  # the new leader has not applied its no-op yet
        a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "d"))
    net.drop = None
    net.tick(2)
    a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "d"))
    with pytest.raises(ProposalDropped):
        a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "e"))
    net.deliver()
    a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "e"))
    with pytest.raises(NotLeader):
        net.nodes["b"].propose_conf_change(cc(ConfChangeOp.REMOVE, "c"))


def test_6_nonsensical_changes_are_refused_with_a_reason() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.deliver()
    for change, reason in [
        (cc(ConfChangeOp.PROMOTE, "z"), "not a learner"),
        (cc(ConfChangeOp.ADD_LEARNER, "b"), "already a voter"),
        (cc(ConfChangeOp.REMOVE, "z"), "not a member"),
    ]:
        with pytest.raises(ProposalDropped, match=reason):
            a.propose_conf_change(change)


def test_6_a_leader_that_removes_itself_steps_down_and_hands_over() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.deliver()
    campaigned = net.count(VoteRequest, src="a")
    a.propose_conf_change(cc(ConfChangeOp.REMOVE, "a"))
    net.deliver()
    assert a.is_removed and a.role is Role.FOLLOWER
    new = leader_of(net)
    assert new in {"b", "c"}
    assert net.count(TimeoutNow, src="a") == 1  # the hand-over was immediate, not a timeout
    net.propose(new, b"without a")
    net.deliver()
    assert net.data("b") == net.data("c") == [b"without a"]
    net.tick(50)
    assert net.count(VoteRequest, src="a") == campaigned


def test_6_a_member_that_missed_the_change_still_follows_the_new_leader() -> None:
    # d is added and promoted while c is cut off; d then leads. c must accept d as leader
    # although c's applied membership does not know d yet.
    net = Network(ABC, bootstrap=True)
    a = net.elect("a")
    net.deliver()
    net.add("d", ConfState())
    net.isolate("c")
    a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "d"))
    net.deliver()
    a.propose_conf_change(cc(ConfChangeOp.PROMOTE, "d"))
    net.deliver()
    a.transfer_leadership("d")
    net.deliver()
    assert leader_of(net) == "d"
    net.heal()
    net.propose("d", b"hello c")
    net.tick(3)
    assert net.data("c") == [b"hello c"]
    assert net.nodes["c"].conf.voters == {"a", "b", "c", "d"}


# --- §7 log compaction --------------------------------------------------------------------------


def test_7_a_lagging_follower_gets_a_snapshot_then_appends() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.crash("c")
    for i in range(30):
        net.propose("a", b"%d" % i)
    net.deliver()
    snap = a.compact(a.applied, b"state-machine-image")
    net.storage["a"].compact(snap)
    assert a.first_index == snap.meta.index + 1
    assert snap.meta.conf == ConfState(voters=frozenset(ABC))
    net.restart("c")
    net.tick(2)
    assert net.count(SnapshotRequest, dst="c") == 1
    c = net.nodes["c"]
    assert c.snapshot is not None and c.snapshot.data == b"state-machine-image"
    assert c.commit == a.commit and c.applied == a.applied
    net.propose("a", b"after")
    net.deliver()
    assert net.data("c") == [b"after"]  # the rest arrived as ordinary appends


def test_7_a_snapshot_the_follower_already_covers_only_moves_its_commit() -> None:
    net = Network(ABC)
    a = net.elect("a")
    for i in range(5):
        net.propose("a", b"%d" % i)
    net.deliver()
    snap = a.compact(a.applied, b"img")
    b = net.nodes["b"]
    b.step(SnapshotRequest(term=a.term, src="a", dst="b", snapshot=snap))
    rd = b.ready()
    assert rd.snapshot is None  # b's log already holds it: keep the log
    assert [m.index for m in rd.messages if isinstance(m, AppendResponse)] == [b.commit]


def test_7_compaction_is_at_an_applied_index_after_the_current_snapshot() -> None:
    net = Network(ABC)
    a = net.elect("a")
    for i in range(4):
        net.propose("a", b"%d" % i)
    net.deliver()
    with pytest.raises(ValueError, match="not applied yet"):
        a.compact(a.applied + 1, b"")
    a.compact(a.applied - 2, b"img")
    first, snap = a.first_index, a.snapshot
    for index in (a.applied - 2, a.applied - 3, 0):
        with pytest.raises(ValueError, match="already compacted"):
            a.compact(index, b"")
    assert (a.first_index, a.snapshot) == (first, snap)  # a refused compaction changes nothing


def test_7_compaction_at_an_older_applied_index_keeps_the_entries_after_it() -> None:
    net = Network(ABC, bootstrap=True)
    a = net.elect("a")
    for i in range(10):
        net.propose("a", b"%d" % i)
    net.deliver()
    last, applied = a.last_index, a.applied
    index = applied - 4  # captured there; four more entries applied while it was serialized
    term = a.term_at(index)
    assert a.create_snapshot(index, b"img") == Snapshot(
        SnapshotMeta(index, term, ConfState(voters=frozenset(ABC))), b"img"
    )
    assert a.first_index == 1  # create_snapshot compacts nothing
    snap = a.compact(index, b"img")
    assert snap.meta == SnapshotMeta(index, term, ConfState(voters=frozenset(ABC)))
    assert a.snapshot == snap and a.first_index == index + 1
    assert [e.index for e in a.log_entries(index + 1, last + 1)] == list(range(index + 1, last + 1))
    assert (a.applied, a.last_index) == (applied, last)
    net.storage["a"].compact(snap)
    net.propose("a", b"later")
    net.deliver()
    assert net.data("b")[-1] == b"later" and a.commit == last + 1


def test_7_no_compaction_before_a_membership_change_already_applied() -> None:
    """The snapshot must name the membership at its index; the core knows it only from the
    last applied change on."""
    net = Network(ABC, bootstrap=True)
    a = net.elect("a")
    net.propose("a", b"before")
    net.deliver()
    before = a.applied
    net.add("d", ConfState())
    changed_at = a.propose_conf_change(cc(ConfChangeOp.ADD_LEARNER, "d"))
    net.propose("a", b"after")
    net.deliver()
    assert a.applied > changed_at > before
    with pytest.raises(SnapshotConfChanged, match=f"applied after it \\(at index {changed_at}\\)"):
        a.compact(changed_at - 1, b"img")
    with pytest.raises(ValueError):  # SnapshotConfChanged is a ValueError
        a.create_snapshot(before, b"img")
    assert a.snapshot is None and a.first_index == 1
    with_d = ConfState(voters=frozenset(ABC), learners=frozenset({"d"}))
    assert a.compact(changed_at, b"img").meta.conf == with_d  # from the change itself on
    assert a.conf == with_d


def test_7_after_a_restart_the_bootstrap_membership_changes_count_once_reapplied() -> None:
    net = Network(ABC, bootstrap=True)  # the three founding PROMOTEs are entries 1..3
    a = net.restart("a")
    with pytest.raises(ValueError, match="not applied yet"):
        a.compact(1, b"")  # nothing applied yet: the entries are handed out again first
    net.process("a")
    assert a.applied == 3
    with pytest.raises(SnapshotConfChanged):
        a.compact(2, b"")  # n3's PROMOTE at 3 was applied after it
    assert a.compact(3, b"img").meta.conf == ConfState(voters=frozenset(ABC))
    # Restarted with entries applied before the crash (applied passed in): same rule at once.
    disk = net.storage["b"]
    b = RaftNode(
        net.config("b"),
        random.Random(1),
        conf=ConfState(),
        hard_state=disk.hard_state,
        entries=list(disk.entries),
        applied=3,
    )
    with pytest.raises(SnapshotConfChanged):
        b.compact(2, b"")
    assert b.compact(3, b"img").meta.conf == ConfState(voters=frozenset(ABC))


def test_7_a_follower_sent_an_older_snapshot_then_the_entries_after_it_ends_identical() -> None:
    net = Network(ABC, bootstrap=True)
    a = net.elect("a")
    net.crash("c")
    for i in range(20):
        net.propose("a", b"%d" % i)
    net.deliver()
    index = a.applied - 7
    later = a.log_entries(index + 1, a.last_index + 1)
    snap = a.compact(index, b"image at %d" % index)
    net.storage["a"].compact(snap)
    net.restart("c")
    net.tick(2)
    assert net.count(SnapshotRequest, dst="c") == 1
    c = net.nodes["c"]
    assert c.snapshot == snap and c.first_index == index + 1
    net.propose("a", b"after")
    net.deliver()
    # c restores the image, then applies exactly the entries after the snapshot's index
    assert net.data("c") == [e.data for e in later if e.data] + [b"after"]
    assert (c.commit, c.applied, c.last_index) == (a.commit, a.applied, a.last_index)
    assert c.log_entries(index + 1, c.last_index + 1) == a.log_entries(index + 1, a.last_index + 1)
    assert c.conf == a.conf == snap.meta.conf


def test_7_restart_from_a_snapshot_and_the_entries_after_it() -> None:
    net = Network(ABC)
    a = net.elect("a")
    for i in range(5):
        net.propose("a", b"%d" % i)
    net.deliver()
    snap = a.compact(a.applied, b"img")
    net.storage["a"].compact(snap)
    net.propose("a", b"later")
    net.deliver()
    node = net.restart("a", conf=ConfState())
    assert node.first_index == snap.meta.index + 1 and node.conf == snap.meta.conf
    rd = node.ready()
    assert [e.data for e in rd.committed] == [b"later"]


# --- §8 client interaction: linearizable reads (thesis §6.4) ------------------------------------


def test_8_read_index_on_the_leader_waits_for_a_quorum_heartbeat_round() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.deliver()
    a.read_index("r1")
    msgs = net.take()
    assert net.read_states["a"] == []
    assert {m.dst for m in msgs if isinstance(m, Heartbeat) and m.ctx == "r1"} == {"b", "c"}
    net.send(msgs)
    assert net.read_states["a"] == [ReadState("r1", a.commit)]


def test_8_an_isolated_leader_cannot_serve_a_read() -> None:
    net = Network(ABC, check_quorum=False)
    a = net.elect("a")
    net.deliver()
    net.isolate("a")
    a.read_index("r1")
    net.tick(5)
    assert net.read_states["a"] == []


def test_8_a_new_leader_serves_reads_only_after_committing_an_entry_of_its_term() -> None:
    net = Network(ABC)
    a = net.nodes["a"]
    a.campaign()
    net.drop = lambda m: isinstance(m, AppendRequest)  # the no-op cannot replicate yet
    net.deliver()
    assert a.role is Role.LEADER
    a.read_index("r1")
    net.tick(2)
    assert net.read_states["a"] == []
    net.drop = None
    net.tick(2)
    assert net.read_states["a"] == [ReadState("r1", 1)]


def test_8_read_index_through_a_follower() -> None:
    net = Network(ABC)
    net.elect("a")
    net.propose("a", b"x")
    net.deliver()
    net.nodes["b"].read_index("rb")
    net.deliver()
    assert net.read_states["b"] == [ReadState("rb", net.nodes["a"].commit)]


def test_8_read_index_without_a_known_leader_is_dropped() -> None:
    net = Network(ABC)
    net.nodes["b"].read_index("r")
    net.deliver()
    assert net.read_states["b"] == [] and not net.sent


def test_8_single_voter_and_lease_reads_are_immediate() -> None:
    solo = Network(["a"])
    a = solo.elect("a")
    solo.deliver()
    a.read_index("r")
    assert a.ready().read_states == [ReadState("r", a.commit)]
    net = Network(ABC, lease_reads=True)
    a = net.elect("a")
    net.tick(1)  # one heartbeat round acknowledged by a quorum starts the lease
    a.read_index("r")
    rd = a.ready()
    assert rd.read_states == [ReadState("r", a.commit)]
    assert not any(isinstance(m, Heartbeat) for m in rd.messages)


def test_8_a_lease_runs_out_when_the_followers_fall_silent() -> None:
    net = Network(ABC, lease_reads=True, election_ticks=10)
    a = net.elect("a")
    net.tick(1)
    net.isolate("a")
    net.tick(8, ids=["a"])  # still leader (check-quorum has not fired), lease has expired
    assert a.role is Role.LEADER
    a.read_index("r")
    net.tick(1, ids=["a"])
    assert net.read_states["a"] == []  # fell back to a quorum round, which cannot complete
    net.heal()
    net.tick(1)
    assert [rs.ctx for rs in net.read_states["a"]] == ["r"]


def test_8_no_lease_reads_during_a_leadership_transfer() -> None:
    net = Network(ABC, lease_reads=True)
    a = net.elect("a")
    net.tick(1)
    net.drop = lambda m: isinstance(m, TimeoutNow)
    a.transfer_leadership("b")
    a.read_index("r")
    rd = a.ready()
    assert rd.read_states == []
    assert any(isinstance(m, Heartbeat) and m.ctx == "r" for m in rd.messages)


# --- thesis §3.10 leadership transfer -----------------------------------------------------------


def test_3_10_transfer_to_an_up_to_date_voter_is_immediate() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.deliver()
    a.transfer_leadership("b")
    net.deliver()
    assert leader_of(net) == "b" and a.role is Role.FOLLOWER


def test_3_10_transfer_to_a_lagging_voter_catches_it_up_first() -> None:
    net = Network(ABC)
    a = net.elect("a")
    net.crash("c")
    for i in range(10):
        net.propose("a", b"%d" % i)
    net.deliver()
    net.restart("c")
    a.transfer_leadership("c")
    with pytest.raises(ProposalDropped):
        a.propose(b"refused during the transfer")
    net.tick(2)
    assert leader_of(net) == "c"
    assert len(net.data("c")) == 10


def test_3_10_a_transfer_that_does_not_finish_is_abandoned() -> None:
    net = Network(ABC, election_ticks=10)
    a = net.elect("a")
    net.deliver()
    net.drop = lambda m: isinstance(m, TimeoutNow)
    a.transfer_leadership("b")
    net.tick(9)
    with pytest.raises(ProposalDropped):
        a.propose(b"still refused")
    net.tick(1)
    assert a.role is Role.LEADER and a.transfer_target is None
    a.propose(b"accepted again")


def test_3_10_transfer_needs_a_voter_and_a_leader() -> None:
    net = Network(ABC, conf=ConfState(voters=frozenset({"a", "b"}), learners=frozenset({"c"})))
    a = net.elect("a")
    with pytest.raises(ProposalDropped):
        a.transfer_leadership("c")
    with pytest.raises(NotLeader) as err:
        net.nodes["b"].transfer_leadership("b")
    assert err.value.leader == "a"


def test_3_10_timeout_now_overrides_the_leader_lease() -> None:
    net = Network(ABC, check_quorum=True, pre_vote=True)
    a = net.elect("a")
    net.deliver()
    a.transfer_leadership("c")
    net.deliver()
    requests = [m for m in net.sent if isinstance(m, VoteRequest) and m.src == "c"]
    assert requests and all(m.transfer and not m.pre_vote for m in requests)
    assert leader_of(net) == "c"


# --- thesis §9.6 pre-vote and check-quorum ------------------------------------------------------


def test_9_6_a_partitioned_node_does_not_disrupt_the_cluster_when_it_rejoins() -> None:
    net = Network(ABC, pre_vote=True, check_quorum=True)
    net.elect("a")
    term = net.nodes["a"].term
    net.isolate("c")
    net.tick(100)
    assert net.nodes["c"].term == term, "pre-vote must keep the cut-off node's term"
    assert net.nodes["c"].role is Role.PRE_CANDIDATE
    net.heal()
    net.tick(3)
    assert leader_of(net) == "a" and net.nodes["a"].term == term
    assert net.nodes["c"].role is Role.FOLLOWER and net.nodes["c"].leader == "a"


def test_9_6_without_pre_vote_the_rejoining_node_forces_an_election() -> None:
    # The contrast that shows what pre-vote buys.
    net = Network(ABC, pre_vote=False, check_quorum=False)
    net.elect("a")
    term = net.nodes["a"].term
    net.isolate("c")
    net.tick(50)
    assert net.nodes["c"].term > term + 1
    net.heal()
    net.tick(1)
    assert net.nodes["a"].term > term


def test_9_6_pre_vote_does_not_touch_the_voters_term_or_vote() -> None:
    b = RaftNode(
        RaftConfig(id="b"),
        random.Random(1),
        conf=ConfState(voters=frozenset(ABC)),
        hard_state=HardState(3, "a", 0),
    )
    b.step(VoteRequest(term=4, src="c", dst="b", last_index=0, last_term=0, pre_vote=True))
    (reply,) = b.ready().messages
    assert isinstance(reply, VoteResponse) and reply.granted and reply.pre_vote
    assert reply.term == 4
    assert (b.term, b.vote) == (3, "a")


def test_9_6_a_pre_candidate_rejected_with_a_higher_term_adopts_it() -> None:
    c = RaftNode(
        RaftConfig(id="c"),
        random.Random(1),
        conf=ConfState(voters=frozenset(ABC)),
        hard_state=HardState(2, None, 0),
    )
    c.campaign()
    assert c.role is Role.PRE_CANDIDATE and c.term == 2
    c.step(VoteResponse(term=7, src="a", dst="c", granted=False, pre_vote=True))
    assert c.role is Role.FOLLOWER and c.term == 7


def test_9_6_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    net = Network(ABC, check_quorum=True, election_ticks=10)
    a = net.elect("a")
    net.isolate("a")
    net.tick(20, ids=["a"])
    assert a.role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        a.propose(b"x")


def test_9_6_check_quorum_voters_ignore_vote_requests_while_they_hear_a_leader() -> None:
    net = Network(ABC, check_quorum=True, pre_vote=False)
    net.elect("a")
    b = net.nodes["b"]
    term = b.term
    b.step(VoteRequest(term=term + 1, src="c", dst="b", last_index=99, last_term=99))
    assert b.term == term and b.vote == "a" and not b.ready().messages


def test_9_6_leader_failure_is_repaired_fast_when_connections_report_it() -> None:
    net = Network(ABC, election_ticks=10, fast_failover_ticks=3)
    net.elect("a")
    net.crash("a")
    net.nodes["b"].report_unreachable("a")
    net.nodes["c"].report_unreachable("a")
    ticks = net.tick_until(lambda: net.leader() not in (None, "a"))
    assert ticks <= 4  # well under the 10-tick election timeout


def test_9_6_one_followers_lost_connection_does_not_depose_a_live_leader() -> None:
    net = Network(ABC, election_ticks=10, fast_failover_ticks=3)
    a = net.elect("a")
    term = a.term
    net.cut("a", "c")
    net.nodes["c"].report_unreachable("a")
    net.tick(5)
    assert a.role is Role.LEADER and a.term == term  # b still hears a: no pre-vote for c
    net.heal()
    net.tick(2)
    assert net.nodes["c"].leader == "a"


def test_9_6_lease_reads_keep_the_full_lease_even_when_a_connection_breaks() -> None:
    net = Network(ABC, election_ticks=10, lease_reads=True, check_quorum=True)
    net.elect("a")
    net.isolate("a")
    net.nodes["b"].report_unreachable("a")
    net.nodes["c"].report_unreachable("a")
    # a may still answer reads from its lease until its check-quorum deposes it (10 ticks):
    # nobody may be elected before the followers' own lease has run out.
    net.tick(9, ids=["b", "c"])
    assert net.leader() == "a" and net.nodes["b"].role is not Role.LEADER
    assert net.nodes["c"].role is not Role.LEADER
