"""Thousands of seeded random schedules against the Raft core, every invariant checked each step.

Each seed picks a cluster size (3 or 5), a fault mix (calm, lossy, partitions, crashes, churn of
leaders, chaos), a length and which client features run (reads, leader transfers, membership
changes, compaction).
Clients propose unique commands throughout; a nemesis injects faults; at the end every fault is
healed, crashed nodes restart, and the cluster must converge: one leader, every acknowledged
command applied exactly once, in the same order, by every live member.

A failure names its seed and the command that replays it alone::

    SHOAL_SIM_SEED=1234 .venv/bin/pytest tests/raft/test_randomized.py -k replay

``SHOAL_SIM_SEEDS=N`` runs N seeds instead of the default 2,000 (``SHOAL_SIM_FIRST`` moves the
first seed, to explore new ground); ``SHOAL_SIM_TRACE=N`` widens the trace of a replay.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from agent.raft.types import ConfChange, ConfChangeOp, ConfState
from tests.raft.invariants import Checker, check_converged, converged
from tests.raft.sim import TICK, Faults, Sim, SimNode, with_config

DEFAULT_SEEDS = 2000
BATCHES = 25
REPLAY = "SHOAL_SIM_SEED={seed} .venv/bin/pytest tests/raft/test_randomized.py -k replay"
PROFILES = ("calm", "lossy", "partitions", "crashes", "churn", "chaos")
HEAL_TIMEOUT = 400 * TICK
"""How long a healed cluster may take to converge (elections included) before it is a failure."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a seed decides about its schedule, fixed before the run starts."""

    seed: int
    size: int
    profile: str
    chaos_ticks: int
    propose_every: int
    nemesis_every: int
    reads: bool
    transfers: bool
    membership: bool
    compact_every: int
    """Ticks between compactions of a random node; 0 = never compact."""
    pre_vote: bool
    check_quorum: bool
    lease_reads: bool
    skew: int
    max_entries: int
    max_inflight: int
    log_bootstrap: bool
    """Start as the agent does: members from committed log entries, joiners with no conf."""

    @classmethod
    def from_seed(cls, seed: int) -> Plan:
        rng = random.Random(f"{seed}/plan")
        check_quorum = rng.random() < 0.85
        skew = rng.choice((0, 0, 0, 1, 2))
        small = rng.random() < 0.3
        profile = rng.choice(PROFILES)
        return cls(
            seed=seed,
            size=rng.choice((3, 3, 3, 5, 5)),
            profile=profile,
            chaos_ticks=rng.randint(30, 110),
            propose_every=rng.randint(4, 25),
            nemesis_every=rng.randint(1, 4) if profile == "churn" else rng.randint(3, 15),
            reads=rng.random() < 0.5,
            transfers=rng.random() < 0.3,
            membership=rng.random() < 0.3,
            compact_every=rng.choice((0, 0, 2, 5, 10)),
            pre_vote=rng.random() < 0.85,
            check_quorum=check_quorum,
            lease_reads=check_quorum and skew == 0 and rng.random() < 0.25,
            skew=skew,
            max_entries=rng.randint(1, 4) if small else 512,
            max_inflight=rng.randint(1, 4) if small else 256,
            log_bootstrap=rng.random() < 0.5,
        )


@dataclass(slots=True)
class Outcome:
    """What one schedule did (for the batch summary and for tuning the mix)."""

    acked: int = 0
    elections: int = 0
    reads: int = 0
    steps: int = 0


