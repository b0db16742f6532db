"""shoal's replicated key-value store: etcd v3 semantics as a deterministic state machine.

Modules, one job each: ``model`` (values, requests, responses), ``keys`` (limits, ranges,
reserved prefix), ``mvcc`` (versions per key), ``ranges`` (serving a range), ``txn`` (checks,
compares, plans), ``writer`` (one revision's mutations), ``leases``, ``history`` (event log),
``store`` (the API), ``commands`` (Raft log codec), ``results`` (JSON responses),
``snapshot`` (state codec), ``machine`` (the Raft StateMachine).
"""

from agent.kv.commands import (
    Command,
    CompactCommand,
    DeleteRangeCommand,
    LeaseExpireCommand,
    LeaseGrantCommand,
    LeaseRevokeCommand,
    PutCommand,
    TxnCommand,
)
from agent.kv.commands import decode as decode_command
from agent.kv.commands import encode as encode_command
from agent.kv.errors import KVError
from agent.kv.keys import MAX_KEY_BYTES, MAX_VALUE_BYTES, RESERVED, prefix_end
from agent.kv.machine import KVStateMachine
from agent.kv.model import (
    Compare,
    DeleteRangeRequest,
    Event,
    KeyValue,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from agent.kv.results import event_json, kv_json, response_json
from agent.kv.store import KVStore

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "RESERVED",
    "Command",
    "CompactCommand",
    "Compare",
    "DeleteRangeCommand",
    "DeleteRangeRequest",
    "Event",
    "KVError",
    "KVStateMachine",
    "KVStore",
    "KeyValue",
    "LeaseExpireCommand",
    "LeaseGrantCommand",
    "LeaseRevokeCommand",
    "PutCommand",
    "PutRequest",
    "RangeRequest",
    "TxnCommand",
    "TxnRequest",
    "decode_command",
    "encode_command",
    "event_json",
    "kv_json",
    "prefix_end",
    "response_json",
]
