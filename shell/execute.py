"""Run one command on many machines at once over the pooled SSH connections, lines as they come.

This is the engine under the shell's ``exec`` (clush's job). Each node gets its own task, at most
``fanout`` at a time; every wait is bounded by ``timeout``, and whatever happens to one node (it
refuses the login, its machine dies mid-command, the command hangs) becomes that node's
:class:`NodeResult` with an error naming it, so one bad machine never holds up or fails the rest.

Lines are handed to ``on_line`` as they arrive (asyncssh streams, not a buffered ``run``), so a
REPL printer or the TUI's journal can show a long command's progress live; ``on_done`` follows
each node's exit. These two callbacks are the ``ev_read``/``ev_hup`` of ClusterShell's event
protocol; the returned results are the ``ev_close``.

Quoting: a command given as a list is an argv, joined with :func:`shlex.join` so no argument
becomes shell syntax. A command given as one string is passed to the remote user's shell exactly
as typed — that is what clush and ssh do, and what lets ``exec 'uptime; df -h | grep /srv'``
work — so a string must never be built by pasting untrusted values into it: pass a list instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import asyncssh

from shell import nodesets
from shell.ssh import SSHError

DEFAULT_FANOUT = 64
"""Like clush's default fanout: enough parallelism for a rack, without exhausting file handles."""

ERROR_RC = 255
"""The exit code reported for a node whose command never exited (ssh's convention)."""

LineCallback = Callable[[str, str, str], None]
"""``on_line(node, stream, line)``: stream is ``"stdout"`` or ``"stderr"``; no trailing newline."""

DoneCallback = Callable[[str, "int | None"], None]
"""``on_done(node, rc)``: rc is None when the command did not exit (error or timeout)."""


class Target(NamedTuple):
    """Where to run: the node's name (for output and errors) and how to reach it."""

    name: str
    host: str
    port: int = 22
    user: str = "root"


class Pool(Protocol):
    """What this module needs of :class:`shell.ssh.SSHPool` (tests and benches may substitute)."""

    async def connect(
        self, host: str, port: int = 22, user: str = "root", name: str | None = None
    ) -> asyncssh.SSHClientConnection: ...

    def drop(self, host: str, port: int = 22, user: str = "root") -> None: ...


def targets_for(
    names: Iterable[str],
    machines: Sequence[Mapping[str, Any]],
    *,
    user: str = "root",
    port: int = 22,
) -> list[Target]:
    """Targets for ``names`` (e.g. from :func:`shell.nodesets.expand`) from machine records.

    A record's ``address`` may carry a port (``host:2222``, ``[::1]:2222``). Names that are not
    machines of the cluster are refused together, so a typo never silently shrinks the set.
    """
    by_name = {str(m.get("name") or m["id"]): m for m in machines}
    names = list(names)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"not machines of this cluster: {nodesets.fold(missing)}")
    out: list[Target] = []
    for name in names:
        host, node_port = _split_address(str(by_name[name]["address"]), port)
        out.append(Target(name, host, node_port, user))
    return out


def _split_address(address: str, default_port: int) -> tuple[str, int]:
    if address.startswith("["):  # [v6]:port or [v6]
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port)
    return address, default_port


@dataclass
class NodeResult:
    """What happened on one node. ``error`` is set (and ``rc`` is None) when it did not exit."""

    node: str
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    timed_out: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.rc == 0

    @property
    def status(self) -> int:
        """The exit code, or :data:`ERROR_RC` when the command never finished."""
        return self.rc if self.rc is not None else ERROR_RC


@dataclass
class _Collector:
    """Accumulates one node's output while forwarding each line to the listener."""

    node: str
    on_line: LineCallback | None
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    async def drain(self, stream: asyncssh.SSHReader[bytes], name: str) -> None:
        sink = self.out if name == "stdout" else self.err
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode(errors="replace")
            sink.append(line)
            if self.on_line is not None:
                self.on_line(self.node, name, line.removesuffix("\n"))


def command_line(command: str | Sequence[str]) -> str:
    """The string sshd hands to the remote shell: a string as typed, an argv quoted."""
    if isinstance(command, str):
        return command
    if not command:
        raise ValueError("empty command")
    return shlex.join(command)


async def _run_one(
    target: Target,
    line: str,
    pool: Pool,
    timeout: float | None,
    on_line: LineCallback | None,
) -> NodeResult:
    node = target.name
    started = time.monotonic()
    collect = _Collector(node, on_line)
    result = NodeResult(node)
    proc: asyncssh.SSHClientProcess[bytes] | None = None

    async def work() -> None:
        nonlocal proc
        conn = await pool.connect(target.host, target.port, target.user, name=node)
        proc = await conn.create_process(line, encoding=None, stdin=asyncssh.DEVNULL)
        await asyncio.gather(
            collect.drain(proc.stdout, "stdout"), collect.drain(proc.stderr, "stderr")
        )
        await proc.wait_closed()

    try:
        await asyncio.wait_for(work(), timeout)
    except TimeoutError:
        result.timed_out = True
        result.error = f"{node}: command timed out after {timeout:g}s"
    except SSHError as exc:  # already names the node and says what to do
        result.error = str(exc)
    except (OSError, asyncssh.Error) as exc:
        # The connection broke under us: forget it, so the next command reconnects.
        pool.drop(target.host, target.port, target.user)
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        result.error = f"{node}: lost the SSH connection: {reason}"
    finally:
        if proc is not None:
            proc.close()
    if proc is not None and result.error is None:
        if proc.exit_status is not None and proc.exit_status >= 0:
            result.rc = proc.exit_status
        elif proc.exit_signal is not None:
            result.error = f"{node}: command killed by signal {proc.exit_signal[0]}"
        else:
            pool.drop(target.host, target.port, target.user)
            result.error = f"{node}: the connection closed before the command exited"
    result.stdout, result.stderr = "".join(collect.out), "".join(collect.err)
    result.elapsed = time.monotonic() - started
    return result


