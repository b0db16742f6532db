"""SSHPool against real sshd: host-key checks, remote commands, failures that name the node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shell import ssh
from tests.bootstrap.conftest import SSHEnv, make_env, make_node, needs_sshd

pytestmark = [pytest.mark.timeout(60), needs_sshd]


@pytest.fixture
def env(tmp_path: Path) -> SSHEnv:
    return make_env(tmp_path)


def test_unknown_host_key_is_refused_with_its_fingerprint_then_accept_new_records_it(
    env: SSHEnv,
) -> None:
    node = make_node(env, "web1")
    try:

        async def story() -> None:
            pool = env.pool()
            with pytest.raises(ssh.UnknownHostKey) as info:
                await pool.connect("127.0.0.1", node.sshd.port, name="web1")
            assert "web1" in str(info.value) and "--accept-new" in str(info.value)
            assert info.value.fingerprint.startswith("SHA256:")
            assert info.value.fingerprint in str(info.value)
            assert not env.known_hosts.exists(), "nothing may be trusted without --accept-new"

            accepting = env.pool(accept_new=True)
            await accepting.connect("127.0.0.1", node.sshd.port, name="web1")
            await accepting.close()
            line = env.known_hosts.read_text().splitlines()
            assert line == [
                f"[127.0.0.1]:{node.sshd.port} "
                + " ".join(Path(f"{node.sshd.host_key}.pub").read_text().split()[:2])
            ]
            assert env.known_hosts.stat().st_mode & 0o777 == 0o600
            # now known: a strict pool connects without asking
            strict = env.pool()
            conn = await strict.connect("127.0.0.1", node.sshd.port, name="web1")
            assert (await ssh.run(conn, ["true"])).exit_status == 0
            await strict.close()

        asyncio.run(story())
    finally:
        node.sshd.stop()


def test_changed_host_key_is_refused_even_with_accept_new(env: SSHEnv) -> None:
    node = make_node(env, "db1")
    try:

        async def connect(accept_new: bool) -> None:
            pool = env.pool(accept_new=accept_new)
            try:
                await pool.connect("127.0.0.1", node.sshd.port, name="db1")
            finally:
                await pool.close()

        env.known_hosts.write_text(
            "# a comment line\nother.example ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIK/Pv2bam6mrpzN8yx/b7Vav4cSWQotw7Se8SOGfYUsM\n"
        )
        asyncio.run(connect(True))  # recorded on line 3
        before = env.known_hosts.read_text()
        node.sshd.stop()
        node.sshd.new_host_key()
        node.sshd.start()
        for accept_new in (False, True):
            with pytest.raises(ssh.HostKeyChanged) as info:
                asyncio.run(connect(accept_new))
            assert f"{env.known_hosts}:3" in str(info.value)
            assert "CHANGED" in str(info.value) and "db1" in str(info.value)
        assert env.known_hosts.read_text() == before, "a changed key is never recorded"
    finally:
        node.sshd.stop()


def test_run_quotes_argv_and_reports_exit_status(env: SSHEnv) -> None:
    node = make_node(env, "app1")
    try:

        async def story() -> None:
            pool = env.pool(accept_new=True)
            conn = await pool.connect("127.0.0.1", node.sshd.port, name="app1")
            tricky = ["a b", "$(touch /tmp/shoal-pwned)", "it's", "; exit 3", "*", "\\n"]
            res = await ssh.run(conn, ["printf", "%s\\n", *tricky])
            assert res.exit_status == 0 and res.stdout.splitlines() == tricky
            assert not Path("/tmp/shoal-pwned").exists()
            res = await ssh.run(conn, ["sh", "-c", "echo oops >&2; exit 7"], input="ignored")
            assert (res.exit_status, res.stderr) == (7, "oops\n")
            res = await ssh.run(conn, ["cat"], input=b"through stdin")
            assert res.stdout == "through stdin"
            with pytest.raises(ssh.CommandTimeout, match="app1"):
                await ssh.run(conn, ["sleep", "5"], timeout=0.5, node="app1")
            assert await pool.connect("127.0.0.1", node.sshd.port) is conn, "connection reused"
            await pool.close()

        asyncio.run(story())
    finally:
        node.sshd.stop()


def test_pool_reconnects_when_the_node_comes_back(env: SSHEnv) -> None:
    node = make_node(env, "cache1")
    try:

        async def story() -> None:
            pool = env.pool(accept_new=True)
            first = await pool.connect("127.0.0.1", node.sshd.port, name="cache1")
            node.sshd.stop()
            await asyncio.wait_for(first.wait_closed(), 5)
            with pytest.raises(ssh.ConnectFailed, match=r"cache1.*is sshd running"):
                await pool.connect("127.0.0.1", node.sshd.port, name="cache1")
            node.sshd.start()
            second = await pool.connect("127.0.0.1", node.sshd.port, name="cache1")
            assert second is not first
            assert (await ssh.run(second, ["echo", "back"])).stdout == "back\n"
            await pool.close()

        asyncio.run(story())
    finally:
        node.sshd.stop()


def test_a_hung_node_times_out_without_blocking_the_others(env: SSHEnv) -> None:
    good, hung = make_node(env, "ok1"), make_node(env, "hung1")
    try:

        async def story() -> None:
            pool = env.pool(accept_new=True, connect_timeout=1.5)
            await pool.connect("127.0.0.1", hung.sshd.port)  # record its key first
            pool.drop("127.0.0.1", hung.sshd.port)
            hung.sshd.pause()
            results = await asyncio.gather(
                pool.connect("127.0.0.1", good.sshd.port, name="ok1"),
                pool.connect("127.0.0.1", hung.sshd.port, name="hung1"),
                return_exceptions=True,
            )
            assert not isinstance(results[0], BaseException)
            assert isinstance(results[1], ssh.ConnectFailed)
            assert "hung1" in str(results[1]) and "no SSH answer" in str(results[1])
            await pool.close()

        asyncio.run(story())
    finally:
        hung.sshd.stop()
        good.sshd.stop()
