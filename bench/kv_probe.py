"""Where a single client's put latency goes: shoal vs etcd, one request at a time.

    .venv/bin/python bench/kv_probe.py            # both systems, 400 sequential ops per kind
    .venv/bin/python bench/kv_probe.py --only shoal --py-spy

A diagnostic companion to bench/kv_bench.py (not recorded in RESULTS.md). For each system,
three members on loopback, one client connection to the leader, one request at a time:

* the members' CPU while idle (ticks and heartbeats only);
* p50/p90 latency of: a no-op round trip (shoal ``ping``; etcd has none on its gateway), a
  serializable get (local read), a linearizable get (a ReadIndex round to the followers, no
  disk), a put (log append with fsync on a quorum, then apply); and CPU per op of each member;
* the cost of write(64 B) + fdatasync on the same disk, for scale;
* with ``--py-spy``: the shoal leader's stacks during the sequential puts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kv_bench import (
    PAYLOAD,
    ROOT,
    EtcdSide,
    KVConn,
    ShoalConn,
    ShoalSide,
    Side,
    Window,
    log,
    ms,
    pct,
    py_spy,
)


def fsync_cost(directory: Path, n: int = 200) -> float:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, PAYLOAD)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


async def sequential(
    side: Side, conn: KVConn, label: str, op: Callable[[int], Awaitable[Any]], n: int
) -> dict[str, Any]:
    for i in range(min(50, n)):
        await op(-1 - i)
    w = Window(side.pids())
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        lat.append(time.perf_counter() - t)
    win = w.finish()
    lat.sort()
    cpu = {k: round(v / n * 1e6) for k, v in win["seconds"].items() if v is not None}
    res = {"p50_ms": ms(pct(lat, 0.5)), "p90_ms": ms(pct(lat, 0.9)), "cpu_us_per_op": cpu}
    log(f"{side.name}: {label:<18} p50 {res['p50_ms']} ms p90 {res['p90_ms']} ms cpu µs/op {cpu}")
    return res


async def probe(side: Side, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        await side.start()
        leader = await side.healthy()
        await asyncio.sleep(1.0)
        w = Window(side.pids())
        await asyncio.sleep(3.0)
        idle = w.finish()["share"]
        idle.pop("bench client", None)
        out["idle_cpu_share"] = idle
        log(f"{side.name}: idle CPU share {idle}")
        conn = await side.connect(leader)
        await conn.put(b"probe/get", PAYLOAD)
        n = args.n
        if isinstance(conn, ShoalConn):
            client = conn.client

            async def ping(_i: int) -> None:
                await client.call("ping")

            out["ping"] = await sequential(side, conn, "ping (no raft)", ping, n)

        async def ser(_i: int) -> None:
            await conn.get(b"probe/get", True)

        async def lin(_i: int) -> None:
            await conn.get(b"probe/get", False)

        async def put(i: int) -> None:
            await conn.put(f"probe/{i}".encode(), PAYLOAD)

        out["get_serializable"] = await sequential(side, conn, "get serializable", ser, n)
        out["get_linearizable"] = await sequential(side, conn, "get linearizable", lin, n)
        spy = None
        if args.py_spy and isinstance(side, ShoalSide):
            pid = side.pids()[leader]
            spy = asyncio.create_task(py_spy(args.py_spy, pid, 3, workdir / "probe-leader.txt"))
        out["put"] = await sequential(side, conn, "put", put, n)
        if spy is not None:
            prof = await spy
            if prof:
                out["py_spy_leader"] = prof
                print(f"--- py-spy: shoal leader during sequential puts, busy {prof['busy_pct']}%")
                for name, share in prof["own_pct"][:15]:
                    print(f"    own  {share:5.1f}%  {name}")
                for name, share in prof["inclusive_pct"][:25]:
                    print(f"    incl {share:5.1f}%  {name}")
        await conn.close()
    finally:
        await side.stop()
    return out


async def run(args: argparse.Namespace) -> int:
    base = ROOT / "bench" / "out"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="kv-probe-", dir=base))
    try:
        log(f"write(64 B) + fdatasync here: {fsync_cost(workdir) * 1000:.3f} ms (median of 200)")
        if args.only in (None, "shoal"):
            await probe(ShoalSide(workdir), args, workdir)
        if args.only in (None, "etcd"):
            await probe(EtcdSide(workdir, args.etcd), args, workdir)
    finally:
        if args.py_spy and (workdir / "probe-leader.txt").exists():
            shutil.copy(workdir / "probe-leader.txt", base / "kv-probe-py-spy-leader.txt")
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("shoal", "etcd"))
    p.add_argument("-n", type=int, default=400, help="sequential ops per kind")
    p.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    p.add_argument("--py-spy", nargs="?", const=str(Path(sys.executable).parent / "py-spy"))
    args = p.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
