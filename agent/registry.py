"""The machine registry: each agent keeps ``/_shoal/machines/<id>`` alive on a lease.

This is how the cluster knows which machines are alive (fleetctl list-machines): the key holds
the machine's id, address, metadata, version, start time and load, and is bound to a lease the
agent keeps alive. An agent that dies stops keeping it alive; the leader expires the lease and
the key disappears — so a watch on the prefix sees machines come and go, and the scheduler
(a later issue) reschedules a dead machine's units from that same event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from typing import Any

from agent import __version__
from agent.errors import AgentError
from agent.kvserver import KVServer
from agent.node import Agent

MACHINES_PREFIX = "/_shoal/machines/"
log = logging.getLogger("shoal.registry")


def machine_key(node_id: str) -> str:
    return MACHINES_PREFIX + node_id


class MachineRegistry:
    def __init__(self, agent: Agent, kv: KVServer) -> None:
        self.agent = agent
        self.kv = kv
        self.ttl = agent.config.registry_ttl
        self.lease: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def record(self) -> dict[str, Any]:
        cfg = self.agent.config
        return {
            "id": cfg.node_id,
            "cluster": cfg.cluster_id,
            "hostname": socket.gethostname(),
            "address": cfg.listen[0],
            "peer_port": cfg.listen[1],
            "metadata": dict(cfg.metadata),
            "version": __version__,
            "started": round(self.agent.started_at, 3),
            "load": round(os.getloadavg()[0], 2),
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="machine-registry")

    async def stop(self) -> None:
        """Leave the registry at once on a clean shutdown (revoke, don't wait for expiry)."""
        self._stopping = True
        if self._task is not None:
            # Cancel, and also leave the loop by the flag: on Python 3.11 a wait_for deep in a
            # request can swallow a cancellation that arrives as its future completes, and a
            # loop that only relies on CancelledError would then run on (and SIGTERM hang).
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(5):
                    await self._task
        if self.lease is not None:
            with contextlib.suppress(AgentError, TimeoutError):
                await asyncio.wait_for(self.kv.write("lease_revoke", {"id": self.lease}), 1.0)

    async def _register(self) -> None:
        grant = await self.kv.write("lease_grant", {"ttl": self.ttl})
        lease = int(grant["id"])
        value = json.dumps(self.record(), separators=(",", ":")).encode()
        await self.kv.write(
            "put",
            {
                "key": base64.b64encode(machine_key(self.agent.config.node_id).encode()).decode(),
                "value": base64.b64encode(value).decode(),
                "lease": lease,
                "allow_reserved": True,
            },
        )
        self.lease = lease
        log.info("registered as a machine (lease %x, ttl %ds)", lease, self.ttl)

    async def _run(self) -> None:
        interval = max(0.5, self.ttl / 3)
        while not self._stopping:
            try:
                if self.lease is None:
                    await self._register()
                else:
                    await self.agent.call_leader("lease.keepalive", {"id": self.lease})
            except AgentError as exc:
                if exc.code == "lease-not-found":
                    log.warning("machine lease expired (was this node cut off?); re-registering")
                    self.lease = None
                    continue
                log.debug("registry: %s; retrying", exc.message)
            await asyncio.sleep(interval if self.lease is not None else min(interval, 0.5))


