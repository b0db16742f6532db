"""SSH to the nodes: a connection pool that verifies host keys, remote commands, control channel.

Host keys are checked against a known_hosts file and never trusted silently: an unknown key is
refused with its SHA256 fingerprint unless the operator said ``--accept-new`` (then it is
recorded), and a changed key is always refused with the known_hosts line to check. Every wait has
a timeout and errors name the node, so one unreachable machine never holds up the others.

Remote commands are argv lists joined with :func:`shlex.join`: sshd hands the command line to the
user's shell, so quoting is what keeps a path or a node name from becoming shell syntax.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import asyncssh

import agent.bridge
from agent.client import ControlClient, ControlError
from shell import knownhosts

CONNECT_TIMEOUT = 10.0


class SSHError(Exception):
    """Something about reaching ``node`` over SSH failed; the message says what to do."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


class UnknownHostKey(SSHError):
    """The node's host key is not in known_hosts; the operator must check and accept it."""

    def __init__(self, node: str, host: str, port: int, fingerprint: str, known_hosts: Path):
        super().__init__(
            node,
            f"{node}: the host key of {knownhosts.host_entry(host, port)} is not known "
            f"(fingerprint {fingerprint}). Check it on the machine (ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub), then connect again with --accept-new to record it "
            f"in {known_hosts}.",
        )
        self.host, self.port, self.fingerprint = host, port, fingerprint


class HostKeyChanged(SSHError):
    """The node presented a key other than the one recorded: refused, whatever the options."""

    def __init__(
        self, node: str, host: str, port: int, fingerprint: str, known_hosts: Path, lines: list[int]
    ):
        where = ", ".join(f"{known_hosts}:{n}" for n in lines)
        super().__init__(
            node,
            f"{node}: the host key of {knownhosts.host_entry(host, port)} has CHANGED (now "
            f"{fingerprint}); someone may be intercepting the connection, or the machine was "
            f"reinstalled. Refusing to connect. If the change is expected, remove the old key "
            f"at {where} and connect again with --accept-new.",
        )
        self.host, self.port, self.fingerprint, self.lines = host, port, fingerprint, lines


class ConnectFailed(SSHError):
    """The node could not be reached or refused the login."""


class CommandTimeout(SSHError):
    """A remote command did not finish in time."""


class ControlUnavailable(SSHError):
    """The agent's control socket could not be reached through the SSH connection."""


class RunResult(NamedTuple):
    exit_status: int
    stdout: str
    stderr: str


@dataclass
class _Verdict:
    """What host-key validation decided, kept so the failure can be reported precisely."""

    unknown: asyncssh.SSHKey | None = None
    changed: asyncssh.SSHKey | None = None


class _Client(asyncssh.SSHClient):
    """Asks the pool about a host key that matched no known_hosts entry."""

    def __init__(self, pool: SSHPool, verdict: _Verdict, trusted: bool, host: str, port: int):
        self._pool, self._verdict, self._trusted = pool, verdict, trusted
        self._host, self._port = host, port

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if self._trusted:  # known_hosts has keys for this host, and this is none of them
            self._verdict.changed = key
            return False
        if self._pool.accept_new:
            knownhosts.append(self._pool.known_hosts, self._host, self._port, key)
            return True
        self._verdict.unknown = key
        return False


