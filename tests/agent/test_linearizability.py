"""Jepsen-style check: the KV store stays linearizable while a nemesis breaks the cluster.

Three real agents on loopback serve six concurrent clients doing puts, linearizable gets and
compare-and-swap transactions on three keys, while a nemesis kills -9 and restarts the leader,
freezes a node with SIGSTOP, and cuts a node's peer links (the transport's ``debug.faults`` hook,
so no root or network namespaces are needed). Every request is recorded with its call and return
time and the whole history is given to the exact checker in tests/support/lincheck.py.

Outcomes are classified as the checker literature does (Jepsen, Porcupine):

* a reply is a completed operation;
* an error that proves the request never reached the log (not-leader, no-leader, busy: raised
  before anything was appended) means the write did not happen, so it is left out;
* any error that leaves the outcome open (timeout, lost connection, proposal-lost, stopping, no
  reply in time) makes a write *indeterminate*: it may take effect at any later moment or never;
* a failed get has no effect on anyone else, so it is simply dropped.

After the run every fault is healed and each key is read once more through a linearizable get;
those reads, appended with :func:`with_final_reads`, must see the latest acknowledged write, which
is how the check proves that no acknowledged write went missing.

``SHOAL_LIN_SECONDS`` lengthens the run (default 20 s) and ``SHOAL_LIN_SEED`` replays a seed's
choices (the timing of real processes still differs between runs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.client import ControlClient, ControlError
from shell.devcluster import LocalCluster, b64, unb64
from tests.agent.conftest import ClusterRunner, eventually, logs_of
from tests.support.lincheck import (
    Operation,
    check,
    check_no_lost_writes,
    with_final_reads,
)

pytestmark = pytest.mark.process

SECONDS = float(os.environ.get("SHOAL_LIN_SECONDS", "20"))
KEYS = ("lin/a", "lin/b", "lin/c")
CLIENTS = 6
OP_TIMEOUT = 2.0
"""The client gives up after this long and records the operation as indeterminate."""
SERVER_TIMEOUT = 1.5
"""Asked of the agent, so it usually answers ``timeout`` itself before the client gives up."""
CHECK_TIMEOUT = 60.0

DEFINITE_REJECTIONS = frozenset({"not-leader", "no-leader", "busy"})
"""Raised before a proposal is appended (or, forwarded, by the leader refusing to append it):
the write certainly did not happen."""
UNKNOWN_OUTCOMES = frozenset({"timeout", "connection-lost", "proposal-lost", "stopping"})
"""The proposal may already be in the log and commit later: the write is indeterminate."""

FAULT_KINDS = ("kill-leader", "pause", "partition")


@dataclass
class Stats:
    """What happened during the run, for the assertions and the report."""

    completed: Counter[str] = field(default_factory=Counter)
    indeterminate: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    failed_gets: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic():.3f} {what}")


def _decode_get(result: dict[str, Any]) -> str | None:
    kvs = result.get("kvs") or []
    return unb64(kvs[0]["value"]) if kvs else None


def _cas_request(key: str, expected: str | None, value: str) -> dict[str, Any]:
    """A txn that writes ``value`` iff the key holds ``expected`` (None: the key is absent)."""
    compare: dict[str, Any] = (
        {"key": b64(key), "target": "version", "result": "=", "value": 0}
        if expected is None
        else {"key": b64(key), "target": "value", "result": "=", "value": b64(expected)}
    )
    return {
        "compare": [compare],
        "success": [{"op": "put", "key": b64(key), "value": b64(value)}],
        "failure": [],
    }


class Client:
    """One workload client with its own control connection, like one application process.

    It prefers its home node but moves to another one when its node dies or stops answering, as
    an etcd client switches endpoints; it comes back home at its next reconnect.
    """

    def __init__(
        self,
        cid: int,
        cluster: LocalCluster,
        rng: random.Random,
        history: list[Operation],
        stats: Stats,
        seen: dict[str, str | None],
    ) -> None:
        self.cid = cid
        self.cluster = cluster
        self.rng = rng
        self.history = history
        self.stats = stats
        self.seen = seen  # the latest value any client saw per key, so cas usually can win
        self.home = cid % len(cluster.ids)
        self.conn: ControlClient | None = None
        self.n = 0

    async def _connect(self, deadline: float) -> ControlClient | None:
        ids = self.cluster.ids
        order = [ids[(self.home + i) % len(ids)] for i in range(len(ids))]
        while time.monotonic() < deadline:
            for node in order:
                with contextlib.suppress(OSError, TimeoutError):
                    return await ControlClient.connect(
                        str(self.cluster.socket_path(node)), timeout=0.5
                    )
            await asyncio.sleep(0.1)
        return None

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()

    async def run(self, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                if self.conn is None:
                    self.conn = await self._connect(deadline)
                    if self.conn is None:
                        return
                await self._one(self.conn)
        finally:
            await self._drop()

    async def _one(self, conn: ControlClient) -> None:
        key = self.rng.choice(KEYS)
        roll = self.rng.random()
        self.n += 1
        value = f"c{self.cid}-{self.n}"
        expected: str | None = None
        method: str
        params: dict[str, Any]
        if roll < 0.4:
            kind = "get"
            method, params = "kv.get", {"key": b64(key), "timeout": SERVER_TIMEOUT}
        elif roll < 0.7:
            kind = "put"
            method = "kv.put"
            params = {"key": b64(key), "value": b64(value), "timeout": SERVER_TIMEOUT}
        else:
            kind = "cas"
            expected = self.seen.get(key)
            method = "kv.txn"
            params = {**_cas_request(key, expected, value), "timeout": SERVER_TIMEOUT}
        call = time.monotonic()
        try:
            result = await asyncio.wait_for(conn.call(method, **params), OP_TIMEOUT)
        except (TimeoutError, ControlError) as exc:
            code = exc.code if isinstance(exc, ControlError) else "no-reply"
            await self._failed(kind, key, value, expected, call, code)
            return
        ret = time.monotonic()
        if kind == "get":
            read = _decode_get(result)
            self.seen[key] = read
            self.history.append(Operation(self.cid, call, ret, "get", key, output=read))
        elif kind == "put":
            self.seen[key] = value
            self.history.append(Operation(self.cid, call, ret, "put", key, value=value))
        else:
            output: bool = bool(result["succeeded"])
            if output:
                self.seen[key] = value
            self.history.append(
                Operation(self.cid, call, ret, "cas", key, value, expected, output=output)
            )
        self.stats.completed[kind] += 1

    async def _failed(
        self, kind: str, key: str, value: str, expected: str | None, call: float, code: str
    ) -> None:
        if code in ("no-reply", "connection-lost"):
            await self._drop()  # the node is dead or frozen: try another
        if kind == "get":
            self.stats.failed_gets[code] += 1
            return
        if code in DEFINITE_REJECTIONS:
            self.stats.rejected[code] += 1
            await asyncio.sleep(0.05)  # an election is under way; don't spin
            return
        if code not in UNKNOWN_OUTCOMES and code != "no-reply":
            raise AssertionError(f"client {self.cid}: {kind} on {key} failed with {code!r}")
        self.stats.indeterminate[code] += 1
        if kind == "put":
            self.history.append(Operation(self.cid, call, None, "put", key, value))
        else:
            self.history.append(Operation(self.cid, call, None, "cas", key, value, expected))


class Nemesis:
    """Injects one fault at a time, every 1-2 s, and always undoes it before the next."""

    def __init__(self, cluster: LocalCluster, rng: random.Random, stats: Stats) -> None:
        self.cluster = cluster
        self.rng = rng
        self.stats = stats
        self.paused: set[str] = set()

    async def run(self, deadline: float) -> None:
        # Every kind once first, in random order, so a short run still covers all of them.
        plan = list(FAULT_KINDS)
        self.rng.shuffle(plan)
        while time.monotonic() < deadline - 2.5:
            await asyncio.sleep(self.rng.uniform(1.0, 2.0))
            kind = plan.pop(0) if plan else self.rng.choice(FAULT_KINDS)
            if kind == "kill-leader":
                done = await self.kill_leader()
            elif kind == "pause":
                done = await self.pause()
            else:
                done = await self.partition()
            if done:
                self.stats.faults[kind] += 1
            else:
                plan.insert(0, kind)  # no leader to kill right now: try again next round

    async def kill_leader(self) -> bool:
        try:
            leader = await self.cluster.wait_leader(timeout=3.0)
        except TimeoutError:
            self.stats.note("nemesis: no leader to kill")
            return False
        self.stats.note(f"nemesis: kill -9 leader {leader}")
        await self.cluster.kill(leader)
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))
        self.cluster.start_node(leader)
        await self.cluster.wait_socket(leader)
        self.stats.note(f"nemesis: restarted {leader}")
        return True

    async def victim(self) -> str:
        """The leader half of the time (the interesting case: stale reads, lost writes), else
        any node."""
        if self.rng.random() < 0.5:
            with contextlib.suppress(TimeoutError):
                return await self.cluster.wait_leader(timeout=1.0)
        return self.rng.choice(self.cluster.ids)

    async def pause(self) -> bool:
        node = await self.victim()
        self.stats.note(f"nemesis: SIGSTOP {node}")
        self.paused.add(node)
        self.cluster.signal(node, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        finally:
            self.cluster.signal(node, signal.SIGCONT)
            self.paused.discard(node)
            self.stats.note(f"nemesis: SIGCONT {node}")
        return True

    async def partition(self) -> bool:
        node = await self.victim()
        others = [n for n in self.cluster.ids if n != node]
        self.stats.note(f"nemesis: cut {node} off from {', '.join(others)}")
        try:
            await self.block(node, others)
            for other in others:
                await self.block(other, [node])
            await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        finally:
            await self.heal()
        return True

    async def block(self, node: str, peers: list[str]) -> None:
        """Set ``node``'s blocked peers through its control socket (retried: it may be busy)."""
        for attempt in range(20):
            try:
                await asyncio.wait_for(
                    self.cluster.call(node, "debug.faults", block=peers), OP_TIMEOUT
                )
                return
            except (ControlError, OSError, TimeoutError):
                if attempt == 19:
                    raise
                await self.cluster.close()  # a stale shared connection: make a fresh one
                await asyncio.sleep(0.1)

    async def heal(self, nodes: Iterable[str] | None = None) -> None:
        for node in nodes if nodes is not None else self.cluster.ids:
            await self.block(node, [])
        self.stats.note("nemesis: healed peer links")

    async def heal_everything(self) -> None:
        """Undo whatever a cancelled nemesis left behind: start, resume and reconnect all."""
        for node in self.cluster.ids:
            if not self.cluster.alive(node):
                self.cluster.start_node(node)
            self.cluster.signal(node, signal.SIGCONT)
        for node in self.cluster.ids:
            await self.cluster.wait_socket(node)
        await self.heal()


