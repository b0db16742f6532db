"""Cluster bootstrap benchmark: ``lab up`` + ``cluster init``, discovery, and control requests
on every node, in labs of 3, 8 and 16 nodes (real network namespaces with real sshd; root).

    .venv/bin/python bench/cluster_bench.py                 # 3, 8, 16 nodes; updates RESULTS.md
    .venv/bin/python bench/cluster_bench.py --sizes 16 --no-write
    .venv/bin/python bench/cluster_bench.py --json out.json # raw figures as well

For each size, one after the other, in a temporary SHOAL_HOME (never ~/.shoal):

* ``shoal lab up --nodes N`` and ``shoal cluster init`` (no arguments: the lab's nodes and SSH
  files), each timed as the wall time of the command a user types, interpreter start included
  (``shoal cluster --help`` is timed too, for scale). The agent zipapp is built once
  beforehand, as it is cached after a user's first init; its build time is reported apart.
  ``cluster init``'s per-node progress lines (stderr, stamped from the command's start) give
  each node's timeline: connect + probe, upload, agent start, then the wait for one leader
  with every node a voter.
* ``shoal discover --expect N`` (the CLI, wall time) and ``discovery.discover(expect=N)`` in
  this process (browsing alone), each repeated; after ``cluster init`` every node advertises
  both ``_ssh._tcp`` and ``_shoal._tcp``, before it only ``_ssh._tcp``: both are measured.
* one ``status`` control request on every node at once, the shell's way (``remote.call``): SSH
  connections kept open in an ``SSHPool``, a new direct-streamlocal channel per request; also
  over channels kept open (one ``ControlClient`` per node), and cold (a new pool each round:
  SSH handshakes included). For scale, ``clush -w node[1-N] true`` (ClusterShell, a new ssh
  process and connection per node, run by OpenSSH) on the same nodes.

Results go to stdout and to bench/RESULTS.md between ``<!-- cluster_bench:start -->`` and
``<!-- cluster_bench:end -->``; other sections are left alone. Every lab is taken down at the end,
also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.client import ControlClient  # noqa: E402
from shell import clusterstate, remote  # noqa: E402
from shell.clusteraccess import load_ssh  # noqa: E402
from shell.discovery import discover  # noqa: E402
from shell.lab import lab as lablib  # noqa: E402
from shell.lab.state import load as load_lab  # noqa: E402
from shell.ssh import SSHPool  # noqa: E402
from shell.zipapp import build_agent_zipapp  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = "<!-- cluster_bench:start -->", "<!-- cluster_bench:end -->"
GOAL_INIT_16 = 10.0
GOAL_DISCOVER_16 = 1.0
PROGRESS = re.compile(r"^\[\s*([\d.]+)s\] (\S+): (.*)$")


def shoal_command() -> list[str]:
    script = Path(sys.executable).parent / "shoal"
    return [str(script)] if script.exists() else [sys.executable, "-m", "shell.cli"]


@dataclass
class Timed:
    seconds: float
    stdout: str
    stderr: str
    cpu: float = 0.0
    """CPU seconds (user + system) the command itself used."""


@dataclass
class SizeResult:
    nodes: int
    lab_up: float = 0.0
    init: float = 0.0
    init_timeline: dict[str, dict[str, float]] = field(default_factory=dict)
    init_cluster: dict[str, float] = field(default_factory=dict)
    init_cli_cpu: float = 0.0
    agents_cpu: list[float] = field(default_factory=list)
    discover_cli_ssh_only: list[float] = field(default_factory=list)
    discover_lib_ssh_only: list[float] = field(default_factory=list)
    discover_cli: list[float] = field(default_factory=list)
    discover_lib: list[float] = field(default_factory=list)
    request_pooled: list[float] = field(default_factory=list)
    request_channel: list[float] = field(default_factory=list)
    request_cold: list[float] = field(default_factory=list)
    clush: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.labs: list[str] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SHOAL_CLUSTER"}
        env["SHOAL_HOME"] = str(self.home)
        return env

    def shoal(self, *args: str, timeout: float = 300.0) -> Timed:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [*shoal_command(), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        took = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(
                f"shoal {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
            )
        return Timed(took, done.stdout, done.stderr, cpu)

    def down_all(self) -> None:
        for name in self.labs:
            try:
                lablib.down(name, home=self.home)
            except Exception as exc:
                print(f"lab down {name} failed: {exc}", file=sys.stderr)


def timeline(stderr: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per node, when each step of ``cluster init`` began; and the cluster-wide steps."""
    steps = {
        "connecting": "connect",
        "uploading": "upload",
        "installing": "upload",
        "starting agent": "start",
        "agent running": "running",
    }
    nodes: dict[str, dict[str, float]] = {}
    cluster: dict[str, float] = {}
    for line in stderr.splitlines():
        m = PROGRESS.match(line)
        if not m:
            continue
        stamp, node, message = float(m.group(1)), m.group(2), m.group(3)
        if node == "*":
            if message.startswith("waiting for a leader"):
                cluster["waiting"] = stamp
            elif " is up" in message:
                cluster["up"] = stamp
            continue
        for prefix, step in steps.items():
            if message.startswith(prefix):
                nodes.setdefault(node, {}).setdefault(step, stamp)
        if "leader" in message and "waiting" not in message:
            nodes.setdefault(node, {}).setdefault("sees_leader", stamp)
    return nodes, cluster


