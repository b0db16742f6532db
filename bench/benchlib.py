"""Measuring helpers shared by the benchmarks: /proc readings, percentiles, logging."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def proc_status(pid: int, field: str) -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """user+system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def pct(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


# --- py-spy ------------------------------------------------------------------------------------

IDLE_LEAVES = {"_worker (thread.py:81)"}
"""py-spy reports ThreadPoolExecutor threads blocked in ``work_queue.get`` as active."""


def frame_name(frame: str) -> str:
    """'func (path/to/file.py:123)' → 'func (file.py:123)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')')).name})" if where else name


@dataclass
class Samples:
    """A py-spy recording, counted: per leaf function (own time) and per function of interest
    on the stack (inclusive time); ``wall`` is the samples a fully busy thread would give."""

    own: dict[str, int]
    inclusive: dict[str, int]
    samples: int
    wall: int

    def top(self, counts: dict[str, int], n: int) -> list[tuple[str, float]]:
        """The ``n`` largest counts as percent of wall time."""
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return [(name, round(100 * v / self.wall, 1)) for name, v in ranked]


async def py_spy(
    exe: str, pid: int, duration: float, out: Path, *, rate: int, inclusive: tuple[str, ...]
) -> Samples | None:
    """Record ``pid`` with py-spy at ``rate`` Hz for ``duration`` s into ``out`` and count it;
    functions whose path contains one of ``inclusive`` are counted inclusively. Idle samples are
    not recorded (the event loop waiting in epoll is), and idle pool threads are left out."""
    secs = max(1, round(duration))
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(secs), "--rate", str(rate),
        "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), duration + 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    if not out.exists():
        log(f"py-spy failed: {err.decode(errors='replace')[-300:]}")
        return None
    counted = Samples({}, {}, 0, rate * secs)
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        counted.samples += n
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = frame_name(frames[-1])
        if leaf in IDLE_LEAVES:
            continue
        counted.own[leaf] = counted.own.get(leaf, 0) + n
        for f in {frame_name(f) for f in frames if any(p in f for p in inclusive)}:
            counted.inclusive[f] = counted.inclusive.get(f, 0) + n
    return counted
