"""A cluster of real agent processes on loopback, for tests, benchmarks and ``make lab``.

Each node is a separate ``python -m agent serve`` process with its own data directory, TLS
certificates from a fresh cluster CA, peer port and control socket — the same agent that runs on
a real machine, only all on 127.0.0.1. (The lab of network namespaces with sshd comes with the
cluster issue; this is the loopback stage before it.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.client import ControlClient, ControlError
from agent.kv import prefix_end
from shell import pki


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def unb64(data: str) -> str:
    return base64.b64decode(data).decode("utf-8", errors="replace")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """N agents on loopback under ``root``; every method that waits shows what it waits for."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        nodes: int = 3,
        *,
        name: str = "dev",
        tick_ms: int = 100,
        heartbeat_ticks: int = 1,
        election_ticks: int = 10,
        snapshot_entries: int = 10000,
        log_level: str = "info",
        host: str = "127.0.0.1",
        fault_injection: bool = False,
        auto_compact_retention: int = 0,
    ) -> None:
        self.root = Path(root)
        self.fault_injection = fault_injection
        self.auto_compact_retention = auto_compact_retention
        self.name = name
        self.host = host
        self.timing = {
            "tick_ms": tick_ms,
            "heartbeat_ticks": heartbeat_ticks,
            "election_ticks": election_ticks,
        }
        self.snapshot_entries = snapshot_entries
        self.log_level = log_level
        self.ids = [f"node{i}" for i in range(1, nodes + 1)]
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._clients: dict[str, ControlClient] = {}
        self._ca: pki.CertKey | None = None

    # --- files ---------------------------------------------------------------------------------

    def node_dir(self, node: str) -> Path:
        return self.root / node

    def socket_path(self, node: str) -> Path:
        return self.node_dir(node) / "data" / "control.sock"

    def log_path(self, node: str) -> Path:
        return self.node_dir(node) / "agent.log"

    def config_path(self, node: str) -> Path:
        return self.node_dir(node) / "agent.json"

    def address(self, node: str) -> str:
        return f"{self.host}:{self.ports[node]}"

    def _ensure_ca(self) -> pki.CertKey:
        if self._ca is None:
            ca_dir = self.root / "ca"
            if (ca_dir / "ca.pem").exists():
                self._ca = pki.load_ca(ca_dir)
            else:
                self._ca = pki.create_ca(self.name)
                pki.write_ca(ca_dir, self._ca)
        return self._ca

    def write_config(self, node: str, *, join: bool = False, peers: Iterable[str] = ()) -> Path:
        """Write ``node``'s certificate and config. ``peers`` are the members it starts with."""
        ca = self._ensure_ca()
        self.ports.setdefault(node, free_port(self.host))
        tls = pki.write_node_tls(
            self.node_dir(node) / "tls", ca, pki.issue_node_cert(ca, node, [self.host])
        )
        members = list(peers) or self.ids
        config: dict[str, Any] = {
            "node_id": node,
            "data_dir": str(self.node_dir(node) / "data"),
            "listen": self.address(node),
            "join": join,
            "peers": {p: self.address(p) for p in members if p in self.ports},
            "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
            "timing": self.timing,
            "raft": {"snapshot_entries": self.snapshot_entries},
            "log": {"level": self.log_level},
        }
        if self.fault_injection:  # lets tests cut peer links through debug.faults
            config["debug"] = {"fault_injection": True}
        if self.auto_compact_retention:
            config["kv"] = {"auto_compact_retention": self.auto_compact_retention}
        path = self.config_path(node)
        path.write_text(json.dumps(config, indent=2))
        return path

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for node in self.ids:
            self.ports[node] = free_port(self.host)
        for node in self.ids:
            self.write_config(node)

    # --- processes -----------------------------------------------------------------------------

    def start_node(self, node: str) -> None:
        if node in self.procs and self.procs[node].poll() is None:
            return
        log = open(self.log_path(node), "ab")  # noqa: SIM115 — handed to the child process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "agent", "serve", "--config", str(self.config_path(node))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()

    async def start(self, timeout: float = 60.0) -> str:
        """Start every node; return the leader's id once one is elected."""
        if not self.ports:
            self.prepare()
        for node in self.ids:
            self.start_node(node)
        for node in self.ids:
            await self.wait_socket(node, timeout)
        leader = await self.wait_leader(timeout=timeout)
        await self.wait_machines(len(self.ids), timeout)
        return leader

    async def wait_machines(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until ``count`` machines are in the registry (each agent registers itself
        shortly after a leader exists), so tests start from a quiet store."""
        deadline = time.monotonic() + timeout
        while True:
            leader = await self.wait_leader(timeout=timeout)
            with contextlib.suppress(ControlError):
                machines: list[dict[str, Any]] = (await self.call(leader, "machines"))["machines"]
                if len(machines) >= count:
                    return machines
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {count} machines registered within {timeout}s")
            await asyncio.sleep(0.05)

    def alive(self, node: str) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def signal(self, node: str, sig: signal.Signals) -> None:
        proc = self.procs[node]
        if proc.poll() is None:
            proc.send_signal(sig)

    async def kill(self, node: str) -> None:
        """kill -9, as a crashing machine would."""
        await self._drop_client(node)
        if self.alive(node):
            self.signal(node, signal.SIGKILL)
            await asyncio.to_thread(self.procs[node].wait)

    async def stop_node(self, node: str, timeout: float = 10.0) -> int | None:
        await self._drop_client(node)
        proc = self.procs.get(node)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    async def restart(self, node: str, timeout: float = 60.0) -> None:
        await self.kill(node)
        self.start_node(node)
        await self.wait_socket(node, timeout)

    async def stop(self) -> None:
        for node in list(self.procs):
            await self.stop_node(node)

    async def add_node(self, node: str, timeout: float = 60.0) -> dict[str, Any]:
        """Start a new agent with join=true and ask the leader to add it as a member."""
        members = [n for n in self.ids if self.alive(n)]
        self.ids.append(node)
        self.write_config(node, join=True, peers=[*members, node])
        self.start_node(node)
        await self.wait_socket(node, timeout)
        result: dict[str, Any] = await self.call_leader(
            "add_member", id=node, address=self.address(node), timeout=timeout, idempotent=True
        )
        return result

    # --- talking to agents -----------------------------------------------------------------------

    async def wait_socket(self, node: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        path = self.socket_path(node)
        while True:
            if not self.alive(node):
                raise RuntimeError(
                    f"{node}'s agent exited; see {self.log_path(node)}:\n{self.tail(node)}"
                )
            if path.exists():
                try:
                    await self.client(node)
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {node}'s control socket {path}")
            await asyncio.sleep(0.05)

    def tail(self, node: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path(node).read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def client(self, node: str) -> ControlClient:
        existing = self._clients.get(node)
        if existing is not None:
            return existing
        client = await ControlClient.connect(str(self.socket_path(node)))
        existing = self._clients.get(node)
        if existing is not None:  # another caller connected meanwhile: keep one
            await client.close()
            return existing
        self._clients[node] = client
        return client

    async def _drop_client(self, node: str) -> None:
        client = self._clients.pop(node, None)
        if client is not None:
            await client.close()

    async def call(self, node: str, method: str, **params: Any) -> Any:
        try:
            return await (await self.client(node)).call(method, **params)
        except ControlError as exc:
            if exc.code == "connection-lost":
                await self._drop_client(node)
            raise

    async def status(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(node, "status")
        return result

    async def statuses(self, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
        """Status of every live node that answers within ``timeout`` (a paused one does not)."""

        async def one(node: str) -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(self.status(node), timeout)
            except (ControlError, OSError, TimeoutError):
                await self._drop_client(node)
                return None

        nodes = [n for n in self.ids if self.alive(n)]
        answers = await asyncio.gather(*(one(n) for n in nodes))
        return {n: a for n, a in zip(nodes, answers, strict=True) if a is not None}

    async def wait_leader(self, *, exclude: Iterable[str] = (), timeout: float = 20.0) -> str:
        """Wait until a leader is elected that a majority of live nodes agree on."""
        excluded = set(exclude)
        deadline = time.monotonic() + timeout
        while True:
            sts = {n: s for n, s in (await self.statuses()).items() if n not in excluded}
            leaders = [n for n, s in sts.items() if s["role"] == "leader"]
            for leader in leaders:
                term = sts[leader]["term"]
                agree = [n for n, s in sts.items() if s["leader"] == leader and s["term"] == term]
                voters = sts[leader]["voters"]
                if len(agree) * 2 > len(voters):
                    return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader agreed on within {timeout}s; statuses: {sts}")
            await asyncio.sleep(0.05)

    async def wait_healthy(self, timeout: float = 30.0) -> str:
        """Wait until every member is up, agrees on the leader and has applied its commit;
        return the leader (benchmarks start each phase from this state)."""
        deadline = time.monotonic() + timeout
        while True:
            leader = await self.wait_leader(timeout=max(1.0, deadline - time.monotonic()))
            sts = await self.statuses()
            if len(sts) == len(self.ids) and leader in sts:
                target = sts[leader]["commit"]
                if all(s["leader"] == leader and s["applied"] >= target for s in sts.values()):
                    return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not healthy within {timeout}s: {sts}")
            await asyncio.sleep(0.05)

    async def call_leader(
        self, method: str, *, retry_for: float = 20.0, idempotent: bool = False, **params: Any
    ) -> Any:
        """Send to the current leader, following not-leader hints and waiting out elections.

        Only errors that prove the request never entered the log are retried, unless the
        request is ``idempotent``: a proposal whose connection broke may still commit, and
        sending it again would apply it twice.
        """
        retry = {"not-leader", "no-leader", "busy"}
        if idempotent:
            retry |= {"connection-lost", "stopping", "timeout", "proposal-lost"}
        deadline = time.monotonic() + retry_for
        target: str | None = None
        while True:
            if target is None or not self.alive(target):
                target = await self.wait_leader(timeout=max(1.0, deadline - time.monotonic()))
            try:
                return await self.call(target, method, **params)
            except ControlError as exc:
                if exc.code not in retry or time.monotonic() > deadline:
                    raise
                hinted = exc.details.get("leader")
                target = hinted if isinstance(hinted, str) and self.alive(hinted) else None
                await asyncio.sleep(0.05)

    async def put(self, key: str, value: str, **params: Any) -> dict[str, Any]:
        """A KV put through the leader (not retried once sent: a put is not idempotent)."""
        result: dict[str, Any] = await self.call_leader(
            "kv.put", key=b64(key), value=b64(value), **params
        )
        return result

    async def get_prefix(
        self, node: str, prefix: str, *, serializable: bool = True
    ) -> list[dict[str, Any]]:
        """Every key under ``prefix`` as ``node`` has it, in modification order, decoded."""
        res = await self.call(
            node,
            "kv.get",
            key=b64(prefix),
            range_end=base64.b64encode(prefix_end(prefix.encode())).decode("ascii"),
            serializable=serializable,
        )
        rows = [{**kv, "key": unb64(kv["key"]), "value": unb64(kv["value"])} for kv in res["kvs"]]
        return sorted(rows, key=lambda kv: int(kv["mod_revision"]))

    async def close(self) -> None:
        for node in list(self._clients):
            await self._drop_client(node)


# --- make lab ------------------------------------------------------------------------------------


def _print_status(statuses: dict[str, dict[str, Any]]) -> None:
    print(f"{'NODE':<8} {'ROLE':<13} {'TERM':>5} {'LEADER':<8} {'COMMIT':>7} {'APPLIED':>7}")
    for node, st in sorted(statuses.items()):
        print(
            f"{node:<8} {st['role']:<13} {st['term']:>5} {st['leader'] or '-':<8} "
            f"{st['commit']:>7} {st['applied']:>7}"
        )


async def _lab(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if root.exists():
        shutil.rmtree(root)
    cluster = LocalCluster(root, args.nodes)
    task = asyncio.current_task()
    if task is not None:  # SIGTERM stops the agents too, as Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print(f"starting {args.nodes} agents on loopback under {root} …", flush=True)
    try:
        t0 = time.monotonic()
        leader = await cluster.start()
        print(f"leader {leader} elected {time.monotonic() - t0:.2f}s after start\n")
        await cluster.put("/hello", "from make lab")
        _print_status(await cluster.statuses())
        print("\ntalk to a node:")
        print(f"  .venv/bin/python -m agent ctl --socket {cluster.socket_path('node1')} status")
        print(f"logs: {root}/node*/agent.log")
        if args.once:
            return 0
        print("\nthe cluster runs until you press Ctrl-C", flush=True)
        await asyncio.Event().wait()
        return 0
    finally:
        await cluster.close()
        await cluster.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run a local cluster of agents on loopback.")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--dir", default=".shoal-dev")
    p.add_argument("--once", action="store_true", help="print the status and stop the cluster")
    args = p.parse_args(argv)
    try:
        return asyncio.run(_lab(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nstopped the cluster")
        return 0


if __name__ == "__main__":
    sys.exit(main())