class SSHPool:
    """One live SSH connection per (user, host, port), shared by every caller.

    A connection that has closed (the node rebooted, the network dropped) is replaced on the next
    :meth:`connect`, so a node that comes back is used again without restarting the shell.
    """

    def __init__(
        self,
        known_hosts: Path,
        client_keys: list[Path] | None,
        *,
        accept_new: bool = False,
        config: Path | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        server_nodelay: bool = True,
    ) -> None:
        self.known_hosts = Path(known_hosts)
        self.client_keys = client_keys
        self.accept_new = accept_new
        self.config = config
        self.connect_timeout = connect_timeout
        self.server_nodelay = server_nodelay
        self._conns: dict[tuple[str, str, int], asyncssh.SSHClientConnection] = {}
        self._locks: dict[tuple[str, str, int], asyncio.Lock] = {}
        self._nudges: set[asyncio.Task[None]] = set()

    async def connect(
        self, host: str, port: int = 22, user: str = "root", name: str | None = None
    ) -> asyncssh.SSHClientConnection:
        """A connection to ``user@host:port``, reused while it lives; ``name`` labels errors."""
        key = (user, host, port)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and not conn.is_closed():
                return conn
            conn = await self._open(host, port, user, name or host)
            self._conns[key] = conn
            return conn

    async def _open(
        self, host: str, port: int, user: str, node: str
    ) -> asyncssh.SSHClientConnection:
        known = knownhosts.lookup(self.known_hosts, host, port)
        plain = [k.key for k in known if not k.marker]
        cas = [k.key for k in known if k.marker == "@cert-authority"]
        revoked = [k.key for k in known if k.marker == "@revoked"]
        verdict = _Verdict()
        options: dict[str, Any] = {
            "username": user,
            "known_hosts": (plain, cas, revoked),
            "connect_timeout": self.connect_timeout,
            "config": [str(self.config)] if self.config else (),
            "keepalive_interval": 15,
            "keepalive_count_max": 3,
        }
        if self.client_keys is not None:
            options["client_keys"] = [str(p) for p in self.client_keys]
            options["agent_path"] = None
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: _Client(self, verdict, bool(plain or cas), host, port),
                host,
                port,
                **options,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            if verdict.changed is not None:
                lines = [k.line for k in known if not k.marker or k.marker == "@cert-authority"]
                fp = knownhosts.fingerprint(verdict.changed)
                raise HostKeyChanged(node, host, port, fp, self.known_hosts, lines)
            if verdict.unknown is not None:
                fp = knownhosts.fingerprint(verdict.unknown)
                raise UnknownHostKey(node, host, port, fp, self.known_hosts)
            raise ConnectFailed(node, f"{node}: host key of {host}:{port} refused: {exc}")
        except asyncssh.PermissionDenied:
            raise ConnectFailed(
                node,
                f"{node}: {user}@{host}:{port} refused our key; add your public key to that "
                f"user's ~/.ssh/authorized_keys on the machine",
            )
        except TimeoutError:
            raise ConnectFailed(
                node,
                f"{node}: no SSH answer from {host}:{port} within {self.connect_timeout:g}s; "
                f"is the machine up and the port open?",
            )
        except (OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ConnectFailed(
                node,
                f"{node}: cannot connect to {host}:{port}: {reason}; is sshd running there?",
            )
        if self.server_nodelay:  # in the background: it costs one delayed-ACK stall itself
            task = asyncio.create_task(enable_server_nodelay(conn))
            self._nudges.add(task)
            task.add_done_callback(self._nudges.discard)
        return conn

    def drop(self, host: str, port: int = 22, user: str = "root") -> None:
        """Forget (and close) a connection, e.g. after its node stopped answering."""
        conn = self._conns.pop((user, host, port), None)
        if conn is not None:
            conn.abort()

    async def close(self) -> None:
        for task in list(self._nudges):
            task.cancel()
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)


async def enable_server_nodelay(conn: asyncssh.SSHClientConnection) -> None:
    """Make sshd set TCP_NODELAY on this connection, so control replies are never held back.

    sshd sets TCP_NODELAY only when the connection's first session runs a command; a connection
    used only for direct-streamlocal channels keeps Nagle's algorithm on the server side, and
    when the agent answers two pipelined requests the second reply waits for the client's delayed
    ACK: a 40-44 ms stall per exchange (measured; one status call alone is ~0.6 ms). Opening one
    exec session flips the setting for the whole connection. The exec request's success reply
    comes after sshd has set the option, so the channel is closed right away without waiting
    for the remote shell (whose startup files may take a while). The pool runs this in the
    background because the exchange itself still pays one stall (~50 ms).
    """
    try:
        chan, _ = await asyncio.wait_for(
            conn.create_session(asyncssh.SSHClientSession, "exit 0"), CONNECT_TIMEOUT
        )
    except (TimeoutError, OSError, asyncssh.Error):
        return  # a server that refuses exec still works, only slower on pipelined requests
    chan.close()


