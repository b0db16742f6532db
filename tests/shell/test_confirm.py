"""The yes/no question a one-off command asks at a terminal (``cluster destroy``), on a real
pty: an answer is read, and Ctrl-C ends the program at once instead of waiting for Enter."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

CHILD = """
import asyncio, sys
from shell.commands.context import ask_at_terminal
try:
    print("answer:", asyncio.run(ask_at_terminal("stop every agent? [y/N] ")))
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(130)
"""


def run_in_pty(keys: bytes) -> tuple[str, int]:
    """Start the question in a pty, type ``keys`` once it is asked; its output and exit code."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-c", CHILD])
    out = b""
    deadline = time.monotonic() + 30  # a bound on waiting, not a claim about speed
    typed = False
    while time.monotonic() < deadline:
        if not typed and b"[y/N]" in out:
            os.write(fd, keys)
            typed = True
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    done, status = os.waitpid(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:
        time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
    if not done:  # still waiting after the deadline: that is the failure, not a hang
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_yes_is_read_from_the_terminal() -> None:
    out, code = run_in_pty(b"y\r")
    assert code == 0 and "answer: True" in out, out


def test_anything_else_means_no() -> None:
    out, code = run_in_pty(b"sure\r")
    assert code == 0 and "answer: False" in out, out


def test_ctrl_c_at_the_question_ends_the_program_at_once() -> None:
    out, code = run_in_pty(b"\x03")
    assert code == 130 and "interrupted" in out, out
