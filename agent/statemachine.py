"""What the replicated log drives: a deterministic state machine applied in log order.

The KV store (a later issue) is one; :class:`RecordingMachine` is the simplest useful one — it
keeps every applied command in order, which is exactly what durability and replication tests
need to check ("every acknowledged entry present exactly once, in order").
"""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol


class StateMachine(Protocol):
    """Applied on every member in the same order; must be deterministic."""

    def apply(self, index: int, data: bytes) -> Any:
        """Apply one committed command; the return value is the proposer's result."""
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state (taken at the last applied index)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""
        ...


class RecordingMachine:
    """Records each applied command with its log index."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []

    def apply(self, index: int, data: bytes) -> dict[str, int]:
        self.records.append((index, data))
        return {"index": index, "count": len(self.records)}

    def snapshot(self) -> bytes:
        return json.dumps(
            [[i, base64.b64encode(d).decode("ascii")] for i, d in self.records],
            separators=(",", ":"),
        ).encode()

    def restore(self, data: bytes) -> None:
        raw = json.loads(data) if data else []
        self.records = [(int(i), base64.b64decode(d)) for i, d in raw]

    def read(self, after: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Records with index > ``after``, at most ``limit`` of them."""
        lo, hi = 0, len(self.records)
        while lo < hi:  # binary search: records are in index order
            mid = (lo + hi) // 2
            if self.records[mid][0] <= after:
                lo = mid + 1
            else:
                hi = mid
        return self.records[lo : lo + limit]
