"""Parallel exec: shoal's run_parallel vs clush, parallel-ssh and a bare asyncssh floor.

    .venv/bin/python bench/exec_bench.py                      # 16 and 32 nodes; updates RESULTS.md
    .venv/bin/python bench/exec_bench.py --sizes 16 --no-write
    .venv/bin/python bench/exec_bench.py --pssh-python /tmp/pssh-venv/bin/python
    .venv/bin/python bench/exec_bench.py --sizes 16 --cold 2 --warm 3 --no-write   # smoke run

Needs root (it builds one lab of the largest size and uses its first N nodes for each size).
For each size and each command (``true``, ``uname -a``):

* **shoal cold**: a new SSHPool, ``run_parallel``, close — SSH handshakes included;
* **shoal warm**: the same pool kept open (the REPL's case): channels only;
* **asyncssh cold/warm**: the floor, the same library with no pool, callbacks or bookkeeping;
* **clush**: ``clush -w node[1-N] -B -o '-F <lab>/ssh_config' CMD``, wall time of the process
  (a new ssh per node, as clush always does; interpreter start included, as the user sees it);
* **clush + ControlMaster**: the same, with ssh options ``-oControlMaster=auto
  -oControlPath=/tmp/cmXXXX/cm-%C -oControlPersist=120``; one untimed run opens a master per
  node, the timed runs (``--warm`` of them) reuse them; the masters are stopped afterwards
  (``ssh -O exit``, then SIGTERM by pid for any left) and the socket directory removed;
* **parallel-ssh** (if ``--pssh-python`` names an interpreter that has it): cold is a new
  ``ParallelSSHClient`` measured inside that process (imports excluded), warm its second run.

Every figure is a median over ``--cold`` (cold) or ``--warm`` (warm) rounds. The goals table
divides clush + ControlMaster by shoal warm (the issue wants >= 5x) and shoal warm by asyncssh
warm (<= 2x); nothing asserts them, this is a benchmark. The lab is taken down
at the end, even on failure. Results go to stdout and to bench/RESULTS.md between
``<!-- exec_bench:start -->`` and ``<!-- exec_bench:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shell import execute  # noqa: E402
from shell.execute import Target  # noqa: E402
from shell.lab import lab as lablib  # noqa: E402
from shell.lab.state import LabState  # noqa: E402
from shell.ssh import SSHPool  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = "<!-- exec_bench:start -->", "<!-- exec_bench:end -->"
COMMANDS = ["true", "uname -a"]

PSSH_SCRIPT = r"""
import json, sys, time
from pssh.clients import ParallelSSHClient
hosts, key, cmd, rounds = json.loads(sys.argv[1])
def once(client):
    out = client.run_command(cmd)
    client.join(out)
    for o in out:
        list(o.stdout)
        assert o.exit_code == 0, (o.host, o.exit_code, o.exception)
cold = []
for _ in range(rounds):
    t = time.perf_counter()
    client = ParallelSSHClient(hosts, user="root", pkey=key, num_retries=1, timeout=10)
    once(client)
    cold.append(time.perf_counter() - t)
warm = []
for _ in range(rounds):
    t = time.perf_counter()
    once(client)
    warm.append(time.perf_counter() - t)
