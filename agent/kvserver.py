"""The replicated store as the agent serves it: KV, leases and watches on the control API.

Writes become KV commands in the Raft log (agent/kv/commands.py); the result a client sees is
what its own node's state machine returned on applying the entry. Reads are linearizable by
default — a ReadIndex round confirms this node is up to date before it reads its own store — or
served from the local store at once with ``serializable``. API parameters have the same shape as
the log commands (keys and values base64, as in etcd's JSON gateway), so one strict decoder
checks both.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from agent.api import Handler, param
from agent.errors import BAD_REQUEST, AgentError
from agent.kv import (
    CompactCommand,
    KVStateMachine,
    KVStore,
    LeaseExpireCommand,
    decode_command,
    encode_command,
    event_json,
    response_json,
)
from agent.kv.commands import decode_range
from agent.lessor import Lessor
from agent.node import Agent
from agent.watch import WatchHub

MAX_REQUEST_BYTES = 1536 * 1024
"""A write larger than this (encoded) is refused, as etcd refuses requests over 1.5 MiB."""

REQUEST_TOO_LARGE = "request-too-large"
AUTO_COMPACT_EVERY_TICKS = 50
"""How often the leader considers automatic compaction (5 s at the default tick)."""
log = logging.getLogger("shoal.kv")


class LeasedKVMachine(KVStateMachine):
    """The KV state machine, telling the lessor about every lease granted or removed."""

    def __init__(self, lessor: Lessor) -> None:
        super().__init__()
        self.lessor = lessor

    def apply(self, index: int, data: bytes) -> dict[str, Any]:
        result = super().apply(index, data)
        if b'"op":"lease_' in data[:32] and "error" not in result:
            cmd = json.loads(data)
            if cmd["op"] == "lease_grant":
                self.lessor.granted(int(result["id"]), int(result["ttl"]))
            else:
                self.lessor.revoked(int(cmd["id"]))
        return result

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self.lessor.reset(lease_ttls(self.store))


def lease_ttls(store: KVStore) -> list[tuple[int, int]]:
    return [(i, store.lease_time_to_live(i).granted_ttl) for i in store.leases()]


class KVServer:
    """KV, lease and watch methods for one agent."""

    def __init__(self, agent: Agent, machine: LeasedKVMachine) -> None:
        self.agent = agent
        self.machine = machine
        self.store = machine.store
        self.lessor = machine.lessor
        self.hub = WatchHub(self.store)
        self.store.lease_remaining = self.lessor.remaining
        self._expiring: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        agent.peer_methods["lease.keepalive"] = self._keepalive_here
        agent.peer_methods["lease.ttl"] = self._ttl_here
        agent.leadership_listeners.append(self._leadership)

    def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop(), name="lease-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.hub.close()

    # --- leases: the leader keeps the clock ------------------------------------------------------

    def _leadership(self, leading: bool) -> None:
        if leading:
            self.lessor.promote(lease_ttls(self.store))
            log.info("keeping time for %d leases as the new leader", len(self.store.leases()))
        else:
            self.lessor.demote()

    async def _expire_loop(self) -> None:
        """The leader's housekeeping: expire leases every tick, compact history if asked."""
        interval = self.agent.config.tick_ms / 1000
        retention = self.agent.config.auto_compact_retention
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            if not self.lessor.primary:
                continue
            for lease_id in self.lessor.expired():
                self._background(self._expire(lease_id))
            ticks += 1
            if retention and ticks % AUTO_COMPACT_EVERY_TICKS == 0:
                target = self.store.auto_compact_target(retention)
                if target is not None:
                    self._background(self._auto_compact(target))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _auto_compact(self, revision: int) -> None:
        try:
            await self.agent.propose(encode_command(CompactCommand(revision)))
            log.info("compacted history before revision %d (retention)", revision)
        except AgentError as exc:
            log.warning("automatic compaction to %d failed: %s", revision, exc.message)

    async def _expire(self, lease_id: int) -> None:
        try:
            await self.agent.propose(encode_command(LeaseExpireCommand(lease_id)))
            log.info("lease %d expired", lease_id)
        except AgentError as exc:
            log.warning("could not expire lease %d yet: %s", lease_id, exc.message)
            self.lessor.retry(lease_id)

    async def _keepalive_here(self, params: dict[str, Any]) -> dict[str, int]:
        lease_id = param(params, "id", int)
        ttl = self.lessor.keep_alive(lease_id)
        if ttl is None:
            if lease_id not in self.store.leases():
                raise AgentError("lease-not-found", f"lease {lease_id} not found (expired?)")
            raise AgentError("not-leader", "this node stopped leading; retry")
        return {"id": lease_id, "ttl": ttl}

    async def _ttl_here(self, params: dict[str, Any]) -> dict[str, Any]:
        lease_id = param(params, "id", int)
        resp = self.store.lease_time_to_live(lease_id, keys=param(params, "keys", bool, False))
        return response_json(resp)

    # --- writes -----------------------------------------------------------------------------------

    async def write(self, op: str, params: dict[str, Any]) -> dict[str, Any]:
        """Propose one KV command (``op`` with log-command params) and return its result."""
        timeout = params.pop("timeout", None)
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
        ):
            raise AgentError(BAD_REQUEST, "parameter 'timeout' must be a number of seconds")
        cmd = decode_command(json.dumps({"v": 1, "op": op, **params}).encode())
        data = encode_command(cmd)
        if len(data) > MAX_REQUEST_BYTES:
            raise AgentError(
                REQUEST_TOO_LARGE,
                f"the request is {len(data)} bytes encoded; the limit is {MAX_REQUEST_BYTES}",
            )
        _, result = await self.agent.propose(data, timeout)
        if not isinstance(result, dict):
            raise AgentError("internal", "the store returned no result")
        if "error" in result:
            error = dict(result["error"])
            raise AgentError(str(error.pop("code")), str(error.pop("message")), **error)
        return result

    # --- the method table ----------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        async def put(params: dict[str, Any]) -> Any:
            return await self.write("put", dict(params))

        async def delete(params: dict[str, Any]) -> Any:
            return await self.write("delete_range", dict(params))

        async def txn(params: dict[str, Any]) -> Any:
            return await self.write("txn", dict(params))

        async def compact(params: dict[str, Any]) -> Any:
            return await self.write("compact", dict(params))

        async def lease_grant(params: dict[str, Any]) -> Any:
            return await self.write("lease_grant", dict(params))

        async def lease_revoke(params: dict[str, Any]) -> Any:
            return await self.write("lease_revoke", dict(params))

        async def lease_keepalive(params: dict[str, Any]) -> Any:
            return await self.agent.call_leader("lease.keepalive", {"id": param(params, "id", int)})

        async def lease_ttl(params: dict[str, Any]) -> Any:
            query = {"id": param(params, "id", int), "keys": param(params, "keys", bool, False)}
            return await self.agent.call_leader("lease.ttl", query)

        async def lease_list(params: dict[str, Any]) -> Any:
            if not param(params, "serializable", bool, False):
                await self.agent.read_barrier(None)
            return {"header": {"revision": self.store.revision}, "leases": self.store.leases()}

        return {
            "kv.get": self.range,
            "kv.put": put,
            "kv.delete": delete,
            "kv.txn": txn,
            "kv.compact": compact,
            "kv.watch": self.watch,
            "lease.grant": lease_grant,
            "lease.revoke": lease_revoke,
            "lease.keepalive": lease_keepalive,
            "lease.ttl": lease_ttl,
            "lease.list": lease_list,
        }

    async def range(self, params: dict[str, Any]) -> dict[str, Any]:
        """``kv.get``: linearizable unless ``serializable`` (then this node's copy, at once)."""
        params = dict(params)
        serializable = param(params, "serializable", bool, False)
        timeout = param(params, "timeout", float, None)
        params.pop("serializable", None)
        params.pop("timeout", None)
        request = decode_range(params)
        if not serializable:
            await self.agent.read_barrier(timeout)
        return response_json(self.store.range_request(request))

    async def watch(self, params: dict[str, Any]) -> AsyncIterator[Any]:
        """Stream events for a key or range: history from ``start_revision``, then live.

        Yields ``{"created": true, ...}`` first, then ``{"header", "events"}`` batches, and
        ``{"header", "progress": true}`` every ``progress_interval`` seconds without events
        when ``progress_notify`` is set.
        """
        request = decode_range(
            {k: params[k] for k in ("key", "range_end") if k in params}, "params"
        )
        start = param(params, "start_revision", int, 0)
        prev_kv = param(params, "prev_kv", bool, False)
        if start > 0 and not param(params, "serializable", bool, False):
            # History and the compaction point as the cluster has them, not as a lagging member
            # last saw them: replaying from a revision then means the same on every member.
            await self.agent.read_barrier(None)
        notify = param(params, "progress_notify", bool, False)
        interval = param(params, "progress_interval", float, 10.0)
        watcher = self.hub.watch(request.key, request.range_end, start, prev_kv)
        try:
            yield {"created": True, "watch_id": watcher.id, "header": self._header()}
            while True:
                events = await watcher.next(interval if notify else None)
                if events:
                    yield {"header": self._header(), "events": [event_json(e) for e in events]}
                elif notify:
                    yield {"header": self._header(), "progress": True}
        finally:
            self.hub.cancel(watcher)

    def _header(self) -> dict[str, int]:
        return {"revision": self.store.revision}

    def status(self) -> dict[str, Any]:
        return {
            "revision": self.store.revision,
            "compact_revision": self.store.compact_revision,
            "keys": len(self.store),
            "leases": len(self.store.leases()),
            "watchers": len(self.hub),
        }