async def lib_discover(count: int, bridge: str) -> float:
    started = time.perf_counter()
    hosts = await discover(timeout=10.0, expect=count, interfaces=[bridge])
    took = time.perf_counter() - started
    if len(hosts) < count:
        raise RuntimeError(f"discover found {len(hosts)} of {count} hosts")
    return took


async def control_requests(
    home: Path, cluster: str, rounds: int, cold_rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """Seconds per round of one ``status`` request on every node: pooled SSH connections with a
    channel per request, channels kept open, and cold (new connections each round)."""
    state = clusterstate.load(home, cluster)
    settings = load_ssh(state)
    pool = settings.pool()
    pooled: list[float] = []
    channel: list[float] = []
    cold: list[float] = []
    clients: list[ControlClient] = []

    async def every_node(work: Any) -> None:
        results = await asyncio.gather(*(work(s) for s in state.nodes), return_exceptions=True)
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            raise RuntimeError(f"{len(bad)} nodes failed: {bad[0]}")

    try:
        await every_node(lambda s: remote.call(pool, s, "status"))  # connect (not timed)
        await asyncio.sleep(0.3)  # let the pool's background TCP_NODELAY nudges finish
        for _ in range(rounds):
            started = time.perf_counter()
            await every_node(lambda s: remote.call(pool, s, "status"))
            pooled.append(time.perf_counter() - started)
        clients = list(await asyncio.gather(*(remote.control(pool, s) for s in state.nodes)))
        await asyncio.gather(*(c.call("status") for c in clients))
        for _ in range(rounds):
            started = time.perf_counter()
            await asyncio.gather(*(c.call("status") for c in clients))
            channel.append(time.perf_counter() - started)
    finally:
        for client in clients:
            await client.close()
        await pool.close()
    for _ in range(cold_rounds):
        fresh: SSHPool = settings.pool()
        try:
            started = time.perf_counter()
            await every_node(lambda s, p=fresh: remote.call(p, s, "status"))
            cold.append(time.perf_counter() - started)
        finally:
            await fresh.close()
    return pooled, channel, cold


def clush_rounds(lab_dir: Path, count: int, rounds: int) -> list[float]:
    clush = Path(sys.executable).parent / "clush"
    if not clush.exists() and shutil.which("clush") is None:
        return []
    argv = [
        str(clush) if clush.exists() else "clush",
        "-f", "64", "-w", f"node[1-{count}]", "-o", f"-F {lab_dir / 'ssh_config'}",
        "-b", "true",
    ]  # fmt: skip
    out: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        took = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"clush failed ({done.returncode}): {done.stderr[-500:]}")
        out.append(took)
    return out


