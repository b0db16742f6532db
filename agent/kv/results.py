"""Responses and events as JSON-able dicts (bytes as base64), the shape apply() returns.

Every response carries ``header: {revision}`` like etcd's ResponseHeader; txn responses list
one ``{"op": ..., ...}`` entry per executed operation.
"""

from __future__ import annotations

import base64
from typing import Any

from agent.kv.model import (
    CompactResponse,
    DeleteRangeResponse,
    Event,
    KeyValue,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
    PutResponse,
    RangeResponse,
    TxnResponse,
)

AnyResponse = (
    RangeResponse
    | PutResponse
    | DeleteRangeResponse
    | TxnResponse
    | CompactResponse
    | LeaseGrantResponse
    | LeaseRevokeResponse
    | LeaseTimeToLiveResponse
)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def kv_json(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": _b64(kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "value": _b64(kv.value),
        "lease": kv.lease,
    }


def event_json(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ev.type, "kv": kv_json(ev.kv)}
    if ev.prev_kv is not None:
        out["prev_kv"] = kv_json(ev.prev_kv)
    return out


def header(revision: int) -> dict[str, int]:
    return {"revision": revision}


def response_json(resp: AnyResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"header": header(resp.revision)}
    if isinstance(resp, RangeResponse):
        out.update(kvs=[kv_json(kv) for kv in resp.kvs], count=resp.count, more=resp.more)
    elif isinstance(resp, PutResponse):
        if resp.prev_kv is not None:
            out["prev_kv"] = kv_json(resp.prev_kv)
    elif isinstance(resp, DeleteRangeResponse):
        out["deleted"] = resp.deleted
        if resp.prev_kvs:
            out["prev_kvs"] = [kv_json(kv) for kv in resp.prev_kvs]
    elif isinstance(resp, TxnResponse):
        out["succeeded"] = resp.succeeded
        out["responses"] = [{"op": _op_name(r), **response_json(r)} for r in resp.responses]
    elif isinstance(resp, LeaseGrantResponse):
        out.update(id=resp.id, ttl=resp.ttl)
    elif isinstance(resp, LeaseRevokeResponse):
        out["deleted"] = resp.deleted
    elif isinstance(resp, LeaseTimeToLiveResponse):
        out.update(
            id=resp.id,
            ttl=resp.ttl,
            granted_ttl=resp.granted_ttl,
            keys=[_b64(k) for k in resp.keys],
        )
    return out


def _op_name(resp: AnyResponse) -> str:
    if isinstance(resp, RangeResponse):
        return "range"
    if isinstance(resp, PutResponse):
        return "put"
    if isinstance(resp, DeleteRangeResponse):
        return "delete_range"
    return "txn"
