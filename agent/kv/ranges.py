"""Serving a RangeRequest from the index, with etcd 3.4's limit / sort / count rules.

etcd's order of work, reproduced because users can see it:

- ``count`` is every matching key at the revision, before any limit;
- with a sort order, everything is fetched, sorted, then cut to ``limit``;
- with no sort order but a non-key sort target, etcd sorts ascending — but only the first
  ``limit + 1`` keys (in key order) it fetched, then cuts to ``limit``;
- ``more`` is set when the cut dropped something; ``count_only`` returns no kvs and more=False.

Sorting is stable, so keys with equal sort values stay in key order (ascending or descending).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.kv.errors import BAD_COMMAND, KVError, compacted_error, future_error
from agent.kv.keys import check_key
from agent.kv.model import SORT_ORDERS, SORT_TARGETS, KeyValue, RangeRequest, RangeResponse
from agent.kv.mvcc import MVCCIndex

_SORT_KEYS: dict[str, Callable[[KeyValue], Any]] = {
    "key": lambda kv: kv.key,
    "version": lambda kv: kv.version,
    "create": lambda kv: kv.create_revision,
    "mod": lambda kv: kv.mod_revision,
    "value": lambda kv: kv.value,
}


def check_range_request(req: RangeRequest) -> None:
    """Static checks (no state needed)."""
    check_key(req.key)
    if req.sort_target not in SORT_TARGETS:
        raise KVError(
            BAD_COMMAND,
            f"unknown sort target {req.sort_target!r}; use one of {', '.join(SORT_TARGETS)}",
        )
    if req.sort_order not in SORT_ORDERS:
        raise KVError(
            BAD_COMMAND,
            f"unknown sort order {req.sort_order!r}; use one of {', '.join(SORT_ORDERS)}",
        )


def check_range_revision(revision: int, current: int, compact_revision: int) -> None:
    """A past revision must be retained; a future one is refused."""
    if revision <= 0:
        return
    if revision > current:
        raise future_error(revision, current)
    if revision < compact_revision:
        raise compacted_error(revision, compact_revision)


def run_range(
    index: MVCCIndex, req: RangeRequest, view_revision: int, compact_revision: int
) -> RangeResponse:
    """Answer ``req`` as seen at ``view_revision`` (the store's, or a txn's in-progress one)."""
    check_range_request(req)
    check_range_revision(req.revision, view_revision, compact_revision)
    at: int | None = None
    if 0 < req.revision < view_revision:
        at = req.revision
    if req.count_only:
        return RangeResponse(view_revision, (), index.count(req.key, req.range_end, at), False)

    fetch = req.limit
    if req.sort_order != "none":
        fetch = 0
    if fetch > 0:
        fetch += 1
    kvs = index.range(req.key, req.range_end, at, fetch)
    count = index.count(req.key, req.range_end, at)

    order = req.sort_order
    if req.sort_target != "key" and order == "none":
        order = "ascend"
    if order == "ascend" and req.sort_target != "key":
        kvs.sort(key=_SORT_KEYS[req.sort_target])
    elif order == "descend":
        kvs.sort(key=_SORT_KEYS[req.sort_target], reverse=True)

    more = False
    if req.limit > 0 and len(kvs) > req.limit:
        del kvs[req.limit :]
        more = True
    if req.keys_only:
        kvs = [kv._replace(value=b"") for kv in kvs]
    return RangeResponse(view_revision, tuple(kvs), count, more)
