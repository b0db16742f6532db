"""Raft benchmark: shoal's agents vs PySyncObj, three members each, all on loopback.

    make bench                                   # installs pysyncobj, then runs this
    .venv/bin/python bench/raft_bench.py         # full run (about 4 minutes)
    .venv/bin/python bench/raft_bench.py --quick # smoke run (shorter phases, 3 failovers)
    .venv/bin/python bench/raft_bench.py --only shoal|pysyncobj --runs 20

What it measures, for each system, in one run:

* throughput: committed proposals per second with 1, 16 and 64 concurrent proposers, each keeping
  one proposal outstanding (a new one as soon as the previous commits), and p50/p99 commit
  latency; a warm-up is discarded before each measured window;
* failover: kill -9 the leader, then time from the kill until a proposal commits again, over
  ``--runs`` runs (median and max); the killed member is restarted and caught up before the next
  run, and the cluster idles for a random 1-6 s so each kill lands at a different heartbeat phase;
  then ``--freeze-runs`` more with the leader frozen by SIGSTOP instead (a hung machine or a
  partition: its connections stay open, so only the election timeout can notice);
* RSS (VmRSS from /proc/PID/status) of every member process, and CPU each used per phase.

How each system is driven (the paths differ; the report says so):

* shoal: ``shell.devcluster.LocalCluster`` — three real ``python -m agent serve`` processes with
  default timings (tick 100 ms, election 10 ticks, heartbeat 1 tick), mutual TLS between peers,
  WAL with fsync on every append. Proposers are asyncio tasks in *this* process, each with its
  own connection to the leader's control socket (unix socket, JSON lines), calling ``kv.put``
  with a fresh key ``bench/<level>/<n>`` and a 64-byte value (the store's ordinary write path:
  a KV command in the Raft log, applied by the MVCC store, answered once applied on the leader).
* PySyncObj 0.3.17: three ``bench/pysyncobj_node.py`` processes, ``SyncObjConf()`` defaults
  (batched appends, in-memory journal: no fsync), plus an "unbatched" configuration
  (``appendEntriesUseBatch=False``, still no fsync) for throughput. Its API is in-process, so the
  proposers are callbacks inside the leader's own process (no client hop at all).

Results go to stdout and to bench/RESULTS.md (section "Raft: shoal vs PySyncObj").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
from benchlib import cpu_seconds, log, pct, proc_status, self_cpu  # noqa: E402

from agent.client import ControlClient, ControlError  # noqa: E402
from shell.devcluster import LocalCluster, free_port  # noqa: E402

CONCURRENCY = (1, 16, 64)
PAYLOAD = 64
IDLE_BEFORE_KILL = (1.0, 6.0)
"""Seconds the healthy cluster idles before each kill, uniformly drawn: a kill then lands at any
phase of heartbeats and of PySyncObj's idle-connection cycle (dropped after 3.5 s, redialled
every 5 s)."""
"""Bytes per proposal, the same for both systems."""
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Raft: shoal vs PySyncObj"

ETCD_REFERENCE = {"failover_median_s": 1.15, "failover_max_s": 2.0}
PYSYNCOBJ_REFERENCE = {"default_64": 610, "unbatched_nofsync": 3400}


# --- small helpers ---------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def fsync_cost(directory: Path, n: int = 200) -> float:
    """Median seconds for write(64 bytes) + fsync on the bench's disk."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * PAYLOAD)
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = proc_meminfo_total()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gb": round(mem / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def proc_meminfo_total() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return None


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_used(
    before: dict[str, float | None], after: dict[str, float | None], wall: float
) -> dict[str, float | None]:
    """Share of one core each process used over ``wall`` seconds."""
    out: dict[str, float | None] = {}
    for name, b in before.items():
        a = after.get(name)
        out[name] = None if a is None or b is None else round((a - b) / wall, 2)
    return out