print(json.dumps({"cold": cold, "warm": warm}))
"""


def targets(lab: LabState, count: int) -> list[Target]:
    return [Target(n.name, n.address) for n in lab.nodes[:count]]


def make_pool(lab: LabState) -> SSHPool:
    return SSHPool(lab.dir / "known_hosts", [lab.dir / "id_ed25519"])


async def timed(make: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    out: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        await make()
        out.append(time.perf_counter() - t)
    return out


async def shoal_figures(
    lab: LabState, count: int, cmd: str, cold: int, warm: int
) -> tuple[list[float], list[float]]:
    tg = targets(lab, count)

    async def check(results: list[execute.NodeResult]) -> None:
        bad = [r.error or r.rc for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"shoal run failed: {bad[:3]}")

    async def cold_once() -> None:
        pool = make_pool(lab)
        try:
            await check(await execute.run_parallel(tg, cmd, pool=pool, timeout=30))
        finally:
            await pool.close()

    cold_times = await timed(cold_once, cold)
    pool = make_pool(lab)
    try:
        await execute.run_parallel(tg, cmd, pool=pool, timeout=30)
        # let the pool's background TCP_NODELAY nudges finish before timing warm rounds
        await asyncio.sleep(0.3)

        async def warm_once() -> None:
            await check(await execute.run_parallel(tg, cmd, pool=pool, timeout=30))

        warm_times = await timed(warm_once, warm)
    finally:
        await pool.close()
    return cold_times, warm_times


async def bare_figures(
    lab: LabState, count: int, cmd: str, cold: int, warm: int
) -> tuple[list[float], list[float]]:
    """Plain asyncssh: connect all, run all, with nothing of ours in between."""
    hosts = [n.address for n in lab.nodes[:count]]
    opts = {
        "username": "root",
        "known_hosts": str(lab.dir / "known_hosts"),
        "client_keys": [str(lab.dir / "id_ed25519")],
        "agent_path": None,
        "config": (),
    }

    async def one(host: str) -> asyncssh.SSHClientConnection:
        conn = await asyncssh.connect(host, **opts)
        await conn.run(cmd, check=True)
        return conn

    async def cold_once() -> None:
        conns = await asyncio.gather(*(one(h) for h in hosts))
        for c in conns:
            c.close()

    cold_times = await timed(cold_once, cold)
    conns = await asyncio.gather(*(asyncssh.connect(h, **opts) for h in hosts))
    try:

        async def warm_once() -> None:
            await asyncio.gather(*(c.run(cmd, check=True) for c in conns))

        await warm_once()
        warm_times = await timed(warm_once, warm)
    finally:
        for c in conns:
            c.close()
    return cold_times, warm_times


def clush_exe() -> str | None:
    clush = Path(sys.executable).parent / "clush"
    return str(clush) if clush.exists() else shutil.which("clush")


def run_clush(argv: list[str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"clush failed ({done.returncode}): {done.stderr[-500:]}")
    return took


def clush_figures(lab: LabState, count: int, cmd: str, rounds: int) -> list[float]:
    exe = clush_exe()
    if exe is None:
        return []
    argv = [exe, "-w", f"node[1-{count}]", "-B", "-o", f"-F {lab.dir / 'ssh_config'}", cmd]
    return [run_clush(argv) for _ in range(rounds)]


def clush_self_figures(count: int, rounds: int) -> list[float]:
    """clush with its local ``exec`` worker (``true`` per node, no ssh): its own overhead."""
    exe = clush_exe()
    if exe is None:
        return []
    argv = [exe, "-w", f"node[1-{count}]", "-B", "-R", "exec", "true"]
    return [run_clush(argv) for _ in range(rounds)]


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (the ssh masters carry their ControlPath)."""
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(text.encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def stop_masters(lab: LabState, count: int, cmdir: Path) -> int:
    """``ssh -O exit`` every master under ``cmdir``; SIGTERM any left (by pid); rm the dir.

    Returns how many processes were still there after ``-O exit`` and had to be signalled."""
    cfg = str(lab.dir / "ssh_config")
    table = _proc_table()
    _GONE_CPU[0] += sum(table[pid][2] for pid in _pids_mentioning(str(cmdir)) if pid in table)
    for n in lab.nodes[:count]:
        subprocess.run(
            ["ssh", "-F", cfg, "-o", f"ControlPath={cmdir}/cm-%C", "-O", "exit", n.name],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
    deadline = time.monotonic() + 3
    left = _pids_mentioning(str(cmdir))
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _pids_mentioning(str(cmdir))
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    shutil.rmtree(cmdir, ignore_errors=True)
    return len(left)


def clush_cm_figures(
    lab: LabState, count: int, cmd: str, rounds: int, notes: list[str]
) -> list[float]:
    """clush whose ssh reuses OpenSSH ControlMaster connections (one master per node).

    One untimed run opens the masters (ControlMaster=auto, ControlPersist=120); the timed runs
    then go through them (each ``ssh`` is a mux client: no TCP or SSH handshake). The masters
    are stopped afterwards and the socket directory removed."""
    exe = clush_exe()
    if exe is None:
        return []
    # short: a unix socket path is at most 107 bytes (ssh adds a 17-byte temp suffix too)
    cmdir = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    # clush reads -o through ConfigParser interpolation: "%%C" reaches ssh as "%C"
    ssh_opts = (
        f"-F {lab.dir / 'ssh_config'} -oControlMaster=auto -oControlPath={cmdir}/cm-%%C "
        "-oControlPersist=120"
    )
    argv = [exe, "-w", f"node[1-{count}]", "-B", "-o", ssh_opts, cmd]
    try:
        run_clush(argv)  # opens the masters; not timed
        masters = len([e for e in cmdir.iterdir() if e.name.startswith("cm-")])
        if masters != count:
            notes.append(f"clush + ControlMaster, {count} nodes, `{cmd}`: {masters} masters open "
                         f"after the warm-up run (expected {count})")  # fmt: skip
        return [run_clush(argv) for _ in range(rounds)]
    finally:
        signalled = stop_masters(lab, count, cmdir)
        if signalled:
            notes.append(f"clush + ControlMaster, {count} nodes: {signalled} ssh master(s) "
                         "ignored `ssh -O exit` and were sent SIGTERM")  # fmt: skip


def pssh_figures(
    python: str | None, lab: LabState, count: int, cmd: str, rounds: int
) -> tuple[list[float], list[float], str | None]:
    if not python:
        return [], [], None
    hosts = [n.address for n in lab.nodes[:count]]
    arg = json.dumps([hosts, str(lab.dir / "id_ed25519"), cmd, rounds])
    done = subprocess.run(
        [python, "-c", PSSH_SCRIPT, arg], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        return [], [], done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return data["cold"], data["warm"], None


# CPU seconds of our processes that were reaped outside our process tree (the ssh ControlMaster
# daemons, re-parented to PID 1), recorded just before they were stopped; see OthersMeter.
_GONE_CPU = [0.0]


def _proc_table() -> dict[int, tuple[int, float, float, str]]:
    """pid -> (ppid, own CPU s, CPU s including reaped children, command line)."""
    table: dict[int, tuple[int, float, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        own = (int(f[11]) + int(f[12])) / CLK_TCK  # utime stime
        table[int(entry.name)] = (int(f[1]), own, own + (int(f[13]) + int(f[14])) / CLK_TCK, cmd)
    return table


def _machine_busy() -> float:
    """CPU seconds spent in user and system mode on all CPUs since boot."""
    with open("/proc/stat") as fh:
        f = fh.readline().split()[1:]
    return (int(f[0]) + int(f[1]) + int(f[2])) / CLK_TCK


class OthersMeter:
    """CPU used by processes that are not this benchmark's while a row is measured (cores).

    The machine's user + system time minus ours minus kernel threads'. Ours: this process and
    its descendants with the children they reaped (the clients, clush and its ssh, the lab's
    sshds and their sessions), anything whose command line names ``mark`` (the lab directory:
    the ssh ControlMaster daemons, re-parented to PID 1), and ``_GONE_CPU`` for those masters
    once stopped."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.t0 = time.monotonic()
        self.busy0 = _machine_busy()
        self.gone0 = _GONE_CPU[0]
        self.start = _proc_table()

    def _ours(self, table: dict[int, tuple[int, float, float, str]]) -> set[int]:
        kids: dict[int, list[int]] = {}
        for pid, row in table.items():
            kids.setdefault(row[0], []).append(pid)
        ours = {pid for pid, row in table.items() if self.mark in row[3]}
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            ours.add(pid)
            todo.extend(kids.get(pid, []))
        return ours

    def cores(self) -> float:
        end = _proc_table()
        busy = _machine_busy() - self.busy0
        wall = time.monotonic() - self.t0
        ours_pids = self._ours(self.start) | self._ours(end)
        ours = _GONE_CPU[0] - self.gone0
        kthreads = 0.0
        for pid, (_, own, total, cmd) in end.items():
            if pid in ours_pids:
                before = self.start.get(pid)
                ours += total - (before[2] if before else 0.0)
            elif not cmd:  # kernel threads
                before = self.start.get(pid)
                kthreads += own - (before[1] if before else 0.0)
        return max(0.0, busy - ours - kthreads) / wall if wall > 0 else 0.0


def wait_quiet(mark: str, limit: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until processes not ours use under ``limit`` cores for
    2 s in a row. Returns the last reading."""
    deadline = time.monotonic() + max_wait
    quiet = 0
    while True:
        meter = OthersMeter(mark)
        time.sleep(1.0)
        busy = meter.cores()
        quiet = quiet + 1 if busy < limit else 0
        if quiet >= 2:
            return busy
        if time.monotonic() > deadline:
            print(f"machine still busy ({busy:.2f} cores used by others); going ahead", flush=True)
            return busy


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f}" if xs else "-"


def ratio(num: list[float], den: list[float]) -> float | None:
    if not num or not den:
        return None
    return statistics.median(num) / statistics.median(den)


def versions(pssh_python: str | None) -> str:
    parts: list[str] = []
    exe = clush_exe()
    if exe:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        parts.append(done.stdout.strip() or done.stderr.strip())
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    parts.append(done.stderr.strip().split(",")[0])
    if pssh_python:
        done = subprocess.run(
            [pssh_python, "-c", "from importlib.metadata import version as v; "
             "print(v('parallel-ssh'), v('ssh2-python'))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode == 0 and done.stdout.split():
            pv, sv = done.stdout.split()
            parts.append(f"parallel-ssh {pv} (ssh2-python {sv})")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="16,32", help="node counts, comma separated (16,32)")
    p.add_argument("--cold", type=int, default=5, help="cold rounds, and clush runs (5)")
    p.add_argument(
        "--warm", type=int, default=20, help="warm rounds, and clush + ControlMaster runs (20)"
    )
    p.add_argument("--pssh-python", help="an interpreter with parallel-ssh installed")
    p.add_argument("--json", help="also write every sample to this file")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        help="before each row, wait up to this many seconds for other processes to use under "
        "0.2 cores (60; 0 to not wait)",
    )
    p.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("exec_bench: the lab needs root", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s]
    home = Path(tempfile.mkdtemp(prefix="shoal-exec-bench-"))
    name = f"xb{secrets.token_hex(3)}"
    rows: list[list[str]] = []
    goals: list[list[str]] = []
    notes: list[str] = []
    raw: list[dict[str, object]] = []
    clush_self: dict[int, list[float]] = {}
    whole = OthersMeter(str(home))
    noisy: list[str] = []
    try:
        lab = lablib.up(name, max(sizes), home=home)
        for count in sizes:
            clush_self[count] = clush_self_figures(count, args.cold)
            for cmd in COMMANDS:
                if args.wait_quiet > 0:
                    wait_quiet(str(home), 0.2, args.wait_quiet)
                meter = OthersMeter(str(home))
                s_cold, s_warm = asyncio.run(shoal_figures(lab, count, cmd, args.cold, args.warm))
                b_cold, b_warm = asyncio.run(bare_figures(lab, count, cmd, args.cold, args.warm))
                clush = clush_figures(lab, count, cmd, args.cold)
                clush_cm = clush_cm_figures(lab, count, cmd, args.warm, notes)
                p_cold, p_warm, p_err = pssh_figures(args.pssh_python, lab, count, cmd, args.cold)
                if p_err:
                    notes.append(f"parallel-ssh, {count} nodes, `{cmd}`: {p_err}")
                figures = [s_cold, s_warm, b_cold, b_warm, clush, clush_cm, p_cold, p_warm]
                row = [str(count), f"`{cmd}`", *(med(xs) for xs in figures)]
                rows.append(row)
                others = meter.cores()
                if others > 0.2:
                    noisy.append(f"{count} nodes `{cmd}` ({others:.2f} cores)")
                cm_x = ratio(clush_cm, s_warm)
                floor_x = ratio(s_warm, b_warm)
                best_x = ratio(clush_cm, b_warm)
                goals.append([
                    str(count), f"`{cmd}`",
                    f"{med(clush_cm)} ÷ {med(s_warm)} = **{cm_x:.1f}x**" if cm_x else "-",
                    ("yes" if cm_x >= 5 else "no") if cm_x else "-",
                    f"{med(s_warm)} ÷ {med(b_warm)} = **{floor_x:.2f}x**" if floor_x else "-",
                    ("yes" if floor_x <= 2 else "no") if floor_x else "-",
                    f"{best_x:.1f}x" if best_x else "-",
                    f"{others:.2f}",
                ])  # fmt: skip
                raw.append({
                    "nodes": count, "command": cmd, "shoal_cold": s_cold, "shoal_warm": s_warm,
                    "asyncssh_cold": b_cold, "asyncssh_warm": b_warm, "clush": clush,
                    "clush_controlmaster": clush_cm, "pssh_cold": p_cold, "pssh_warm": p_warm,
                    "others_cores": others,
                })  # fmt: skip
                print(" | ".join(row), flush=True)
    finally:
        lablib.down(name, home=home)
        shutil.rmtree(home, ignore_errors=True)
    whole_cores, whole_wall = whole.cores(), time.monotonic() - whole.t0
    command = ".venv/bin/python bench/exec_bench.py" + (
        f" --pssh-python {args.pssh_python}" if args.pssh_python else ""
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": raw, "clush_exec_worker": clush_self,
                                               "others_cores": whole_cores}, indent=1))  # fmt: skip
    self_txt = "; ".join(f"{n} nodes {med(xs)} s" for n, xs in clush_self.items() if xs)
    lines = [
        START,
        "## Parallel exec — `bench/exec_bench.py`",
        "",
        f"Command (as root): `{command}` — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, asyncssh "
        f"{asyncssh.__version__}, {versions(args.pssh_python)}. Lab nodes (network namespaces "
        f"with real sshd) on this host; medians in seconds, {args.cold} cold rounds (and plain "
        f"clush runs) / {args.warm} warm rounds (and clush + ControlMaster runs).",
        "",
        "| nodes | command | shoal cold | shoal warm (pooled) | asyncssh cold | asyncssh warm "
        "| clush | clush + ControlMaster | parallel-ssh cold | parallel-ssh warm |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "shoal = `shell.execute.run_parallel` (host keys verified, lines streamed to callbacks); "
        "cold includes the SSH handshakes and closing the pool. clush is the wall time of the "
        "`clush` process (interpreter start and one `ssh` per node). **clush + ControlMaster** "
        "is the same with `-o '-F <lab>/ssh_config -oControlMaster=auto "
        "-oControlPath=/tmp/cmXXXX/cm-%C -oControlPersist=120'`: one untimed clush run opens a "
        "master connection per node, then every timed run's `ssh` is a mux client over it (no "
        "TCP or SSH handshake, but still one `ssh` process per node and clush's interpreter "
        "start); the masters are stopped with `ssh -O exit` afterwards. For scale, clush with "
        "its local `exec` worker (`clush -R exec -w node[1-N] true`: no ssh at all) takes "
        f"{self_txt or '-'}. parallel-ssh (ssh2-python, libssh2) is timed inside its process and "
        "does not check host keys. parallel-ssh was installed apart, as `python3 -m venv "
        "/tmp/pssh-venv && /tmp/pssh-venv/bin/pip install parallel-ssh`.",
        "",
        "### Goals (warm fan-out, from the issue)",
        "",
        "At least 5 times faster than clush with ControlMaster, and within 2 times the bare "
        "asyncssh reuse figure. clush + ControlMaster ÷ asyncssh warm is the most any client "
        "built on asyncssh could reach against clush + ControlMaster here. 'Others' is the CPU "
        f"(in cores; the machine has {os.cpu_count()}) that processes not started by this "
        "benchmark used while the row was measured: above about 0.2 the row's figures are "
        "disturbed by other work.",
        "",
        "| nodes | command | clush + ControlMaster ÷ shoal warm | ≥ 5x | shoal warm ÷ asyncssh "
        "warm | ≤ 2x | clush + ControlMaster ÷ asyncssh warm | others |",
        "|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(g) + " |" for g in goals),
        "",
        "For reference, the issue's figures for 16 endpoints and `true`: clush 1.0 s, "
        "parallel-ssh 0.42 s cold, bare asyncssh 0.21 s cold / 0.027 s warm. The ordering here is "
        "the same; what matters is the gap between shoal and the asyncssh floor, cold and warm.",
    ]
    notes.append(
        f"Whole run {whole_wall:.0f} s; processes not started by this benchmark used "
        f"{whole_cores:.2f} cores on average meanwhile."
    )
    if noisy:
        notes.append(
            "The machine was shared with other work during: " + ", ".join(noisy) + " (over 0.2 "
            "cores used by other processes); those rows' figures are noisier than the rest."
        )
    lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    lines.append(END)
    section = "\n".join(lines) + "\n"
    print()
    print(section)
    if not args.no_write:
        text = RESULTS.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + section + rest.split(END, 1)[1].lstrip("\n")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        RESULTS.write_text(text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
