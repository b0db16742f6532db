"""Live completion candidates from the cluster, by the registry's completion source names.

An :class:`~shell.registry.Arg` names where its values come from (``completion="keys"``); this
module turns such a name and the word being typed into candidates. Each lookup is a control call
bounded by a short timeout and cached for a few seconds, so pressing Tab repeatedly costs one
round trip, and a slow or dead cluster makes completion quiet rather than stuck.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

Source = Callable[[str], Awaitable[list[str]]]
"""The word typed so far → candidates (full words that may replace it)."""

CACHE_SECONDS = 3.0
CALL_TIMEOUT = 2.0


class Cache:
    """Results by key for ``ttl`` seconds; failures are not cached (the next Tab retries)."""

    def __init__(self, ttl: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._items: dict[str, tuple[float, list[str]]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[list[str]]]) -> list[str]:
        now = self.clock()
        hit = self._items.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = await fetch()
        self._items[key] = (self.clock(), value)
        return value


def next_segment(typed: str, keys: list[str]) -> list[str]:
    """Keys completed to the next path segment under what was typed.

    ``/app/`` with keys ``/app/db/host`` and ``/app/name`` offers ``/app/db/`` and ``/app/name``:
    a directory-like step at a time, as a file shell does.
    """
    base = typed[: typed.rfind("/") + 1]
    out: list[str] = []
    for key in keys:
        if not key.startswith(typed):
            continue
        rest = key[len(base) :]
        cut = rest.find("/")
        word = base + (rest if cut < 0 else rest[: cut + 1])
        if word not in out:
            out.append(word)
    return sorted(out)


def election_names(kvs: list[tuple[str, int]]) -> list[str]:
    """Election (and lock) names from (key, lease) pairs: the parents of candidate keys.

    A candidate's key is ``NAME/<its lease id in hex>`` on that lease (agent/concurrency.py), so
    only keys whose last segment spells their own lease count; the cluster's records under
    ``/_shoal/`` never do.
    """
    names: set[str] = set()
    for key, lease in kvs:
        parent, slash, last = key.rpartition("/")
        if slash and parent and lease and last == f"{lease:x}" and not key.startswith("/_shoal/"):
            names.add(parent)
    return sorted(names)


async def lab_nodes(typed: str) -> list[str]:
    """The nodes of the labs that are up on this host (from their records: no network)."""
    from shell.lab.state import labs_up

    names = sorted({node.name for lab in labs_up() for node in lab.nodes})
    return [n for n in names if n.startswith(typed)]


Call = Callable[..., Awaitable[Any]]


class ClusterSources:
    """The sources the built-in commands name, answered through one control connection.

    ``call`` is a control call (``Context.call``); ``node_ids`` lists the cluster's members from
    its saved state (no network). Built from callables so tests give fakes.
    """

    def __init__(self, call: Call, node_ids: Callable[[], list[str]]) -> None:
        self.call = call
        self.node_ids = node_ids
        self.cache = Cache()

    def sources(self) -> dict[str, Source]:
        return {
            "keys": self.keys,
            "machines": self.machines,
            "leases": self.leases,
            "nodes": self.nodes,
            "members": self.nodes,
            "elections": self.elections,
            "lab-nodes": lab_nodes,
        }

    async def _call(self, method: str, **params: Any) -> Any:
        async with asyncio.timeout(CALL_TIMEOUT):
            return await self.call(method, **params)

    async def keys(self, typed: str) -> list[str]:
        import base64

        from agent.kv import prefix_end

        if typed and not typed.startswith("/"):
            return []
        base = typed[: typed.rfind("/") + 1] or "/"

        async def fetch() -> list[str]:
            raw = base.encode()
            res = await self._call(
                "kv.get",
                key=base64.b64encode(raw).decode(),
                range_end=base64.b64encode(prefix_end(raw)).decode(),
                keys_only=True,
                limit=2000,
                serializable=True,
            )
            return [base64.b64decode(kv["key"]).decode(errors="replace") for kv in res["kvs"]]

        keys = await self.cache.get("keys:" + base, fetch)
        hidden = not typed.startswith("/_")  # the cluster's own records, unless asked for
        return [k for k in next_segment(typed, keys) if not (hidden and k.startswith("/_shoal/"))]

    async def machines(self, typed: str) -> list[str]:
        async def fetch() -> list[str]:
            res = await self._call("machines", serializable=True)
            return sorted(str(m["id"]) for m in res["machines"])

        return [m for m in await self.cache.get("machines", fetch) if m.startswith(typed)]

    async def leases(self, typed: str) -> list[str]:
        async def fetch() -> list[str]:
            res = await self._call("lease.list")
            return sorted(f"{int(i):x}" for i in res["leases"])

        return [x for x in await self.cache.get("leases", fetch) if x.startswith(typed)]

    async def elections(self, typed: str) -> list[str]:
        import base64

        async def fetch() -> list[str]:
            res = await self._call(
                "kv.get",
                key=base64.b64encode(b"\0").decode(),
                range_end=base64.b64encode(b"\0").decode(),
                keys_only=True,
                limit=10000,
                serializable=True,
            )
            return election_names(
                [
                    (base64.b64decode(kv["key"]).decode(errors="replace"), int(kv.get("lease", 0)))
                    for kv in res["kvs"]
                ]
            )

        return [n for n in await self.cache.get("elections", fetch) if n.startswith(typed)]

    async def nodes(self, typed: str) -> list[str]:
        return [n for n in self.node_ids() if n.startswith(typed)]
