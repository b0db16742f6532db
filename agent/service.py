"""The control API's methods for a running agent: one small handler per method.

Kept apart from the socket server (agent/api.py) so the KV store and later parts add their own
tables without touching the protocol code.
"""

from __future__ import annotations

from typing import Any

from agent.api import Handler, data_param, param, show_bytes
from agent.config import parse_address
from agent.errors import BAD_REQUEST, AgentError
from agent.node import Agent
from agent.statemachine import RecordingMachine


def handlers(agent: Agent) -> dict[str, Handler]:
    """The method table served on the control socket."""

    async def status(params: dict[str, Any]) -> Any:
        return agent.status()

    async def propose(params: dict[str, Any]) -> Any:
        timeout = param(params, "timeout", float, None)
        index, result = await agent.propose(data_param(params), timeout)
        return {"index": index, "result": result}

    async def read_index(params: dict[str, Any]) -> Any:
        return {"index": await agent.read_barrier(param(params, "timeout", float, None))}

    async def records(params: dict[str, Any]) -> Any:
        after = param(params, "after", int, 0)
        limit = max(1, min(param(params, "limit", int, 1000), 10000))
        if param(params, "linearizable", bool, False):
            await agent.read_barrier(param(params, "timeout", float, None))
        machine = agent.machine
        if not isinstance(machine, RecordingMachine):
            raise AgentError(BAD_REQUEST, "this agent's state machine keeps no records")
        rows = machine.read(after, limit)
        return {
            "records": [{"index": i, **show_bytes(d)} for i, d in rows],
            "applied": agent.raft.applied if agent.raft else 0,
            "more": len(rows) == limit,
        }

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

    async def compact(params: dict[str, Any]) -> Any:
        return {"index": await agent.compact()}

    async def ping(params: dict[str, Any]) -> Any:
        return {"id": agent.config.node_id}

    return {
        "status": status,
        "propose": propose,
        "read_index": read_index,
        "records": records,
        "members": members,
        "add_member": add_member,
        "remove_member": remove_member,
        "transfer_leader": transfer_leader,
        "compact": compact,
        "ping": ping,
    }
