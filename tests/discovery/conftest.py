"""A private multicast network for the discovery tests: namespaces joined by a bridge.

Topology (all of it inside namespaces this fixture creates; the host's own interfaces never see
a packet)::

    <p>-hub:  br0 ── v-op ─── eth0 10.253.0.10  <p>-op   (the operator: browsers run here)
                 ├── v-n1 ─── eth0 10.253.0.11  <p>-n1
                 ├── v-n2 ─── eth0 10.253.0.12  <p>-n2
                 └── v-n3 ─── eth0 10.253.0.13  <p>-n3

Everything that multicasts runs in these namespaces through ``ip netns exec`` (see worker.py),
bound to the namespace's own address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("worker.py"))
SUBNET = "10.253.0"
NODES = {"op": f"{SUBNET}.10", "n1": f"{SUBNET}.11", "n2": f"{SUBNET}.12", "n3": f"{SUBNET}.13"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _why_no_netns() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


@dataclass
class Proc:
    """A process running in a namespace, with its stdout read as JSON lines."""

    popen: subprocess.Popen[str]
    argv: list[str]

    def line(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next JSON line on stdout (fails the test after ``timeout`` seconds)."""
        import select

        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no output within {timeout} s from {self.argv}")
            ready, _, _ = select.select([self.popen.stdout], [], [], left)
            if ready:
                text = self.popen.stdout.readline()
                if not text:
                    err = self.popen.stderr.read() if self.popen.stderr else ""
                    raise AssertionError(f"{self.argv} ended without output: {err}")
                if text.strip().startswith("{"):
                    return dict(json.loads(text))

    def stderr_line(self, timeout: float = 10.0) -> str:
        import select

        assert self.popen.stderr is not None
        ready, _, _ = select.select([self.popen.stderr], [], [], timeout)
        if not ready:
            raise AssertionError(f"no stderr within {timeout} s from {self.argv}")
        return self.popen.stderr.readline()

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout=5)


@dataclass
class Net:
    prefix: str
    procs: list[Proc] = field(default_factory=list)

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def start(self, node: str, argv: list[str]) -> Proc:
        """Start ``python argv...`` inside ``node``'s namespace."""
        full = ["ip", "netns", "exec", self.ns(node), sys.executable, *argv]
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        popen = subprocess.Popen(
            full, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        proc = Proc(popen, full)
        self.procs.append(proc)
        return proc

    def worker(self, node: str, *args: str) -> Proc:
        return self.start(node, [WORKER, *args])

    def run_worker(self, node: str, *args: str, timeout: float = 20.0) -> dict[str, Any]:
        """Run a worker to completion and return its (last) JSON line."""
        proc = self.worker(node, *args)
        try:
            out, err = proc.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            raise
        assert proc.popen.returncode == 0, err
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, f"no output; stderr: {err}"
        return dict(json.loads(lines[-1]))

    def publish(self, node: str, *args: str) -> Proc:
        """``python -m agent.mdns publish ...`` in ``node``, once it says it is publishing."""
        proc = self.start(node, ["-m", "agent.mdns", "publish", *args])
        assert "publishing" in proc.stderr_line()
        return proc

    def agent(self, node: str, *args: str) -> Proc:
        """An agent-style ``_shoal._tcp`` advertiser in ``node``, once it is ready."""
        proc = self.worker(node, "agent", "--address", NODES[node], *args)
        assert proc.line()["ready"]
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()


@pytest.fixture(scope="session")
def _netns() -> Iterator[str]:
    why = _why_no_netns()
    if why:
        pytest.skip(why)
    prefix = f"shoaldisc{os.getpid()}"
    created: list[str] = []
    try:
        hub = f"{prefix}-hub"
        _ip("netns", "add", hub)
        created.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for node, address in NODES.items():
            ns = f"{prefix}-{node}"
            _ip("netns", "add", ns)
            created.append(ns)
            _ip(
                "-n",
                hub,
                "link",
                "add",
                f"v-{node}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _ip("-n", hub, "link", "set", f"v-{node}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            # A multicast route, so sockets that do not pick an interface still use eth0.
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        stderr = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot build network namespaces: {exc} {stderr.decode(errors='replace')}")
    try:
        yield prefix
    finally:
        for ns in reversed(created):
            # Anything still running in our namespaces was started by these tests.
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
            ).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def net(_netns: str) -> Iterator[Net]:
    """The namespaces, plus process bookkeeping: whatever a test starts is stopped after it."""
    n = Net(_netns)
    try:
        yield n
    finally:
        n.stop_all()
