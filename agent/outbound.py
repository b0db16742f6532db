"""One outbound peer link: a bounded send queue and a task that keeps a TLS connection to one peer.

Each agent dials every peer for its own outbound messages and never sends on connections it
accepted, so each direction has exactly one owner and no tie-breaking between duplicate
connections is ever needed. The link is kept open forever, idle or not, so the first vote request
after a failure goes out at once instead of waiting for a dial; when it breaks it is redialed with
exponential backoff and jitter, and whatever was queued meanwhile goes out on the new connection.

The queue is bounded and drops the oldest message when full. That is safe for Raft, which resends
anything unacknowledged, while blocking the caller (the event loop running the Raft node) would
stall the whole agent behind one slow peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable

from agent.framing import FrameError, pack_frames, read_frame
from agent.tls import peer_node_id

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
CONNECT_TIMEOUT = 5.0
"""Bounds TCP connect, TLS handshake and the acceptor's greeting together."""
READ_LIMIT = 1 << 20
QUEUE_MESSAGES = 4096
QUEUE_BYTES = 64 * 1024 * 1024

GREETING = b""
"""The acceptor sends one empty frame once it has authenticated the dialer. Under TLS 1.3 the
dialer's handshake completes before the acceptor has checked the dialer's certificate, so only
the greeting proves the link is really usable."""

Address = tuple[str, int]


class DialError(Exception):
    """A connection was made but the other end is not the peer we meant to reach."""


def tune_socket(writer: asyncio.StreamWriter) -> None:
    """Disable Nagle (Raft messages are small and latency-bound) and enable TCP keepalive so an
    idle link to a vanished host is noticed in tens of seconds rather than hours."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # unacknowledged data: give up after 30 s
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def describe(exc: BaseException) -> str:
    """A one-line reason for a peer-side failure, without a traceback."""
    text = str(exc)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        text = exc.reason.lower().replace("_", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OutboundLink:
    """Queue and connection for messages from this node to one peer."""

    def __init__(
        self,
        peer: str,
        address: Address,
        client_ssl: ssl.SSLContext,
        *,
        on_up: Callable[[], None],
        on_down: Callable[[], None],
        logger: logging.Logger,
        max_frame: int,
        max_messages: int = QUEUE_MESSAGES,
        max_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.peer = peer
        self.address = address
        self._ssl = client_ssl
        self._on_up = on_up
        self._on_down = on_down
        self._log = logger
        self._max_frame = max_frame
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._dropped = 0
        self._wakeup = asyncio.Event()
        self._lost: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.established = False

    # --- queue ------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages waiting to be written."""
        return len(self._queue)

    def enqueue(self, payload: bytes) -> None:
        """Queue one encoded message; never blocks. Drops the oldest messages when full."""
        if len(payload) > self._max_frame:
            self._log.warning(
                "dropping %d-byte message to %s: larger than the %d-byte frame limit",
                len(payload),
                self.peer,
                self._max_frame,
            )
            return
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        # The newest message is always kept, so one snapshot up to max_frame always fits.
        while len(self._queue) > 1 and (
            len(self._queue) > self._max_messages or self._queued_bytes > self._max_bytes
        ):
            self._queued_bytes -= len(self._queue.popleft())
            if self._dropped == 0:
                self._log.warning(
                    "send queue to %s is full (%d messages): dropping the oldest",
                    self.peer,
                    len(self._queue),
                )
            self._dropped += 1
        self._wakeup.set()

    def _take_batch(self) -> bytes:
        batch = pack_frames(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        if self._dropped:
            self._log.warning("dropped %d queued messages to %s", self._dropped, self.peer)
            self._dropped = 0
        return batch

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin dialing; the link then maintains itself until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"shoal-link-{self.peer}"
            )

    def set_address(self, address: Address) -> None:
        """The peer moved: drop the current connection and dial the new address."""
        if address == self.address:
            return
        self.address = address
        self._wakeup.set()  # a connected pump notices the change and redials

    async def close(self) -> None:
        """Stop for good, without reporting the peer down: this is our decision, not a fault."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue.clear()
        self._queued_bytes = 0

    # --- connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            dialed = self.address
            try:
                reader, writer = await self._connect(dialed)
            except (OSError, TimeoutError, EOFError, FrameError, ValueError, DialError) as exc:
                self._note_failure(dialed, describe(exc))
            except Exception:  # a bug, not a peer fault: say so loudly, but keep the link alive
                self._log.exception("unexpected error dialing %s", self.peer)
                self._failing = True
            else:
                delay = BACKOFF_MIN
                await self._use(reader, writer, dialed)
                continue  # redial at once: a restarted peer is usually back already
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _use(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dialed: Address
    ) -> None:
        """Run one established connection until it breaks, reporting the peer up and down."""
        self._failing = False
        self.established = True
        self._log.info("link to %s at %s:%d is up", self.peer, *dialed)
        try:
            self._on_up()
            reason = await self._pump(reader, writer, dialed)
        except Exception as exc:
            self._log.exception("unexpected error on the link to %s", self.peer)
            reason = describe(exc)
        finally:
            self.established = False
            writer.close()
        self._log.info("link to %s lost: %s", self.peer, reason)
        self._failing = True  # a dead peer's redial failures are part of this event
        self._on_down()

    def _note_failure(self, address: Address, reason: str) -> None:
        # One line when the peer becomes unreachable; repeats during backoff only at debug.
        level = logging.DEBUG if self._failing else logging.WARNING
        self._log.log(level, "cannot reach %s at %s:%d: %s", self.peer, *address, reason)
        self._failing = True

    async def _connect(self, address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = address
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._ssl, ssl_handshake_timeout=CONNECT_TIMEOUT, limit=READ_LIMIT
            )
            try:
                claimed = peer_node_id(writer.get_extra_info("ssl_object"))
                if claimed != self.peer:
                    raise DialError(f"the server's certificate is for node {claimed!r}")
                if await read_frame(reader, max_size=len(GREETING)) != GREETING:
                    raise DialError("unexpected greeting")
            except BaseException:
                writer.close()
                raise
        tune_socket(writer)
        return reader, writer

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        """The acceptor never sends after its greeting, so any read completing means the
        connection is gone (or the peer is confused, which we also treat as gone)."""
        try:
            data = await reader.read(1)
            self._lost = "unexpected data from the peer" if data else "closed by the peer"
        except (OSError, EOFError) as exc:
            self._lost = describe(exc)
        self._wakeup.set()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dialed: Address
    ) -> str:
        """Write everything queued, in batches, until the connection breaks; return why."""
        self._lost = None
        self._wakeup.set()  # send what was queued while we were disconnected
        watcher = asyncio.get_running_loop().create_task(self._watch(reader))
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._lost is not None:
                    return self._lost
                if self.address != dialed:
                    return f"peer moved to {self.address[0]}:{self.address[1]}"
                if self._queue:
                    writer.write(self._take_batch())
                    await writer.drain()
        except (OSError, EOFError) as exc:
            return describe(exc)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