class Workload:
    """Clients, a nemesis and a membership operator acting on one simulated cluster."""

    def __init__(self, plan: Plan, trace_len: int = 40) -> None:
        self.plan = plan
        self.rng = random.Random(f"{plan.seed}/workload")
        self.checker = Checker()
        ids = [f"n{i}" for i in range(1, plan.size + 1)]
        self.sim = Sim(
            plan.seed,
            ids,
            faults=Faults(),
            config=with_config(
                pre_vote=plan.pre_vote,
                check_quorum=plan.check_quorum,
                lease_reads=plan.lease_reads,
                max_entries_per_append=plan.max_entries,
                max_inflight_appends=plan.max_inflight,
            ),
            observer=self.checker,
            tick_skew=plan.skew,
            bootstrap_log=plan.log_bootstrap,
            trace_len=trace_len,
        )
        self.running = True
        self.commands = 0
        self.removed: set[str] = set()

    # --- the run ---

    def run(self) -> Outcome:
        plan, sim = self.plan, self.sim
        sim.after(plan.propose_every, self.client)
        if plan.profile != "calm":
            sim.after(plan.nemesis_every * TICK, self.nemesis)
        if plan.reads:
            sim.after(3 * TICK, self.reader)
        if plan.transfers:
            sim.after(20 * TICK, self.transferer)
        if plan.membership:
            sim.after(15 * TICK, self.operator)
        if plan.compact_every:
            sim.after(plan.compact_every * TICK, self.compactor)
        sim.run_for(plan.chaos_ticks * TICK)
        self.running = False
        self.heal()
        if not sim.run_until(lambda: converged(sim, self.checker), HEAL_TIMEOUT):
            leader = sim.leader()
            lines = []
            for node in sim.alive():
                raft = node.node()
                lines.append(
                    f"{node.id}: {raft.role.value} term={raft.term} commit={raft.commit} "
                    f"applied={raft.applied} last={raft.last_index} "
                    f"conf={raft.conf.to_dict()}"
                )
            self.checker.fail(
                f"no convergence {HEAL_TIMEOUT // TICK} ticks after healing (leader: "
                f"{leader.id if leader else None}, acked up to {self.checker.max_acked_index})\n"
                + "\n".join(lines)
            )
        check_converged(sim, self.checker)
        return Outcome(
            acked=len(self.checker.acked),
            elections=self.checker.elections,
            reads=self.checker.reads_served,
            steps=sim.steps,
        )

    def heal(self) -> None:
        sim = self.sim
        sim.faults = Faults()
        sim.heal()
        for node_id in sorted(sim.nodes):
            sim.restart(node_id)

    # --- actors (each reschedules itself while the schedule runs) ---

    def client(self) -> None:
        if not self.running:
            return
        self.commands += 1
        self.sim.propose(f"c-{self.plan.seed}-{self.commands}".encode())
        self.sim.after(self.rng.randint(1, 2 * self.plan.propose_every), self.client)

    def reader(self) -> None:
        if not self.running:
            return
        alive = self.sim.alive()
        if alive:
            self.sim.read(self.rng.choice(alive).id)
        self.sim.after(self.rng.randint(1, 2 * TICK), self.reader)

    def transferer(self) -> None:
        if not self.running:
            return
        leader = self.sim.leader()
        if leader is not None:
            voters = sorted(leader.node().conf.voters - {leader.id})
            if voters:
                self.sim.transfer(self.rng.choice(voters))
        self.sim.after(self.rng.randint(10, 40) * TICK, self.transferer)

    def compactor(self) -> None:
        if not self.running:
            return
        alive = self.sim.alive()
        if alive:
            self.sim.compact(self.rng.choice(alive).id)
        self.sim.after(self.rng.randint(1, 2 * self.plan.compact_every) * TICK, self.compactor)

    def operator(self) -> None:
        """One membership step at a time: add a learner, promote it, remove a voter."""
        if not self.running:
            return
        self.sim.after(self.rng.randint(5, 20) * TICK, self.operator)
        leader = self.sim.leader()
        if leader is None:
            return
        raft = leader.node()
        conf = raft.conf
        rng = self.rng
        if conf.learners:
            learner = sorted(conf.learners)[0]
            if raft.learner_caught_up(learner):
                self._change(ConfChangeOp.PROMOTE, learner)
            elif rng.random() < 0.1:
                self._change(ConfChangeOp.REMOVE, learner)
        elif len(conf.voters) > self.plan.size or (len(conf.voters) > 3 and rng.random() < 0.5):
            self._change(ConfChangeOp.REMOVE, rng.choice(sorted(conf.voters)))
        else:
            self._add_learner(conf)

    def _add_learner(self, conf: ConfState) -> None:
        sim = self.sim
        spare = [n for n in sorted(sim.nodes) if n not in conf.members and n not in self.removed]
        if spare:
            node_id = spare[0]
        elif len(sim.nodes) < self.plan.size + 3:
            node_id = f"n{len(sim.nodes) + 1}"
            self._join(node_id, conf)
        else:
            return
        self._change(ConfChangeOp.ADD_LEARNER, node_id)

    def _join(self, node_id: str, conf: ConfState) -> SimNode:
        """Start a new machine: with no conf (as the agent's ``--join``) when the cluster keeps
        its membership in the log, else knowing the members it is about to join."""
        if self.plan.log_bootstrap:
            return self.sim.add_node(node_id, ConfState())
        return self.sim.add_node(node_id, ConfState(conf.voters, conf.learners | {node_id}))

    def _change(self, op: ConfChangeOp, node_id: str) -> None:
        if op is ConfChangeOp.REMOVE:
            self.removed.add(node_id)
        self.sim.propose_conf_change(ConfChange(op, node_id))

    def nemesis(self) -> None:
        if not self.running:
            return
        plan, sim, rng = self.plan, self.sim, self.rng
        sim.after(rng.randint(1, 2 * plan.nemesis_every) * TICK, self.nemesis)
        kinds = {
            "lossy": ("lossy", "calm"),
            "partitions": ("partition", "cut", "isolate-leader", "heal", "heal"),
            "crashes": ("crash", "crash-leader", "restart", "restart"),
            "churn": ("crash-leader", "restart", "restart", "isolate-leader", "heal", "partition"),
        }.get(plan.profile)
        if kinds is None:  # chaos: everything
            kinds = (
                "lossy",
                "calm",
                "partition",
                "cut",
                "isolate-leader",
                "heal",
                "crash",
                "crash-leader",
                "restart",
                "restart",
            )
        self._fault(rng.choice(kinds))

    def _fault(self, kind: str) -> None:
        sim, rng = self.sim, self.rng
        ids = sorted(n for n in sim.nodes if n not in self.removed)
        leader = sim.leader()
        if len(ids) < 2 and kind in ("partition", "cut"):
            return
        if kind == "lossy":
            sim.faults = Faults(
                drop=rng.choice((0.0, 0.05, 0.1, 0.3)),
                duplicate=rng.choice((0.0, 0.05, 0.2)),
                delay=rng.choice((0.0, 0.1, 0.3)),
                slow_disk=rng.choice((0.0, 0.1, 0.3)),
                report_unreachable=rng.choice((0.0, 0.2)),
            )
            sim.note("faults", str(sim.faults))
        elif kind == "calm":
            sim.faults = Faults()
            sim.note("faults", "calm")
        elif kind == "partition":
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            sim.partition(ids[:cut], ids[cut:])
        elif kind == "cut":
            src, dst = rng.sample(ids, 2)
            sim.cut(src, dst)
        elif kind == "isolate-leader" and leader is not None:
            sim.isolate(leader.id)
        elif kind == "heal":
            sim.heal()
        elif kind == "crash":
            alive = [n.id for n in sim.alive()]
            if alive:
                sim.crash(rng.choice(alive))
        elif kind == "crash-leader" and leader is not None:
            sim.crash(leader.id)
        elif kind == "restart":
            down = sorted(n for n in sim.nodes if not sim.nodes[n].alive)
            if down:
                sim.restart(rng.choice(down))