def run_size(bench: Bench, count: int, repeats: int, rounds: int, cold: int) -> SizeResult:
    res = SizeResult(count)
    name = f"bench{count}-{secrets.token_hex(2)}"
    bench.labs.append(name)
    print(f"== {count} nodes (lab {name})", flush=True)
    res.lab_up = bench.shoal("lab", "up", "--name", name, "--nodes", str(count), "--json").seconds
    lab = load_lab(name, bench.home)
    print(f"  lab up           {res.lab_up:6.2f} s", flush=True)

    for _ in range(repeats):  # before init: sshd (_ssh._tcp) only
        d = bench.shoal("discover", "--expect", str(count), "--timeout", "10", "--json")
        found = json.loads(d.stdout)
        if len(found) != count:
            res.notes.append(f"discover (CLI) listed {len(found)} of {count} hosts")
        res.discover_cli_ssh_only.append(d.seconds)
        res.discover_lib_ssh_only.append(asyncio.run(lib_discover(count, lab.host_address)))

    init = bench.shoal("cluster", "init", "--lab", name)
    res.init = init.seconds
    res.init_timeline, res.init_cluster = timeline(init.stderr)
    res.init_cli_cpu = init.cpu
    status = json.loads(bench.shoal("lab", "status", "--name", name, "--json").stdout)
    res.agents_cpu = [process_cpu(n["agent_pid"]) for n in status["nodes"] if n["agent_pid"]]
    print(f"  cluster init     {res.init:6.2f} s", flush=True)

    for _ in range(repeats):  # after init: sshd and agent per node
        d = bench.shoal("discover", "--expect", str(count), "--timeout", "10", "--json")
        found = json.loads(d.stdout)
        agents = sum(1 for h in found if h.get("agent"))
        if len(found) != count or agents != count:
            res.notes.append(f"discover (CLI) listed {len(found)} hosts, {agents} with an agent")
        res.discover_cli.append(d.seconds)
        res.discover_lib.append(asyncio.run(lib_discover(count, lab.host_address)))
    print(
        f"  discover         CLI {statistics.median(res.discover_cli):.2f} s, "
        f"in-process {statistics.median(res.discover_lib):.3f} s",
        flush=True,
    )

    res.request_pooled, res.request_channel, res.request_cold = asyncio.run(
        control_requests(bench.home, name, rounds, cold)
    )
    res.clush = clush_rounds(lab.dir, count, cold)
    print(
        f"  status on all    pooled {ms(statistics.median(res.request_pooled))}, "
        f"open channels {ms(statistics.median(res.request_channel))}, "
        f"cold {ms(statistics.median(res.request_cold))}"
        + (f", clush {ms(statistics.median(res.clush))}" if res.clush else ""),
        flush=True,
    )
    lablib.down(name, home=bench.home)
    return res


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def phases(res: SizeResult) -> dict[str, tuple[float, float]]:
    """Per phase of ``cluster init``: (median, max) over nodes, in seconds."""
    spans: dict[str, list[float]] = {"probe": [], "upload": [], "start": []}
    for t in res.init_timeline.values():
        if {"connect", "upload", "start", "running"} <= t.keys():
            spans["probe"].append(t["upload"] - t["connect"])
            spans["upload"].append(t["start"] - t["upload"])
            spans["start"].append(t["running"] - t["start"])
    out = {k: (med(v), max(v) if v else float("nan")) for k, v in spans.items()}
    if "waiting" in res.init_cluster and "up" in res.init_cluster:
        wait = res.init_cluster["up"] - res.init_cluster["waiting"]
        out["leader"] = (wait, wait)
    return out


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {ssh.split(',')[0]}"
    )


