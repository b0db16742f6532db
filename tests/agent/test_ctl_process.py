"""``python -m agent ctl`` against real agents: keys, leases, elections and locks, exit codes."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from shell.devcluster import LocalCluster
from tests.agent.conftest import ClusterRunner, eventually

pytestmark = pytest.mark.process


async def ctl(cluster: LocalCluster, node: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "ctl",
        "--socket",
        str(cluster.socket_path(node)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def spawn(cluster: LocalCluster, node: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "ctl",
        "--socket",
        str(cluster.socket_path(node)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def test_keys_leases_and_exit_codes(clusters: ClusterRunner) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        await cluster.start()
        node = "node2"
        assert (await ctl(cluster, node, "kv", "put", "/app/a", "1"))[0] == 0
        assert (await ctl(cluster, node, "kv", "put", "/app/b", "2"))[0] == 0
        rc, out, _ = await ctl(cluster, node, "kv", "get", "/app/", "--prefix")
        assert (rc, out.split()) == (0, ["/app/a", "1", "/app/b", "2"])
        rc, out, err = await ctl(cluster, node, "kv", "get", "/missing")
        assert rc == 4 and "not found" in err
        rc, _, err = await ctl(cluster, node, "kv", "put", "/_shoal/x", "1")
        assert rc == 1 and "reserved" in err
        assert (await ctl(cluster, node, "kv", "put", "/_shoal/x", "1", "--allow-reserved"))[0] == 0
        rc, out, _ = await ctl(cluster, node, "kv", "del", "/app/", "--prefix")
        assert (rc, out.strip()) == (0, "2")
        # a key with --ttl disappears on its own
        assert (await ctl(cluster, node, "kv", "put", "/tmp/k", "v", "--ttl", "2"))[0] == 0
        assert (await ctl(cluster, node, "kv", "get", "/tmp/k"))[0] == 0

        async def expired() -> bool:
            return (await ctl(cluster, node, "kv", "get", "/tmp/k"))[0] == 4

        await eventually(expired, 8, "the --ttl key to expire")
        rc, out, _ = await ctl(cluster, node, "lease", "grant", "30")
        lease = out.split()[1]
        rc, out, _ = await ctl(cluster, node, "lease", "ttl", lease)
        assert rc == 0 and "granted with TTL(30s)" in out
        assert (await ctl(cluster, node, "lease", "revoke", lease))[0] == 0
        rc, _, err = await ctl(cluster, node, "lease", "ttl", lease)
        assert rc == 4 and "expired" in err
        rc, out, _ = await ctl(cluster, node, "status")
        assert rc == 0 and "leader" in out and "revision" in out

    clusters.run(story())


def test_unreachable_agent_is_exit_code_3(tmp_path: Path) -> None:
    async def story() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "ctl",
            "--socket",
            str(tmp_path / "none.sock"),
            "status",
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 3 and b"is it running?" in err

    asyncio.run(story())


def test_elections_are_first_come_first_served_and_pass_on_when_the_leader_goes(
    clusters: ClusterRunner,
) -> None:
    cluster = clusters.make(3)

    async def story() -> None:
        await cluster.start()
        first = await spawn(cluster, "node1", "elect", "campaign", "jobs", "alice")
        assert first.stdout is not None
        assert b"elected" in await asyncio.wait_for(first.stdout.readline(), 10)

        async def candidates(n: int) -> bool:
            _, out, _ = await ctl(cluster, "node1", "kv", "get", "jobs/", "--prefix", "--keys-only")
            return len(out.split()) == n

        second = await spawn(cluster, "node2", "elect", "campaign", "jobs", "bob")
        await eventually(lambda: candidates(2), 10, "bob to queue up")
        third = await spawn(cluster, "node3", "elect", "campaign", "jobs", "carol")
        await eventually(lambda: candidates(3), 10, "carol to queue up")
        assert (await ctl(cluster, "node3", "elect", "leader", "jobs"))[1].strip() == "alice"
        first.send_signal(signal.SIGTERM)  # resigns on the way out
        await first.wait()
        assert second.stdout is not None
        assert b"elected" in await asyncio.wait_for(second.stdout.readline(), 10)
        assert (await ctl(cluster, "node1", "elect", "leader", "jobs"))[1].strip() == "bob"
        for proc in (second, third):
            proc.send_signal(signal.SIGTERM)
            await proc.wait()

    clusters.run(story())


def test_lock_runs_the_command_and_kills_it_when_the_lock_is_lost(
    clusters: ClusterRunner, tmp_path: Path
) -> None:
    cluster = clusters.make(3)
    marker = tmp_path / "ran"

    async def story() -> None:
        await cluster.start()
        rc, _, _ = await ctl(
            cluster, "node1", "lock", "L", "--", "sh", "-c", f"echo x > {marker}; exit 7"
        )
        assert rc == 7 and marker.read_text().strip() == "x"
        holder = await spawn(cluster, "node2", "lock", "L", "--", "sleep", "60")
        rc, out, _ = await ctl(cluster, "node3", "kv", "get", "L/", "--prefix", "--keys-only")

        async def held() -> bool:
            nonlocal out
            rc, out, _ = await ctl(cluster, "node3", "kv", "get", "L/", "--prefix", "--keys-only")
            return rc == 0

        await eventually(held, 10, "the lock to be held")
        # someone deletes the lock key: the command must be stopped
        assert (await ctl(cluster, "node3", "kv", "del", out.split()[0]))[0] == 0
        _, err = await asyncio.wait_for(holder.communicate(), 15)
        assert holder.returncode == 1 and b"lost" in err

    clusters.run(story())
