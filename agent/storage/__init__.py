"""Durable storage for the agent's Raft state: a write-ahead log plus snapshot files.

The runtime only needs :class:`DiskStorage` (open, save each Ready, save compaction snapshots)
and the errors; the modules behind it each do one job: ``records`` (byte layout of a WAL
record), ``wal`` (segments, recovery, appending), ``snapshots`` (atomic snapshot files),
``fileio`` (fsync and permissions), ``errors``.
"""

from agent.storage.disk import DiskStorage, Recovered
from agent.storage.errors import CorruptionError, StorageError

__all__ = ["CorruptionError", "DiskStorage", "Recovered", "StorageError"]
