"""What a command handler gets: the options, the registry, and one connection to the cluster.

The connection is made on first use and kept for the whole session or script, so ten commands in
a ``shoal -c`` line cost one SSH handshake. The member is the first that answers, in the order
of the cluster's saved state, through the cluster's saved SSH settings (shell/clusteraccess.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

from agent.client import ControlClient, ControlError
from shell import remote
from shell.clusterstate import ClusterState
from shell.registry import Options, Registry, Unavailable
from shell.ssh import SSHError, SSHPool


def _at_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


async def ask_at_terminal(question: str) -> bool:
    """A yes/no question on the terminal, asked in this thread: nothing else needs the loop
    while a one-off command waits for its answer, and Ctrl-C interrupts it at once (an input()
    in a worker thread would keep the process waiting for Enter on the way out)."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    # asyncio.run's own SIGINT handler only asks the (here blocked) loop to cancel: restore
    # Python's, so the first Ctrl-C raises KeyboardInterrupt out of input().
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        answer = input(question)
    except EOFError:
        return False
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return answer.strip().lower() in ("y", "yes")


class Context:
    def __init__(self, registry: Registry, options: Options, err: TextIO | None = None) -> None:
        self.registry = registry
        self.options = options
        self.err = err or sys.stderr
        self.exit_requested = False
        self.cluster_changed = False
        """Set when a command made, joined or destroyed a cluster: front ends refresh views."""
        self.ask: Callable[[str], Awaitable[bool]] | None = (
            ask_at_terminal if _at_terminal() else None
        )
        """How :meth:`confirm` asks; front ends with their own input (the TUI) replace it."""
        self._state: ClusterState | None = None
        self._pool: SSHPool | None = None
        self._client: ControlClient | None = None
        self.member: str | None = None

    def state(self) -> ClusterState:
        from shell.clusteraccess import current_state

        if self._state is None:
            self._state = current_state(self.options.cluster)
        return self._state

    def pool(self) -> SSHPool:
        from shell.clusteraccess import load_ssh

        if self._pool is None:
            self._pool = load_ssh(self.state()).pool()
        return self._pool

    async def client(self) -> ControlClient:
        """A control client on the first member that answers; Unavailable if none does."""
        if self._client is not None:
            return self._client
        state, pool, errors = self.state(), self.pool(), []
        for spec in state.nodes:
            try:
                client = await asyncio.wait_for(
                    remote.control(pool, spec, timeout=self.options.timeout),
                    self.options.timeout,
                )
                await asyncio.wait_for(client.call("ping"), self.options.timeout)
            except (remote.NodeError, SSHError, ControlError, OSError, TimeoutError) as exc:
                errors.append(str(exc) if str(exc).startswith(spec.id) else f"{spec.id}: {exc}")
                continue
            self._client, self.member = client, spec.id
            return client
        raise Unavailable("cluster unavailable: no member answered: " + "; ".join(errors))

    async def call(self, method: str, **params: Any) -> Any:
        """One request, bounded by --timeout (no answer in time means the cluster is down)."""
        client = await self.client()
        try:
            return await asyncio.wait_for(client.call(method, **params), self.options.timeout)
        except TimeoutError:
            await self.drop()
            raise Unavailable(f"cluster unavailable: no answer to {method} in time")
        except ControlError as exc:
            if exc.code == "connection-lost":
                await self.drop()
            raise

    async def stream(self, method: str, **params: Any) -> AsyncIterator[Any]:
        client = await self.client()
        async for item in client.stream(method, **params):
            yield item

    async def drop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def reporter(self) -> Callable[[str, str], None]:
        """``progress(node, message)`` for long work: lines on stderr (stdout stays the
        command's output, also with --json), stamped with the seconds since the work began."""
        started = time.monotonic()

        def progress(node: str, message: str) -> None:
            self.err.write(f"[{time.monotonic() - started:5.2f}s] {node}: {message}\n")
            self.err.flush()

        return progress

    async def confirm(self, question: str) -> bool | None:
        """Ask the person at the terminal; None when nobody is there to ask (a script, a pipe),
        so the command can say which flag goes ahead without asking."""
        if self.ask is None:
            return None
        return await self.ask(question)

    async def switch_cluster(self) -> None:
        """Forget the cluster this context talked to (it was just made, changed or destroyed);
        the next command finds the current one again."""
        await self.close()
        self._state, self.member, self.cluster_changed = None, None, True

    async def close(self) -> None:
        await self.drop()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
