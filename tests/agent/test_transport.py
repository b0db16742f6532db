"""Peer transport over real loopback TLS: delivery, batching, reconnects, and refusing intruders."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from agent.framing import pack_frames, read_frame
from agent.raft.messages import Heartbeat, Message, SnapshotRequest, encode
from agent.raft.types import ConfState, Snapshot, SnapshotMeta
from agent.tls import client_context, server_context
from agent.transport import PeerTransport
from shell import pki

pytestmark = pytest.mark.timeout(60)

LOCAL = "127.0.0.1"
LOGGER = "shoal.transport"


class Cluster:
    """Certificates for a set of node ids, all issued by one CA, written under tmp_path."""

    def __init__(self, tmp_path: Path, name: str = "test") -> None:
        self.root = tmp_path / name
        self.ca = pki.create_ca(name)
        self.paths: dict[str, pki.TLSPaths] = {}

    def tls(self, node: str) -> pki.TLSPaths:
        if node not in self.paths:
            cert = pki.issue_node_cert(self.ca, node, [LOCAL])
            self.paths[node] = pki.write_node_tls(self.root / node, self.ca, cert)
        return self.paths[node]

    def server_ssl(self, node: str) -> ssl.SSLContext:
        p = self.tls(node)
        return server_context(p.ca, p.cert, p.key)

    def client_ssl(self, node: str) -> ssl.SSLContext:
        p = self.tls(node)
        return client_context(p.ca, p.cert, p.key)


class Node:
    """A transport plus everything it delivered and reported."""

    def __init__(self, cluster: Cluster, node_id: str, port: int = 0, **kwargs: Any) -> None:
        self.inbox: list[Message] = []
        self.events: list[tuple[str, str]] = []
        self.transport = PeerTransport(
            node_id,
            (LOCAL, port),
            {},
            server_ssl=cluster.server_ssl(node_id),
            client_ssl=cluster.client_ssl(node_id),
            on_message=self.inbox.append,
            on_peer_down=lambda peer: self.events.append(("down", peer)),
            on_peer_up=lambda peer: self.events.append(("up", peer)),
            **kwargs,
        )

    @property
    def address(self) -> tuple[str, int]:
        return (LOCAL, self.transport.listen_port)

    def commits(self, src: str | None = None) -> list[int]:
        return [m.commit for m in self.inbox if isinstance(m, Heartbeat) and src in (None, m.src)]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=45))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Wait for a condition the test expects to become true; fail (not hang) if it never does."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}")


async def started(*nodes: Node) -> None:
    """Start the nodes and make each a peer of all the others."""
    for node in nodes:
        await node.transport.start()
    for node in nodes:
        node.transport.set_peers({o.transport.node_id: o.address for o in nodes if o is not node})


async def stopped(*nodes: Node) -> None:
    for node in nodes:
        await node.transport.stop()


def hb(src: str, dst: str, commit: int = 0) -> Heartbeat:
    return Heartbeat(term=1, src=src, dst=dst, commit=commit)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


def logged(caplog: pytest.LogCaptureFixture, *fragments: str) -> bool:
    return any(all(f in r.getMessage() for f in fragments) for r in caplog.records)


# --- delivery -----------------------------------------------------------------------------------


def test_two_nodes_exchange_messages_both_ways(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await started(a, b)
        a.transport.send([hb("a", "b", 1), hb("a", "b", 2)])
        b.transport.send([hb("b", "a", 7)])
        await until(lambda: b.commits() == [1, 2] and a.commits() == [7], "both directions")
        assert all(m.dst == "b" and m.src == "a" for m in b.inbox)
        await stopped(a, b)

    run(scenario)


def test_three_nodes_reach_every_peer(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        nodes = [Node(cluster, n) for n in ("n1", "n2", "n3")]
        await started(*nodes)
        for i, node in enumerate(nodes):
            src = node.transport.node_id
            node.transport.send([hb(src, o.transport.node_id, i) for o in nodes if o is not node])
        await until(lambda: all(len(n.inbox) == 2 for n in nodes), "every node hears both peers")
        for node in nodes:
            assert {m.src for m in node.inbox} == {"n1", "n2", "n3"} - {node.transport.node_id}
        await stopped(*nodes)

    run(scenario)


def test_a_burst_of_a_thousand_messages_arrives_complete_and_in_order(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await started(a, b)
        a.transport.send(hb("a", "b", i) for i in range(1000))
        await until(lambda: len(b.inbox) >= 1000, "all 1000 messages")
        assert b.commits() == list(range(1000))
        await stopped(a, b)

    run(scenario)


def test_a_snapshot_sized_message_travels_in_one_frame(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    data = random.Random(1).randbytes(8 * 1024 * 1024)
    meta = SnapshotMeta(index=10, term=2, conf=ConfState(frozenset({"a", "b"})))
    snapshot = SnapshotRequest(term=2, src="a", dst="b", snapshot=Snapshot(meta, data))

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await started(a, b)
        a.transport.send([snapshot, hb("a", "b", 1)])
        await until(lambda: len(b.inbox) == 2, "snapshot and the heartbeat after it")
        assert b.inbox[0] == snapshot
        await stopped(a, b)

    run(scenario)


def test_messages_to_unknown_peers_are_dropped_quietly(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await started(a, b)
        a.transport.send([hb("a", "stranger"), hb("a", "b", 5)])
        await until(lambda: b.commits() == [5], "the message to the known peer")
        await stopped(a, b)

    run(scenario)


# --- links that come and go ---------------------------------------------------------------------


def test_peer_restart_reports_down_then_up_and_delivers_queued_messages(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await started(a, b)
        a.transport.send([hb("a", "b", 1)])
        b.transport.send([hb("b", "a", 1)])
        await until(lambda: b.commits() == [1] and a.commits() == [1], "first exchange")
        port = b.transport.listen_port
        await b.transport.stop()
        await until(lambda: ("down", "b") in a.events, "a notices that b went down")
        await until(lambda: not a.transport.connected("b"), "a's link to b is gone")
        a.transport.send([hb("a", "b", 2), hb("a", "b", 3)])  # queued while b is away

        b2 = Node(cluster, "b", port=port)
        await b2.transport.start()
        b2.transport.set_peers({"a": a.address})
        await until(lambda: b2.commits() == [2, 3], "queued messages after the restart")
        b2.transport.send([hb("b", "a", 4)])
        await until(lambda: a.commits() == [1, 4], "b's messages after the restart")
        assert a.events == [("up", "b"), ("down", "b"), ("up", "b")]
        await stopped(a, b2)

    run(scenario)


def test_peer_down_fires_once_when_a_peer_stops(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b, c = Node(cluster, "a"), Node(cluster, "b"), Node(cluster, "c")
        await started(a, b, c)
        await until(
            lambda: a.transport.connected("b") and ("up", "b") in a.events, "a and b linked"
        )
        await b.transport.stop()
        await until(lambda: not a.transport.connected("b"), "a's link to b drops")
        await until(lambda: not c.transport.connected("b"), "c's link to b drops")
        assert a.events.count(("down", "b")) == 1
        assert ("down", "b") in c.events
        assert ("down", "c") not in a.events
        assert ("down", "a") not in b.events  # stopping reports nothing about the others
        await stopped(a, c)

    run(scenario)


def test_messages_queued_for_an_unreachable_peer_are_bounded(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    port = free_port()

    async def scenario() -> None:
        a = Node(cluster, "a")
        await a.transport.start()
        a.transport.set_peers({"b": (LOCAL, port)})
        a.transport.send(hb("a", "b", i) for i in range(5000))  # b is not there yet
        b = Node(cluster, "b", port=port)
        await b.transport.start()
        await until(lambda: len(b.inbox) >= 4096, "the newest queued messages")
        await asyncio.sleep(0.2)  # nothing more may trickle in: the oldest were dropped
        assert b.commits() == list(range(5000 - 4096, 5000))
        await stopped(a, b)

    run(scenario)


def test_membership_changes_open_and_close_links(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b, c = Node(cluster, "a"), Node(cluster, "b"), Node(cluster, "c")
        await started(a, b)
        await c.transport.start()
        a.transport.set_peers({"b": b.address, "c": c.address})
        a.transport.send([hb("a", "c", 1)])
        await until(lambda: c.commits() == [1], "the added peer is reached")
        a.transport.set_peers({"c": c.address})
        a.transport.send([hb("a", "b", 2), hb("a", "c", 3)])
        await until(lambda: c.commits() == [1, 3], "the remaining peer is still reached")
        assert 2 not in b.commits()
        assert not a.transport.connected("b")
        await stopped(a, b, c)

    run(scenario)


def test_dialer_refuses_a_server_that_is_not_the_peer_it_dialed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, c = Node(cluster, "a"), Node(cluster, "c")
        await a.transport.start()
        await c.transport.start()
        a.transport.set_peers({"b": c.address})  # wrong address: c answers
        a.transport.send([hb("a", "b", 1)])
        await until(lambda: logged(caplog, "cannot reach b", "node 'c'"), "the mismatch log")
        assert c.inbox == []
        assert not a.transport.connected("b")
        await stopped(a, c)

    run(scenario)


# --- intruders and broken peers -----------------------------------------------------------------


async def refused(port: int, ctx: ssl.SSLContext | None, payload: bytes = b"") -> bool:
    """Connect, say ``payload``, and report whether the server hung up without greeting us."""
    try:
        reader, writer = await asyncio.open_connection(LOCAL, port, ssl=ctx)
    except (OSError, EOFError):
        return True
    try:
        writer.write(payload)
        greeting = await asyncio.wait_for(reader.read(100), 10)
    except (OSError, EOFError):
        return True
    finally:
        writer.close()
    return greeting == b""


def anonymous_client(cluster: Cluster) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=cluster.tls("a").ca)
    return ctx


def foreign_client(cluster: Cluster, tmp_path: Path) -> ssl.SSLContext:
    """A client with a certificate for node "b" from another CA, trusting our CA."""
    other = pki.create_ca("test")
    paths = pki.write_node_tls(
        tmp_path / "foreign", cluster.ca, pki.issue_node_cert(other, "b", [LOCAL])
    )
    return client_context(paths.ca, paths.cert, paths.key)


@pytest.mark.parametrize("intruder", ["no certificate", "other CA", "plain TCP"])
def test_unauthenticated_clients_are_refused_and_the_listener_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, intruder: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cluster = Cluster(tmp_path)
    contexts: dict[str, Callable[[], ssl.SSLContext | None]] = {
        "no certificate": lambda: anonymous_client(cluster),
        "other CA": lambda: foreign_client(cluster, tmp_path),
        "plain TCP": lambda: None,
    }
    payload = b"GET / HTTP/1.0\r\n\r\n" if intruder == "plain TCP" else b""

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await a.transport.start()
        assert await refused(a.transport.listen_port, contexts[intruder](), payload)
        await until(lambda: logged(caplog, "refused peer connection from 127.0.0.1:"), "a log")
        assert a.events == []
        await b.transport.start()
        b.transport.set_peers({"a": a.address})
        b.transport.send([hb("b", "a", 1)])
        await until(lambda: a.commits() == [1], "a real peer is still served")
        await stopped(a, b)

    run(scenario)


async def raw_peer(
    cluster: Cluster, node: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-driven client holding a valid certificate for ``node``, past the greeting."""
    reader, writer = await asyncio.open_connection(LOCAL, port, ssl=cluster.client_ssl(node))
    assert await read_frame(reader, 16) == b""
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except (ConnectionError, ssl.SSLError):
        return True


