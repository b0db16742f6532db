"""One PySyncObj member for bench/raft_bench.py, driven over stdin/stdout (JSON lines).

    python bench/pysyncobj_node.py --self 127.0.0.1:7001 --partners 127.0.0.1:7002,127.0.0.1:7003 \
        [--mode default|unbatched]

``default`` is ``SyncObjConf()`` untouched (entries batched on the 100 ms append period, in-memory
journal, so no fsync). ``unbatched`` changes exactly one setting, ``appendEntriesUseBatch=False``
(every proposal is sent at once); still no fsync.

The replicated state machine keeps every committed payload in a list in log order (shoal's
store keeps every key written) and returns the new count.

Load runs *inside* this process (PySyncObj's API is in-process: a ``@replicated`` call with a
callback); shoal's proposals, by contrast, come from another process through its control socket.

Commands, one JSON object per line on stdin; each gets one JSON line on stdout:

    {"cmd": "status"}
    {"cmd": "load", "concurrency": C, "warmup": W, "duration": D, "size": N}
        keep C proposals outstanding (a new one as soon as one completes); after W seconds count
        completions for D seconds; report count, errors and latency percentiles (ms)
    {"cmd": "until_commit", "interval": 0.02, "cap": 30}
        start a new proposal every ``interval`` seconds until one commits (or ``cap`` passes);
        report the CLOCK_MONOTONIC time it committed (comparable with the orchestrator's clock)
    {"cmd": "quit"}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated


class Recorder(SyncObj):
    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self._records: list[str] = []

    @replicated
    def append(self, data: str) -> int:
        self._records.append(data)
        return len(self._records)

    def count(self) -> int:
        return len(self._records)


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def status(node: Recorder) -> dict[str, Any]:
    for _ in range(10):  # getStatus reads dicts the tick thread may be resizing
        try:
            st = node.getStatus()
            break
        except RuntimeError:
            time.sleep(0.001)
    leader = st.get("leader")
    return {
        "self": str(node.selfNode),
        "leader": str(leader) if leader is not None else None,
        "is_leader": leader is not None and str(leader) == str(node.selfNode),
        "state": st.get("state"),
        "term": st.get("raft_term"),
        "commit": st.get("commit_idx"),
        "applied": st.get("last_applied"),
        "leader_commit": st.get("leader_commit_idx"),
        "partners_connected": sum(
            1 for k, v in st.items() if k.startswith("partner_node_status_server_") and v == 2
        ),
        "count": node.count(),
        "rss_kb": rss_kb(),
        "pid": os.getpid(),
    }


def load(
    node: Recorder, concurrency: int, warmup: float, duration: float, size: int
) -> dict[str, Any]:
    lock = threading.Lock()
    payload = "x" * size
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + duration
    latencies: list[float] = []
    errors: dict[str, int] = {}
    outstanding = [0]
    done = threading.Event()
    seq = [0]

    def issue() -> None:
        with lock:
            seq[0] += 1
            outstanding[0] += 1
        sent = time.monotonic()

        def callback(result: Any, err: int) -> None:  # runs on PySyncObj's tick thread
            now = time.monotonic()
            with lock:
                outstanding[0] -= 1
                if start <= now < end:
                    if err == FAIL_REASON.SUCCESS:
                        latencies.append(now - sent)
                    else:
                        errors[str(err)] = errors.get(str(err), 0) + 1
            if now < end:
                issue()
            elif outstanding[0] == 0:
                done.set()

        node.append(payload, callback=callback)

    for _ in range(concurrency):
        issue()
    time.sleep(max(0.0, end - time.monotonic()))
    drained = done.wait(10.0)  # let the last proposals finish before the next phase
    with lock:
        lat = sorted(latencies)
    return {
        "count": len(lat),
        "duration": duration,
        "errors": errors,
        "issued": seq[0],
        "drained": drained,
        "p50_ms": _ms(percentile(lat, 0.50)),
        "p99_ms": _ms(percentile(lat, 0.99)),
        "mean_ms": _ms(sum(lat) / len(lat)) if lat else None,
        "max_ms": _ms(lat[-1]) if lat else None,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def until_commit(node: Recorder, interval: float, cap: float) -> dict[str, Any]:
    first: list[float] = []
    won = threading.Event()
    attempts = 0
    failures: dict[str, int] = {}
    lock = threading.Lock()
    t0 = time.monotonic()

    def callback(result: Any, err: int) -> None:
        now = time.monotonic()
        with lock:
            if err == FAIL_REASON.SUCCESS:
                if not first:
                    first.append(now)
                won.set()
            else:
                failures[str(err)] = failures.get(str(err), 0) + 1

    while not won.is_set() and time.monotonic() - t0 < cap:
        attempts += 1
        node.append(f"failover-{attempts}", callback=callback)
        won.wait(interval)
    return {
        "committed_at": first[0] if first else None,
        "started_at": t0,
        "attempts": attempts,
        "failures": failures,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--self", dest="self_addr", required=True)
    p.add_argument("--partners", required=True)
    p.add_argument("--mode", choices=["default", "unbatched"], default="default")
    args = p.parse_args()
    conf = SyncObjConf()
    if args.mode == "unbatched":
        conf.appendEntriesUseBatch = False
    node = Recorder(args.self_addr, args.partners.split(","), conf)
    out = sys.stdout

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    reply({"event": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "status":
                reply({"ok": True, **status(node)})
            elif cmd == "load":
                reply(
                    {
                        "ok": True,
                        **load(
                            node,
                            int(req["concurrency"]),
                            float(req.get("warmup", 1.0)),
                            float(req["duration"]),
                            int(req.get("size", 64)),
                        ),
                    }
                )
            elif cmd == "until_commit":
                reply(
                    {
                        "ok": True,
                        **until_commit(
                            node, float(req.get("interval", 0.02)), float(req.get("cap", 30))
                        ),
                    }
                )
            elif cmd == "quit":
                reply({"ok": True})
                break
            else:
                reply({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as exc:  # report, keep serving
            reply({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    node.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
