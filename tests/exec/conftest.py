"""Fixtures for the parallel-exec tests: one 5-node lab per module, always taken down.

The lab helpers come from tests/lab (random lab names, a temporary SHOAL_HOME, belt-and-braces
cleanup); tests here only add the way the shell reaches the nodes: an SSHPool that trusts the
lab's known_hosts and key, and one :class:`Target` per node.
"""

from __future__ import annotations

import pytest

from shell.execute import Target
from shell.lab.state import LabState
from shell.ssh import SSHPool
from tests.lab.conftest import Labs, labs  # noqa: F401 — the same module-scoped lab fixture


@pytest.fixture(scope="module")
def lab5(labs: Labs) -> LabState:  # noqa: F811 — the imported fixture
    """A 5-node lab shared by the module; a test that crashes a node restores it."""
    return labs.up("x", 5)


def make_pool(lab: LabState, connect_timeout: float = 10.0) -> SSHPool:
    """A pool as the shell would make it: strict host keys, the lab's key only."""
    return SSHPool(
        lab.dir / "known_hosts", [lab.dir / "id_ed25519"], connect_timeout=connect_timeout
    )


def targets(lab: LabState) -> list[Target]:
    return [Target(n.name, n.address, 22, "root") for n in lab.nodes]