async def _bounded(
    targets: Sequence[Target], fanout: int, one: Callable[[Target], Awaitable[NodeResult]]
) -> list[NodeResult]:
    """Run ``one`` for each target, at most ``fanout`` at a time, results in target order."""
    if fanout < 1:
        raise ValueError(f"fanout must be at least 1, not {fanout}")
    gate = asyncio.Semaphore(fanout)

    async def gated(target: Target) -> NodeResult:
        async with gate:
            return await one(target)

    return list(await asyncio.gather(*(gated(t) for t in targets)))


def _check_unique(targets: Sequence[Target]) -> None:
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        dupes = nodesets.fold({n for n in names if names.count(n) > 1})
        raise ValueError(f"nodes named more than once: {dupes}")


async def run_parallel(
    targets: Sequence[Target],
    command: str | Sequence[str],
    *,
    pool: Pool,
    fanout: int = DEFAULT_FANOUT,
    timeout: float | None = None,
    on_line: LineCallback | None = None,
    on_done: DoneCallback | None = None,
) -> list[NodeResult]:
    """Run ``command`` on every target; one result per target, in the order given.

    ``timeout`` bounds each node's connect plus command (None: no bound, as clush's default).
    A string command goes to the remote shell as typed; a list is quoted (see module doc).
    Never raises for a node's failure: look at each result's ``error``.
    """
    line = command_line(command)
    _check_unique(targets)

    async def one(target: Target) -> NodeResult:
        result = await _run_one(target, line, pool, timeout, on_line)
        if on_done is not None:
            on_done(target.name, result.rc)
        return result

    return await _bounded(targets, fanout, one)


# --- exit codes ----------------------------------------------------------------------------------


def exit_summary(results: Iterable[NodeResult]) -> dict[int | None, str]:
    """Folded node sets by exit code (None for nodes that did not exit), lowest code first.

    ``{0: "node[1-4]", 2: "node5"}`` is what the REPL prints after a command.
    """
    by_rc: dict[int | None, list[str]] = {}
    for r in results:
        by_rc.setdefault(r.rc, []).append(r.node)
    order = sorted(by_rc, key=lambda rc: (rc is None, rc if rc is not None else 0))
    return {rc: nodesets.fold(by_rc[rc]) for rc in order}


def highest_rc(results: Iterable[NodeResult]) -> int:
    """clush ``-S``: the largest exit code of all nodes; 255 if any node did not exit at all.

    Without ``-S`` clush exits 0 whatever the nodes did; with it, a script can tell that
    something failed somewhere. An unreachable or timed-out node counts as 255, like ssh.
    """
    return max((r.status for r in results), default=0)


# --- copying files -------------------------------------------------------------------------------


async def _copy_one(
    target: Target, local: Path, remote_path: str, pool: Pool, timeout: float | None
) -> NodeResult:
    node = target.name
    started = time.monotonic()
    result = NodeResult(node)

    async def work() -> None:
        conn = await pool.connect(target.host, target.port, target.user, name=node)
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(local), remote_path, preserve=True)

    try:
        await asyncio.wait_for(work(), timeout)
        result.rc = 0
    except TimeoutError:
        result.timed_out = True
        result.error = f"{node}: copy to {remote_path} timed out after {timeout:g}s"
    except SSHError as exc:
        result.error = str(exc)
    except asyncssh.SFTPError as exc:
        result.error = f"{node}: cannot write {remote_path}: {exc.reason}"
    except (OSError, asyncssh.Error) as exc:
        with contextlib.suppress(Exception):
            pool.drop(target.host, target.port, target.user)
        result.error = f"{node}: copy to {remote_path} failed: {exc}"
    result.elapsed = time.monotonic() - started
    return result


async def copy(
    local: Path | str,
    targets: Sequence[Target],
    remote_path: str,
    pool: Pool,
    *,
    fanout: int = DEFAULT_FANOUT,
    timeout: float | None = None,
    on_done: DoneCallback | None = None,
) -> list[NodeResult]:
    """Copy one local file to ``remote_path`` on every target over SFTP, in parallel (clush -c).

    Permissions and times are preserved. The remote path is a path, not shell syntax: SFTP never
    involves a shell, so no quoting is needed. A result's rc is 0 on success.
    """
    local = Path(local)
    if not local.is_file():
        raise FileNotFoundError(f"{local}: no such file to copy")
    _check_unique(targets)

    async def one(target: Target) -> NodeResult:
        result = await _copy_one(target, local, remote_path, pool, timeout)
        if on_done is not None:
            on_done(target.name, result.rc)
        return result

    return await _bounded(targets, fanout, one)
