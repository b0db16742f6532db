"""Elections and locks built on leases and revisions, the way etcd's concurrency package does.

A :class:`Session` is a lease kept alive in the background; when the holder dies, its lease
expires and everything it held goes with it. To campaign (or lock), a client creates the key
``NAME/<lease id>`` bound to its session. The candidate whose key has the lowest create revision
leads; every other candidate waits for the deletion of the key created just before its own —
one watcher per waiter, so a change of leader wakes exactly one client (no thundering herd) and
candidates are served first come, first served.

Everything here is a client of the control API (agent/client.py), so it works the same from a
node (``python -m agent ctl``) and from the shell over SSH.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from agent.client import ControlClient, ControlError
from agent.kv import prefix_end


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(data: str) -> bytes:
    return base64.b64decode(data)


class SessionLost(Exception):
    """The session's lease expired or was revoked: whatever it held is gone."""


class LeadershipLost(SessionLost):
    """This client no longer leads: its election key was deleted (resigned by another client,
    or its lease ended) or its session was lost."""


class LeadershipChanged(Exception):
    """A guarded write on behalf of a leader failed: that key no longer leads (nothing changed)."""


class Session:
    """A lease kept alive every ttl/3 seconds until closed or lost."""

    def __init__(self, client: ControlClient, lease_id: int, ttl: int) -> None:
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._task = asyncio.create_task(self._keep_alive())

    @classmethod
    async def open(cls, client: ControlClient, ttl: int = 10) -> Session:
        grant = await client.call("lease.grant", ttl=ttl)
        return cls(client, int(grant["id"]), int(grant["ttl"]))

    async def _keep_alive(self) -> None:
        interval = max(0.2, self.ttl / 3)
        failures = 0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.client.call("lease.keepalive", id=self.lease_id, timeout=interval)
                failures = 0
            except ControlError as exc:
                if exc.code == "lease-not-found":
                    self.lost_reason = f"lease {self.lease_id:x} expired"
                    self.lost.set()
                    return
                failures += 1  # a leader change: keep trying until the TTL runs out
                if failures * interval >= self.ttl:
                    self.lost_reason = f"could not keep lease {self.lease_id:x} alive: {exc}"
                    self.lost.set()
                    return

    async def close(self) -> None:
        """Stop keeping alive and revoke, so waiters move on at once."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self.lost.is_set():
            with contextlib.suppress(ControlError):
                await self.client.call("lease.revoke", id=self.lease_id)


@dataclass(frozen=True)
class Leader:
    """etcd's LeaderKey and the value it announces: enough to act for the leader, guarded."""

    key: bytes
    value: bytes
    create_revision: int
    lease: int = 0