async def run(
    conn: asyncssh.SSHClientConnection,
    argv: Sequence[str],
    *,
    input: bytes | str | None = None,
    timeout: float = 30.0,
    node: str = "",
) -> RunResult:
    """Run ``argv`` on the node (quoted with shlex.join); never raises for a non-zero exit."""
    command = shlex.join(argv)
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = await asyncio.wait_for(
            conn.run(command, input=data, check=False, encoding=None), timeout
        )
    except TimeoutError:
        raise CommandTimeout(node, f"{node}: {argv[0]} did not finish within {timeout:g}s")
    except (OSError, asyncssh.Error) as exc:
        raise ConnectFailed(node, f"{node}: lost the SSH connection running {argv[0]}: {exc}")
    out, err = cast(bytes | None, proc.stdout), cast(bytes | None, proc.stderr)
    status = proc.exit_status if proc.exit_status is not None else 255
    return RunResult(
        status,
        (out or b"").decode(errors="replace"),
        (err or b"").decode(errors="replace"),
    )


# --- the control channel ---------------------------------------------------------------------

BRIDGE_SOURCE = Path(agent.bridge.__file__).read_text()
"""The stdlib bridge, sent with ``python3 -c`` when the node has no zipapp to run it from."""


def bridge_command(socket_path: str, python: str = "python3", pyz: str | None = None) -> list[str]:
    """The argv of the exec-channel bridge: from the zipapp if there is one, else inline."""
    if pyz:
        return [python, pyz, "bridge", socket_path]
    return [python, "-c", BRIDGE_SOURCE, socket_path]


_NO_STREAMLOCAL: weakref.WeakSet[asyncssh.SSHClientConnection] = weakref.WeakSet()
"""Connections whose sshd refused direct-streamlocal while the bridge worked."""


async def open_control(
    conn: asyncssh.SSHClientConnection,
    socket_path: str,
    *,
    node: str = "",
    python: str = "python3",
    pyz: str | None = None,
    timeout: float = 10.0,
    allow_streamlocal: bool = True,
) -> ControlClient:
    """A ControlClient speaking to the agent's unix socket on the far side of ``conn``.

    Direct-streamlocal forwarding needs no remote process at all. If the channel cannot be
    opened (``AllowStreamLocalForwarding no``), the same bytes go through an exec channel running
    a tiny bridge instead, and that connection uses the bridge from then on. The caller sees no
    difference.
    """
    if allow_streamlocal and conn not in _NO_STREAMLOCAL:
        try:
            reader, writer = await asyncio.wait_for(conn.open_unix_connection(socket_path), timeout)
            return ControlClient(cast(Any, reader), cast(Any, writer))
        except asyncssh.ChannelOpenError:
            # OpenSSH answers "open failed" (code 2) both when forwarding is disabled and when
            # the socket is missing; the bridge tells the two apart (and works in the first).
            refused = True
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise ControlUnavailable(node, f"{node}: control socket {socket_path}: {exc}")
    else:
        refused = False
    client = await _open_bridge(
        conn, socket_path, node, bridge_command(socket_path, python, pyz), timeout
    )
    if refused:
        _NO_STREAMLOCAL.add(conn)  # skip the doomed channel-open next time
    return client


async def _open_bridge(
    conn: asyncssh.SSHClientConnection,
    socket_path: str,
    node: str,
    argv: list[str],
    timeout: float,
) -> ControlClient:
    try:
        proc = await asyncio.wait_for(conn.create_process(shlex.join(argv), encoding=None), timeout)
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise ControlUnavailable(node, f"{node}: cannot start the control bridge: {exc}")
    client = ControlClient(cast(Any, proc.stdout), cast(Any, proc.stdin))
    try:  # the bridge says nothing on success, so prove the path works before handing it out
        await asyncio.wait_for(client.call("ping"), timeout)
    except (ControlError, TimeoutError) as exc:
        await client.close()
        err = b""
        with contextlib.suppress(Exception):
            err = cast(bytes, await asyncio.wait_for(proc.stderr.read(), 1))
        detail = err.decode(errors="replace").strip() or str(exc)
        raise ControlUnavailable(
            node, f"{node}: control socket {socket_path} via exec bridge: {detail}"
        )
    return client
