"""The shell's own start-up: REPL to first prompt, and ``shoal -c 'kv get KEY'`` end to end.

Run as root (it builds a 3-machine lab): ``.venv/bin/python bench/shell_bench.py``. Writes its
section of bench/RESULTS.md. The REPL figure is measured on a pseudo-terminal as a person starts
it (first start discarded: Python's bytecode cache is warm on every start after the first); the
one-liner is the whole process — interpreter start, SSH handshake to one member, one
linearizable read, exit — as a script or CI job pays it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.repl.test_startup import first_prompt_seconds  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
START, END = "<!-- shell_bench:start -->", "<!-- shell_bench:end -->"
SHOAL = str(Path(sys.executable).parent / "shoal")


def shoal(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SHOAL, *args], env=env, capture_output=True, text=True, check=True)


def write_section(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{START}\n{text.rstrip()}\n{END}\n"
    if START in old and END in old:
        head, _, rest = old.partition(START)
        _, _, tail = rest.partition(END)
        new = head + block + tail.lstrip("\n")
    else:
        new = old.rstrip() + "\n\n" + block
    RESULTS.write_text(new)


def main() -> int:
    if os.geteuid() != 0:
        print("shell_bench builds a lab: run it as root", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="shell-bench-"))
    env = {**os.environ, "SHOAL_HOME": str(home)}
    try:
        repl = [first_prompt_seconds(home) for _ in range(6)][1:]
        shoal(env, "lab", "up", "--name", "sb")
        shoal(env, "cluster", "init", "--lab", "sb")
        shoal(env, "kv", "put", "/bench/key", "value")
        runs = []
        for _ in range(10):
            t0 = time.perf_counter()
            done = shoal(env, "-c", "kv get /bench/key")
            runs.append(time.perf_counter() - t0)
            assert done.stdout.strip() == "value", done.stdout
    finally:
        subprocess.run([SHOAL, "lab", "down", "--name", "sb"], env=env, capture_output=True)
    text = "\n".join(
        [
            "## The shell: start-up",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
            f"({os.cpu_count()} cores); reproduce with `.venv/bin/python bench/shell_bench.py` "
            "(root).",
            "",
            "| what | median | min | max | runs |",
            "|---|---:|---:|---:|---:|",
            f"| REPL: start to first prompt | {statistics.median(repl) * 1000:.0f} ms | "
            f"{min(repl) * 1000:.0f} ms | {max(repl) * 1000:.0f} ms | {len(repl)} |",
            f"| `shoal -c 'kv get KEY'` end to end (3-node lab) | "
            f"{statistics.median(runs) * 1000:.0f} ms | {min(runs) * 1000:.0f} ms | "
            f"{max(runs) * 1000:.0f} ms | {len(runs)} |",
            "",
            "Goal from the issue: REPL ready in under 0.5 s.",
        ]
    )
    print(text)
    write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
