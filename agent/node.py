"""The asyncio runtime around the pure Raft core: ticks, persistence, peers, state machine.

One loop owns the :class:`~agent.raft.core.RaftNode`. Everything that touches it — peer
messages, ticks, proposals, reads, membership changes — is queued and handed to the core at the
top of the loop, never while a Ready is being carried out. Each turn of the loop then does what
Raft requires, in order: persist (one fsync, off the event loop so peer I/O keeps flowing and
more work batches into the next turn) → send → apply → advance.

A member that is removed from the membership learns it, stops taking part and exits (as etcd's
members do), instead of lingering as a follower that tells clients there is no leader: either it
applies the change that removes it, or a member refuses its messages with a ``removed`` notice
(a :class:`PeerCall` of method ``removed``; see :meth:`Agent._from_removed`). Which ids were
removed is derived from committed CONF_CHANGE entries and kept in the runtime's snapshot header,
so it survives compaction and restarts; a brand-new id (a learner joining) is never in it. The
removed machine records its removal in ``<data_dir>/REMOVED``: restarted, it refuses to start,
unless its config says it joins (``join = true``: ``shoal cluster join`` adds it again), in which
case it waits, reporting role ``removed``, until the leader adds it back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent import __version__
from agent.config import AgentConfig, format_address, parse_address
from agent.errors import (
    BAD_REQUEST,
    BUSY,
    INTERNAL,
    NO_LEADER,
    NOT_LEADER,
    PROPOSAL_LOST,
    REMOVED,
    STOPPING,
    TIMEOUT,
    AgentError,
)
from agent.raft.core import (
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RaftNode,
    Ready,
    Role,
    SnapshotConfChanged,
)
from agent.raft.messages import (
    AppendRequest,
    Heartbeat,
    Message,
    PeerCall,
    PeerCallResponse,
    SnapshotRequest,
)
from agent.raft.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
)
from agent.snapshotting import SnapshotJob
from agent.statemachine import StateMachine
from agent.storage import DiskStorage
from agent.storage.fileio import FILE_MODE, fsync_dir, write_all
from agent.tls import client_context, server_context
from agent.transport import PeerTransport

T = TypeVar("T")
log = logging.getLogger("shoal.raft")

_SNAP_HEADER = struct.Struct(">I")
_LEADER_EARLY = (AppendRequest, Heartbeat, SnapshotRequest)
_LEADER_TRAFFIC = _LEADER_EARLY
"""What a removed node still takes in: only a leader adding it back would send it these."""

REMOVED_NOTICE = "removed"
"""Peer method a member calls on a node it no longer counts as a member (see _tell_removed)."""
REMOVED_MARKER = "REMOVED"
"""File in the data directory recording that this machine was removed (see _enter_removed)."""
NOTICE_INTERVAL = 1.0
"""Seconds between two notices to the same removed node (it may send a message per tick)."""
NOTICE_LINK_SECONDS = 10.0
"""How long a link dialed only to tell a removed node is kept after its last message."""


@dataclass
class _Waiter:
    term: int
    future: asyncio.Future[Any]


@dataclass(frozen=True)
class RemovedMember:
    """A node that was a member until the committed CONF_CHANGE at ``index`` removed it (and
    has not been added back since); ``address`` is where it listened, to tell it so."""

    index: int
    address: str | None = None


@dataclass(frozen=True)
class RuntimeSnapshot:
    """What :func:`decode_snapshot` finds: the header's address book and removed members, and
    the state machine's bytes."""

    peers: dict[str, str]
    removed: dict[str, RemovedMember]
    machine: bytes


@dataclass(frozen=True)
class Removal:
    """This machine was removed from the cluster by the change at ``index`` (0: unknown)."""

    index: int
    learned: str
    """How it learned: applied the change itself, or which member refused its messages."""
    at: float


def encode_snapshot(
    peers: dict[str, str],
    machine_data: bytes,
    removed: dict[str, RemovedMember] | None = None,
) -> bytes:
    """The runtime's snapshot: a header (the member address book and the members removed so
    far), then the state machine's own bytes.

    Both ride in the snapshot because they are known only from CONF_CHANGE entries, which
    compaction removes from the log: the address of a member added at runtime, and which ids
    were members once and were removed (a member refuses such a node's messages with a notice).
    """
    head: dict[str, Any] = {"v": 1, "peers": peers}
    if removed:
        head["removed"] = {
            node: {"index": gone.index, "address": gone.address}
            for node, gone in sorted(removed.items())
        }
    header = json.dumps(head, separators=(",", ":")).encode()
    return _SNAP_HEADER.pack(len(header)) + header + machine_data


def decode_snapshot(data: bytes) -> RuntimeSnapshot:
    """Read what :func:`encode_snapshot` wrote (a header without ``removed`` has none)."""
    if len(data) < _SNAP_HEADER.size:
        return RuntimeSnapshot({}, {}, b"")
    (size,) = _SNAP_HEADER.unpack_from(data)
    header = json.loads(data[_SNAP_HEADER.size : _SNAP_HEADER.size + size])
    removed: dict[str, RemovedMember] = {}
    for node, gone in dict(header.get("removed", {})).items():
        address = gone.get("address")
        removed[str(node)] = RemovedMember(
            int(gone["index"]), str(address) if address is not None else None
        )
    return RuntimeSnapshot(dict(header.get("peers", {})), removed, data[_SNAP_HEADER.size + size :])


def bootstrap_entries(peers: dict[str, tuple[str, int]]) -> list[Entry]:
    """The identical first entries of every founding member: one voter per CONF_CHANGE.

    Putting the initial membership in the log (as etcd does) means a member that joins later
    learns the whole membership, addresses included, by replaying the log like anyone else.
    """
    return [
        Entry(
            term=1,
            index=i,
            kind=EntryKind.CONF_CHANGE,
            data=ConfChange(ConfChangeOp.PROMOTE, node, {"address": format_address(addr)}).encode(),
        )
        for i, (node, addr) in enumerate(sorted(peers.items()), start=1)
    ]


