"""What the replicated log drives: a deterministic state machine applied in log order.

The agent runs one: the KV store (agent/kv/machine.py, wrapped by agent/kvserver.py), which
receives every committed entry from agent/node.py and snapshots itself for log compaction.
"""

from __future__ import annotations

from typing import Any, Protocol


class StateMachine(Protocol):
    """Applied on every member in the same order; must be deterministic."""

    def apply(self, index: int, data: bytes) -> Any:
        """Apply one committed command; the return value is the proposer's result."""
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state (taken at the last applied index).

        A machine whose state is large should also offer ``snapshot_steps()``
        (agent/snapshotting.py), so that the runtime never waits for a whole serialization.
        """
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""
        ...
