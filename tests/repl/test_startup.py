"""``shoal`` at a (pseudo-)terminal opens the REPL and draws its prompt.

Tests never assert timings: the time to the first prompt is printed (``pytest -s``) and recorded
in bench/RESULTS.md, not checked here.
"""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def first_prompt_seconds(home: Path) -> float:
    """Start ``python -m shell.cli`` on a pty; seconds until the prompt is drawn."""
    env = {**os.environ, "SHOAL_HOME": str(home), "TERM": "xterm", "PYTHONPATH": str(ROOT)}
    env.pop("SHOAL_CLUSTER", None)
    start = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell, as a person would start it
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "shell.cli"], env)
    seen = b""
    try:
        while time.monotonic() - start < 20:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                if b"shoal> " in seen or b"shoal:" in seen:
                    return time.monotonic() - start
            if seen.find(b"\x1b[6n") >= 0:  # answer the cursor-position query like a terminal
                os.write(fd, b"\x1b[1;1R")
                seen = seen.replace(b"\x1b[6n", b"")
        raise AssertionError(f"no prompt within 20s; saw {seen[-500:]!r}")
    finally:
        os.write(fd, b"\x04")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def test_shoal_at_a_terminal_opens_the_repl(tmp_path: Path) -> None:
    first_prompt_seconds(tmp_path)  # warm the bytecode cache, as every start after the first is
    best = min(first_prompt_seconds(tmp_path) for _ in range(3))  # fails if no prompt appears
    print(f"\nshoal REPL: first prompt after {best * 1000:.0f} ms")
