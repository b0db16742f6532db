"""``python -m agent serve``: run one agent until it is told to stop (or is removed)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
import time

from agent import __version__
from agent.api import ControlServer
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.kvserver import KVServer, LeasedKVMachine
from agent.lessor import Lessor
from agent.mdns import MDNSAdvertiser, advertise_agent
from agent.node import Agent
from agent.registry import MachineRegistry
from agent.service import handlers
from agent.storage import StorageError

log = logging.getLogger("shoal.agent")


def lock_data_dir(config: AgentConfig) -> int:
    """Hold an exclusive lock on the data directory: two agents on one WAL would corrupt it.

    The lock lasts as long as the returned descriptor is open (for ``serve``: until the process
    exits, when the kernel releases it)."""
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    fd = os.open(config.data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AgentError(
            "busy", f"another agent is already running with data directory {config.data_dir}"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def serve(config: AgentConfig) -> int:
    # Held until the process exits, never released here: the lock is how the shell's node
    # helper tells that an agent runs (``stop`` waits for it to go), so releasing it before the
    # process is gone would report an agent stopped while it still winds down.
    lock_data_dir(config)
    lessor = Lessor(time.monotonic, extend_on_promote=config.tick_ms * config.election_ticks / 1000)
    machine = LeasedKVMachine(lessor)
    agent = Agent(config, machine)
    kv = KVServer(agent, machine)
    registry = MachineRegistry(agent, kv)
    control = ControlServer(config.control_socket, handlers(agent, kv))
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()
    mdns: MDNSAdvertiser | None = None
    reason: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        reason.append(sig.name)
        shutdown.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await agent.start()
        kv.start()
        await control.start()
        registry.start()
        log.info("control socket at %s", config.control_socket)
        mdns = await advertise_agent(
            node_id=config.node_id,
            cluster_id=config.cluster_id,
            listen=config.listen,
            mdns=config.mdns,
            version=__version__,
            metadata=config.metadata,
            cluster_name=config.cluster_name,
        )
        signalled = asyncio.create_task(shutdown.wait())
        ended = asyncio.create_task(agent.stopped.wait())
        await asyncio.wait({signalled, ended}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        ended.cancel()
        return 0
    finally:
        # Say goodbye on mDNS and leave the machine registry while the agent can still write,
        # then stop the rest.
        if mdns is not None:
            await mdns.close()
        await registry.stop()
        await control.stop()
        await kv.stop()
        if not agent.stopped.is_set():
            await agent.stop(reason[0] if reason else "stopping")
        log.info("stopped: %s", agent.stop_reason)


def run(config: AgentConfig) -> int:
    try:
        return asyncio.run(serve(config))
    except StorageError as exc:
        log.error("cannot start: %s", exc)
        print(f"shoal agent: cannot start: {exc}", file=sys.stderr)
        return 1
    except AgentError as exc:
        log.error("cannot start: %s", exc.message)
        print(f"shoal agent: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        log.error("agent failed: %r", exc)
        print(f"shoal agent: failed: {exc!r}", file=sys.stderr)
        return 1
