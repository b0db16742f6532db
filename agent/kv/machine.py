"""The Raft-facing state machine: decode a log entry, apply it to the store, report back.

``apply`` never raises: a bad or refused command yields ``{"header": ..., "error": {code,
message, ...}}`` and changes nothing, so one bad proposal can neither crash a node nor make
members diverge. Entries at or below the last applied index (a replay after a snapshot
restore) are skipped, so applying is idempotent with respect to the Raft index (Raft indexes
start at 1; index 0 is never treated as a replay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.kv import commands
from agent.kv import snapshot as snapshot_codec
from agent.kv.errors import ALREADY_APPLIED, INTERNAL, KVError
from agent.kv.results import AnyResponse, header, response_json
from agent.kv.store import KVStore
from agent.statemachine import StateMachine


def execute(store: KVStore, cmd: commands.Command) -> AnyResponse:
    """Run one decoded command against the store."""
    if isinstance(cmd, commands.PutCommand):
        return store.put_request(cmd.request, allow_reserved=cmd.allow_reserved)
    if isinstance(cmd, commands.DeleteRangeCommand):
        return store.delete_request(cmd.request, allow_reserved=cmd.allow_reserved)
    if isinstance(cmd, commands.TxnCommand):
        return store.txn_request(cmd.request, allow_reserved=cmd.allow_reserved)
    if isinstance(cmd, commands.CompactCommand):
        return store.compact(cmd.revision)
    if isinstance(cmd, commands.LeaseGrantCommand):
        return store.lease_grant(cmd.id, cmd.ttl)
    return store.lease_revoke(cmd.id)  # revoke and expire do the same thing


class KVStateMachine:
    """Implements agent.statemachine.StateMachine over a :class:`KVStore`."""

    def __init__(self, store: KVStore | None = None) -> None:
        self.store = store if store is not None else KVStore()

    def apply(self, index: int, data: bytes) -> dict[str, Any]:
        store = self.store
        if 0 < index <= store.applied_index:
            return self._error(
                KVError(
                    ALREADY_APPLIED,
                    f"log index {index} was already applied (the store is at index "
                    f"{store.applied_index}); skipped",
                    index=index,
                    applied_index=store.applied_index,
                )
            )
        try:
            result = response_json(execute(store, commands.decode(data)))
        except KVError as exc:
            result = self._error(exc)
        except Exception as exc:  # a bug must not take the node down; report it loudly
            result = self._error(
                KVError(INTERNAL, f"internal error applying a KV command: {exc!r}")
            )
        store.applied_index = index
        return result

    def _error(self, exc: KVError) -> dict[str, Any]:
        return {"header": header(self.store.revision), "error": exc.to_dict()}

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def snapshot_steps(self) -> snapshot_codec.Steps:
        """Freeze the store now; encode it in short steps while entries go on being applied
        (see agent/snapshotting.py)."""
        return snapshot_codec.encode_steps(self.store.capture())

    def restore(self, data: bytes) -> None:
        self.store.restore(data)


if TYPE_CHECKING:  # the Raft runtime's protocol: checked by mypy, free at run time
    _conforms: StateMachine = KVStateMachine()