class Agent:
    """One cluster member: Raft core + WAL + peer transport + state machine."""

    def __init__(self, config: AgentConfig, machine: StateMachine) -> None:
        self.config = config
        self.machine = machine
        self.started_at = time.time()
        self.raft: RaftNode | None = None
        self.storage: DiskStorage | None = None
        self.transport: PeerTransport | None = None
        self.addresses: dict[str, str] = {
            node: format_address(addr) for node, addr in config.peers.items()
        }
        self.stopped = asyncio.Event()
        self.stop_reason = ""
        self._wake = asyncio.Event()
        self._inbox: list[Message] = []
        self._ticks = 0
        self._calls: list[tuple[Callable[[RaftNode], Any], asyncio.Future[Any]]] = []
        self._proposals: dict[int, _Waiter] = {}
        self._reads: dict[str, asyncio.Future[int]] = {}
        self._read_waits: list[tuple[int, asyncio.Future[int]]] = []
        self._read_ids = itertools.count(1)
        self._peer_calls: dict[str, asyncio.Future[Any]] = {}
        self.peer_methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "propose": self._peer_propose
        }
        self._recent_results: dict[int, tuple[int, Any]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._snapshot_index = 0
        self._snapshot_job: SnapshotJob | None = None
        self._snapshot_waiters: list[asyncio.Future[int]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_soft: tuple[Role, str | None, int] | None = None
        self._durable_term_vote: tuple[int, str | None] = (0, None)
        self.leadership_listeners: list[Callable[[bool], None]] = []
        """Called with True when this node becomes leader and False when it stops leading."""
        self._leading = False
        # Removal (see the module docstring).
        self.removed_members: dict[str, RemovedMember] = {}
        """Nodes that were members and were removed by a committed change, not added back."""
        self._removed_through = 0
        """The index through which removed_members reflects the committed CONF_CHANGEs."""
        self._member_at = 0
        """The latest index at which a committed change (or a snapshot) shows this node a member."""
        self.removal: Removal | None = None
        """Set once this node learns it was removed: it then serves nothing but status."""
        self._awaiting_readd = False
        """Started removed, as a joiner: wait to be added back instead of exiting."""
        self.removal_grace = max(2.0, 2 * config.election_ticks * config.tick_ms / 1000)
        """Seconds a removed agent keeps answering (role removed, error removed) before exiting."""
        self._exit_handle: asyncio.TimerHandle | None = None
        self._marker_task: asyncio.Future[None] | None = None
        self._notice_links: dict[str, tuple[str, float]] = {}
        """Removed nodes dialed only to tell them so: address and until when (loop time)."""
        self._noticed: dict[str, float] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
        storage, rec = await asyncio.to_thread(DiskStorage.open, cfg.data_dir)
        self.storage = storage
        self._durable_term_vote = (rec.hard_state.term, rec.hard_state.vote)
        if rec.torn_tail:
            log.warning("write-ahead log had a torn tail (cut off): %s", rec.torn_tail)
        hard_state, entries = rec.hard_state, rec.entries
        fresh = rec.snapshot is None and not entries and hard_state == HardState()
        if fresh and not cfg.join:
            entries = bootstrap_entries(cfg.peers)
            hard_state = HardState(term=1, vote=None, commit=len(entries))
            await asyncio.to_thread(storage.save, hard_state, entries)
            self._durable_term_vote = (hard_state.term, hard_state.vote)
            log.info("bootstrapped a new cluster with members %s", ", ".join(sorted(cfg.peers)))
        if rec.snapshot is not None:
            contents = decode_snapshot(rec.snapshot.data)
            self.addresses.update(contents.peers)
            self.removed_members = dict(contents.removed)
            self._removed_through = rec.snapshot.meta.index
            if cfg.node_id in rec.snapshot.meta.conf.members:
                self._member_at = rec.snapshot.meta.index
            self.machine.restore(contents.machine)
            self._snapshot_index = rec.snapshot.meta.index
        for entry in entries:
            if entry.kind is EntryKind.CONF_CHANGE:
                # Removals count once committed: an uncommitted change may yet be replaced.
                self._note_conf_change(entry, committed=entry.index <= hard_state.commit)
        await self._check_removed_at_start()
        self.raft = RaftNode(
            RaftConfig(
                id=cfg.node_id,
                election_ticks=cfg.election_ticks,
                heartbeat_ticks=cfg.heartbeat_ticks,
                pre_vote=cfg.pre_vote,
                check_quorum=cfg.check_quorum,
                lease_reads=cfg.lease_reads,
            ),
            random.Random(),
            conf=ConfState(),
            hard_state=hard_state,
            snapshot=rec.snapshot,
            entries=entries,
        )
        self.transport = PeerTransport(
            cfg.node_id,
            cfg.listen,
            self._peer_addresses(),
            server_ssl=server_context(str(cfg.tls.ca), str(cfg.tls.cert), str(cfg.tls.key)),
            client_ssl=client_context(str(cfg.tls.ca), str(cfg.tls.cert), str(cfg.tls.key)),
            on_message=self._on_message,
            on_peer_down=self._on_peer_down,
        )
        await self.transport.start()
        log.info(
            "agent %s (version %s) listening for peers on %s; term %d, %d entries after index %d",
            cfg.node_id,
            __version__,
            format_address(cfg.listen),
            hard_state.term,
            len(entries),
            self._snapshot_index,
        )
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="raft-ticks"),
            asyncio.create_task(self._run_loop(), name="raft-loop"),
        ]
        if fresh and not cfg.join and cfg.node_id == min(cfg.peers):
            self._tasks.append(asyncio.create_task(self._first_campaign(), name="first-vote"))

    async def _check_removed_at_start(self) -> None:
        """Refuse to start a machine that was removed, unless its config says it joins anew.

        Removal is known from the log (a committed change removed this node and none added it
        back) or from the REMOVED file, which also covers a removal learned from a member's
        notice. A marker older than a later re-add in the log is stale and goes.
        """
        cfg = self.config
        me = cfg.node_id
        gone = self.removed_members.get(me)
        marker = await asyncio.to_thread(self._read_marker)
        if marker is not None and gone is None and 0 < marker.index < self._member_at:
            log.info(
                "this machine was added back (index %d) after the removal recorded in %s "
                "(index %d); forgetting it",
                self._member_at,
                self._marker_path(),
                marker.index,
            )
            await asyncio.to_thread(self._delete_marker)
            marker = None
        if gone is None and marker is None:
            return
        removal = marker or Removal(gone.index if gone else 0, "its own log", time.time())
        if gone is not None and gone.index > removal.index:
            removal = Removal(gone.index, "its own log", removal.at)
        if not cfg.join:
            self.stop_reason = "removed from the cluster"
            log.error(
                "refusing to start: this machine was removed from the cluster by the change at "
                "index %d (learned from %s); its data in %s is kept",
                removal.index,
                removal.learned,
                cfg.data_dir,
            )
            raise AgentError(REMOVED, self.removed_message())
        self.removal = removal
        self._awaiting_readd = True
        if marker is None:
            await asyncio.to_thread(self._write_marker, removal)
        log.warning(
            "this machine was removed from the cluster by the change at index %d; its config "
            "says join = true, so it starts and waits for the leader to add it again "
            "(until then it serves only status)",
            removal.index,
        )

    async def _first_campaign(self) -> None:
        """A brand-new cluster need not sit out a whole election timeout before it can serve:
        its first member (by id) campaigns as soon as it reaches a majority. Pre-vote makes
        this harmless if another node got there first."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.config.election_ticks * self.config.tick_ms / 1000
        others = [p for p in self.config.peers if p != self.config.node_id]
        while loop.time() < deadline:
            reachable = sum(self.transport.connected(p) for p in others) + 1
            if reachable * 2 > len(self.config.peers):
                await self.call(lambda raft: raft.campaign() if raft.leader is None else None)
                return
            await asyncio.sleep(0.02)

    async def stop(self, reason: str = "stopping") -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        if self._exit_handle is not None:
            self._exit_handle.cancel()
            self._exit_handle = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._snapshot_job is not None:
            self._snapshot_job.task.cancel()
        if self.transport is not None:
            await self.transport.stop()
        if self.storage is not None:
            self.storage.close()
        self._fail_all(AgentError(STOPPING, f"agent {self.config.node_id} is stopping"))
        self.stopped.set()

    # --- inputs from the transport and the clock --------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, PeerCall) and msg.method == REMOVED_NOTICE:
            self._spawn(self._on_removed_notice(msg))
            return
        if self._from_removed(msg):
            return
        if isinstance(msg, PeerCall):
            self._spawn(self._serve_peer_call(msg))
            return
        if isinstance(msg, PeerCallResponse):
            fut = self._peer_calls.pop(msg.ctx, None)
            if fut is not None and not fut.done():
                if msg.error:
                    fut.set_exception(AgentError(msg.code or INTERNAL, msg.error))
                else:
                    try:
                        fut.set_result(json.loads(msg.body))
                    except ValueError:
                        fut.set_exception(AgentError(INTERNAL, "malformed answer from a peer"))
            return
        self._inbox.append(msg)
        self._wake.set()

    async def _serve_peer_call(self, msg: PeerCall) -> None:
        """Serve another agent's request (it authenticated with the cluster's certificate)."""
        assert self.transport is not None
        reply = PeerCallResponse(0, self.config.node_id, msg.src, msg.ctx)
        handler = self.peer_methods.get(msg.method)
        try:
            self.check_removed()
            if handler is None:
                raise AgentError(BAD_REQUEST, f"unknown peer method {msg.method!r}")
            try:
                params = json.loads(msg.body)
            except ValueError:
                raise AgentError(BAD_REQUEST, "peer call body is not JSON")
            result = await handler(params)
            reply = dataclasses.replace(reply, body=json.dumps(result).encode())
        except AgentError as exc:
            reply = dataclasses.replace(reply, error=exc.message, code=exc.code)
        except Exception as exc:
            log.exception("peer call %s from %s failed", msg.method, msg.src)
            reply = dataclasses.replace(reply, error=f"internal error: {exc}", code=INTERNAL)
        self.transport.send([reply])

    async def call_peer(
        self, peer: str, method: str, params: dict[str, Any], timeout: float
    ) -> Any:
        """Ask another member to run ``method``; used to reach the leader from a follower."""
        assert self.transport is not None
        ctx = f"{self.config.node_id}-c{next(self._read_ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._peer_calls[ctx] = fut
        body = json.dumps(params, separators=(",", ":")).encode()
        self.transport.send([PeerCall(0, self.config.node_id, peer, ctx, method, body)])
        try:
            async with asyncio.timeout(timeout):  # not wait_for: 3.11's can lose a cancel
                return await fut
        except TimeoutError:
            raise AgentError(
                TIMEOUT, f"{peer} did not answer in time ({method}); the outcome is unknown"
            )
        finally:
            self._peer_calls.pop(ctx, None)

    async def call_leader(
        self, method: str, params: dict[str, Any], timeout: float | None = None
    ) -> Any:
        """Run a peer method on the leader: locally when this node leads, else over the link."""
        self.check_removed()
        raft = self.raft
        assert raft is not None
        handler = self.peer_methods[method]
        leader = raft.leader
        if leader is None:
            raise self._not_leader(None)
        if leader == self.config.node_id:
            return await handler(params)
        return await self.call_peer(leader, method, params, self._timeout(timeout))

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- removal ---------------------------------------------------------------------------

    def removed_message(self) -> str:
        """What a removed machine answers every request with (and refuses to start with)."""
        cluster = self.config.cluster_name or self.config.cluster_id
        where = f"cluster {cluster}" if cluster else "its cluster"
        return f"this machine was removed from {where}; `shoal cluster join` adds it again"

    def check_removed(self) -> None:
        """Raise the ``removed`` error once this machine knows it is no longer a member."""
        if self.removal is not None:
            raise AgentError(REMOVED, self.removed_message())

    def _from_removed(self, msg: Message) -> bool:
        """Refuse a message from a node removed from the membership this node applied (only an
        id that was a member once: a learner being added is not in ``removed_members``), and
        tell the sender. True when the message was refused."""
        gone = self.removed_members.get(msg.src)
        raft = self.raft
        if gone is None or raft is None or self.removal is not None:
            return False
        if msg.src in raft.conf.members:  # cannot happen: both follow the applied changes
            return False
        self._tell_removed(msg, gone)
        return True

    def _tell_removed(self, msg: Message, gone: RemovedMember) -> None:
        """Answer a removed node: fail its peer call with ``removed`` and, at most once a
        second, send it a ``removed`` notice. The transport writes only on links it dialed, so
        one is dialed to the removed node's last address for a few seconds."""
        assert self.transport is not None
        peer, me = msg.src, self.config.node_id
        loop = asyncio.get_running_loop()
        now = loop.time()
        first = peer not in self._noticed
        if gone.address is None:
            if first:
                self._noticed[peer] = now
                log.warning(
                    "%s was removed from the cluster (index %d) but still sends messages; its "
                    "address is unknown, so it cannot be told",
                    peer,
                    gone.index,
                )
            return
        linked = peer in self._notice_links
        self._notice_links[peer] = (gone.address, now + NOTICE_LINK_SECONDS)
        if not linked:
            self.transport.set_peers(self._peer_addresses())
            loop.call_later(NOTICE_LINK_SECONDS, self._drop_notice_link, peer)
        out: list[Message] = []
        if isinstance(msg, PeerCall):
            out.append(
                PeerCallResponse(0, me, peer, msg.ctx, error=self.removed_message(), code=REMOVED)
            )
        if first or now - self._noticed[peer] >= NOTICE_INTERVAL:
            if first:
                log.info(
                    "%s was removed from the cluster by the change at index %d but still sends "
                    "messages; telling it so",
                    peer,
                    gone.index,
                )
            self._noticed[peer] = now
            body = {
                "index": gone.index,
                "cluster_id": self.config.cluster_id,
                "cluster_name": self.config.cluster_name,
            }
            out.append(
                PeerCall(
                    0,
                    me,
                    peer,
                    f"{me}-r{next(self._read_ids)}",
                    REMOVED_NOTICE,
                    json.dumps(body, separators=(",", ":")).encode(),
                )
            )
        self.transport.send(out)

    def _drop_notice_link(self, peer: str) -> None:
        entry = self._notice_links.get(peer)
        if entry is None:
            return
        delay = entry[1] - asyncio.get_running_loop().time()
        if delay > 0:  # it kept talking: keep the link a while longer
            asyncio.get_running_loop().call_later(delay, self._drop_notice_link, peer)
            return
        del self._notice_links[peer]
        if self.transport is not None:
            self.transport.set_peers(self._peer_addresses())

    async def _on_removed_notice(self, msg: PeerCall) -> None:
        """A member says this node was removed at some index: believe it unless this node
        knows of its own re-addition after that index (a lagging member's stale word)."""
        if self.removal is not None:
            return
        try:
            index = int(json.loads(msg.body)["index"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed removal notice from %s", msg.src)
            return
        me = self.config.node_id

        def readded(raft: RaftNode) -> bool:
            if self._member_at > index or (raft.applied >= index and me in raft.conf.members):
                return True
            for entry in raft.log_entries(index + 1, raft.last_index + 1):
                if entry.kind is EntryKind.CONF_CHANGE:
                    with contextlib.suppress(ValueError, KeyError):
                        cc = ConfChange.decode(entry.data)
                        if cc.node == me and cc.op is not ConfChangeOp.REMOVE:
                            return True
            return False

        try:
            if await self.call(readded):
                log.info(
                    "ignoring %s's notice that this machine was removed at index %d: "
                    "it was added back later",
                    msg.src,
                    index,
                )
                return
        except AgentError:  # stopping
            return
        self._enter_removed(index, f"{msg.src}, which refused its messages")

    def _enter_removed(self, index: int, learned: str) -> None:
        """Stop taking part: no ticks (no campaigns), every request answers ``removed``, the
        removal is recorded on disk, and the agent exits after a short grace."""
        if self.removal is not None:
            return
        removal = Removal(index, learned, time.time())
        self.removal = removal
        error = AgentError(REMOVED, self.removed_message())
        self._fail_all(error)
        for fut in list(self._peer_calls.values()):
            if not fut.done():
                fut.set_exception(error)
        self._marker_task = self._spawn(asyncio.to_thread(self._write_marker, removal))
        exiting = not self._awaiting_readd
        log.warning(
            "%s: the membership change at index %d removed it (learned from %s); it no longer "
            "takes part%s; its data in %s is kept",
            self.removed_message(),
            index,
            learned,
            f" and stops in {self.removal_grace:g}s" if exiting else "",
            self.config.data_dir,
        )
        if exiting:
            self._exit_handle = asyncio.get_running_loop().call_later(
                self.removal_grace, self._exit_removed
            )

    def _exit_removed(self) -> None:
        self._exit_handle = None
        if self.removal is not None:
            self._spawn(self._stop_removed())

    async def _stop_removed(self) -> None:
        if self._marker_task is not None:
            with contextlib.suppress(Exception):
                await self._marker_task
        await self.stop("removed from the cluster")

    def _readded(self, index: int) -> None:
        """A committed change added this node back after its removal: take part again."""
        if self.removal is None or index <= self.removal.index:
            return
        log.info("added to the cluster again by the change at index %d; taking part", index)
        self.removal = None
        self._awaiting_readd = False
        if self._exit_handle is not None:
            self._exit_handle.cancel()
            self._exit_handle = None
        self._marker_task = self._spawn(asyncio.to_thread(self._delete_marker))

    def _marker_path(self) -> Path:
        return self.config.data_dir / REMOVED_MARKER

    def _read_marker(self) -> Removal | None:
        path = self._marker_path()
        try:
            raw = json.loads(path.read_text())
            return Removal(int(raw["index"]), str(raw.get("learned", "")), float(raw["at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); taking it as a removal", path, exc)
            return Removal(0, f"an unreadable {path.name} file", time.time())

    def _write_marker(self, removal: Removal) -> None:
        """Record the removal durably (temp file, fsync, rename, fsync the directory)."""
        cfg = self.config
        data = json.dumps(
            {
                "node_id": cfg.node_id,
                "cluster_id": cfg.cluster_id,
                "cluster_name": cfg.cluster_name,
                "index": removal.index,
                "learned": removal.learned,
                "at": removal.at,
                "message": self.removed_message(),
            },
            indent=1,
        ).encode()
        path = self._marker_path()
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def _delete_marker(self) -> None:
        path = self._marker_path()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)

    # --- more inputs ---------------------------------------------------------------------------

    def _on_peer_down(self, peer: str) -> None:
        self._calls.append((lambda raft: raft.report_unreachable(peer), _done_future()))
        self._wake.set()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.tick_ms / 1000
        deadline = loop.time()
        while True:
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if loop.time() - deadline > 5 * interval:  # we were paused (SIGSTOP): do not burst
                deadline = loop.time()
            self._ticks += 1
            self._wake.set()

    # --- the loop ----------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        raft = self.raft
        assert raft is not None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._feed(raft)
                while raft.has_ready():
                    await self._handle_ready(raft, raft.ready())
                    self._feed(raft)
                if raft.is_removed and self.removal is None:
                    gone = self.removed_members.get(self.config.node_id)
                    self._enter_removed(
                        gone.index if gone is not None else raft.applied,
                        "the membership change it applied",
                    )
                if self.removal is None:
                    await self._maybe_compact(raft)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the Raft loop failed; stopping the agent")
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.ensure_future(self.stop("internal error in the Raft loop"))
            )

    def _feed(self, raft: RaftNode) -> None:
        """Hand queued inputs to the core (never while a Ready is out)."""
        removed = self.removal is not None
        inbox, self._inbox = self._inbox, []
        for msg in inbox:
            if removed and not isinstance(msg, _LEADER_TRAFFIC):
                continue  # only a leader adding it back has anything to say to it
            raft.step(msg)
        ticks, self._ticks = self._ticks, 0
        if not removed:  # a removed node never campaigns, whatever its log says
            for _ in range(ticks):
                raft.tick()
        calls, self._calls = self._calls, []
        for fn, fut in calls:
            if fut.done():
                continue
            try:
                fut.set_result(fn(raft))
            except Exception as exc:  # delivered to the caller, not raised here
                fut.set_exception(exc)

    async def _handle_ready(self, raft: RaftNode, rd: Ready) -> None:
        assert self.storage is not None and self.transport is not None
        early, late = self._split_messages(raft, rd)
        if early:
            self.transport.send(early)
        hs = rd.hard_state
        if rd.entries or rd.snapshot is not None or (
            hs is not None and (hs.term, hs.vote) != self._durable_term_vote
        ):
            await asyncio.to_thread(self.storage.save, hs, rd.entries, rd.snapshot)
            if hs is not None:
                self._durable_term_vote = (hs.term, hs.vote)
        elif hs is not None:  # only the commit index moved: written, not synced (as etcd)
            self.storage.save(hs, [], None, sync=False)
        if late:
            self.transport.send(late)
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        for entry in rd.committed:
            self._apply(entry)
        last_applied = rd.committed[-1].index if rd.committed else None
        raft.advance(rd)
        applied = last_applied if last_applied is not None else raft.applied
        for rs in rd.read_states:
            fut = self._reads.pop(rs.ctx, None)
            if fut is not None and not fut.done():
                self._read_waits.append((rs.index, fut))
        self._release_waits(applied)
        if rd.soft_state is not None:
            self._log_soft_state(rd)

    def _split_messages(self, raft: RaftNode, rd: Ready) -> tuple[list[Message], list[Message]]:
        """Which messages may leave before this Ready is on disk.

        A leader may replicate entries while it writes them itself (Raft thesis §10.2.1): its
        own copy counts toward the commit only once persisted (the core sees to that), and the
        term on its messages is already durable. Everything else — votes, acknowledgements, and
        anything sent while term or vote changes — waits for the fsync.
        """
        if raft.role is not Role.LEADER or not rd.messages:
            return [], rd.messages
        hs = rd.hard_state
        if hs is not None and (hs.term, hs.vote) != self._durable_term_vote:
            return [], rd.messages
        early: list[Message] = [m for m in rd.messages if isinstance(m, _LEADER_EARLY)]
        if len(early) == len(rd.messages):
            return early, []
        return early, [m for m in rd.messages if not isinstance(m, _LEADER_EARLY)]

    def _apply(self, entry: Entry) -> None:
        result: Any = None
        if entry.kind is EntryKind.CONF_CHANGE:
            self._note_conf_change(entry)
        elif entry.data:
            result = self.machine.apply(entry.index, entry.data)
        self._recent_results[entry.index] = (entry.term, result)
        if len(self._recent_results) > 4096:
            for old in list(self._recent_results)[:1024]:
                del self._recent_results[old]
        waiter = self._proposals.pop(entry.index, None)
        if waiter is not None and not waiter.future.done():
            if waiter.term == entry.term:
                waiter.future.set_result(result)
            else:
                waiter.future.set_exception(
                    AgentError(
                        PROPOSAL_LOST,
                        f"the proposal at index {entry.index} was replaced after a leader change; "
                        "it was not applied — retry it",
                    )
                )

    def _install_snapshot(self, snap: Snapshot) -> None:
        contents = decode_snapshot(snap.data)
        own = self.addresses.get(self.config.node_id)
        self.addresses = dict(contents.peers)
        if own is not None:
            self.addresses.setdefault(self.config.node_id, own)
        self.removed_members = dict(contents.removed)
        self._removed_through = snap.meta.index
        self.machine.restore(contents.machine)
        self._snapshot_index = snap.meta.index
        if self.config.node_id in snap.meta.conf.members:
            self._member_at = max(self._member_at, snap.meta.index)
            self._readded(snap.meta.index)
        if self.transport is not None:
            self.transport.set_peers(self._peer_addresses())
        for index in [i for i in self._proposals if i <= snap.meta.index]:
            waiter = self._proposals.pop(index)
            if not waiter.future.done():
                waiter.future.set_exception(
                    AgentError(
                        PROPOSAL_LOST,
                        f"index {index} arrived as part of a snapshot; its outcome is unknown",
                    )
                )
        log.info("installed a snapshot at index %d from the leader", snap.meta.index)

    def _note_conf_change(self, entry: Entry, committed: bool = True) -> None:
        """Keep the address book in step with the membership (addresses ride in the entry),
        and, from committed changes, the set of removed members."""
        try:
            cc = ConfChange.decode(entry.data)
        except (ValueError, KeyError):
            log.error("ignoring a malformed membership change at index %d", entry.index)
            return
        if committed and entry.index > self._removed_through:
            self._removed_through = entry.index
            if cc.op is ConfChangeOp.REMOVE:
                self.removed_members[cc.node] = RemovedMember(
                    entry.index, self.addresses.get(cc.node)
                )
            else:
                self.removed_members.pop(cc.node, None)
                if cc.node == self.config.node_id:
                    self._member_at = entry.index
                    self._readded(entry.index)
        address = cc.context.get("address")
        if cc.op is ConfChangeOp.REMOVE and cc.node != self.config.node_id:
            self.addresses.pop(cc.node, None)
        elif address:
            self.addresses[cc.node] = address
        if self.transport is not None:
            self.transport.set_peers(self._peer_addresses())

    def _peer_addresses(self) -> dict[str, tuple[str, int]]:
        peers = {
            node: parse_address(addr, f"address of {node}")
            for node, addr in self.addresses.items()
            if node != self.config.node_id
        }
        for node, (addr, _) in self._notice_links.items():
            if node not in peers and node != self.config.node_id:
                with contextlib.suppress(ValueError):
                    peers[node] = parse_address(addr, f"address of {node}")
        return peers

    def _release_waits(self, applied: int) -> None:
        still: list[tuple[int, asyncio.Future[int]]] = []
        for index, fut in self._read_waits:
            if fut.done():
                continue
            if index <= applied:
                fut.set_result(index)
            else:
                still.append((index, fut))
        self._read_waits = still

    def _log_soft_state(self, rd: Ready) -> None:
        soft = rd.soft_state
        assert soft is not None
        key = (soft.role, soft.leader, soft.term)
        if key == self._last_soft:
            return
        self._last_soft = key
        leading = soft.role is Role.LEADER
        if leading != self._leading:
            self._leading = leading
            for listener in self.leadership_listeners:
                listener(leading)
        if soft.role is Role.LEADER:
            log.info("became leader at term %d", soft.term)
        elif soft.leader:
            log.info("following %s at term %d (%s)", soft.leader, soft.term, soft.role.value)
        else:
            log.info("no leader at term %d (%s)", soft.term, soft.role.value)

    async def _maybe_compact(self, raft: RaftNode) -> None:
        """Start a snapshot when enough entries were applied (or one was asked for), and
        finish the one under way once its encoding is done; see agent/snapshotting.py.

        Called between Readies only: a snapshot is captured exactly at the applied index, and
        finished (saved, then the log compacted) while no Ready is out. At most one is under
        way at a time.
        """
        job = self._snapshot_job
        if job is not None:
            if job.task.done():
                self._snapshot_job = None
                await self._compact(raft, job)
            return
        due = raft.applied - self._snapshot_index >= self.config.snapshot_entries
        if raft.applied > self._snapshot_index and (due or self._snapshot_waiters):
            # the header alone: the machine's bytes follow it as they are
            header = encode_snapshot(dict(self.addresses), b"", dict(self.removed_members))
            self._snapshot_job = SnapshotJob(raft.applied, self.machine, header, self._wake.set)
        else:
            self._snapshot_done(self._snapshot_index)

    async def _compact(self, raft: RaftNode, job: SnapshotJob) -> None:
        """Save ``job``'s snapshot (the state at the index it was captured at), then compact
        the log through that index; the entries applied since stay in the log.

        Strictly save-then-compact: the snapshot file is written and synced (in a thread)
        before the core drops a single entry, and the WAL is cut only after that sync
        (``DiskStorage.save_snapshot``). This turn of the Raft loop stays with the snapshot
        until then (the event loop does not: the bytes are joined and written in threads), so
        nothing is sent, stored or applied meanwhile, and the core is exactly as it was when it
        described the snapshot (``create_snapshot``) when it compacts.
        """
        assert self.storage is not None
        index = job.index
        if self._snapshot_index >= index:
            log.info("dropped the snapshot taken at index %d: the leader sent a newer one", index)
            return
        data = await job.assemble()
        try:
            snap = raft.create_snapshot(index, data)
        except SnapshotConfChanged as exc:
            log.debug("dropped the snapshot taken at index %d: %s", index, exc)
            return  # the next trigger takes one afresh
        t = time.perf_counter()
        await asyncio.to_thread(self.storage.save_snapshot, snap)
        saved_s = time.perf_counter() - t
        raft.compact(index, data)
        self._snapshot_index = index
        log.info(
            "compacted the log through index %d (snapshot of %d bytes; %d entries applied "
            "after it stay in the log; saved in %.0f ms; %s)",
            index,
            len(data),
            raft.applied - index,
            saved_s * 1000,
            job.timings(),
        )
        self._snapshot_done(index)

    def _snapshot_done(self, index: int) -> None:
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(index)

    def _fail_all(self, error: AgentError) -> None:
        futures: list[asyncio.Future[Any]] = [w.future for w in self._proposals.values()]
        futures += list(self._reads.values())
        futures += [f for _, f in self._read_waits]
        futures += [f for _, f in self._calls]
        futures += self._snapshot_waiters
        for fut in futures:
            if not fut.done():
                fut.set_exception(error)
        self._proposals.clear()
        self._reads.clear()
        self._read_waits.clear()
        self._calls.clear()
        self._snapshot_waiters.clear()

    # --- operations for the control API -------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return (
            timeout
            if timeout is not None
            else 2 * self.config.election_ticks * self.config.tick_ms / 1000
        )

    async def call(self, fn: Callable[[RaftNode], T]) -> T:
        """Run ``fn(raft)`` inside the loop, where touching the core is safe."""
        if self.stopped.is_set() or not self._tasks:
            raise AgentError(STOPPING, f"agent {self.config.node_id} is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.append((fn, fut))
        self._wake.set()
        return await fut

    def _not_leader(self, leader: str | None) -> AgentError:
        if leader is None:
            return AgentError(
                NO_LEADER,
                "the cluster has no leader right now (election in progress or no quorum); retry",
            )
        return AgentError(
            NOT_LEADER,
            f"{self.config.node_id} is not the leader; send this to {leader}",
            leader=leader,
            leader_address=self.addresses.get(leader),
        )

    async def propose(self, data: bytes, timeout: float | None = None) -> tuple[int, Any]:
        """Replicate ``data``; return (index, state machine result) once applied here.

        On a follower the proposal is forwarded to the leader over the peer link; the result
        still comes from this node's own state machine when it applies the entry.
        """
        self.check_removed()
        if not data:
            raise AgentError(BAD_REQUEST, "a proposal must not be empty")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        limit = self._timeout(timeout)
        deadline = loop.time() + limit
        await self.wait_for_leader(
            min(limit, self.config.election_ticks * self.config.tick_ms / 1000)
        )

        def submit(raft: RaftNode) -> tuple[int, str | None]:
            try:
                index = raft.propose(data)
            except NotLeader as exc:
                if exc.leader is None or exc.leader == self.config.node_id:
                    raise self._not_leader(None)
                return 0, exc.leader
            except ProposalDropped as exc:
                raise AgentError(BUSY, str(exc))
            self._proposals[index] = _Waiter(raft.term, fut)
            return index, None

        index, leader = await self.call(submit)
        if leader is not None:
            answer = await self.call_peer(
                leader, "propose", {"data": base64.b64encode(data).decode()}, limit
            )
            index, term = int(answer["index"]), int(answer["term"])
            known = self._recent_results.get(index)
            if known is not None:  # applied here before the leader's answer arrived
                if known[0] != term:
                    raise AgentError(PROPOSAL_LOST, f"the proposal at index {index} was replaced")
                return index, known[1]
            self._proposals[index] = _Waiter(term, fut)
        try:
            async with asyncio.timeout(max(0.01, deadline - loop.time())):
                result = await asyncio.shield(fut)
        except TimeoutError:
            self._proposals.pop(index, None)
            raise AgentError(
                TIMEOUT,
                f"index {index} was not committed in time (lost quorum?); "
                "its outcome is unknown — check before retrying",
                index=index,
            )
        return index, result

    async def _peer_propose(self, params: dict[str, Any]) -> dict[str, int]:
        """Leader side of forwarding: append, and say where the entry went."""
        data = base64.b64decode(str(params.get("data", "")))
        if not data:
            raise AgentError(BAD_REQUEST, "empty proposal")

        def submit(raft: RaftNode) -> dict[str, int]:
            try:
                return {"index": raft.propose(data), "term": raft.term}
            except NotLeader as exc:
                raise self._not_leader(exc.leader)
            except ProposalDropped as exc:
                raise AgentError(BUSY, str(exc))

        result: dict[str, int] = await self.call(submit)
        return result

    async def read_barrier(self, timeout: float | None = None) -> int:
        """Wait until a linearizable read may be served here; return the read index.

        A node that has just started (or just saw its leader go) learns the leader within a
        heartbeat or an election, so a missing leader is waited for briefly — a heartbeat
        interval at a time, at most an election timeout — before the read fails with no-leader.
        """
        self.check_removed()
        loop = asyncio.get_running_loop()
        ctx = f"{self.config.node_id}-{next(self._read_ids)}"
        fut: asyncio.Future[int] = loop.create_future()
        await self.wait_for_leader(
            min(self._timeout(timeout), self.config.election_ticks * self.config.tick_ms / 1000)
        )

        def submit(raft: RaftNode) -> None:
            if raft.leader is None:
                raise self._not_leader(None)
            self._reads[ctx] = fut
            raft.read_index(ctx)

        await self.call(submit)
        try:
            async with asyncio.timeout(self._timeout(timeout)):
                return await asyncio.shield(fut)
        except TimeoutError:
            self._reads.pop(ctx, None)
            leader = self.raft.leader if self.raft is not None else None
            raise AgentError(
                TIMEOUT,
                "no quorum confirmed the read in time "
                + (f"(the leader is {leader}); retry" if leader else "(no leader now); retry"),
            )

    async def wait_for_leader(self, limit: float) -> None:
        """Return once a leader is known, or after ``limit`` seconds (the caller then decides)."""
        raft = self.raft
        assert raft is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while raft.leader is None and loop.time() < deadline:
            await asyncio.sleep(self.config.heartbeat_ticks * self.config.tick_ms / 1000)


    async def change_membership(self, cc: ConfChange, timeout: float | None = None) -> int:
        """Propose one membership change and wait until it is applied here."""
        self.check_removed()
        deadline = asyncio.get_running_loop().time() + self._timeout(timeout) * 3
        while True:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def submit(raft: RaftNode, fut: asyncio.Future[Any] = fut) -> int:
                try:
                    index = raft.propose_conf_change(cc)
                except NotLeader as exc:
                    raise self._not_leader(exc.leader)
                self._proposals[index] = _Waiter(raft.term, fut)
                return index

            try:
                index = await self.call(submit)
            except ProposalDropped as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise AgentError(BUSY, f"membership change not accepted: {exc}")
                await asyncio.sleep(self.config.tick_ms / 1000)
                continue
            remaining = max(0.1, deadline - asyncio.get_running_loop().time())
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.shield(fut)
            except TimeoutError:
                raise AgentError(TIMEOUT, f"membership change at index {index} not applied in time")
            return index

    async def add_member(
        self, node: str, address: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Add ``node`` as a learner, wait until it has caught up, then promote it to voter."""
        self.check_removed()
        parse_address(address, "address")
        raft = self.raft
        assert raft is not None
        if node in raft.conf.voters:
            return {"member": node, "changed": False, "voters": sorted(raft.conf.voters)}
        if node not in raft.conf.learners:
            await self.change_membership(
                ConfChange(ConfChangeOp.ADD_LEARNER, node, {"address": address}), timeout
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else 60.0)
        while not await self.call(lambda r: r.learner_caught_up(node)):
            if loop.time() > deadline:
                raise AgentError(
                    TIMEOUT,
                    f"{node} joined as a learner but has not caught up; is its agent running "
                    f"and reachable at {address}?",
                )
            await asyncio.sleep(self.config.tick_ms / 1000)
        await self.change_membership(ConfChange(ConfChangeOp.PROMOTE, node, {}), timeout)
        return {"member": node, "changed": True, "voters": sorted(raft.conf.voters)}

    async def remove_member(self, node: str, timeout: float | None = None) -> dict[str, Any]:
        self.check_removed()
        raft = self.raft
        assert raft is not None
        if node not in raft.conf.members:
            return {"member": node, "changed": False, "voters": sorted(raft.conf.voters)}
        await self.change_membership(ConfChange(ConfChangeOp.REMOVE, node, {}), timeout)
        return {"member": node, "changed": True, "voters": sorted(raft.conf.voters)}

    async def transfer_leadership(self, target: str, timeout: float | None = None) -> str:
        self.check_removed()
        def submit(raft: RaftNode) -> None:
            try:
                raft.transfer_leadership(target)
            except NotLeader as exc:
                raise self._not_leader(exc.leader)
            except ProposalDropped as exc:
                raise AgentError(BAD_REQUEST, str(exc))

        await self.call(submit)
        raft = self.raft
        assert raft is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout(timeout)
        while loop.time() < deadline:
            if raft.leader == target:
                return target
            await asyncio.sleep(self.config.tick_ms / 1000 / 2)
        raise AgentError(TIMEOUT, f"leadership did not move to {target} in time")

    async def compact(self) -> int:
        """Snapshot now and compact the log; return the index the snapshot covers (at least
        the index applied when asked)."""
        if self.removal is not None:
            raise AgentError(
                REMOVED, "this machine was removed from the cluster; it takes no snapshots"
            )
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._snapshot_waiters.append(fut)
        self._wake.set()
        return await fut

    def status(self) -> dict[str, Any]:
        raft = self.raft
        assert raft is not None
        removal = self.removal
        out: dict[str, Any] = {
            "id": self.config.node_id,
            "version": __version__,
            "role": "removed" if removal is not None else raft.role.value,
            "term": raft.term,
            "leader": None if removal is not None else raft.leader,
            "commit": raft.commit,
            "applied": raft.applied,
            "last_index": raft.last_index,
            "snapshot_index": self._snapshot_index,
            "voters": sorted(raft.conf.voters),
            "learners": sorted(raft.conf.learners),
            "addresses": dict(sorted(self.addresses.items())),
            "removed": removal is not None,
            "uptime": round(time.time() - self.started_at, 3),
        }
        if removal is not None:
            out["removed_at"] = removal.index
            out["message"] = self.removed_message()
        elif raft.role is Role.LEADER:
            out["progress"] = {
                peer: {"match": match, "next": nxt}
                for peer, (match, nxt) in sorted(raft.progress().items())
            }
        return out


def _done_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()
