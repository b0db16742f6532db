"""Fixtures for the oracle suite: one shoal cluster and one etcd, shared by all its tests.

Starting a 3-agent cluster and an etcd takes seconds, so each starts once for this package
(and stops when its last test is done, so they do not linger through the rest of a full run)
and every test uses its own key prefix instead of a fresh store. Revisions are global to a
store, so tests compare revisions relative to the revision at their start (:class:`Oracle`
``.rel``). Everything runs on one event loop because the backends hold connections bound to it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.oracle.backends import Backend, EtcdBackend, ShoalBackend, etcd_binary, temp_root

T = TypeVar("T")
BACKENDS = ("shoal", "etcd")
REVISION_FIELDS = ("revision", "create_revision", "mod_revision")


@pytest.fixture(scope="package")
def oracle_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float) -> T:
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="package")
def shoal_backend(oracle_loop: asyncio.AbstractEventLoop) -> Iterator[ShoalBackend]:
    root = temp_root("shoal-oracle-")
    backend = ShoalBackend(root)
    try:
        _run(oracle_loop, backend.start(), 60)
        yield backend
    finally:
        _run(oracle_loop, backend.close(), 60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def etcd_backend(oracle_loop: asyncio.AbstractEventLoop) -> Iterator[EtcdBackend]:
    binary = etcd_binary()
    if binary is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server)")
    root = temp_root("etcd-oracle-")
    backend = EtcdBackend(root, binary)
    try:
        _run(oracle_loop, backend.start(), 60)
        yield backend
    finally:
        _run(oracle_loop, backend.close(), 60)
        shutil.rmtree(root, ignore_errors=True)


class Oracle:
    """What a test needs: the backend, a private key prefix, and revisions relative to its start."""

    def __init__(self, backend: Backend, loop: asyncio.AbstractEventLoop, prefix: bytes) -> None:
        self.b = backend
        self.name = backend.name
        self.loop = loop
        self.prefix = prefix
        self.base = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return _run(self.loop, coro, timeout)

    def k(self, name: str | bytes) -> bytes:
        """A key under this test's prefix."""
        return self.prefix + (name.encode() if isinstance(name, str) else name)

    @property
    def end(self) -> bytes:
        """The range_end selecting every key under this test's prefix (which ends in "/")."""
        return self.prefix[:-1] + b"0"

    async def mark(self) -> int:
        """Remember the store's current revision; later revisions are compared relative to it."""
        self.base = (await self.b.get(self.k("\0mark")))["revision"]
        return self.base

    def rel(self, value: Any) -> Any:
        """``value`` with every nonzero revision field shifted by the base revision.

        A revision field of 0 means "none" (a tombstone's create_revision), so it stays 0.
        """
        if isinstance(value, list):
            return [self.rel(v) for v in value]
        if isinstance(value, dict):
            # a txn compare on create/mod revision carries a revision in its "value"
            revision_valued = value.get("target") in ("create", "mod")
            return {
                k: (
                    v - self.base
                    if (k in REVISION_FIELDS or (revision_valued and k == "value"))
                    and isinstance(v, int)
                    and not isinstance(v, bool)
                    and v
                    else self.rel(v)
                )
                for k, v in value.items()
            }
        return value

    def strip(self, value: Any) -> Any:
        """``value`` with keys shown without this test's prefix, for readable comparisons."""
        if isinstance(value, list):
            return [self.strip(v) for v in value]
        if isinstance(value, dict):
            return {k: self.strip(v) for k, v in value.items()}
        if isinstance(value, bytes) and value.startswith(self.prefix):
            return value[len(self.prefix) :]
        return value


def _prefix_of(request: pytest.FixtureRequest) -> bytes:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    return f"/oracle/{name}/".encode()


@pytest.fixture(params=BACKENDS)
def oracle(request: pytest.FixtureRequest, oracle_loop: asyncio.AbstractEventLoop) -> Oracle:
    backend: Backend = request.getfixturevalue(f"{request.param}_backend")
    o = Oracle(backend, oracle_loop, _prefix_of(request))
    o.run(o.mark())
    return o


@pytest.fixture
def shoal(
    request: pytest.FixtureRequest,
    oracle_loop: asyncio.AbstractEventLoop,
    shoal_backend: ShoalBackend,
) -> Oracle:
    """shoal alone, for tests of where shoal deliberately differs from etcd."""
    o = Oracle(shoal_backend, oracle_loop, _prefix_of(request))
    o.run(o.mark())
    return o


@pytest.fixture
def both(
    request: pytest.FixtureRequest,
    oracle_loop: asyncio.AbstractEventLoop,
    shoal_backend: ShoalBackend,
    etcd_backend: EtcdBackend,
) -> tuple[Oracle, Oracle]:
    """The two stores side by side, for differential tests that compare whole transcripts."""
    pair = (
        Oracle(shoal_backend, oracle_loop, _prefix_of(request)),
        Oracle(etcd_backend, oracle_loop, _prefix_of(request)),
    )
    for o in pair:
        o.run(o.mark())
    return pair


def kv(
    key: bytes, value: bytes, create: int, mod: int, version: int, lease: int = 0
) -> dict[str, Any]:
    """An expected KeyValue with revisions relative to the test's start (see Oracle.rel)."""
    return {
        "key": key,
        "value": value,
        "create_revision": create,
        "mod_revision": mod,
        "version": version,
        "lease": lease,
    }
