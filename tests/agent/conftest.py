"""Fixtures for tests that run real agent processes on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shell.devcluster import LocalCluster

T = TypeVar("T")


class ClusterRunner:
    """Makes clusters under a test's tmp dir and always stops their processes afterwards."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clusters: list[LocalCluster] = []
        self.loop = asyncio.new_event_loop()

    def make(self, nodes: int = 3, **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(self.root / f"c{len(self.clusters)}", nodes, **kwargs)
        self.clusters.append(cluster)
        return cluster

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 240.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        for cluster in self.clusters:
            try:
                self.loop.run_until_complete(cluster.close())
                self.loop.run_until_complete(cluster.stop())
            except Exception:
                for proc in cluster.procs.values():
                    if proc.poll() is None:
                        proc.kill()
        self.loop.close()


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[ClusterRunner]:
    runner = ClusterRunner(tmp_path)
    yield runner
    runner.close()


def logs_of(cluster: LocalCluster) -> str:
    return "\n".join(f"--- {n}\n{cluster.tail(n, 40)}" for n in cluster.ids)


Check = Callable[[], Coroutine[Any, Any, bool]]


async def eventually(check: Check, timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` we waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)