async def _final_reads(cluster: LocalCluster) -> tuple[dict[str, str | None], float]:
    """A linearizable read of every key once the cluster is whole; returns (values, call time).

    Gets are retried until they succeed: a read changes nothing, so retrying is always safe.
    """
    await cluster.wait_leader(timeout=20.0)
    at = time.monotonic()
    values: dict[str, str | None] = {}
    for key in KEYS:
        for attempt in range(100):
            node = cluster.ids[attempt % len(cluster.ids)]
            try:
                result = await asyncio.wait_for(
                    cluster.call(node, "kv.get", key=b64(key), timeout=SERVER_TIMEOUT), OP_TIMEOUT
                )
            except (ControlError, OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            values[key] = _decode_get(result)
            break
        else:
            raise AssertionError(f"no final read of {key} succeeded")
    return values, at


async def _replicas_agree(cluster: LocalCluster, final: dict[str, str | None]) -> bool:
    """Whether every node's own (serializable) copy of every key matches the final reads."""
    for node in cluster.ids:
        for key, value in final.items():
            try:
                got = await cluster.call(node, "kv.get", key=b64(key), serializable=True)
            except ControlError:
                return False
            if _decode_get(got) != value:
                return False
    return True


def test_history_under_kills_pauses_and_partitions_is_linearizable(
    clusters: ClusterRunner,
) -> None:
    seed = int(os.environ.get("SHOAL_LIN_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    cluster = clusters.make(3, tick_ms=50, election_ticks=10, fault_injection=True)
    history: list[Operation] = []
    stats = Stats()
    seen: dict[str, str | None] = {}
    started = time.monotonic()

    async def story() -> tuple[dict[str, str | None], float]:
        await cluster.start()
        deadline = time.monotonic() + SECONDS
        clients = [
            Client(i, cluster, random.Random(rng.random()), history, stats, seen)
            for i in range(CLIENTS)
        ]
        nemesis = Nemesis(cluster, random.Random(rng.random()), stats)
        tasks = [asyncio.create_task(c.run(deadline)) for c in clients]
        fault_task = asyncio.create_task(nemesis.run(deadline))
        try:
            await asyncio.gather(fault_task, *tasks)
        finally:
            for task in [fault_task, *tasks]:
                task.cancel()
            await asyncio.gather(fault_task, *tasks, return_exceptions=True)
            await nemesis.heal_everything()
        final, at = await _final_reads(cluster)
        await eventually(
            lambda: _replicas_agree(cluster, final), 10.0, "every replica holds the final values"
        )
        return final, at

    final, at = clusters.run(story(), timeout=SECONDS + 150)
    workload_done = time.monotonic()
    full = with_final_reads(history, final, at)
    result = check(full, timeout=CHECK_TIMEOUT)
    checked = time.monotonic()

    completed = sum(stats.completed.values())
    indeterminate = sum(stats.indeterminate.values())
    report = (
        f"seed {seed} (SHOAL_LIN_SEED={seed} to replay): {len(full)} operations checked "
        f"({completed} completed {dict(stats.completed)}, {indeterminate} indeterminate "
        f"{dict(stats.indeterminate)}, {sum(stats.rejected.values())} rejected writes dropped "
        f"{dict(stats.rejected)}, {sum(stats.failed_gets.values())} failed gets dropped "
        f"{dict(stats.failed_gets)}); faults {dict(stats.faults)}; run "
        f"{workload_done - started:.1f}s, check {checked - workload_done:.1f}s, "
        f"{result.explored} search states"
    )
    print(report)
    if not result.ok:
        lost = check_no_lost_writes(history, final)
        pytest.fail(
            f"{report}\n\n{result.explanation}\n\n"
            + ("lost writes:\n" + "\n".join(lost) + "\n\n" if lost else "")
            + "nemesis:\n"
            + "\n".join(stats.events[-30:])
            + f"\n\nagent logs:\n{logs_of(cluster)}",
            pytrace=False,
        )
    assert not result.undecided
    assert completed >= 20 * SECONDS, f"too few completed operations to mean anything: {report}"
    assert stats.completed["cas"] > 0 and stats.completed["get"] > 0, report
    assert any(op.kind == "cas" and op.output is True for op in history), report
    for kind in FAULT_KINDS:
        assert stats.faults[kind] >= 1, f"the nemesis never injected {kind}: {report}"


def test_debug_faults_is_refused_unless_enabled(clusters: ClusterRunner) -> None:
    """Production agents must not let a control-socket user partition them."""
    cluster = clusters.make(3, tick_ms=50)

    async def story() -> None:
        await cluster.start()
        with pytest.raises(ControlError) as info:
            await cluster.call("node1", "debug.faults", block=["node2"])
        assert info.value.code == "bad-request"
        assert "fault_injection" in info.value.message

    clusters.run(story(), timeout=60)


def test_blocked_peer_is_cut_off_and_healing_restores_it(clusters: ClusterRunner) -> None:
    """The hook itself: a node cut off from both peers loses leadership or cannot commit, and
    writes through it work again after healing."""
    cluster = clusters.make(3, tick_ms=50, fault_injection=True)

    async def story() -> None:
        leader = await cluster.start()
        others = [n for n in cluster.ids if n != leader]
        assert (await cluster.call(leader, "debug.faults", block=others)) == {"blocked": others}
        for other in others:
            await cluster.call(other, "debug.faults", block=[leader])
        new_leader = await cluster.wait_leader(exclude=[leader], timeout=10)
        assert new_leader != leader
        with pytest.raises(ControlError) as info:
            await cluster.call(leader, "kv.put", key=b64("x"), value=b64("1"), timeout=0.5)
        assert info.value.code in DEFINITE_REJECTIONS | UNKNOWN_OUTCOMES
        for node in cluster.ids:
            await cluster.call(node, "debug.faults", block=[])

        async def rejoined() -> bool:
            return bool((await cluster.status(leader))["leader"] == new_leader)

        await eventually(rejoined, 10, f"{leader} follows {new_leader} after healing")
        await cluster.call(leader, "kv.put", key=b64("x"), value=b64("2"), timeout=5.0)
        got = await cluster.call(leader, "kv.get", key=b64("x"))
        assert base64.b64decode(got["kvs"][0]["value"]) == b"2"

    clusters.run(story(), timeout=60)
