"""What bootstrap does to one node over SSH: run a helper chore, install files, reach the agent.

Kept apart from the workflows in shell/bootstrap.py so each workflow reads as a sequence of steps;
every function here takes one node and raises :class:`NodeError` naming it.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from agent.client import ControlClient
from shell import nodehelper, ssh
from shell.clusterstate import NodeSpec

T = TypeVar("T")
MIN_PYTHON = (3, 11)
HELPER_SOURCE = Path(nodehelper.__file__).read_text()
HELPER_PROGRAM = (
    nodehelper.VERSION_GUARD + f"exec(compile({HELPER_SOURCE!r}, 'shoal-nodehelper', 'exec'))\n"
)


class NodeError(Exception):
    """One node failed a step; ``node`` says which, the message says what to do."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


def unit_name(spec: NodeSpec) -> str:
    return f"shoal-agent-{spec.id}"


def socket_path(spec: NodeSpec) -> str:
    return posixpath.join(spec.base, "data", "control.sock")


async def connect(pool: ssh.SSHPool, spec: NodeSpec) -> asyncssh.SSHClientConnection:
    try:
        return await pool.connect(spec.host, spec.ssh_port, spec.user, name=spec.id)
    except ssh.SSHError as exc:
        raise NodeError(spec.id, str(exc))


