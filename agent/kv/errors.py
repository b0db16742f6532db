"""The KV store's errors: one exception type, each failure a stable code a program can test.

Messages carry etcd's wording where etcd has one (so people who know etcdctl recognise them)
plus what to do about it; ``details`` carry the numbers (e.g. the oldest revision still kept).
"""

from __future__ import annotations

from typing import Any

from agent.errors import AgentError

EMPTY_KEY = "empty-key"
KEY_TOO_LONG = "key-too-long"
VALUE_TOO_LARGE = "value-too-large"
FUTURE_REVISION = "future-revision"
COMPACTED = "compacted"
LEASE_NOT_FOUND = "lease-not-found"
LEASE_EXISTS = "lease-exists"
LEASE_TTL_TOO_LARGE = "lease-ttl-too-large"
INVALID_LEASE_ID = "invalid-lease-id"
INVALID_TTL = "invalid-ttl"
DUPLICATE_KEY = "duplicate-key"
TOO_MANY_OPS = "too-many-ops"
KEY_NOT_FOUND = "key-not-found"
VALUE_PROVIDED = "value-provided"
LEASE_PROVIDED = "lease-provided"
RESERVED_PREFIX = "reserved-prefix"
BAD_COMMAND = "bad-command"
UNSUPPORTED_VERSION = "unsupported-version"
ALREADY_APPLIED = "already-applied"
BAD_SNAPSHOT = "bad-snapshot"
INTERNAL = "internal"


class KVError(AgentError):
    """A KV request was refused; nothing in the store changed."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(code, message, **details)

    def __repr__(self) -> str:
        return f"KVError({self.code!r}, {self.message!r})"


def compacted_error(revision: int, compact_revision: int) -> KVError:
    """Reading or watching below the compaction point: name the oldest revision still kept."""
    return KVError(
        COMPACTED,
        f"mvcc: required revision has been compacted (asked for {revision}; "
        f"the oldest revision still kept is {compact_revision})",
        revision=revision,
        compact_revision=compact_revision,
    )


def future_error(revision: int, current: int) -> KVError:
    """Reading or compacting beyond the newest revision."""
    return KVError(
        FUTURE_REVISION,
        f"mvcc: required revision is a future revision (asked for {revision}; "
        f"the current revision is {current})",
        revision=revision,
        current_revision=current,
    )


def lease_not_found(lease_id: int) -> KVError:
    return KVError(
        LEASE_NOT_FOUND,
        f"etcdserver: requested lease not found (lease {lease_id} does not exist or has "
        "expired; grant a new one)",
        lease=lease_id,
    )
