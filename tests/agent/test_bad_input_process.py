"""A running cluster shrugs off hostile peers and refuses to start on a damaged WAL."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from shell import pki
from tests.agent.conftest import ClusterRunner, eventually
from tests.agent.test_cluster_process import propose_many, same_records_everywhere

pytestmark = pytest.mark.process


def _raw_send(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)


def test_garbage_and_oversized_frames_and_foreign_certs_do_not_disturb_the_cluster(
    clusters: ClusterRunner, tmp_path: Path
) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        leader = await cluster.start()
        port = cluster.ports[leader]
        await asyncio.to_thread(_raw_send, port, os.urandom(4096))
        await asyncio.to_thread(_raw_send, port, struct.pack(">I", 2**31) + b"x" * 64)
        # a client certificate from another cluster's CA is refused during the handshake
        other = pki.create_ca("intruders")
        paths = pki.write_node_tls(
            tmp_path / "evil", other, pki.issue_node_cert(other, "node9", ["127.0.0.1"])
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(paths.cert, paths.key)

        def intrude() -> bool:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                with raw, ctx.wrap_socket(raw) as tls:
                    tls.sendall(struct.pack(">I", 5) + b"hello")
                    return tls.recv(1) != b""  # the server closes on us
            except (ssl.SSLError, OSError):
                return False

        assert not await asyncio.to_thread(intrude)
        acked = await propose_many(cluster, "still-fine", 10)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 10, "cluster serves"
        )
        assert (await cluster.status(leader))["role"] == "leader"
        log = cluster.log_path(leader).read_text()
        assert "node9" in log or "certificate" in log.lower() or "handshake" in log.lower()

    clusters.run(story())


def _start_alone(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_bit_flip_inside_the_wal_refuses_to_start_naming_file_and_offset(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        leader = await cluster.start()
        await propose_many(cluster, "w", 20)
        victim = next(n for n in cluster.ids if n != leader)
        await cluster.stop_node(victim)
        return victim

    victim = clusters.run(story())
    segments = sorted((cluster.node_dir(victim) / "data" / "wal").glob("*.wal"))
    seg = segments[-1]
    data = bytearray(seg.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0x40
    seg.write_bytes(bytes(data))
    result = _start_alone(cluster.config_path(victim))
    assert result.returncode != 0
    assert seg.name in result.stderr, result.stderr
    assert "offset" in result.stderr


def test_a_torn_wal_tail_is_cut_off_reported_and_the_node_catches_up(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3)

    async def first() -> tuple[str, list[str]]:
        leader = await cluster.start()
        acked = await propose_many(cluster, "t", 20)
        victim = next(n for n in cluster.ids if n != leader)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 10, "replication"
        )
        await cluster.kill(victim)
        return victim, acked

    victim, acked = clusters.run(first())
    seg = sorted((cluster.node_dir(victim) / "data" / "wal").glob("*.wal"))[-1]
    with open(seg, "r+b") as f:  # a crash in the middle of the last record
        f.truncate(seg.stat().st_size - 3)

    async def second() -> None:
        cluster.start_node(victim)
        await cluster.wait_socket(victim)
        await eventually(
            lambda: same_records_everywhere(cluster, cluster.ids, acked), 15, "torn node catches up"
        )
        assert "torn" in cluster.log_path(victim).read_text()

    clusters.run(second())
