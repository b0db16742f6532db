"""The terminal bridge (shell/terminal.py) against a real asyncssh server on loopback, on a pty.

The server is a small program: it reports the PTY it was given, echoes what it reads, reports a
window change, and exits with a status, a signal, or no status at all, as each test asks. The
local side is a real pty pair, so raw mode and its restoration are checked on a real terminal.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncssh
import pytest

from shell import terminal
from shell.ssh import ConnectFailed

WAIT = 30.0  # bounds on waiting, never claims about speed

Program = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]


class _Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # loopback test server: no authentication


@asynccontextmanager
async def server(program: Program) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """A loopback sshd running ``program`` for every session; a client connection to it."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    acceptor = await asyncssh.create_server(
        _Open,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=program,
        encoding=None,
        line_editor=False,
    )
    port = acceptor.sockets[0].getsockname()[1]
    conn = await asyncssh.connect(
        "127.0.0.1", port, username="test", known_hosts=None, client_keys=None, agent_path=None
    )
    try:
        yield conn
    finally:
        conn.close()
        acceptor.close()
        await acceptor.wait_closed()


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class Pty:
    """A pty pair: the bridge gets the slave as its terminal, the test types into the master."""

    def __init__(self, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        set_size(self.slave, rows, cols)
        self.seen = bytearray()

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    async def expect(self, needle: bytes) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while needle not in self.seen:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_reader(self.master, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.master)
                self.seen += os.read(self.master, 65536)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def tty() -> Any:
    made = Pty(rows=33, cols=111)
    yield made
    made.close()


async def interactive(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Says what PTY it got; echoes input; ``!`` ends with status 7; reports window changes."""
    width, height, _, _ = process.get_terminal_size()
    command = process.command or "(shell)"
    process.stdout.write(
        f"T={process.get_terminal_type()} S={width}x{height} C={command}\r\n".encode()
    )
    while True:
        try:
            data = await process.stdin.read(1024)
        except asyncssh.TerminalSizeChanged as change:
            process.stdout.write(f"RESIZED={change.width}x{change.height}\r\n".encode())
            continue
        if not data:
            process.exit(9)
            return
        process.stdout.write(b"GOT=" + data + b"\r\n")
        if b"!" in data:
            process.exit(7)
            return


def test_a_session_with_a_pty_raw_mode_keys_resize_and_exit_status(tty: Pty) -> None:
    before = termios.tcgetattr(tty.slave)
    assert not terminal.is_raw(tty.slave)

    async def main() -> int:
        async with server(interactive) as conn:
            session = asyncio.create_task(
                terminal.bridge(
                    conn,
                    None,
                    term_type="xterm-test",
                    stdin_fd=tty.slave,
                    stdout_fd=tty.slave,
                    stderr_fd=tty.slave,
                )
            )
            await tty.expect(b"T=xterm-test S=111x33 C=(shell)\r\n")
            assert terminal.is_raw(tty.slave)  # keys are bytes for the remote side now
            tty.type(b"\x03\x04")  # Ctrl-C and Ctrl-D: plain bytes, nothing local happens
            await tty.expect(b"GOT=\x03\x04\r\n")
            set_size(tty.slave, 40, 120)
            os.kill(os.getpid(), signal.SIGWINCH)
            await tty.expect(b"RESIZED=120x40\r\n")
            tty.type(b"bye!")
            return await asyncio.wait_for(session, WAIT)

    assert asyncio.run(main()) == 7
    assert termios.tcgetattr(tty.slave) == before


def test_a_command_and_typeahead(tty: Pty) -> None:
    async def main() -> int:
        async with server(interactive) as conn:
            terminal.give_typeahead(b"early")
            session = asyncio.create_task(
                terminal.bridge(
                    conn, "top -d 1", stdin_fd=tty.slave, stdout_fd=tty.slave, stderr_fd=tty.slave
                )
            )
            await tty.expect(b"C=top -d 1\r\n")
            await tty.expect(b"GOT=early")  # sent before anything typed after it
            tty.type(b"!")
            return await asyncio.wait_for(session, WAIT)

    assert asyncio.run(main()) == 7
    assert terminal.take_typeahead() == b""


def test_cancelling_restores_the_terminal_and_closes_the_session(tty: Pty) -> None:
    before = termios.tcgetattr(tty.slave)
    ended = asyncio.Event()

    async def endless(process: asyncssh.SSHServerProcess[bytes]) -> None:
        process.stdout.write(b"READY\r\n")
        try:
            await process.stdin.read()
        finally:
            ended.set()

    async def main() -> None:
        async with server(endless) as conn:
            session = asyncio.create_task(
                terminal.bridge(conn, stdin_fd=tty.slave, stdout_fd=tty.slave, stderr_fd=tty.slave)
            )
            await tty.expect(b"READY")
            assert terminal.is_raw(tty.slave)
            session.cancel()
            with pytest.raises(asyncio.CancelledError):
                await session
            assert termios.tcgetattr(tty.slave) == before
            await asyncio.wait_for(ended.wait(), WAIT)  # the remote side saw the channel go
            assert not conn.is_closed()  # the pooled connection stays for the next command

    asyncio.run(main())


@pytest.mark.parametrize(
    ("how", "expected"),
    [("signal", 128 + signal.SIGTERM.value), ("nothing", None)],
)
def test_how_a_session_ends_without_a_status(tty: Pty, how: str, expected: int | None) -> None:
    before = termios.tcgetattr(tty.slave)

    async def ending(process: asyncssh.SSHServerProcess[bytes]) -> None:
        if how == "signal":
            process.exit_with_signal("TERM")
        else:
            process.channel.close()

    async def main() -> int:
        async with server(ending) as conn:
            return await asyncio.wait_for(
                terminal.bridge(
                    conn, node="n1", stdin_fd=tty.slave, stdout_fd=tty.slave, stderr_fd=tty.slave
                ),
                WAIT,
            )

    if expected is None:
        with pytest.raises(terminal.SessionLost, match="n1: the session closed without an exit"):
            asyncio.run(main())
    else:
        assert asyncio.run(main()) == expected
    assert termios.tcgetattr(tty.slave) == before


def test_without_a_pty_output_is_streamed_and_there_is_no_input() -> None:
    async def program(process: asyncssh.SSHServerProcess[bytes]) -> None:
        assert process.get_terminal_type() is None
        process.stdout.write(b"out\n")
        process.stderr.write(b"err\n")
        rest = await process.stdin.read()  # EOF at once: the command gets no input
        process.stdout.write(b"input=%d\n" % len(rest))
        process.exit(5)

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()

    async def main() -> int:
        async with server(program) as conn:
            return await asyncio.wait_for(
                terminal.bridge(conn, "cmd", pty=False, stdout_fd=out_w, stderr_fd=err_w), WAIT
            )

    try:
        assert asyncio.run(main()) == 5
        os.close(out_w)
        os.close(err_w)
        with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
            assert out.read() == b"out\ninput=0\n"
            assert err.read() == b"err\n"
    finally:
        for fd in (out_w, err_w):
            try:
                os.close(fd)
            except OSError:
                pass


def test_a_session_that_cannot_be_opened_names_the_node() -> None:
    async def main() -> None:
        async with server(lambda process: asyncio.sleep(0)) as conn:
            conn.close()
            await conn.wait_closed()
            await terminal.bridge(conn, "x", pty=False, node="n2")

    with pytest.raises(ConnectFailed, match="n2: cannot open a session"):
        asyncio.run(main())