BAD_INPUTS = {
    "random bytes": random.Random(3).randbytes(4096),
    "oversized header": struct.pack(">I", 2**31) + b"x" * 16,
    "garbage JSON": pack_frames([b"{this is not json"]),
    "not a message": pack_frames([b'{"v": 1, "t": "no-such-type", "term": 1}']),
    "deeply nested JSON": pack_frames([b"[" * 100_000]),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_a_peer_sending_garbage_loses_its_connection_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b = Node(cluster, "a", max_frame=1 << 20), Node(cluster, "b")
        await a.transport.start()
        reader, writer = await raw_peer(cluster, "c", a.transport.listen_port)
        writer.write(pack_frames([encode(hb("c", "a", 1))]))
        writer.write(BAD_INPUTS[bad])
        assert await closed_by_server(reader)
        writer.close()
        assert a.commits("c") == [1]  # what came before the garbage was delivered
        assert logged(caplog, "closing connection from 127.0.0.1:", "(node c)")
        await b.transport.start()
        b.transport.set_peers({"a": a.address})
        b.transport.send([hb("b", "a", 2)])
        await until(lambda: a.commits("b") == [2], "a real peer is still served")
        await stopped(a, b)

    run(scenario)


def test_messages_with_a_forged_source_or_wrong_destination_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a = Node(cluster, "a")
        await a.transport.start()
        _, writer = await raw_peer(cluster, "c", a.transport.listen_port)
        forged = [hb("b", "a", 1), hb("b", "a", 2), hb("c", "z", 3), hb("c", "a", 4)]
        writer.write(pack_frames(encode(m) for m in forged))
        await until(lambda: len(a.inbox) >= 1, "the honest message")
        assert a.inbox == [hb("c", "a", 4)]
        forgeries = [r for r in caplog.records if "claiming to be from 'b'" in r.getMessage()]
        assert len(forgeries) == 1  # logged once per connection, not per message
        writer.close()
        await stopped(a)

    run(scenario)


def test_stopping_twice_and_sending_before_start_are_harmless(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, b = Node(cluster, "a"), Node(cluster, "b")
        await b.transport.start()
        a.transport.set_peers({"b": b.address})
        a.transport.send([hb("a", "b", 1)])  # queued before a even listens
        await a.transport.start()
        await until(lambda: b.commits() == [1], "the early message")
        await a.transport.stop()
        await a.transport.stop()
        await b.transport.stop()

    run(scenario)


def test_a_peer_that_moves_is_redialed_at_its_new_address(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        a, old_b, new_b = Node(cluster, "a"), Node(cluster, "b"), Node(cluster, "b")
        await started(a, old_b)
        a.transport.send([hb("a", "b", 1)])
        await until(lambda: old_b.commits() == [1], "the old address")
        await new_b.transport.start()
        a.transport.set_peers({"b": new_b.address})
        a.transport.send([hb("a", "b", 2)])
        await until(lambda: new_b.commits() == [2], "the new address")
        assert old_b.commits() == [1]
        await stopped(a, old_b, new_b)

    run(scenario)
