"""Peer transport: Raft messages between agents over mutually authenticated TLS.

Every node listens for its peers and dials each of them (see :mod:`agent.outbound`); a connection
is used in one direction only: the dialer writes, the acceptor reads. Frames are length-prefixed
(:mod:`agent.framing`) and carry one JSON-encoded message each (:mod:`agent.raft.messages`).

Trust comes from the cluster CA alone. The acceptor learns who is talking from the CN of the
client certificate the handshake verified, and drops any message whose ``src`` claims otherwise,
so a node holding a valid certificate still cannot speak for another node. The dialer checks that
the server's CN is the node it meant to reach. Anything a peer does wrong — a failed handshake,
a malformed or oversized frame — costs that one connection and a log line, never the listener.

Peer state for the callbacks is per node: a node goes *down* when any established link with it
(our outbound, or its inbound) is lost, and *up* when any link with it is (re)established. Each
callback fires once per transition, so a peer restart is one ``on_peer_down`` and one
``on_peer_up``.

For fault-injection tests only, :meth:`PeerTransport.block` silently drops every message to and
from chosen peers while their connections stay up, the way a network partition looks to Raft (a
link that carries nothing, not one that closes). The agent exposes it as the ``debug.faults``
control method only when its config sets ``[debug] fault_injection = true``; otherwise the set of
blocked peers stays empty and the hook costs one set lookup per message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from agent.framing import MAX_FRAME, FrameError, pack_frames, read_frame
from agent.outbound import GREETING, READ_LIMIT, Address, OutboundLink, describe, tune_socket
from agent.raft.messages import Message, decode, encode
from agent.tls import peer_node_id

HANDSHAKE_TIMEOUT = 10.0

__all__ = ["MAX_FRAME", "PeerTransport"]


def _format_address(peername: object) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername)


class _Inbound:
    """An accepted, authenticated connection from ``node``; only ever read from."""

    def __init__(self, node: str, address: str, writer: asyncio.StreamWriter) -> None:
        self.node = node
        self.address = address
        self.writer = writer
        self.superseded = False
        self.warned_src = False
        self.warned_dst = False


class PeerTransport:
    """Sends and receives Raft messages for ``node_id``; see the module docstring."""

    def __init__(
        self,
        node_id: str,
        listen: Address,
        peers: dict[str, Address],
        *,
        server_ssl: ssl.SSLContext,
        client_ssl: ssl.SSLContext,
        on_message: Callable[[Message], None],
        on_peer_down: Callable[[str], None] | None = None,
        on_peer_up: Callable[[str], None] | None = None,
        max_frame: int = MAX_FRAME,
        logger: logging.Logger | None = None,
    ) -> None:
        self.node_id = node_id
        self._listen = listen
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._on_message = on_message
        self._on_peer_down = on_peer_down
        self._on_peer_up = on_peer_up
        self._max_frame = max_frame
        self._log = logger or logging.getLogger("shoal.transport")
        self._links: dict[str, OutboundLink] = {}
        self._inbound: dict[str, _Inbound] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._up: set[str] = set()
        self._server: asyncio.Server | None = None
        self._running = False
        self._blocked: frozenset[str] = frozenset()
        self.listen_port = 0
        self.set_peers(peers)

    # --- public API -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers (port 0 picks a free port: see :attr:`listen_port`) and dial them."""
        host, port = self._listen
        self._server = await asyncio.start_server(self._accept, host, port, limit=READ_LIMIT)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._running = True
        self._log.info("node %s listening for peers on %s:%d", self.node_id, host, self.listen_port)
        for link in self._links.values():
            link.start()

    def send(self, messages: Iterable[Message]) -> None:
        """Queue messages for their ``dst`` peers and return at once; delivery is best effort."""
        for msg in messages:
            if msg.dst in self._blocked:
                continue  # fault injection: the partition eats it (see block())
            link = self._links.get(msg.dst)
            if link is None:
                self._log.debug("dropping %s to unknown peer %r", msg.TAG, msg.dst)
                continue
            link.enqueue(encode(msg))

    def connected(self, peer: str) -> bool:
        """Whether our outbound link to ``peer`` is established right now (for status views)."""
        link = self._links.get(peer)
        return link is not None and link.established

    @property
    def blocked(self) -> frozenset[str]:
        """The peers :meth:`block` currently cuts us off from (empty unless a test set it)."""
        return self._blocked

    def block(self, peers: Iterable[str]) -> None:
        """Fault injection: drop all messages to and from ``peers`` until called again.

        Replaces the previous set; an empty one heals. Dropped, not queued, and connections stay
        up, so the peer sees silence exactly as across a real partition, and nothing stale is
        delivered in a burst on healing. Only the ``debug.faults`` control method calls this,
        and only when the agent's config enables fault injection.
        """
        blocked = frozenset(peers) - {self.node_id}
        if blocked != self._blocked:
            self._log.warning(
                "fault injection: %s",
                f"dropping all messages to and from {', '.join(sorted(blocked))}"
                if blocked
                else "peer links healed",
            )
        self._blocked = blocked

    def set_peers(self, peers: dict[str, Address]) -> None:
        """Adopt a new membership: dial new peers, close links to removed ones, follow moves."""
        wanted = {peer: addr for peer, addr in peers.items() if peer != self.node_id}
        for peer in [p for p in self._links if p not in wanted]:
            link = self._links.pop(peer)
            self._spawn(link.close())
            if peer not in self._inbound:
                self._up.discard(peer)  # removed on purpose: no on_peer_down
        for peer, address in wanted.items():
            existing = self._links.get(peer)
            if existing is not None:
                existing.set_address(address)
                continue
            link = OutboundLink(
                peer,
                address,
                self._client_ssl,
                on_up=functools.partial(self._mark_up, peer),
                on_down=functools.partial(self._mark_down, peer),
                logger=self._log,
                max_frame=self._max_frame,
            )
            self._links[peer] = link
            if self._running:
                link.start()

    async def stop(self) -> None:
        """Close the listener and every connection. No peer-down callbacks: we are leaving."""
        self._running = False
        if self._server is not None:
            self._server.close()
        links, self._links = list(self._links.values()), {}
        for conn in self._inbound.values():
            conn.superseded = True
            conn.writer.close()
        self._inbound.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(link.close() for link in links), *tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._up.clear()

    # --- peer state -------------------------------------------------------------------------

    def _mark_up(self, node: str) -> None:
        if node in self._up or not self._running:
            return
        self._up.add(node)
        self._callback(self._on_peer_up, node)

    def _mark_down(self, node: str) -> None:
        if node not in self._up or not self._running:
            return
        self._up.discard(node)
        self._callback(self._on_peer_down, node)

    def _callback(self, callback: Callable[[str], None] | None, node: str) -> None:
        if callback is None:
            return
        try:
            callback(node)
        except Exception:
            self._log.exception("peer state callback failed for %s", node)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as a task that :meth:`stop` waits for."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not started yet: nothing to close
            coro.close()
            return
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- inbound ----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        address = _format_address(writer.get_extra_info("peername"))
        try:
            await self._serve(reader, writer, address)
        except asyncio.CancelledError:
            # Only stop() cancels handlers. Finish quietly: asyncio 3.11 logs a cancelled
            # connection handler as an unhandled error.
            pass
        except Exception:
            self._log.exception("unexpected error on peer connection from %s", address)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> None:
        try:
            await writer.start_tls(self._server_ssl, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
            node = peer_node_id(writer.get_extra_info("ssl_object"))
            tune_socket(writer)
            writer.write(pack_frames([GREETING]))
            await writer.drain()
        except (OSError, TimeoutError, EOFError, ValueError) as exc:
            self._log.warning("refused peer connection from %s: %s", address, describe(exc))
            return
        conn = _Inbound(node, address, writer)
        previous = self._inbound.get(node)
        if previous is not None:  # the peer redialed; its old connection is stale
            previous.superseded = True
            previous.writer.close()
        self._inbound[node] = conn
        self._log.info("accepted peer %s from %s", node, address)
        self._mark_up(node)
        reason, peer_fault = await self._receive(conn, reader)
        if conn.superseded:
            return
        if peer_fault:
            self._log.warning("closing connection from %s (node %s): %s", address, node, reason)
        else:
            self._log.info("connection from peer %s at %s closed: %s", node, address, reason)
        if self._inbound.get(node) is conn:
            del self._inbound[node]
        self._mark_down(node)

    async def _receive(self, conn: _Inbound, reader: asyncio.StreamReader) -> tuple[str, bool]:
        """Deliver messages from one connection until it ends; return why it ended and whether
        the peer broke the protocol (the caller then closes the connection)."""
        while True:
            try:
                payload = await read_frame(reader, self._max_frame)
            except EOFError:
                return "closed by the peer", False
            except FrameError as exc:
                return str(exc), True
            except OSError as exc:
                return describe(exc), False
            try:
                msg = decode(payload)
            except Exception as exc:  # anything a peer's bytes provoke is the peer's fault
                return f"malformed message: {describe(exc)}", True
            if msg.src != conn.node:
                if not conn.warned_src:
                    conn.warned_src = True
                    self._log.warning(
                        "dropping messages from %s (node %s) claiming to be from %r",
                        conn.address,
                        conn.node,
                        msg.src,
                    )
                continue
            if msg.dst != self.node_id:
                if not conn.warned_dst:
                    conn.warned_dst = True
                    self._log.warning(
                        "dropping messages from %s (node %s) addressed to %r, not to us",
                        conn.address,
                        conn.node,
                        msg.dst,
                    )
                continue
            if conn.node in self._blocked:
                continue  # fault injection: the partition eats it (see block())
            try:
                self._on_message(msg)
            except Exception:
                self._log.exception("message handler failed on %s from %s", msg.TAG, msg.src)
