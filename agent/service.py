"""The control API's methods for a running agent: one small handler per method.

Kept apart from the socket server (agent/api.py) so the KV store and later parts add their own
tables without touching the protocol code.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from agent.api import Handler, param
from agent.config import parse_address
from agent.errors import BAD_REQUEST, STOPPING, AgentError
from agent.kv import prefix_end
from agent.kvserver import KVServer
from agent.node import Agent
from agent.registry import MACHINES_PREFIX

ANSWERED_WHEN_REMOVED = frozenset({"status", "ping", "debug.faults"})
"""What a machine removed from the cluster still serves; everything else answers ``removed``."""


def handlers(agent: Agent, kv: KVServer) -> dict[str, Handler]:
    """The method table served on the control socket: cluster methods plus the store's."""

    async def status(params: dict[str, Any]) -> Any:
        return {**agent.status(), **kv.status()}

    async def read_index(params: dict[str, Any]) -> Any:
        return {"index": await agent.read_barrier(param(params, "timeout", float, None))}

    async def machines(params: dict[str, Any]) -> Any:
        """The live machines: every record under /_shoal/machines/ (see agent/registry.py)."""
        prefix = MACHINES_PREFIX.encode()
        got = await kv.range(
            {
                "key": base64.b64encode(prefix).decode(),
                "range_end": base64.b64encode(prefix_end(prefix)).decode(),
                "serializable": param(params, "serializable", bool, False),
            }
        )
        records = []
        for item in got["kvs"]:
            try:
                record = json.loads(base64.b64decode(item["value"]))
            except ValueError:
                continue
            record["lease"] = item["lease"]
            records.append(record)
        return {"header": got["header"], "machines": records}

    async def members(params: dict[str, Any]) -> Any:
        st = agent.status()
        return {k: st[k] for k in ("voters", "learners", "addresses", "leader", "term")}

    async def add_member(params: dict[str, Any]) -> Any:
        node = param(params, "id", str)
        address = param(params, "address", str)
        try:
            parse_address(address, "address")
        except ValueError as exc:
            raise AgentError(BAD_REQUEST, str(exc))
        return await agent.add_member(node, address, param(params, "timeout", float, None))

    async def remove_member(params: dict[str, Any]) -> Any:
        return await agent.remove_member(
            param(params, "id", str), param(params, "timeout", float, None)
        )

    async def transfer_leader(params: dict[str, Any]) -> Any:
        target = param(params, "to", str)
        return {
            "leader": await agent.transfer_leadership(target, param(params, "timeout", float, None))
        }

    async def snapshot(params: dict[str, Any]) -> Any:
        return {"index": await agent.compact()}

    async def ping(params: dict[str, Any]) -> Any:
        return {"id": agent.config.node_id}

    async def debug_faults(params: dict[str, Any]) -> Any:
        # Lets tests partition real agents without root or network namespaces; refused unless
        # the config opted in, so a production agent cannot be cut off through its socket.
        if not agent.config.fault_injection:
            raise AgentError(
                BAD_REQUEST,
                "fault injection is disabled on this agent; "
                "set [debug] fault_injection = true in its config (test clusters only)",
            )
        if agent.transport is None:
            raise AgentError(STOPPING, "the peer transport is not running")
        block = param(params, "block", list)
        if not all(isinstance(peer, str) for peer in block):
            raise AgentError(BAD_REQUEST, "parameter 'block' must be a list of node ids")
        agent.transport.block(block)
        return {"blocked": sorted(agent.transport.blocked)}

    table: dict[str, Handler] = {
        "status": status,
        "read_index": read_index,
        "members": members,
        "machines": machines,
        "add_member": add_member,
        "remove_member": remove_member,
        "transfer_leader": transfer_leader,
        "snapshot": snapshot,
        "ping": ping,
        "debug.faults": debug_faults,
        **kv.handlers(),
    }
    return {
        name: handler if name in ANSWERED_WHEN_REMOVED else _unless_removed(agent, handler)
        for name, handler in table.items()
    }


def _unless_removed(agent: Agent, handler: Handler) -> Handler:
    """``handler``, refused with ``removed`` once the agent knows it is no longer a member.

    A plain function, not a coroutine, so a streaming handler (an async generator) stays one.
    """

    def guarded(params: dict[str, Any]) -> Any:
        agent.check_removed()
        return handler(params)

    return guarded