def run_schedule(seed: int, trace_len: int = 40) -> Outcome:
    """Run one seeded schedule; a failure is an AssertionError that says how to replay it."""
    plan = Plan.from_seed(seed)
    workload = Workload(plan, trace_len)
    try:
        return workload.run()
    except Exception as exc:
        raise AssertionError(failure_report(workload, exc)) from exc


def failure_report(workload: Workload, exc: BaseException) -> str:
    plan, sim = workload.plan, workload.sim
    settings = ", ".join(f"{k}={v}" for k, v in asdict(plan).items() if k != "seed")
    kind = ""
    if not isinstance(exc, AssertionError):  # a crash inside the core or the simulator: where?
        frames = traceback.extract_tb(exc.__traceback__)[-4:]
        where = " <- ".join(
            f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames)
        )
        kind = f"{type(exc).__name__} at {where}: "
    return (
        f"seed {plan.seed} failed at t={sim.now} (step {sim.steps}): {kind}{exc}\n"
        f"replay: {REPLAY.format(seed=plan.seed)}\n"
        f"plan: {settings}\n"
        f"last {len(sim.trace)} events:\n{sim.format_trace()}"
    )


# --- the pytest items ---------------------------------------------------------------------------


def _seed_range() -> range:
    count = int(os.environ.get("SHOAL_SIM_SEEDS", DEFAULT_SEEDS))
    first = int(os.environ.get("SHOAL_SIM_FIRST", 0))
    return range(first, first + count)


def _batches() -> list[range]:
    seeds = _seed_range()
    size = max(1, -(-len(seeds) // BATCHES))
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


@pytest.mark.parametrize("seeds", _batches(), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
def test_random_schedules(seeds: range) -> None:
    """Every seed of the batch keeps Raft's safety properties and converges after healing."""
    failures: list[str] = []
    acked = 0
    for seed in seeds:
        try:
            acked += run_schedule(seed).acked
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        others = [f.split(" ", 2)[1] for f in failures[1:]]
        more = f"\n(also failing in this batch: seeds {', '.join(others)})" if others else ""
        raise AssertionError(failures[0] + more)
    assert acked > 0, "no schedule in this batch acknowledged a single command"


@pytest.mark.skipif("SHOAL_SIM_SEED" not in os.environ, reason="set SHOAL_SIM_SEED to replay")
def test_replay() -> None:
    """Replay the one schedule named by SHOAL_SIM_SEED (with a longer trace)."""
    seed = int(os.environ["SHOAL_SIM_SEED"])
    started = time.perf_counter()
    outcome = run_schedule(seed, int(os.environ.get("SHOAL_SIM_TRACE", 120)))
    print(f"seed {seed}: {outcome} in {time.perf_counter() - started:.2f}s")