async def sample_window(
    pids: dict[str, int], start: float, end: float, client: bool = False
) -> dict[str, Any]:
    """CPU each process used between monotonic times ``start`` and ``end`` (the measured
    window), and the 1-minute load average at its end."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    t0 = time.monotonic()
    cpu0 = cpu_snapshot(pids)
    if client:
        cpu0["bench client"] = self_cpu()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    cpu1 = cpu_snapshot(pids)
    if client:
        cpu1["bench client"] = self_cpu()
    wall = time.monotonic() - t0
    seconds = {
        k: (None if cpu1.get(k) is None or v is None else round(cpu1[k] - v, 3))  # type: ignore[operator]
        for k, v in cpu0.items()
    }
    return {"share": cpu_used(cpu0, cpu1, wall), "seconds": seconds, "load": os.getloadavg()[0]}


def cpu_per_commit(window: dict[str, Any], count: int, members: list[str]) -> dict[str, Any]:
    """Microseconds of CPU per committed proposal: all members together, and the bench client."""
    secs = window["seconds"]
    total = sum(secs[m] or 0.0 for m in members if m in secs)
    out: dict[str, Any] = {"members_us": round(total / count * 1e6) if count else None}
    if secs.get("bench client") is not None and count:
        out["client_us"] = round(secs["bench client"] / count * 1e6)
    return out


# --- shoal -------------------------------------------------------------------------------------


class ShoalBench:
    def __init__(self, args: argparse.Namespace, workdir: Path, rng: random.Random) -> None:
        self.args = args
        self.rng = rng
        self.workdir = workdir
        self.cluster = LocalCluster(workdir / "shoal", 3)
        self.result: dict[str, Any] = {"client_path": "control unix socket, JSON lines"}

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.cluster.procs.items() if p.poll() is None}

    async def run(self) -> dict[str, Any]:
        c = self.cluster
        log("shoal: starting 3 agents on loopback")
        t0 = time.monotonic()
        try:
            leader = await c.start(timeout=30)
        except Exception as exc:
            self.result["error"] = f"cluster did not start: {exc}"
            for node in c.ids:
                tail = c.tail(node, 8)
                if tail:
                    self.result.setdefault("logs", {})[node] = tail
            return self.result
        self.result["first_leader_s"] = round(time.monotonic() - t0, 3)
        log(f"shoal: leader {leader} after {self.result['first_leader_s']} s")
        self.result["rss_start_kb"] = {
            n: proc_status(pid, "VmRSS") for n, pid in self.pids().items()
        }
        await c.call_leader("kv.put", key=b64("bench/warm"), value=b64("x" * PAYLOAD))
        self.result["throughput"] = {}
        for conc in self.args.concurrency:
            self.result["throughput"][conc] = await self.throughput(conc)
        self.result["rss_after_throughput_kb"] = {
            n: proc_status(pid, "VmRSS") for n, pid in self.pids().items()
        }
        self.result["failover"] = await self.failovers(self.args.runs)
        if self.args.freeze_runs:
            self.result["freeze_failover"] = await self.failovers(self.args.freeze_runs, "freeze")
        self.result["rss_end_kb"] = {n: proc_status(pid, "VmRSS") for n, pid in self.pids().items()}
        self.result["hwm_end_kb"] = {n: proc_status(pid, "VmHWM") for n, pid in self.pids().items()}
        with contextlib.suppress(Exception):
            st = await c.status(await c.wait_leader(timeout=10))
            self.result["final_status"] = {
                k: st.get(k) for k in ("term", "commit", "applied", "snapshot_index", "revision")
            }
            self.result["entries_end"] = st.get("applied")
        return self.result

    async def throughput(self, conc: int) -> dict[str, Any]:
        c = self.cluster
        leader = await c.wait_leader(timeout=20)
        sock = str(c.socket_path(leader))
        clients = [await ControlClient.connect(sock) for _ in range(conc)]
        warmup, duration = self.args.warmup, self.args.duration
        value = b64("x" * PAYLOAD)
        seq = itertools.count()
        latencies: list[float] = []
        errors: dict[str, int] = {}
        t0 = time.monotonic()
        start, end = t0 + warmup, t0 + warmup + duration
        sampler = asyncio.create_task(sample_window(self.pids(), start, end, client=True))

        async def proposer(client: ControlClient) -> None:
            while True:
                sent = time.monotonic()
                if sent >= end:
                    return
                try:
                    key = b64(f"bench/{conc}/{next(seq)}")
                    await client.call("kv.put", key=key, value=value)
                    ok = True
                except ControlError as exc:
                    ok = False
                    code = exc.code
                now = time.monotonic()
                if start <= now < end:
                    if ok:
                        latencies.append(now - sent)
                    else:
                        errors[code] = errors.get(code, 0) + 1
                if not ok:
                    await asyncio.sleep(0.05)

        profilers: list[asyncio.Task[dict[str, Any] | None]] = []

        async def mark_start() -> None:
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            if self.args.py_spy and conc == max(self.args.concurrency):
                follower = next(n for n in c.ids if n != leader)
                for node in (leader, follower):
                    role = "leader" if node == leader else "follower"
                    profilers.append(
                        asyncio.create_task(
                            py_spy(
                                self.args.py_spy, c.procs[node].pid, duration, role, self.workdir
                            )
                        )
                    )

        marker = asyncio.create_task(mark_start())
        try:
            await asyncio.wait_for(
                asyncio.gather(*(proposer(cl) for cl in clients)), warmup + duration + 30
            )
        finally:
            await marker
            window = await sampler
            for cl in clients:
                await cl.close()
        lat = sorted(latencies)
        profiles = [p for p in await asyncio.gather(*profilers) if p]
        res = {
            "count": len(lat),
            "per_s": round(len(lat) / duration, 1),
            "p50_ms": _ms(pct(lat, 0.5)),
            "p99_ms": _ms(pct(lat, 0.99)),
            "max_ms": _ms(lat[-1] if lat else None),
            "errors": errors,
            "leader": leader,
            "cpu": window["share"],
            "cpu_per_commit": cpu_per_commit(window, len(lat), list(c.ids)),
            "load": window["load"],
        }
        if profiles:
            res["profiles"] = profiles
            for prof in profiles:
                print(f"--- py-spy: shoal {prof['role']} (pid {prof['pid']}), own time ---")
                for name, share in prof["own_pct"]:
                    print(f"  {share:5.1f}%  {name}")
        log(
            f"shoal: {conc:>2} proposers: {res['per_s']}/s p50 {res['p50_ms']} ms "
            f"p99 {res['p99_ms']} ms errors {errors or 0} cpu {res['cpu']} "
            f"per commit {res['cpu_per_commit']} load {res['load']:.2f}"
        )
        return res

    async def healthy(self, timeout: float = 30.0) -> str:
        return await self.cluster.wait_healthy(timeout)

    async def failovers(self, runs: int, how: str = "kill") -> dict[str, Any]:
        c = self.cluster
        out: list[dict[str, Any]] = []
        for run in range(runs):
            leader = await self.healthy()
            await asyncio.sleep(self.rng.uniform(*IDLE_BEFORE_KILL))
            leader = await self.healthy()
            old_term = (await c.status(leader))["term"]
            survivors = [n for n in c.ids if n != leader]
            clients = {n: await ControlClient.connect(str(c.socket_path(n))) for n in survivors}
            pid = c.procs[leader].pid
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            ok_at, winner, attempts, errs = await self._until_commit(clients)
            for cl in clients.values():
                await cl.close()
            await c.kill(leader)  # reap it
            rec: dict[str, Any] = {
                "load": os.getloadavg()[0],
                "killed": leader,
                "failover_s": round(ok_at - t_kill, 3) if ok_at else None,
                "new_leader": winner,
                "attempts": attempts,
                "errors": errs,
            }
            with contextlib.suppress(Exception):
                rec["terms"] = (await c.status(winner or survivors[0]))["term"] - old_term
            log(
                f"shoal: failover ({how}) {run + 1}/{runs}: {how} {leader}, "
                f"{rec['failover_s']} s to a commit via {winner} (+{rec.get('terms')} terms)"
            )
            out.append(rec)
            c.start_node(leader)
            await c.wait_socket(leader, 30)
        return summarize_failovers(out)

    async def _until_commit(
        self, clients: dict[str, ControlClient]
    ) -> tuple[float | None, str | None, int, dict[str, int]]:
        """Every 20 ms send one proposal to each survivor; return when one commits."""
        won: asyncio.Future[tuple[float, str]] = asyncio.get_running_loop().create_future()
        errs: dict[str, int] = {}
        tasks: set[asyncio.Task[None]] = set()
        attempts = 0

        async def attempt(node: str, client: ControlClient, i: int) -> None:
            try:
                await client.call(
                    "kv.put", key=b64(f"failover/{i}"), value=b64("x" * PAYLOAD), timeout=2.0
                )
            except ControlError as exc:
                errs[exc.code] = errs.get(exc.code, 0) + 1
                return
            if not won.done():
                won.set_result((time.monotonic(), node))

        deadline = time.monotonic() + self.args.failover_cap
        while not won.done() and time.monotonic() < deadline:
            for node, client in clients.items():
                attempts += 1
                t = asyncio.create_task(attempt(node, client, attempts))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(won), 0.02)
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if won.done():
            at, node = won.result()
            return at, node, attempts, errs
        return None, None, attempts, errs

    async def close(self) -> None:
        await self.cluster.close()
        await self.cluster.stop()
        for proc in self.cluster.procs.values():  # belt and braces
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def py_spy(
    exe: str, pid: int, duration: float, role: str, workdir: Path
) -> dict[str, Any] | None:
    """Sample ``pid`` with py-spy for ``duration`` s; return the top functions by own time and
    shoal's functions by inclusive time, as a share of wall time (idle samples are not recorded;
    ``EpollSelector.select`` is the event loop waiting for I/O; threads add up, so the event loop
    plus a thread in fdatasync can pass 100)."""
    out = workdir / f"py-spy-{role}-{pid}.txt"
    counted = await benchlib.py_spy(exe, pid, duration, out, rate=200, inclusive=("agent/",))
    if counted is None:
        return None
    return {
        "role": role,
        "pid": pid,
        "samples": counted.samples,
        "file": str(out),
        "own_pct": counted.top(counted.own, 15),
        "total_pct": counted.top(counted.inclusive, 25),
    }


# --- PySyncObj ---------------------------------------------------------------------------------


class PsoNode:
    """One bench/pysyncobj_node.py process, spoken to over its stdin/stdout."""

    def __init__(self, addr: str, partners: list[str], mode: str, logdir: Path) -> None:
        self.addr = addr
        self.partners = partners
        self.mode = mode
        self.logdir = logdir
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive() and self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        log_file = open(self.logdir / f"{self.addr.replace(':', '_')}.log", "ab")  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("pysyncobj_node.py")),
            "--self",
            self.addr,
            "--partners",
            ",".join(self.partners),
            "--mode",
            self.mode,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
        log_file.close()
        hello = await self._read(20)
        if hello.get("event") != "ready":
            raise RuntimeError(f"pysyncobj node {self.addr} did not start: {hello}")

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc and self.proc.stdout
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise ConnectionError(f"pysyncobj node {self.addr} exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def cmd(self, timeout: float = 10.0, **req: Any) -> dict[str, Any]:
        async with self.lock:
            assert self.proc and self.proc.stdin
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            await self.proc.stdin.drain()
            return await self._read(timeout)

    def sigstop(self) -> None:
        if self.alive() and self.proc:
            self.proc.send_signal(signal.SIGSTOP)

    def sigkill(self) -> None:
        if self.alive() and self.proc:
            self.proc.send_signal(signal.SIGKILL)

    async def reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.wait(), 10)

    async def stop(self) -> None:
        if not self.alive() or self.proc is None:
            return
        with contextlib.suppress(Exception):
            await self.cmd(timeout=3, cmd="quit")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 5)
        if self.alive():
            self.proc.kill()
            await self.proc.wait()


class PsoBench:
    def __init__(
        self, args: argparse.Namespace, workdir: Path, rng: random.Random, mode: str
    ) -> None:
        self.args = args
        self.rng = rng
        self.mode = mode
        logdir = workdir / f"pysyncobj-{mode}"
        logdir.mkdir(parents=True, exist_ok=True)
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.nodes = [PsoNode(a, [p for p in addrs if p != a], mode, logdir) for a in addrs]
        self.result: dict[str, Any] = {"client_path": "in-process callbacks on the leader"}

    def pids(self) -> dict[str, int]:
        return {n.addr: n.pid for n in self.nodes if n.pid is not None}

    async def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for n in self.nodes:
            if n.alive():
                with contextlib.suppress(Exception):
                    st = await n.cmd(timeout=5, cmd="status")
                    if st.get("ok"):
                        out[n.addr] = st
        return out

    async def healthy(self, timeout: float = 30.0) -> PsoNode:
        """All three up, agreeing on a leader that sees both partners, all caught up."""
        deadline = time.monotonic() + timeout
        while True:
            sts = await self.statuses()
            leaders = [a for a, s in sts.items() if s["is_leader"]]
            if len(sts) == 3 and len(leaders) == 1:
                lead = sts[leaders[0]]
                if (
                    all(s["leader"] == leaders[0] for s in sts.values())
                    and lead["partners_connected"] == 2
                    and all(s["applied"] >= lead["commit"] for s in sts.values())
                ):
                    return next(n for n in self.nodes if n.addr == leaders[0])
            if time.monotonic() > deadline:
                raise TimeoutError(f"pysyncobj cluster not healthy within {timeout}s: {sts}")
            await asyncio.sleep(0.05)

    async def run(self, *, failover: bool) -> dict[str, Any]:
        log(f"pysyncobj ({self.mode}): starting 3 nodes on loopback")
        t0 = time.monotonic()
        await asyncio.gather(*(n.start() for n in self.nodes))
        leader = await self.healthy()
        self.result["first_leader_s"] = round(time.monotonic() - t0, 3)
        self.result["rss_start_kb"] = {
            a: proc_status(pid, "VmRSS") for a, pid in self.pids().items()
        }
        log(
            f"pysyncobj ({self.mode}): leader {leader.addr} after {self.result['first_leader_s']} s"
        )
        self.result["throughput"] = {}
        for conc in self.args.concurrency:
            self.result["throughput"][conc] = await self.throughput(conc)
        self.result["rss_after_throughput_kb"] = {
            a: proc_status(pid, "VmRSS") for a, pid in self.pids().items()
        }
        if failover:
            self.result["failover"] = await self.failovers(self.args.runs)
            if self.args.freeze_runs:
                self.result["freeze_failover"] = await self.failovers(
                    self.args.freeze_runs, "freeze"
                )
        self.result["rss_end_kb"] = {a: proc_status(pid, "VmRSS") for a, pid in self.pids().items()}
        self.result["hwm_end_kb"] = {a: proc_status(pid, "VmHWM") for a, pid in self.pids().items()}
        sts = await self.statuses()
        self.result["entries_end"] = max((s.get("count") or 0 for s in sts.values()), default=None)
        return self.result

    async def throughput(self, conc: int) -> dict[str, Any]:
        leader = await self.healthy()
        warmup, duration = self.args.warmup, self.args.duration
        pids = self.pids()
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample_window(pids, t0 + warmup, t0 + warmup + duration))
        res = await leader.cmd(
            timeout=warmup + duration + 30,
            cmd="load",
            concurrency=conc,
            warmup=warmup,
            duration=duration,
            size=PAYLOAD,
        )
        window = await sampler
        if not res.get("ok"):
            raise RuntimeError(f"pysyncobj load failed: {res}")
        out = {
            "count": res["count"],
            "per_s": round(res["count"] / duration, 1),
            "p50_ms": res["p50_ms"],
            "p99_ms": res["p99_ms"],
            "max_ms": res["max_ms"],
            "errors": res["errors"],
            "leader": leader.addr,
            "cpu": window["share"],
            "cpu_per_commit": cpu_per_commit(window, res["count"], list(pids)),
            "load": window["load"],
        }
        log(
            f"pysyncobj ({self.mode}): {conc:>2} proposers: {out['per_s']}/s "
            f"p50 {out['p50_ms']} ms p99 {out['p99_ms']} ms errors {out['errors'] or 0} "
            f"cpu {out['cpu']} per commit {out['cpu_per_commit']} load {out['load']:.2f}"
        )
        return out

    async def failovers(self, runs: int, how: str = "kill") -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for run in range(runs):
            await self.healthy()
            await asyncio.sleep(self.rng.uniform(*IDLE_BEFORE_KILL))
            leader = await self.healthy()
            old_term = (await leader.cmd(cmd="status"))["term"]
            survivors = [n for n in self.nodes if n is not leader]
            t_kill = time.monotonic()
            if how == "kill":
                leader.sigkill()
            else:
                leader.sigstop()
            cap = self.args.failover_cap
            replies = await asyncio.gather(
                *(
                    n.cmd(timeout=cap + 10, cmd="until_commit", interval=0.02, cap=cap)
                    for n in survivors
                ),
                return_exceptions=True,
            )
            leader.sigkill()  # a frozen one too
            await leader.reap()
            ok = [
                (r["committed_at"], n)
                for r, n in zip(replies, survivors, strict=True)
                if isinstance(r, dict) and r.get("committed_at")
            ]
            at, winner = min(ok, key=lambda x: x[0]) if ok else (None, None)
            rec: dict[str, Any] = {
                "load": os.getloadavg()[0],
                "killed": leader.addr,
                "failover_s": round(at - t_kill, 3) if at else None,
                "new_leader": None,
                "attempts": sum(r.get("attempts", 0) for r in replies if isinstance(r, dict)),
            }
            sts = await self.statuses()
            leaders = [a for a, s in sts.items() if s["is_leader"]]
            if leaders:
                rec["new_leader"] = leaders[0]
                rec["terms"] = sts[leaders[0]]["term"] - old_term
            log(
                f"pysyncobj ({self.mode}): failover ({how}) {run + 1}/{runs}: {how} {leader.addr}, "
                f"{rec['failover_s']} s to a commit (first seen on "
                f"{winner.addr if winner else None}; +{rec.get('terms')} terms)"
            )
            out.append(rec)
            await leader.start()
            leader.restarts += 1
        return summarize_failovers(out)

    async def close(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)


# --- report ------------------------------------------------------------------------------------


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def summarize_failovers(runs: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["failover_s"] for r in runs if r["failover_s"] is not None]
    terms = [r.get("terms") for r in runs if r.get("terms") is not None]
    return {
        "runs": len(runs),
        "failed": len(runs) - len(times),
        "median_s": round(statistics.median(times), 3) if times else None,
        "max_s": max(times) if times else None,
        "min_s": min(times) if times else None,
        "times_s": [r["failover_s"] for r in runs],
        "terms": terms,
        "load": round(statistics.median(r["load"] for r in runs), 2) if runs else None,
        "detail": runs,
    }


def fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.2f}x"


def _short(name: str) -> str:
    """'127.0.0.1:38255' → ':38255'; shoal's node ids stay as they are."""
    return name[name.rfind(":") :] if name.startswith("127.") else name


def mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.1f}"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    sh = report.get("shoal") or {}
    pd = report.get("pysyncobj") or {}
    pu = report.get("pysyncobj_unbatched") or {}
    lines: list[str] = []
    w = lines.append
    w(SECTION)
    w("")
    w(
        f"Measured {report['date']} on {m['nproc']} x {m['cpu']}, {m['mem_gb']} GB RAM, Linux "
        f"{m['kernel']}, Python {m['python']}; disk: ext4-class local disk, write+fsync of a "
        f"{PAYLOAD}-byte append {report['fsync_ms']:.2f} ms (median of 200)."
    )
    w("")
    w("Reproduce:")
    w("")
    w("```sh")
    w("make bench            # or: .venv/bin/python bench/raft_bench.py")
    w(f"# this run: .venv/bin/python bench/raft_bench.py {report['argv']}".rstrip())
    w("```")
    w("")
    w(
        f"Three members on 127.0.0.1 for each system, one after the other in the same run. "
        f"{PAYLOAD}-byte payloads; each proposer keeps one proposal outstanding. "
        f"{report['warmup']} s warm-up then {report['duration']} s measured per concurrency level; "
        f"{report['runs']} failover runs per system."
    )
    w("")
    w(
        "- **shoal**: 3 x `python -m agent serve` (shell/devcluster.py), default timings: tick "
        "100 ms, election 10 ticks (1-2 s), heartbeat 1 tick; mutual TLS between peers; WAL "
        "fsync before every acknowledgement. Each proposal is a `kv.put` of a fresh key "
        "(`bench/<level>/<n>`, 64-byte value) — the store's real write path (a KV command in the "
        "log, applied by the MVCC store). Proposers are asyncio tasks in the bench process, each "
        "with its own connection to the leader's **control unix socket (JSON lines)**, so every "
        "proposal also pays a client→agent round trip and JSON/base64 on both sides."
    )
    w(
        "- **PySyncObj 0.3.17 default**: `SyncObjConf()` untouched — appends batched on the "
        "100 ms append period, in-memory journal (**no fsync, no durability**), no TLS, election "
        "timeout 0.4-1.4 s. Its API is in-process, so proposers are `@replicated` callbacks "
        "**inside the leader process** (no client hop)."
    )
    w(
        "- **PySyncObj unbatched**: the same with one change, `appendEntriesUseBatch=False` "
        "(sent at once; still no fsync). Throughput only."
    )
    w("")
    if sh.get("error"):
        w(f"**shoal did not run:** {sh['error']}")
        w("")
    w("### Throughput and commit latency")
    w("")
    w(
        "| proposers | shoal /s | p50 ms | p99 ms | PySyncObj default /s | p50 ms | p99 ms "
        "| PySyncObj unbatched /s | p50 ms | p99 ms | shoal ÷ default | shoal ÷ unbatched |"
    )
    w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conc in report["concurrency"]:
        s = (sh.get("throughput") or {}).get(conc, {})
        d = (pd.get("throughput") or {}).get(conc, {})
        u = (pu.get("throughput") or {}).get(conc, {})
        w(
            f"| {conc} | {fmt(s.get('per_s'), 0)} | {fmt(s.get('p50_ms'))} "
            f"| {fmt(s.get('p99_ms'))} "
            f"| {fmt(d.get('per_s'), 0)} | {fmt(d.get('p50_ms'))} | {fmt(d.get('p99_ms'))} "
            f"| {fmt(u.get('per_s'), 0)} | {fmt(u.get('p50_ms'))} | {fmt(u.get('p99_ms'))} "
            f"| {ratio(s.get('per_s'), d.get('per_s'))} | {ratio(s.get('per_s'), u.get('per_s'))} |"
        )
    w("")
    errs = {
        name: {
            c: r.get("errors") for c, r in (res.get("throughput") or {}).items() if r.get("errors")
        }
        for name, res in (("shoal", sh), ("PySyncObj default", pd), ("PySyncObj unbatched", pu))
    }
    errs = {k: v for k, v in errs.items() if v}
    if errs:
        w(f"Errors during measured windows: {json.dumps(errs)}")
        w("")
    w(
        "CPU in each measured window: CPU time per committed proposal (all three members "
        "together, and shoal's bench client), each process's share of one core (the machine has "
        f"{m['nproc']}), and the 1-minute load average at the end of the window (above "
        f"{m['nproc']} means the processes queued for CPU behind other work):"
    )
    w("")
    w(
        "| system | proposers | members µs/commit | client µs/commit | share of a core per process "
        "| load avg |"
    )
    w("|---|---:|---:|---:|---|---:|")
    for name, res in (("shoal", sh), ("PySyncObj default", pd), ("PySyncObj unbatched", pu)):
        for conc, t in (res.get("throughput") or {}).items():
            if not t.get("cpu"):
                continue
            leader = t.get("leader")
            shares = ", ".join(
                f"{_short(k)}{' (leader)' if k == leader else ''} {v}" for k, v in t["cpu"].items()
            )
            cpc = t.get("cpu_per_commit") or {}
            w(
                f"| {name} | {conc} | {fmt(cpc.get('members_us'))} | {fmt(cpc.get('client_us'))} "
                f"| {shares} | {fmt(t.get('load'), 2)} |"
            )
    w("")
    w("### Leader failover (kill -9 the leader → next committed proposal)")
    w("")
    w(
        "| system | runs | median s | max s | min s | extra terms per failover | all runs (s) "
        "| load avg |"
    )
    w("|---|---:|---:|---:|---:|---|---|---:|")
    for name, res in (("shoal", sh), ("PySyncObj default", pd)):
        f = res.get("failover")
        if not f:
            continue
        failed = f" ({f['failed']} never committed)" if f["failed"] else ""
        w(
            f"| {name} | {f['runs']}{failed} | {fmt(f['median_s'], 2)} | {fmt(f['max_s'], 2)} "
            f"| {fmt(f['min_s'], 2)} | {', '.join(str(t) for t in f['terms'])} "
            f"| {', '.join(fmt(t, 2) for t in f['times_s'])} | {fmt(f.get('load'), 2)} |"
        )
    w(
        f"| etcd 3.4 (quoted from the issue, **not measured here**) | — "
        f"| {ETCD_REFERENCE['failover_median_s']} | {ETCD_REFERENCE['failover_max_s']} "
        "| — | — | — | — |"
    )
    w("")
    if sh.get("freeze_failover") or pd.get("freeze_failover"):
        w(
            "Leader frozen with SIGSTOP instead (no connection reset reaches the followers; the "
            "same as a hung machine or a partition, so only the election timeout detects it):"
        )
        w("")
        w(
            "| system | runs | median s | max s | min s | extra terms per failover "
            "| all runs (s) | load avg |"
        )
        w("|---|---:|---:|---:|---:|---|---|---:|")
        for name, res in (("shoal", sh), ("PySyncObj default", pd)):
            f = res.get("freeze_failover")
            if not f:
                continue
            failed = f" ({f['failed']} never committed)" if f["failed"] else ""
            w(
                f"| {name} | {f['runs']}{failed} | {fmt(f['median_s'], 2)} "
                f"| {fmt(f['max_s'], 2)} | {fmt(f['min_s'], 2)} "
                f"| {', '.join(str(t) for t in f['terms'])} "
                f"| {', '.join(fmt(t, 2) for t in f['times_s'])} | {fmt(f.get('load'), 2)} |"
            )
        w("")
    sf, pf = sh.get("failover") or {}, pd.get("failover") or {}
    if sf.get("median_s") and pf.get("median_s"):
        w(
            f"shoal ÷ PySyncObj failover: median {ratio(sf['median_s'], pf['median_s'])}, "
            f"max {ratio(sf['max_s'], pf['max_s'])}."
        )
        w("")
    w(
        "Timing: the clock starts just before SIGKILL and stops when a proposal's commit is "
        "observed (shoal: the bench process gets the reply; PySyncObj: the callback fires in the "
        "proposing node). Every 20 ms a new proposal is sent to each survivor (shoal: a `kv.put` "
        "on its control socket, which a follower forwards to the leader it knows or refuses with "
        "no-leader; PySyncObj: `append()` on each survivor, forwarded by followers to the leader "
        "they know). Before each kill all three "
        "members are up and caught up, then idle for a random 1-6 s. "
        "'Extra terms' is the leader's term after minus before: 1 means one election round."
    )
    w("")
    w("### Memory (VmRSS of each member process, MB)")
    w("")
    w(
        "| system | entries applied at the end | idle, just after the first election "
        "| after throughput phases | at the end of the run | peak (VmHWM) at the end |"
    )
    w("|---|---:|---|---|---|---|")
    for name, res in (("shoal", sh), ("PySyncObj default", pd), ("PySyncObj unbatched", pu)):
        if not res.get("rss_end_kb"):
            continue
        a = ", ".join(mb(v) for v in (res.get("rss_after_throughput_kb") or {}).values())
        e = ", ".join(mb(v) for v in res["rss_end_kb"].values())
        h = ", ".join(mb(v) for v in (res.get("hwm_end_kb") or {}).values())
        z = ", ".join(mb(v) for v in (res.get("rss_start_kb") or {}).values())
        w(f"| {name} | {fmt(res.get('entries_end'))} | {z} | {a} | {e} | {h} |")
    w("")
    w(
        "shoal's members keep every key written (MVCC store; no KV compaction during the run) and "
        "PySyncObj's bench object keeps every payload in a list, so memory grows with the entries "
        "applied, which differ by system (a faster system stores more). PySyncObj's leader "
        "process also hosts its load generator. Members killed in the failover runs were "
        "restarted, so their end-of-run figures are for a younger process."
    )
    w("")
    w("### Goals (from the issue)")
    w("")
    w(
        "Reference figures quoted from the issue (2-core machine, **not measured here**): etcd 3.4 "
        f"fails over in a median {ETCD_REFERENCE['failover_median_s']} s (max "
        f"{ETCD_REFERENCE['failover_max_s']} s); PySyncObj 0.3.17 default commits "
        f"{PYSYNCOBJ_REFERENCE['default_64']}/s with 64 outstanding and "
        f"{PYSYNCOBJ_REFERENCE['unbatched_nofsync']:,}/s unbatched without fsync."
    )
    w("")
    s64 = ((sh.get("throughput") or {}).get(64) or {}).get("per_s")
    d64 = ((pd.get("throughput") or {}).get(64) or {}).get("per_s")
    goals = [
        (
            "failover median ≤ etcd's 1.15 s",
            sf.get("median_s"),
            sf.get("median_s") is not None
            and sf["median_s"] <= ETCD_REFERENCE["failover_median_s"],
            f"{fmt(sf.get('median_s'), 2)} s",
        ),
        (
            "failover max < 2 s",
            sf.get("max_s"),
            sf.get("max_s") is not None and not sf.get("failed") and sf["max_s"] < 2.0,
            f"{fmt(sf.get('max_s'), 2)} s",
        ),
        (
            "64-proposer throughput ≥ 3 x PySyncObj default (fsync on)",
            s64,
            bool(s64 and d64 and s64 >= 3 * d64),
            f"{fmt(s64, 0)}/s vs 3 x {fmt(d64, 0)}/s = {fmt(3 * d64 if d64 else None, 0)}/s",
        ),
    ]
    fz = sh.get("freeze_failover") or {}
    if fz.get("median_s") is not None:
        goals.append(
            (
                "(extra) same two goals with the leader frozen instead of killed",
                fz["median_s"],
                fz["median_s"] <= ETCD_REFERENCE["failover_median_s"]
                and not fz.get("failed")
                and fz["max_s"] < 2.0,
                f"median {fmt(fz['median_s'], 2)} s, max {fmt(fz['max_s'], 2)} s",
            )
        )
    w("| goal | measured | met |")
    w("|---|---|---|")
    for name, value, met, shown in goals:
        w(f"| {name} | {shown} | {'yes' if met else ('—' if value is None else 'no')} |")
    w("")
    for prof in ((sh.get("throughput") or {}).get(max(report["concurrency"])) or {}).get(
        "profiles", []
    ):
        w(
            f"### Profile: shoal {prof['role']} during the {max(report['concurrency'])}-proposer "
            f"window (py-spy at 200 Hz: % of wall time spent in each function, idle excluded; "
            f"{prof['samples']} busy samples)"
        )
        w("")
        w("| own % | function (leaf) | | total % | shoal function (inclusive) |")
        w("|---:|---|---|---:|---|")
        for i in range(max(len(prof["own_pct"]), 15)):
            o = prof["own_pct"][i] if i < len(prof["own_pct"]) else ("", "")
            t = prof["total_pct"][i] if i < len(prof["total_pct"]) else ("", "")
            w(f"| {o[1]} | `{o[0]}` | | {t[1]} | `{t[0]}` |")
        w("")
    w(
        "shoal's kill -9 figure relies on the followers seeing the dead leader's connections close "
        "(the kernel resets them at once): the transport reports the peer down and a follower "
        "campaigns within 1-3 ticks (RaftConfig.fast_failover_ticks) instead of waiting out the "
        "1-2 s election timeout. A machine that loses power or a network partition gives no such "
        "signal; the frozen-leader row shows that case, where only the election timeout helps."
    )
    w("")
    if report.get("notes"):
        w("### Notes from this run")
        w("")
        for note in report["notes"]:
            w(f"- {note}")
        w("")
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md, keeping any other sections."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(SECTION)
    if start == -1:
        new = old.rstrip() + "\n\n" + text.rstrip() + "\n"
    else:
        ends = [old.find(m, start + len(SECTION)) for m in ("\n## ", "\n<!-- ")]
        nxt = min((e for e in ends if e != -1), default=-1)  # the next section or marker
        tail = old[nxt + 1 :] if nxt != -1 else ""
        new = old[:start] + text.rstrip() + "\n" + ("\n" + tail if tail else "")
    RESULTS.write_text(new)


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    base = Path(args.dir) if args.dir else ROOT / "bench" / "out"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="raft-", dir=base))
    rng = random.Random(args.seed)
    report: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(),
        "argv": " ".join(sys.argv[1:]),
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "duration": args.duration,
        "runs": args.runs,
        "fsync_ms": fsync_cost(workdir) * 1000,
        "loadavg_before": os.getloadavg(),
        "notes": [],
    }
    log(f"work directory {workdir}; write+fsync {report['fsync_ms']:.3f} ms")
    t0 = time.monotonic()
    ok = True
    try:
        if args.only in (None, "shoal"):
            sb = ShoalBench(args, workdir, rng)
            try:
                report["shoal"] = await sb.run()
            except Exception as exc:
                traceback.print_exc()
                report["shoal"] = {**sb.result, "error": f"{type(exc).__name__}: {exc}"}
                ok = False
            finally:
                await sb.close()
            if report["shoal"].get("error"):
                ok = False
                log(f"shoal: {report['shoal']['error']}")
                for node, tail in (report["shoal"].get("logs") or {}).items():
                    print(f"--- {node} log tail ---\n{tail}")
        if args.only in (None, "pysyncobj"):
            for mode, failover in (("default", True), ("unbatched", False)):
                if mode == "unbatched" and args.no_unbatched:
                    continue
                pb = PsoBench(args, workdir, rng, mode)
                key = "pysyncobj" if mode == "default" else "pysyncobj_unbatched"
                try:
                    report[key] = await pb.run(failover=failover)
                except Exception as exc:
                    traceback.print_exc()
                    report[key] = {**pb.result, "error": f"{type(exc).__name__}: {exc}"}
                    ok = False
                finally:
                    await pb.close()
    finally:
        report["elapsed_s"] = round(time.monotonic() - t0, 1)
        report["notes"].append(f"Whole run took {report['elapsed_s']} s.")
        with contextlib.suppress(OSError):
            report["fsync_ms_after"] = fsync_cost(workdir) * 1000
            report["notes"].append(
                f"write+fsync of {PAYLOAD} bytes: {report['fsync_ms']:.2f} ms before the run, "
                f"{report['fsync_ms_after']:.2f} ms after (the issue quotes about 0.2 ms)."
            )
        before, after = report["loadavg_before"], os.getloadavg()
        report["notes"].append(
            f"Load average (1 min) {before[0]:.2f} before the run, {after[0]:.2f} after"
            + (
                " — other work was running on the machine; figures are noisier than usual."
                if before[0] > 0.7
                else "."
            )
        )
        text = render(report)
        print()
        print(text)
        if args.write:
            write_results(text)
            log(f"wrote {RESULTS.relative_to(ROOT)}")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: short phases, 3 failovers")
    p.add_argument("--only", choices=["shoal", "pysyncobj"], help="run one system only")
    p.add_argument("--runs", type=int, help="failover runs per system (default 10; quick 3)")
    p.add_argument("--duration", type=float, help="measured seconds per level (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per level (default 1)")
    p.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=list(CONCURRENCY)
    )
    p.add_argument(
        "--freeze-runs",
        type=int,
        help="also SIGSTOP the leader this many times (a hung machine: no connection reset); "
        "default 5, quick 2, 0 to skip",
    )
    p.add_argument("--failover-cap", type=float, default=30.0, help="give up on one run after")
    p.add_argument("--no-unbatched", action="store_true", help="skip PySyncObj unbatched")
    p.add_argument("--seed", type=int, default=1, help="seed for the idle time before kills")
    p.add_argument("--dir", help="parent of the work directory (default bench/out)")
    p.add_argument("--keep", action="store_true", help="keep data and logs")
    p.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile shoal's leader and a follower with this py-spy during the top level",
    )
    p.add_argument("--json", help="also write the raw results as JSON here")
    p.add_argument(
        "--no-write",
        dest="write",
        action="store_false",
        help="do not update bench/RESULTS.md (--quick never does)",
    )
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 10
    if args.freeze_runs is None:
        args.freeze_runs = 2 if args.quick else 5
    if args.duration is None:
        args.duration = 1.5 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if args.quick:
        args.write = False  # a smoke run never replaces the recorded figures
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