class Election:
    """Campaign, proclaim, resign and observe an election called ``name``."""

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.client = session.client
        self.prefix = name.rstrip("/").encode() + b"/"
        self.key = self.prefix + f"{session.lease_id:x}".encode()
        self.create_revision = 0
        self.mod_revision = 0
        """The revision of the key's value this client last wrote or saw (see :meth:`changes`)."""

    async def campaign(self, value: bytes) -> None:
        """Return once this client leads; wait behind earlier candidates, first come first."""
        result = await self.client.call(
            "kv.txn",
            compare=[{"key": b64(self.key), "target": "create", "result": "=", "value": 0}],
            success=[
                {
                    "op": "put",
                    "key": b64(self.key),
                    "value": b64(value),
                    "lease": self.session.lease_id,
                }
            ],
            failure=[{"op": "range", "key": b64(self.key)}],
        )
        if result["succeeded"]:
            self.create_revision = self.mod_revision = int(result["header"]["revision"])
        else:
            kv = result["responses"][0]["kvs"][0]
            self.create_revision = int(kv["create_revision"])
            self.mod_revision = int(kv["mod_revision"])
            if unb64(kv["value"]) != value:
                await self.proclaim(value)
        await self._wait_for_predecessors()

    async def _wait_for_predecessors(self) -> None:
        while True:
            if self.session.lost.is_set():
                raise SessionLost(self.session.lost_reason)
            got = await self.client.call(
                "kv.get",
                key=b64(self.prefix),
                range_end=b64(prefix_end(self.prefix)),
                sort_order="ascend",
                sort_target="create",
            )
            before = [kv for kv in got["kvs"] if int(kv["create_revision"]) < self.create_revision]
            if not before:
                return
            predecessor = before[-1]
            await self._wait_deleted(unb64(predecessor["key"]), int(got["header"]["revision"]))

    async def _wait_deleted(self, key: bytes, revision: int) -> None:
        stream = self.client.stream("kv.watch", key=b64(key), start_revision=revision + 1)
        lost = asyncio.create_task(self.session.lost.wait())
        try:
            async for item in _until(stream, lost):
                if any(ev["type"] == "DELETE" for ev in item.get("events", [])):
                    return
            if self.session.lost.is_set():
                raise SessionLost(self.session.lost_reason)
        finally:
            lost.cancel()

    async def proclaim(self, value: bytes) -> None:
        """Change the leader's value without giving up leadership."""
        result = await self.client.call(
            "kv.txn",
            compare=[
                {
                    "key": b64(self.key),
                    "target": "create",
                    "result": "=",
                    "value": self.create_revision,
                }
            ],
            success=[
                {
                    "op": "put",
                    "key": b64(self.key),
                    "value": b64(value),
                    "lease": self.session.lease_id,
                }
            ],
            failure=[],
        )
        if not result["succeeded"]:
            raise SessionLost("not the leader any more (the election key is gone)")
        self.mod_revision = int(result["header"]["revision"])

    async def resign(self) -> None:
        await self.client.call(
            "kv.txn",
            compare=[
                {
                    "key": b64(self.key),
                    "target": "create",
                    "result": "=",
                    "value": self.create_revision,
                }
            ],
            success=[{"op": "delete_range", "key": b64(self.key)}],
            failure=[],
        )
        self.create_revision = 0

    async def changes(self) -> AsyncGenerator[bytes, None]:
        """While this client leads, each value put on its key (a proclaim by another client, or
        by this one) since it last wrote or saw one — a change made before iterating began is
        not missed; raises :class:`LeadershipLost` with the reason once it stops leading (key
        deleted — by another client's resign, or with the lease — or the session lost)."""
        got = await self.client.call("kv.get", key=b64(self.key))
        kvs = got["kvs"]
        if not kvs or int(kvs[0]["create_revision"]) != self.create_revision:
            raise LeadershipLost(await self._loss_reason())
        revision = int(got["header"]["revision"])
        if int(kvs[0]["mod_revision"]) > self.mod_revision:
            self.mod_revision = int(kvs[0]["mod_revision"])
            yield unb64(kvs[0].get("value", ""))
        stream = self.client.stream("kv.watch", key=b64(self.key), start_revision=revision + 1)
        lost = asyncio.create_task(self.session.lost.wait())
        try:
            async with contextlib.aclosing(_until(stream, lost)) as items:
                async for item in items:
                    for ev in item.get("events", []):
                        if ev["type"] == "DELETE":
                            raise LeadershipLost(await self._loss_reason())
                        self.mod_revision = int(ev["kv"]["mod_revision"])
                        yield unb64(ev["kv"].get("value", ""))
            raise LeadershipLost(self.session.lost_reason or "the watch on the election key ended")
        finally:
            lost.cancel()

    async def lost(self) -> str:
        """Wait until this client stops leading (values proclaimed meanwhile are ignored); why."""
        try:
            async with contextlib.aclosing(self.changes()) as changes:
                async for _ in changes:
                    pass
        except LeadershipLost as exc:
            return str(exc)
        return "leadership ended"  # pragma: no cover - changes() always raises when it ends

    async def _loss_reason(self) -> str:
        if self.session.lost.is_set():
            return self.session.lost_reason
        try:
            ttl = await self.client.call("lease.ttl", id=self.session.lease_id)
            alive = int(ttl["ttl"]) >= 0
        except ControlError as exc:
            if exc.code != "lease-not-found":  # cannot tell which (no leader just now...)
                return "the election key was deleted (resigned, or its lease ended)"
            alive = False
        if not alive:
            return f"lease {self.session.lease_id:x} expired"
        return "resigned by another client"


def election_key(name: str, key: str) -> bytes:
    """A candidate's key in election ``name``: ``key`` as given if under ``NAME/``, else
    ``NAME/key`` (so the lease id in hex is enough)."""
    prefix = name.rstrip("/") + "/"
    return (key if key.startswith(prefix) else prefix + key).encode()


def _leader_guard(leader: Leader) -> list[dict[str, Any]]:
    """Still the same key: a leadership change deletes it, and a new key has a new revision."""
    return [
        {
            "key": b64(leader.key),
            "target": "create",
            "result": "=",
            "value": leader.create_revision,
        }
    ]