def report(results: list[SizeResult], startup: float, zipapp_build: float, command: str) -> str:
    lines = [
        START,
        "## Cluster bootstrap in the lab: `lab up`, `cluster init`, discovery, control requests",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}; {machine()}. Labs of network-namespace "
        "nodes with a real sshd each (and, after init, an agent and an mDNS publisher each), all "
        "on this machine. Wall times of the commands a user types include the interpreter "
        f"starting and importing (`shoal cluster --help`: {startup:.2f} s). The agent zipapp "
        f"was built beforehand ({zipapp_build:.2f} s, cached after a user's first init).",
        "",
        "| nodes | `lab up` | `cluster init` | init: probe / upload / start, max over nodes "
        "| init: wait for leader | `discover` CLI | `discover` in-process |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ph = phases(r)
        lines.append(
            f"| {r.nodes} | {r.lab_up:.2f} s | {r.init:.2f} s "
            f"| {ph['probe'][1]:.2f} / {ph['upload'][1]:.2f} / {ph['start'][1]:.2f} s "
            f"| {ph.get('leader', (float('nan'),))[0]:.2f} s "
            f"| {med(r.discover_cli):.2f} s ({med(r.discover_cli_ssh_only):.2f} s before init) "
            f"| {med(r.discover_lib):.3f} s ({med(r.discover_lib_ssh_only):.3f} s before init) |"
        )
    lines += [
        "",
        "One `status` control request on every node at once (median of rounds, p90 in "
        "brackets): the shell's way is SSH connections kept open in the pool and a new "
        "direct-streamlocal channel per request; then over channels kept open; then cold, a new "
        "pool each round (SSH handshakes included); and ClusterShell's `clush -w node[1-N] true` "
        "(a new OpenSSH connection per node, nothing run on the agent) for scale.",
        "",
        "| nodes | pooled connections (the shell) | open channels | cold | `clush ... true` "
        "| clush / pooled |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = med(r.clush) / med(r.request_pooled) if r.clush else float("nan")
        lines.append(
            f"| {r.nodes} | {ms(med(r.request_pooled))} ({ms(p90(r.request_pooled))}) "
            f"| {ms(med(r.request_channel))} ({ms(p90(r.request_channel))}) "
            f"| {ms(med(r.request_cold))} | {ms(med(r.clush)) if r.clush else '-'} "
            f"| {ratio:.0f}x |"
        )
    biggest = max(results, key=lambda r: r.nodes)
    by_n = {r.nodes: r for r in results}
    lines += ["", "### Goals", "", "| goal | measured | met |", "|---|---|---|"]
    if 16 in by_n:
        r16 = by_n[16]
        lines.append(
            f"| `cluster init` of 16 nodes under {GOAL_INIT_16:g} s after `lab up` "
            f"| {r16.init:.2f} s | {'yes' if r16.init < GOAL_INIT_16 else 'no'} |"
        )
        worst = max(r16.discover_cli)
        lines.append(
            f"| discovery of 16 nodes under {GOAL_DISCOVER_16:g} s "
            f"| CLI median {med(r16.discover_cli):.2f} s (worst {worst:.2f} s), in-process "
            f"{med(r16.discover_lib):.3f} s "
            f"| {'yes' if med(r16.discover_cli) < GOAL_DISCOVER_16 else 'no'} |"
        )
    else:
        lines.append("| (16 nodes not measured in this run) | - | - |")
    lines += [
        "",
        f"### Where `cluster init` of {biggest.nodes} nodes spends its time",
        "",
        "From its per-node progress lines (seconds since the command started; its interpreter "
        "start comes before 0):",
        "",
        "| node | connect | upload / install | start agent | agent running | sees a leader |",
        "|---|---|---|---|---|---|",
    ]
    for node, t in sorted(biggest.init_timeline.items(), key=lambda kv: int(kv[0][4:] or 0)):
        cells = [t.get(k) for k in ("connect", "upload", "start", "running", "sees_leader")]
        lines.append(
            f"| {node} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |"
        )
    if biggest.init_cluster:
        lines.append("")
        lines.append(
            "Cluster-wide: waiting for a leader from "
            f"{biggest.init_cluster.get('waiting', float('nan')):.2f} s, up at "
            f"{biggest.init_cluster.get('up', float('nan')):.2f} s; the command exited at "
            f"{biggest.init:.2f} s wall."
        )
    lines += [
        "",
        "CPU used (user + system) by the end of `cluster init`: the command itself, and the "
        "agents it started (each from its start; they all run on this machine's "
        f"{os.cpu_count()} CPUs, next to the sshds):",
        "",
        "| nodes | `cluster init` process | agents, total | per agent (median) "
        "| agents' CPU / CPUs |",
        "|---|---|---|---|---|",
    ]
    cpus = os.cpu_count() or 1
    for r in results:
        total = sum(r.agents_cpu)
        lines.append(
            f"| {r.nodes} | {r.init_cli_cpu:.2f} s | {total:.2f} s | {med(r.agents_cpu):.2f} s "
            f"| {total / cpus:.2f} s |"
        )
    ph = phases(biggest)
    if biggest.init and ph["start"][1] == ph["start"][1]:  # not NaN
        share = ph["start"][1] / biggest.init
        lines += [
            "",
            f"Reading: with {biggest.nodes} nodes, starting the agents (start agent → agent "
            f"running, {ph['start'][1]:.2f} s at most) is {share:.0%} of the command's wall time. "
            f"All {biggest.nodes} agents start at once on {cpus} CPUs, and their CPU by then "
            f"({sum(biggest.agents_cpu):.2f} s, {sum(biggest.agents_cpu) / cpus:.2f} s per CPU) "
            "accounts for most of that phase: it is CPU-bound here, not waiting on SSH. "
            "A cProfile of one agent start (taken by hand when this benchmark was written) "
            "spent about 0.16 of its 0.5 CPU seconds compiling the agent's sources: zipimport "
            "never caches bytecode, so every start compiles every module of the zipapp again.",
        ]
    notes = [n for r in results for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="3,8,16", help="lab sizes, comma separated (3,8,16)")
    p.add_argument("--repeats", type=int, default=3, help="discover runs per size (3)")
    p.add_argument("--rounds", type=int, default=30, help="warm control-request rounds (30)")
    p.add_argument("--cold", type=int, default=5, help="cold rounds and clush runs (5)")
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    p.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("cluster_bench: the lab needs root", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s]
    home = Path(tempfile.mkdtemp(prefix="shoal-cluster-bench-"))
    bench = Bench(home)
    results: list[SizeResult] = []
    try:
        started = time.perf_counter()
        build_agent_zipapp(home / "cache")
        zipapp_build = time.perf_counter() - started
        startup = min(bench.shoal("cluster", "--help").seconds for _ in range(3))
        for count in sizes:
            results.append(run_size(bench, count, args.repeats, args.rounds, args.cold))
    finally:
        bench.down_all()
        shutil.rmtree(home, ignore_errors=True)
    command = "python bench/cluster_bench.py" + (
        f" --sizes {args.sizes}" if args.sizes != "3,8,16" else ""
    )
    section = report(results, startup, zipapp_build, command)
    print()
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if not args.no_write:
        write_results(section)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
