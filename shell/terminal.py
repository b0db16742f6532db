"""Bridge the local terminal to an SSH session: what ``ssh NODE`` does inside the shell.

:func:`bridge` opens a session on an existing (pooled) asyncssh connection, with a PTY of the
local terminal's type and size, puts the local tty in raw mode and copies bytes both ways until
the remote side closes, and returns the remote exit status. In raw mode every key is a byte for
the remote side: Ctrl-C interrupts the remote command and Ctrl-D ends the remote shell, exactly
as inside ``ssh``. A window resize (SIGWINCH) is passed on as a window-change request. The
saved terminal attributes are restored whatever happens (a lost connection, an error, the task
being cancelled), so the shell always gets back a sane terminal.

Without a PTY (``pty=False``: a command whose input is not a terminal), the same bridge copies
the remote stdout and stderr to the local ones and gives the remote command no input (like
``ssh -n``).

Input and output are file descriptors (default 0, 1 and 2), so a test can hand it a pty.
Output is written with blocking ``os.write`` calls: a terminal that cannot keep up holds the
session back, as it does ssh.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import select
import signal
import struct
import termios
import tty
from typing import Any, cast

import asyncssh

from shell.ssh import ConnectFailed

DEFAULT_SIZE = (80, 24, 0, 0)
EXIT_NO_STATUS = 255
"""What ssh returns when the session ended without an exit status (and what we return)."""


class SessionLost(Exception):
    """The session ended without an exit status: the connection dropped, or sshd closed it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


_typeahead = bytearray()


def give_typeahead(data: bytes) -> None:
    """Keys a front end read from the terminal before a command took it over (the REPL's prompt
    reads input in chunks): the next session gets them first, as if typed into it."""
    _typeahead.extend(data)


def take_typeahead() -> bytes:
    """The keys given with :func:`give_typeahead` and not yet sent (and forget them)."""
    data = bytes(_typeahead)
    _typeahead.clear()
    return data


def term_size(*fds: int) -> tuple[int, int, int, int]:
    """(columns, rows, pixel width, pixel height) of the first fd that is a sized terminal."""
    for fd in fds:
        try:
            packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
        rows, cols, xpix, ypix = struct.unpack("HHHH", packed)
        if rows and cols:
            return cols, rows, xpix, ypix
    return DEFAULT_SIZE


def is_raw(fd: int = 0) -> bool:
    """Whether ``fd`` is a terminal whose keys do not raise signals (a program owns it raw)."""
    try:
        return not termios.tcgetattr(fd)[3] & termios.ISIG
    except (termios.error, OSError):
        return False


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (partial writes, a non-blocking fd)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except InterruptedError:
            continue
        view = view[n:]


class _Session(asyncssh.SSHClientSession[bytes]):
    """Writes what the remote side sends to the local fds; remembers how the session ended."""

    def __init__(self, out_fd: int, err_fd: int) -> None:
        self.out_fd, self.err_fd = out_fd, err_fd
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.output_error: OSError | None = None
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.output_error is not None:
            return
        fd = self.err_fd if datatype == asyncssh.EXTENDED_DATA_STDERR else self.out_fd
        try:
            write_all(fd, data)
        except OSError as exc:  # our output went away (a closed pipe): end the session
            self.output_error = exc
            if self._chan is not None:
                self._chan.close()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


def _status(session: _Session, node: str, lost: Exception | None) -> int:
    if session.exit_status is not None:
        return session.exit_status
    if session.exit_signal is not None:  # as a shell reports it: 128 + the signal's number
        try:
            return 128 + signal.Signals["SIG" + session.exit_signal].value
        except KeyError:
            return EXIT_NO_STATUS
    if session.output_error is not None:
        if session.output_error.errno == errno.EPIPE:
            return 128 + signal.SIGPIPE.value
        return EXIT_NO_STATUS
    why = f"the connection was lost ({lost})" if lost else "the session closed"
    raise SessionLost(f"{node}: {why} without an exit status")


async def bridge(
    conn: asyncssh.SSHClientConnection,
    command: str | None = None,
    *,
    pty: bool = True,
    term_type: str | None = None,
    node: str = "",
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
) -> int:
    """Run ``command`` (None: the login shell) on ``conn`` with the local terminal attached.

    The remote exit status; 128+N when it was killed by signal N. :class:`SessionLost` when the
    session ended without either; :class:`~shell.ssh.ConnectFailed` when it could not be opened.
    """
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {"encoding": None}
    if pty:
        options["request_pty"] = "force"
        options["term_type"] = term_type or os.environ.get("TERM") or "dumb"
        options["term_size"] = term_size(stdin_fd, stdout_fd)
    else:
        options["request_pty"] = False
    try:
        chan, opened = await conn.create_session(
            lambda: _Session(stdout_fd, stderr_fd), command, **options
        )
    except (asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        raise ConnectFailed(node, f"{node}: cannot open a session: {reason}")
    session = cast(_Session, opened)
    if not pty:
        chan.write_eof()
        try:
            lost = await session.closed
        finally:
            chan.close()
        return _status(session, node, lost)

    saved: list[Any] | None = None
    reading = winch = False

    def on_input() -> None:
        nonlocal reading
        try:
            data = os.read(stdin_fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the terminal hung up
            data = b""
        try:
            if data:
                chan.write(data)
                return
            chan.write_eof()
        except (OSError, asyncssh.Error):
            pass  # the channel is closing; connection_lost ends the wait
        loop.remove_reader(stdin_fd)
        reading = False

    def on_winch() -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            chan.change_terminal_size(*term_size(stdin_fd, stdout_fd))

    previous_winch = signal.getsignal(signal.SIGWINCH)
    try:
        if os.isatty(stdin_fd):
            saved = termios.tcgetattr(stdin_fd)
            tty.setraw(stdin_fd, termios.TCSADRAIN)  # keep typeahead: it is for the remote
        ahead = take_typeahead()
        if ahead:
            chan.write(ahead)
        loop.add_reader(stdin_fd, on_input)
        reading = True
        try:
            loop.add_signal_handler(signal.SIGWINCH, on_winch)
            winch = True
        except (RuntimeError, ValueError):  # not the main thread: no resize, still a session
            pass
        lost = await session.closed
    finally:
        if reading:
            loop.remove_reader(stdin_fd)
        if winch:
            loop.remove_signal_handler(signal.SIGWINCH)
            if previous_winch is not None:
                with contextlib.suppress(ValueError, OSError, TypeError):
                    signal.signal(signal.SIGWINCH, previous_winch)
        if saved is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        chan.close()
    return _status(session, node, lost)