async def proclaim_as(client: ControlClient, leader: Leader, value: bytes) -> Leader:
    """etcd's Proclaim with a LeaderKey: set ``leader``'s value in one guarded txn, keeping its
    lease, from any client; :class:`LeadershipChanged` if that key no longer leads."""
    result = await client.call(
        "kv.txn",
        compare=_leader_guard(leader),
        success=[{"op": "put", "key": b64(leader.key), "value": b64(value), "ignore_lease": True}],
        failure=[],
    )
    if not result["succeeded"]:
        raise LeadershipChanged("leadership changed; not proclaimed")
    return Leader(leader.key, value, leader.create_revision, leader.lease)


async def resign_as(client: ControlClient, leader: Leader) -> None:
    """etcd's Resign with a LeaderKey: delete ``leader``'s key in one guarded txn, from any
    client (the next candidate then leads); :class:`LeadershipChanged` if it no longer leads."""
    result = await client.call(
        "kv.txn",
        compare=_leader_guard(leader),
        success=[{"op": "delete_range", "key": b64(leader.key)}],
        failure=[],
    )
    if not result["succeeded"]:
        raise LeadershipChanged("leadership changed; not resigned")


async def current_leader(client: ControlClient, name: str) -> Leader | None:
    prefix = name.rstrip("/").encode() + b"/"
    got = await client.call(
        "kv.get",
        key=b64(prefix),
        range_end=b64(prefix_end(prefix)),
        sort_order="ascend",
        sort_target="create",
        limit=1,
    )
    if not got["kvs"]:
        return None
    kv = got["kvs"][0]
    return Leader(
        unb64(kv["key"]), unb64(kv["value"]), int(kv["create_revision"]), int(kv.get("lease", 0))
    )


async def observe(client: ControlClient, name: str) -> AsyncIterator[Leader | None]:
    """Yield the leader now and after every change (None while there is none)."""
    prefix = name.rstrip("/").encode() + b"/"
    got = await client.call("kv.get", key=b64(prefix), count_only=True)
    revision = int(got["header"]["revision"])
    last = await current_leader(client, name)
    yield last
    stream = client.stream(
        "kv.watch", key=b64(prefix), range_end=b64(prefix_end(prefix)), start_revision=revision + 1
    )
    async for item in stream:
        if not item.get("events"):
            continue
        leader = await current_leader(client, name)
        if leader != last:
            yield leader
            last = leader


async def _until(stream: AsyncIterator[Any], stop: asyncio.Task[Any]) -> AsyncGenerator[Any, None]:
    """Items from ``stream`` until ``stop`` finishes (then the stream is closed)."""
    iterator = stream.__aiter__()
    try:
        while True:
            nxt = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                return
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class Lock:
    """A mutex: an election whose leader holds the lock."""

    def __init__(self, session: Session, name: str) -> None:
        self.election = Election(session, name)

    async def acquire(self) -> None:
        await self.election.campaign(b"")

    async def try_acquire(self) -> bool:
        """Take the lock only if nobody holds it or waits for it."""
        e = self.election
        result = await e.client.call(
            "kv.txn",
            compare=[{"key": b64(e.key), "target": "create", "result": "=", "value": 0}],
            success=[{"op": "put", "key": b64(e.key), "value": "", "lease": e.session.lease_id}],
            failure=[{"op": "range", "key": b64(e.key)}],
        )
        e.create_revision = int(
            result["header"]["revision"]
            if result["succeeded"]
            else result["responses"][0]["kvs"][0]["create_revision"]
        )
        holder = await current_leader(e.client, e.prefix.decode())
        if holder is not None and holder.key == e.key:
            return True
        await e.resign()
        return False

    async def release(self) -> None:
        await self.election.resign()

    @property
    def key(self) -> bytes:
        return self.election.key

    async def lost(self) -> str:
        """Wait until the lock is lost (key deleted or session gone); say why."""
        e = self.election
        got = await e.client.call("kv.get", key=b64(e.key))
        if not got["kvs"]:
            return "the lock key was deleted"
        revision = int(got["header"]["revision"])
        stream = e.client.stream("kv.watch", key=b64(e.key), start_revision=revision + 1)
        lost = asyncio.create_task(e.session.lost.wait())
        try:
            async for item in _until(stream, lost):
                if any(ev["type"] == "DELETE" for ev in item.get("events", [])):
                    return "the lock key was deleted"
            return e.session.lost_reason or "the session ended"
        finally:
            lost.cancel()