async def helper(
    pool: ssh.SSHPool, spec: NodeSpec, op: str, *args: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Run one nodehelper operation on the node with its python; its JSON answer."""
    conn = await connect(pool, spec)
    argv = [spec.python, "-c", HELPER_PROGRAM, op, *args]
    try:
        result = await ssh.run(conn, argv, timeout=timeout, node=spec.id)
    except ssh.SSHError as exc:
        raise NodeError(spec.id, str(exc))
    if result.exit_status == 127:
        raise NodeError(
            spec.id,
            f"{spec.id}: {spec.python} was not found on {spec.host} "
            f"({result.stderr.strip() or 'exit 127'}); install python3 (3.11+) there "
            f"or point the node's python option at it",
        )
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise NodeError(
            spec.id,
            f"{spec.id}: {spec.python} failed on {spec.host} (exit {result.exit_status}): "
            f"{result.stderr.strip()[-500:] or result.stdout.strip()[-500:]}",
        )
    if not isinstance(answer, dict):
        raise NodeError(spec.id, f"{spec.id}: unexpected answer from the node: {answer!r}")
    if "too_old" in answer:
        raise NodeError(
            spec.id,
            f"{spec.id}: {spec.python} on {spec.host} is Python {answer['too_old']}; "
            f"the agent needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
        )
    return answer


async def _write_file(sftp: asyncssh.SFTPClient, path: str, data: bytes, mode: int) -> None:
    """Write atomically; the mode is set on the empty temp file before any content is written,
    so a key is never readable by others, not even for a moment."""
    tmp = posixpath.join(posixpath.dirname(path), f".tmp-{secrets.token_hex(6)}")
    async with sftp.open(
        tmp, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode)
    ) as handle:  # created with mode & ~umask, which is never looser than mode
        await handle.chmod(mode)
        await handle.write(data)
    await sftp.posix_rename(tmp, path)


async def _private_dir(sftp: asyncssh.SFTPClient, path: str) -> None:
    await sftp.makedirs(path, attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True)
    await sftp.chmod(path, 0o700)


async def install(
    pool: ssh.SSHPool,
    spec: NodeSpec,
    pyz: Path | None,
    files: dict[str, tuple[bytes, int]],
    *,
    timeout: float = 120.0,
) -> None:
    """Create the 0700 base dir, upload ``pyz`` (if given) and write ``files`` (relative path →
    (content, mode)) through SFTP."""
    conn = await connect(pool, spec)

    async def go() -> None:
        async with conn.start_sftp_client() as sftp:
            await _private_dir(sftp, spec.base)
            for sub in sorted({posixpath.dirname(rel) for rel in files} - {""}):
                await _private_dir(sftp, posixpath.join(spec.base, sub))
            if pyz is not None:
                tmp = posixpath.join(spec.base, f".upload-{secrets.token_hex(6)}")
                await sftp.put(str(pyz), tmp)
                await sftp.chmod(tmp, 0o644)
                await sftp.posix_rename(tmp, posixpath.join(spec.base, pyz.name))
            for rel, (data, mode) in sorted(files.items()):
                await _write_file(sftp, posixpath.join(spec.base, rel), data, mode)

    try:
        await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        raise NodeError(spec.id, f"{spec.id}: uploading to {spec.host} took over {timeout:g}s")
    except (OSError, asyncssh.Error) as exc:
        raise NodeError(spec.id, f"{spec.id}: SFTP to {spec.host}:{spec.base} failed: {exc}")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def agent_config(
    spec: NodeSpec,
    peers: dict[str, str],
    *,
    join: bool,
    timing: dict[str, int],
    cluster_id: str = "",
    cluster_name: str = "",
    log_level: str = "info",
) -> bytes:
    """The node's agent.toml (format: agent/config.py); every path lives under its base."""
    base = spec.base
    lines = [
        f"node_id = {_toml(spec.id)}",
        f"data_dir = {_toml(posixpath.join(base, 'data'))}",
        f"listen = {_toml(spec.peer_address)}",
        f"join = {_toml(join)}",
        f"cluster_id = {_toml(cluster_id)}",
        f"cluster_name = {_toml(cluster_name)}",
        # advertise on the interface peers reach it by (in the lab: the node's own link only)
        f"mdns = {_toml(spec.address or spec.host)}",
        "",
        "[metadata]",
        *(f"{_toml(k)} = {_toml(v)}" for k, v in sorted(spec.metadata.items())),
        "",
        "[peers]",
        *(f"{_toml(k)} = {_toml(v)}" for k, v in sorted(peers.items())),
        "",
        "[tls]",
        f"ca = {_toml(posixpath.join(base, 'tls', 'ca.pem'))}",
        f"cert = {_toml(posixpath.join(base, 'tls', 'node.pem'))}",
        f"key = {_toml(posixpath.join(base, 'tls', 'node-key.pem'))}",
        "",
        "[timing]",
        *(f"{k} = {_toml(v)}" for k, v in sorted(timing.items())),
        "",
        "[log]",
        f"level = {_toml(log_level)}",
        "",
    ]
    return "\n".join(lines).encode()


async def control(
    pool: ssh.SSHPool, spec: NodeSpec, pyz_name: str | None = None, *, timeout: float = 10.0
) -> ControlClient:
    """A control client for the node's agent, through its SSH connection."""
    conn = await connect(pool, spec)
    try:
        return await ssh.open_control(
            conn,
            socket_path(spec),
            node=spec.id,
            python=spec.python,
            pyz=posixpath.join(spec.base, pyz_name) if pyz_name else None,
            timeout=timeout,
        )
    except ssh.SSHError as exc:
        raise NodeError(spec.id, str(exc))


async def call(
    pool: ssh.SSHPool, spec: NodeSpec, method: str, *, wait: float = 10.0, **params: Any
) -> Any:
    """One control request on a fresh channel (cheap: the SSH connection is pooled).

    ``wait`` bounds the whole exchange here; ``params`` go to the agent (which has its own
    ``timeout`` parameter for membership changes)."""

    async def go() -> Any:
        client = await control(pool, spec, timeout=wait)
        try:
            return await client.call(method, **params)
        finally:
            await client.close()

    try:
        return await asyncio.wait_for(go(), wait)
    except TimeoutError:
        pool.drop(spec.host, spec.ssh_port, spec.user)  # likely dead; reconnect next time
        raise NodeError(spec.id, f"{spec.id}: no answer from its agent within {wait:g}s")


async def each(
    specs: Sequence[NodeSpec], work: Callable[[NodeSpec], Awaitable[T]]
) -> dict[str, T | BaseException]:
    """Run ``work`` on every node at once; one node's failure never stops the others."""
    results = await asyncio.gather(*(work(s) for s in specs), return_exceptions=True)
    return {s.id: r for s, r in zip(specs, results, strict=True)}
