"""The errors durable storage raises.

They live in their own module because the WAL, the snapshot store and the façade all raise them,
and the runtime catches them without caring which layer found the problem.
"""

from __future__ import annotations

import os

RECOVERY_ADVICE = "move the data dir aside and rejoin the node, or restore from backup"
"""What an operator can do when the node's own data cannot be trusted: the rest of the cluster
still holds the log, so a node that starts empty and rejoins catches up from its peers."""


class StorageError(Exception):
    """Durable storage failed; the node must not pretend its state was persisted."""


class CorruptionError(StorageError):
    """Stored data is damaged in a way that cannot be repaired without losing data.

    Starting anyway could silently drop entries this node already acknowledged to its peers, so
    the node refuses to start and says exactly where the damage is.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.reason = reason
        super().__init__(
            f"{self.path}: corrupt at byte offset {offset}: {reason}. "
            f"Refusing to start rather than lose data; {RECOVERY_ADVICE}."
        )


class LogGapError(CorruptionError):
    """The write-ahead log does not hold every entry after the snapshot it is replayed from.

    Separate from plain corruption because the façade reacts to it differently: after falling
    back to an older snapshot it means the fallback is impossible, and the error should then
    name the damaged newer snapshot rather than the (healthy) WAL.
    """
