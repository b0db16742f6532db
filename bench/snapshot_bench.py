"""What a log-compaction snapshot costs the agents while they serve: latency spikes and memory.

    .venv/bin/python bench/snapshot_bench.py                       # 10k and 50k keys, 20 s each
    .venv/bin/python bench/snapshot_bench.py --quick               # 10k keys, 5 s, no write
    .venv/bin/python bench/snapshot_bench.py --json before.json --no-write   # keep a baseline
    .venv/bin/python bench/snapshot_bench.py --baseline before.json          # before/after table

For each store size N: a fresh 3-member ``shell.devcluster.LocalCluster`` (default timings, TLS,
WAL fsync) with a small ``snapshot_entries`` so that every member snapshots several times
during the run; N keys of ~100-byte values loaded with 128-put txns; then, for ``--duration``
seconds:

* one client puts (overwrites a random one of the N keys, 100-byte value) one at a time to the
  leader: p50/p99/max latency;
* a probe per member sends the control API's ``ping`` (answered on the agent's event loop, no
  Raft) every 2 ms: its max latency is the longest the event loop stalled (plus a
  millisecond of socket round trip) — what every request, heartbeat and watch in flight waits;
* VmRSS of each member sampled every 20 ms, and VmHWM reset (``/proc/PID/clear_refs``) after the
  load, so the peak is the peak of the measured window — the cost of the snapshot's copies;
* the snapshots taken (the agents log each one), and, where the agent logs them, how long each
  spent on the event loop and in total.

``--baseline FILE`` (repeatable) puts earlier runs' figures (``--json``) beside this one's: run the
old code with ``--json FILE --no-write`` first. Results go to bench/RESULTS.md between
``<!-- snapshot_bench:start -->`` and ``<!-- snapshot_bench:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import CLK_TCK, cpu_seconds, log, pct, proc_status  # noqa: E402

from agent.client import ControlClient, ControlError  # noqa: E402
from agent.kv import KVStore  # noqa: E402
from shell.devcluster import LocalCluster  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
START_MARK = "<!-- snapshot_bench:start -->"
END_MARK = "<!-- snapshot_bench:end -->"
TXN_OPS = 128
PROBE_EVERY = 0.002
RSS_EVERY = 0.02
SNAP_LINE = re.compile(r"compacted the log through index (\d+)(.*)$")
SNAP_TIMES = re.compile(r"at most (\d+(?:\.\d+)?) ms at a time.*?(\d+(?:\.\d+)?) ms in all")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_of(i: int) -> bytes:
    return f"snapbench/{i:08d}".encode()


def value_of(rng: random.Random) -> bytes:
    return rng.randbytes(50).hex().encode()  # 100 bytes that compress like real data barely does


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return sum(vals) - vals[3] - vals[4], sum(vals)


def reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS mark (VmHWM) of ``pid``; needs to own the process or be root."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def snapshot_lines(cluster: LocalCluster, node: str) -> list[str]:
    with contextlib.suppress(OSError):
        text = cluster.log_path(node).read_text(errors="replace")
        return [m.group(0) for line in text.splitlines() if (m := SNAP_LINE.search(line))]
    return []


async def load(cluster: LocalCluster, leader: str, n: int, rng: random.Random) -> float:
    """Write keys 0..n-1 through the leader in txns of TXN_OPS puts, four txns in flight."""
    t0 = time.monotonic()
    batches = [range(i, min(n, i + TXN_OPS)) for i in range(0, n, TXN_OPS)]
    queue = iter(batches)
    sock = str(cluster.socket_path(leader))

    async def worker() -> None:
        async with await ControlClient.connect(sock) as client:
            for batch in queue:
                ops = [
                    {"op": "put", "key": b64(key_of(i)), "value": b64(value_of(rng))} for i in batch
                ]
                await client.call("kv.txn", compare=[], success=ops, failure=[], timeout=30)

    await asyncio.gather(*(worker() for _ in range(4)))
    return time.monotonic() - t0


async def probe(sock: str, stop: asyncio.Event, out: list[float]) -> None:
    async with await ControlClient.connect(sock) as client:
        while not stop.is_set():
            t = time.perf_counter()
            await client.call("ping")
            out.append(time.perf_counter() - t)
            await asyncio.sleep(PROBE_EVERY)


async def put_client(
    sock: str, n: int, stop: asyncio.Event, rng: random.Random, out: list[float], errors: list[str]
) -> None:
    async with await ControlClient.connect(sock) as client:
        while not stop.is_set():
            key, value = b64(key_of(rng.randrange(n))), b64(value_of(rng))
            t = time.perf_counter()
            try:
                await client.call("kv.put", key=key, value=value, timeout=10)
            except ControlError as exc:
                errors.append(exc.code)
                await asyncio.sleep(0.05)
                continue
            out.append(time.perf_counter() - t)


async def sample_rss(pids: dict[str, int], stop: asyncio.Event, out: dict[str, list[int]]) -> None:
    while not stop.is_set():
        for node, pid in pids.items():
            rss = proc_status(pid, "VmRSS")
            if rss is not None:
                out[node].append(rss)
        await asyncio.sleep(RSS_EVERY)


async def run_size(args: argparse.Namespace, n: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed + n)
    cluster = LocalCluster(workdir / f"n{n}", 3, snapshot_entries=args.snapshot_entries)
    res: dict[str, Any] = {"keys": n, "snapshot_entries": args.snapshot_entries}
    try:
        leader = await cluster.start(timeout=60)
        load_s = await load(cluster, leader, n, rng)
        leader = await cluster.wait_healthy(60)
        log(f"{n} keys loaded in {load_s:.1f} s; leader {leader}")
        res["load_s"] = round(load_s, 1)
        pids = {node: p.pid for node, p in cluster.procs.items()}
        res["rss_after_load_mb"] = {
            node: round((proc_status(pid, "VmRSS") or 0) / 1024, 1) for node, pid in pids.items()
        }
        hwm_reset = all(reset_hwm(pid) for pid in pids.values())
        snaps_before = {node: len(snapshot_lines(cluster, node)) for node in cluster.ids}
        stop = asyncio.Event()
        puts: list[float] = []
        put_errors: list[str] = []
        pings: dict[str, list[float]] = {node: [] for node in cluster.ids}
        rss: dict[str, list[int]] = {node: [] for node in cluster.ids}
        cpu0 = {node: cpu_seconds(pid) or 0.0 for node, pid in pids.items()}
        self0, busy0 = os.times(), machine_busy()
        tasks = [
            asyncio.create_task(
                put_client(str(cluster.socket_path(leader)), n, stop, rng, puts, put_errors)
            ),
            asyncio.create_task(sample_rss(pids, stop, rss)),
            *(
                asyncio.create_task(probe(str(cluster.socket_path(node)), stop, pings[node]))
                for node in cluster.ids
            ),
        ]
        await asyncio.sleep(args.duration)
        stop.set()
        await asyncio.gather(*tasks)
        busy1, self1 = machine_busy(), os.times()
        ours = sum((cpu_seconds(pid) or 0.0) - cpu0[node] for node, pid in pids.items())
        ours += (self1.user + self1.system) - (self0.user + self0.system)
        machine = (busy1[0] - busy0[0]) / CLK_TCK
        res["others_cores"] = round(max(0.0, machine - ours) / args.duration, 2)
        puts.sort()
        res["puts"] = len(puts)
        res["put_errors"] = put_errors
        res["put_ms"] = {"p50": ms(pct(puts, 0.5)), "p99": ms(pct(puts, 0.99)), "max": ms(puts[-1])}
        res["ping_ms"] = {}
        for node, values in pings.items():
            values.sort()
            res["ping_ms"][node] = {
                "p50": ms(pct(values, 0.5)),
                "p99": ms(pct(values, 0.99)),
                "max": ms(values[-1] if values else None),
                "count": len(values),
            }
        res["leader"] = leader
        res["peak_rss_mb"] = {
            node: round((proc_status(pid, "VmHWM") if hwm_reset else max(rss[node])) / 1024, 1)
            for node, pid in pids.items()
        }
        res["rss_sampled_max_mb"] = {node: round(max(v) / 1024, 1) for node, v in rss.items()}
        taken: dict[str, list[str]] = {
            node: snapshot_lines(cluster, node)[snaps_before[node] :] for node in cluster.ids
        }
        res["snapshots"] = {node: len(lines) for node, lines in taken.items()}
        times = [
            m.groups() for lines in taken.values() for x in lines if (m := SNAP_TIMES.search(x))
        ]
        if times:
            res["snapshot_loop_ms_max"] = max(float(a) for a, _ in times)
            res["snapshot_total_ms_max"] = max(float(b) for _, b in times)
        sizes = [
            int(m.group(1))
            for lines in taken.values()
            for x in lines
            if (m := re.search(r"of (\d+) bytes", x))
        ]
        if sizes:
            res["snapshot_bytes"] = max(sizes)
        log(
            f"{n} keys: {len(puts)} puts p50 {res['put_ms']['p50']} p99 {res['put_ms']['p99']} "
            f"max {res['put_ms']['max']} ms; worst ping {worst_ping(res)} ms; "
            f"snapshots {res['snapshots']}"
        )
    finally:
        await cluster.close()
        await cluster.stop()
    return res


# --- in one process: how long a loop waits while a store is encoded, three ways -------------


async def ticker(done: asyncio.Event, lags: list[float]) -> None:
    """Wake every millisecond; record how late each wake-up was."""
    while not done.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t - 0.001)


async def loop_lag(encode: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    """The longest a loop that wakes every millisecond waited, once per round of ``encode``."""
    worst = []
    for _ in range(rounds):
        lags: list[float] = []
        done = asyncio.Event()
        task = asyncio.create_task(ticker(done, lags))
        await asyncio.sleep(0.05)
        lags.clear()
        await encode()
        done.set()
        await task
        worst.append(max(lags))
    return worst


async def in_process(n: int, rounds: int) -> dict[str, Any]:
    """Encode an n-key store (100-byte values) all at once on the loop, in a thread, and as the
    agent does (agent/snapshotting.py: steps between the loop's other work, pieces joined in a
    thread); the loop's worst wait for each."""
    from agent.kv import KVStateMachine, PutRequest
    from agent.kv import snapshot as codec
    from agent.snapshotting import SnapshotJob

    rng = random.Random(n)
    machine = KVStateMachine()
    store = machine.store
    for i in range(n):
        store.put_request(PutRequest(key_of(i), value_of(rng)))

    async def at_once() -> object:
        return store.snapshot()

    async def in_thread() -> object:
        return await asyncio.to_thread(codec.encode, store.capture())

    async def in_steps() -> object:
        job = SnapshotJob(store.applied_index, machine, b"", lambda: None)
        await job.task
        return await job.assemble()

    out: dict[str, Any] = {"keys": n}
    for name, fn in (("at once", at_once), ("thread", in_thread), ("steps", in_steps)):
        worst = sorted(await loop_lag(fn, rounds))
        out[name] = {"median_ms": ms(worst[len(worst) // 2]), "max_ms": ms(worst[-1])}
    log(f"in one process, {n} keys: {out}")
    return out


def worst_ping(r: dict[str, Any]) -> float:
    return max(v["max"] or 0.0 for v in r["ping_ms"].values())


def row(label: str, r: dict[str, Any]) -> str:
    pm = r["put_ms"]
    ping_p99 = max(v["p99"] or 0.0 for v in r["ping_ms"].values())
    return (
        f"| {label} | {r['keys']:,} | {r['puts']} | {sum(r['snapshots'].values())} | "
        f"{pm['p50']} | {pm['p99']} | {pm['max']} | {ping_p99} | {worst_ping(r)} | "
        f"{r['rss_after_load_mb'][r['leader']]} | {max(r['peak_rss_mb'].values())} | "
        f"{r.get('snapshot_loop_ms_max', '-')} | {r['others_cores']} |"
    )


def render(report: dict[str, Any], baselines: list[dict[str, Any]]) -> str:
    lines = [
        "## Snapshots while serving — `bench/snapshot_bench.py`",
        "",
        f"{report['machine']}. Runs, in order:",
        "",
        *(f"- {b['label']}, {b['date']}: `{b['command']}`" for b in baselines),
        f"- {report['label']}, {report['date']}: `{report['command']}`",
        "",
        f"Three agents on loopback (default timings), `snapshot_entries` = "
        f"{report['args']['snapshot_entries']}; N keys with 100-byte values loaded by 128-put "
        f"txns, then for {report['args']['duration']} s one client overwrites random keys one "
        "put at a time on the leader, while a probe per member pings its control socket every "
        "2 ms (answered on the event loop without Raft: its latency is how long the loop was "
        "held). Latencies in ms; RSS in MB (leader after the load; peak of any member during "
        "the window, from VmHWM reset after the load). 'loop ms' is the longest time one "
        "snapshot held the event loop, as the agent logs it. 'others' is the CPU (cores) used "
        "by processes this benchmark did not start: above about 0.2 the row is disturbed by "
        "other work.",
        "",
        "| code | keys | puts | snapshots (3 members) | put p50 | put p99 | put max "
        "| ping p99 (worst member) | ping max = longest stall | RSS after load | peak RSS "
        "| loop ms per snapshot | others |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = [(b["label"], r) for b in baselines for r in b["runs"]]
    runs += [(report["label"], r) for r in report["runs"]]
    for label, r in sorted(runs, key=lambda run: run[1]["keys"]):  # stable: run order kept
        lines.append(row(label, r))
    if not report.get("in_process"):
        return "\n".join(lines)
    lines += [
        "",
        "Why steps on the loop rather than a thread (in one process, no cluster: a loop that "
        f"wakes every millisecond while an N-key store is encoded, {report['args']['rounds']} "
        "times; its worst wait in ms, median and max of the rounds; this run's code):",
        "",
        "| keys | all at once on the loop | in a thread (the GIL) "
        "| as the agent does (steps between loop turns) |",
        "|---|---|---|---|",
    ]
    for p in report.get("in_process", []):
        cells = [f"{p[k]['median_ms']} / {p[k]['max_ms']}" for k in ("at once", "thread", "steps")]
        lines.append(f"| {p['keys']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Replace only the text between this benchmark's markers (or append the section)."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{START_MARK}\n{text.rstrip()}\n{END_MARK}"
    start, end = old.find(START_MARK), old.find(END_MARK)
    if start != -1 and end > start:
        new = old[:start] + block + old[end + len(END_MARK) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(new)


def git_rev() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "agent"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("+changes" if dirty else "")
    return "unknown"


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    base = ROOT / "bench" / "out"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="snap-", dir=base))
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "command": " ".join([".venv/bin/python", "bench/snapshot_bench.py", *sys.argv[1:]]),
        "label": args.label or git_rev(),
        "args": {
            "duration": args.duration,
            "snapshot_entries": args.snapshot_entries,
            "rounds": args.rounds,
        },
        "runs": [],
    }
    try:
        if hasattr(KVStore, "capture"):  # code from before the capture/encode split has not
            report["in_process"] = [await in_process(n, args.rounds) for n in args.keys]
        for n in args.keys:
            report["runs"].append(await run_size(args, n, workdir))
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    baselines = [json.loads(Path(f).read_text()) for f in args.baseline]
    text = render(report, baselines)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.write:
        write_results(text)
        log(f"wrote the section to {RESULTS}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Latency and memory cost of snapshots under load.")
    p.add_argument("--keys", default="10000,50000", help="store sizes, comma-separated")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per size")
    p.add_argument("--snapshot-entries", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7, help="in-process encodings per way")
    p.add_argument("--label", default=None, help="name of this code in the table (git rev)")
    p.add_argument(
        "--baseline", action="append", default=[], help="a --json file of an earlier run to show"
    )
    p.add_argument("--json", default=None, help="write the raw results here")
    p.add_argument("--keep", action="store_true", help="keep the work dir under bench/out/")
    p.add_argument("--quick", action="store_true", help="10k keys, 5 s, no write")
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args(argv)
    args.keys = [int(k) for k in args.keys.split(",")]
    if args.quick:
        args.keys, args.duration, args.write = [10000], 5.0, False
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; processes stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
