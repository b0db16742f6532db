"""The store's values, requests and responses: plain frozen data, shared by every module.

A deletion is stored as a *tombstone*: a KeyValue with version 0 whose mod_revision is the
revision of the deletion and every other field zero — exactly the ``kv`` etcd puts in a DELETE
event, so history records and events can share one object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

EventType = Literal["PUT", "DELETE"]
SortTarget = Literal["key", "version", "create", "mod", "value"]
SortOrder = Literal["none", "ascend", "descend"]
CompareTarget = Literal["value", "version", "create", "mod", "lease"]
CompareResult = Literal["=", "!=", "<", ">"]

SORT_TARGETS: tuple[str, ...] = ("key", "version", "create", "mod", "value")
SORT_ORDERS: tuple[str, ...] = ("none", "ascend", "descend")
COMPARE_TARGETS: tuple[str, ...] = ("value", "version", "create", "mod", "lease")
COMPARE_RESULTS: tuple[str, ...] = ("=", "!=", "<", ">")


class KeyValue(NamedTuple):
    """One version of a key, as etcd's mvccpb.KeyValue.

    A NamedTuple rather than a frozen dataclass: just as immutable (history and events share
    these objects), but about three times cheaper to create, which is what restoring a
    snapshot of tens of thousands of versions spends its time on.
    """

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes = b""
    lease: int = 0

    @property
    def is_tombstone(self) -> bool:
        return self.version == 0


def tombstone(key: bytes, revision: int) -> KeyValue:
    return KeyValue(key, 0, revision, 0)


class Event(NamedTuple):
    """One change, in the order it was applied; ``kv.mod_revision`` is its revision."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = "none"
    sort_target: SortTarget = "key"
    keys_only: bool = False
    count_only: bool = False


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """``target(key..range_end) result value``; value is bytes for "value", else an int."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: bytes | int
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()


Op = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest


# --- responses --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeResponse:
    revision: int
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool


@dataclass(frozen=True, slots=True)
class PutResponse:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    revision: int
    succeeded: bool
    responses: tuple[Response, ...] = ()


Response = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(frozen=True, slots=True)
class CompactResponse:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    revision: int
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    revision: int
    deleted: int = 0


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResponse:
    """``ttl`` is the remaining seconds (-1 when the lease does not exist, as etcd)."""

    revision: int
    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = field(default=())
