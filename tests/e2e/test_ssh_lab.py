"""``shoal ssh NODE`` on a lab cluster, driven at a real terminal (a pty) as a person types.

One 2-node lab cluster serves the whole module. At a terminal, the session gets a PTY of the
terminal's type and size, keys (Ctrl-C included) go to the node, a resize reaches the node, and
the remote exit status becomes shoal's; inside the REPL, leaving the node returns to a working
shell. Without a terminal, ssh needs a command, and runs it with its output streamed.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import E2ELab, Shoal, needs_root, shoal_command

pytestmark = [needs_root, pytest.mark.timeout(600)]

WAIT = 30.0  # a bound on waiting for text, never a claim about speed


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:  # in the child, after setsid: the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """``shoal ARGS`` on a fresh pty: type into it, wait for text to appear, wait for the exit."""

    def __init__(self, args: list[str], env: dict[str, str], rows: int, cols: int) -> None:
        master, slave = os.openpty()
        set_size(slave, rows, cols)
        self.master = master
        self.proc = subprocess.Popen(
            [*shoal_command(), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_controlling_tty,
        )
        os.close(slave)
        self._data = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every holder of the slave has closed it
                return
            if not chunk:
                return
            with self._lock:
                self._data += chunk

    def text(self) -> str:
        with self._lock:
            return self._data.decode(errors="replace")

    def mark(self) -> int:
        """Where the output is now: :meth:`expect` after it ignores what came before."""
        return len(self.text())

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, needle: str, after: int = 0, timeout: float = WAIT) -> int:
        """Wait until ``needle`` appears after position ``after``; the position after it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            found = text.find(needle, after)
            if found >= 0:
                return found + len(needle)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gave up after {timeout:g}s waiting for {needle!r}; the terminal shows:\n"
                    f"{text[after:]!r}"
                )
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(
                    f"shoal exited {self.proc.returncode} before {needle!r} appeared:\n"
                    f"{text[after:]!r}"
                )
            time.sleep(0.05)

    def until(self, keys: str, needle: str, after: int, timeout: float = WAIT) -> int:
        """Type ``keys`` again every few seconds until ``needle`` appears (e.g. after a resize,
        whose window-change request and the typed line travel separately)."""
        deadline = time.monotonic() + timeout
        while True:
            self.type(keys)
            try:
                return self.expect(needle, after, timeout=min(3.0, timeout))
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def wait(self, timeout: float = WAIT) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture(scope="module")
def lab(shoal: Shoal) -> E2ELab:
    made = shoal.lab_up("s", 2)
    shoal.ok("cluster", "init", "--lab", made.name)
    return made


@pytest.fixture
def terminal_env(shoal: Shoal) -> dict[str, str]:
    env = shoal.env()
    env["TERM"] = "screen"  # not the default of the test's own terminal: it must travel
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # nobody answers cursor-position queries on this pty
    return env


@pytest.fixture
def opened() -> Iterator[list[Terminal]]:
    terminals: list[Terminal] = []
    yield terminals
    for t in terminals:
        t.close()


def test_ssh_at_a_terminal(
    lab: E2ELab, terminal_env: dict[str, str], opened: list[Terminal]
) -> None:
    t = Terminal(["ssh", "node2"], terminal_env, rows=33, cols=111)
    opened.append(t)
    # $((..)) and $(..) only turn into the expected text when the node's shell runs them, so
    # the echo of the typed line never matches
    t.type('echo "H=$(hostname) T=$TERM S=$(stty size)"\r')
    at = t.expect("H=node2 T=screen S=33 111")

    # Ctrl-C is a byte for the node: it stops the remote sleep, not shoal
    t.type('echo "SLEEPING=$((1+1))"; sleep 600\r')
    at = t.expect("SLEEPING=2", after=at)
    t.type("\x03")
    at = t.expect("^C", after=at)  # the node's PTY echoes it
    at = t.until('echo "AFTER=$((40+2))"\r', "AFTER=42", after=at)
    assert t.proc.poll() is None

    # a resize of the local terminal reaches the node's PTY
    set_size(t.master, 40, 120)
    at = t.until('echo "S2=$(stty size)"\r', "S2=40 120", after=at)

    t.type("exit 7\r")
    assert t.wait() == 7
    assert "back in shoal (node2: exit 7)" in t.text()[at:]


def test_ssh_from_the_repl_returns_to_the_shell(
    shoal: Shoal, lab: E2ELab, terminal_env: dict[str, str], opened: list[Terminal]
) -> None:
    t = Terminal([], terminal_env, rows=30, cols=100)
    opened.append(t)
    at = t.expect("shoal:")
    # typed in one go: what the prompt read ahead of `ssh` must reach the node, not shoal
    t.type('ssh node1\recho "H=$(hostname)"; sleep 600\r')
    at = t.expect("H=node1", after=at)
    t.type("\x03")  # for the remote sleep, not a cancel of the ssh command
    at = t.expect("^C", after=at)
    at = t.until('echo "AFTER=$((40+2))"\r', "AFTER=42", after=at)
    t.type("exit\r")
    at = t.expect("back in shoal (node1: exit 0)", after=at)
    at = t.expect("shoal:", after=at)  # the prompt again
    t.type("kv put /after-ssh 1\r")
    at = t.expect("OK", after=at)
    t.type("exit\r")
    assert t.wait() == 0, t.text()
    assert "cancelled" not in t.text()
    assert shoal.ok("kv", "get", "/after-ssh").stdout == "1\n"


def test_ssh_without_a_terminal(shoal: Shoal, lab: E2ELab) -> None:
    stranger = shoal.run("ssh", "nodeX")
    assert stranger.returncode == 4, stranger.stderr
    assert "nodeX" in stranger.stderr and "node1, node2" in stranger.stderr

    several = shoal.run("ssh", "node[1-2]")
    assert several.returncode == 2 and "for many use exec" in several.stderr

    login = shoal.run("ssh", "node1")
    assert login.returncode == 2 and "exec node1 -- COMMAND" in login.stderr

    done = shoal.ok("ssh", "node1", "--", "cat", "/etc/hostname")
    assert done.stdout == "node1\n"
    assert "back in shoal" not in done.stderr

    mixed = shoal.run("ssh", "node2", "--", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert mixed.returncode == 5
    assert mixed.stdout == "out\n" and "err\n" in mixed.stderr
