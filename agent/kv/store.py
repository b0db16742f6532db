"""The replicated KV store with etcd v3 semantics: revisions, ranges, txns, leases, history.

Everything here is deterministic and pure (no clock, no I/O): every member applies the same
commands in the same order and ends in the same state. Each public write validates fully
before it changes anything, so a refused request leaves the store exactly as it was.

Revisions follow etcd: a fresh store is at revision 1; a write that changes something (a put,
a delete that deleted, a txn that wrote, a revoke that deleted keys) moves it up by exactly
one; the writes inside one txn share that revision.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.kv import snapshot as snapshot_codec
from agent.kv.errors import compacted_error, future_error
from agent.kv.history import EventLog, Subscriber
from agent.kv.keys import check_key, check_reserved
from agent.kv.leases import DEFAULT_MIN_TTL, LeaseTable
from agent.kv.model import (
    CompactResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
    Op,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Response,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from agent.kv.mvcc import MVCCIndex
from agent.kv.ranges import run_range
from agent.kv.txn import Plan, check_path, check_put_request, check_put_state, check_static
from agent.kv.txn import make_plan as _make_plan
from agent.kv.writer import WriteBatch

RestoreHook = Callable[[int], None]


class KVStore:
    """The state: an MVCC index, leases, the event log and the revision counters."""

    def __init__(self, *, min_lease_ttl: int = DEFAULT_MIN_TTL) -> None:
        self._index = MVCCIndex()
        self._leases = LeaseTable(min_lease_ttl)
        self._events = EventLog()
        self._revision = 1
        self._compacted = -1  # etcd's "never compacted"; compact(0) is then still allowed
        self.applied_index = 0
        """The last Raft index applied (kept in snapshots so a restore knows where it is)."""
        self.lease_remaining: Callable[[int], int | None] | None = None
        """Runtime hook: seconds left on a lease (None = unknown → the granted TTL)."""
        self._subscribers: list[tuple[Subscriber, RestoreHook | None]] = []
        self.subscriber_errors: list[BaseException] = []

    # --- state at a glance ----------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The oldest revision still readable (0 when never compacted)."""
        return max(self._compacted, 0)

    def __len__(self) -> int:
        return self._index.live_count()

    def stats(self) -> dict[str, int]:
        """Sizes that grow with history, for retention decisions and status pages."""
        return {
            "revision": self._revision,
            "compact_revision": self.compact_revision,
            "keys": self._index.live_count(),
            "versions": self._index.record_count(),
            "events": self._events.event_count(),
            "leases": len(self._leases.ids()),
            "applied_index": self.applied_index,
        }

    # --- reads ----------------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        revision: int = 0,
        sort_order: SortOrder = "none",
        sort_target: SortTarget = "key",
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResponse:
        req = RangeRequest(
            key, range_end, limit, revision, sort_order, sort_target, keys_only, count_only
        )
        return self.range_request(req)

    def range_request(self, req: RangeRequest) -> RangeResponse:
        return run_range(self._index, req, self._revision, self._compacted)

    def get(self, key: bytes) -> KeyValue | None:
        """The current version of one key (None if absent); O(1)."""
        return self._index.get(key)

    # --- writes ---------------------------------------------------------------------------

    def put(
        self,
        key: bytes,
        value: bytes,
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        allow_reserved: bool = False,
    ) -> PutResponse:
        req = PutRequest(key, value, lease, prev_kv, ignore_value, ignore_lease)
        return self.put_request(req, allow_reserved=allow_reserved)

    def put_request(self, req: PutRequest, *, allow_reserved: bool = False) -> PutResponse:
        check_put_request(req)
        check_reserved(req.key, b"", allow_reserved)
        if req.lease:
            self._leases.require(req.lease)
        check_put_state(self._index, self._leases, req)
        batch = self._batch()
        resp = batch.put(req)
        self._commit(batch)
        return resp

    def delete_range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        prev_kv: bool = False,
        allow_reserved: bool = False,
    ) -> DeleteRangeResponse:
        req = DeleteRangeRequest(key, range_end, prev_kv)
        return self.delete_request(req, allow_reserved=allow_reserved)

    def delete_request(
        self, req: DeleteRangeRequest, *, allow_reserved: bool = False
    ) -> DeleteRangeResponse:
        check_key(req.key)
        check_reserved(req.key, req.range_end, allow_reserved)
        batch = self._batch()
        resp = batch.delete_range(req)
        self._commit(batch)
        return resp

    def txn(
        self,
        compare: list[Compare] | tuple[Compare, ...] = (),
        success: list[Op] | tuple[Op, ...] = (),
        failure: list[Op] | tuple[Op, ...] = (),
        *,
        allow_reserved: bool = False,
    ) -> TxnResponse:
        req = TxnRequest(tuple(compare), tuple(success), tuple(failure))
        return self.txn_request(req, allow_reserved=allow_reserved)

    def txn_request(self, req: TxnRequest, *, allow_reserved: bool = False) -> TxnResponse:
        check_static(req, allow_reserved)
        plan = _make_plan(self._index, req)
        check_path(self._index, self._leases, req, plan, self._revision, self._compacted)
        batch = self._batch()
        resp = self._run_txn(batch, req, plan)
        self._commit(batch)
        return TxnResponse(self._revision, resp.succeeded, resp.responses)

    def _run_txn(self, batch: WriteBatch, req: TxnRequest, plan: Plan) -> TxnResponse:
        nested = iter(plan.nested)
        out: list[Response] = []
        for op in req.success if plan.succeeded else req.failure:
            if isinstance(op, RangeRequest):
                out.append(run_range(self._index, op, batch.view_revision, self._compacted))
            elif isinstance(op, PutRequest):
                out.append(batch.put(op))
            elif isinstance(op, DeleteRangeRequest):
                out.append(batch.delete_range(op))
            else:
                out.append(self._run_txn(batch, op, next(nested)))
        return TxnResponse(batch.view_revision, plan.succeeded, tuple(out))

    def compact(self, revision: int) -> CompactResponse:
        """Forget history below ``revision``; reads and watches there then fail as compacted."""
        if revision <= self._compacted:
            raise compacted_error(revision, self.compact_revision)
        if revision > self._revision:
            raise future_error(revision, self._revision)
        self._index.compact(revision)
        self._events.compact(revision)
        self._compacted = revision
        return CompactResponse(self._revision)

    def auto_compact_target(self, keep_revisions: int) -> int | None:
        """The revision to compact to so the last ``keep_revisions`` stay readable, or None.

        Auto-compaction is off by default; a runtime that wants it proposes ``compact`` with
        this value (through Raft, so every member compacts at the same point).
        """
        target = self._revision - max(keep_revisions, 0)
        return target if target >= 1 and target > self._compacted else None

    # --- leases ---------------------------------------------------------------------------

    def lease_grant(self, lease_id: int, ttl: int) -> LeaseGrantResponse:
        """Create a lease; ``lease_id`` 0 takes the next free id (deterministic)."""
        lease = self._leases.grant(lease_id, ttl)
        return LeaseGrantResponse(self._revision, lease.id, lease.ttl)

    def lease_revoke(self, lease_id: int) -> LeaseRevokeResponse:
        """Drop a lease and delete its keys, all in one revision (in key order)."""
        lease = self._leases.require(lease_id)
        batch = self._batch()
        for key in sorted(lease.keys):
            kv = self._index.get(key)
            if kv is not None:
                batch.delete_kv(kv)
        self._leases.remove(lease_id)
        self._commit(batch)
        return LeaseRevokeResponse(self._revision, len(batch.events))

    def lease_time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseTimeToLiveResponse:
        lease = self._leases.get(lease_id)
        if lease is None:
            return LeaseTimeToLiveResponse(self._revision, lease_id, -1, 0)
        remaining = self.lease_remaining(lease_id) if self.lease_remaining else None
        return LeaseTimeToLiveResponse(
            self._revision,
            lease_id,
            lease.ttl if remaining is None else remaining,
            lease.ttl,
            tuple(sorted(lease.keys)) if keys else (),
        )

    def leases(self) -> list[int]:
        """Every lease id, ascending."""
        return self._leases.ids()

    # --- watches --------------------------------------------------------------------------

    def events_since(
        self, start_revision: int, key: bytes | None = None, range_end: bytes = b""
    ) -> list[Event]:
        """Events at revisions >= ``start_revision`` for (key, range_end), in order.

        ``key`` None means every key; otherwise (key, range_end) as in :meth:`range`.

        ``start_revision`` <= 0 means "from now" (nothing past), as etcd's watch; below the
        compaction point it is refused as compacted, so a watcher knows it missed history.
        """
        if start_revision <= 0:
            return []
        if start_revision < self._compacted:
            raise compacted_error(start_revision, self.compact_revision)
        if key is None:
            key, range_end = b"\0", b"\0"
        return self._events.since(start_revision, key, range_end)

    def subscribe(
        self, on_events: Subscriber, on_restore: RestoreHook | None = None
    ) -> Callable[[], None]:
        """Call ``on_events(revision, events)`` after each revision is applied.

        ``on_restore(revision)`` runs after a snapshot replaced the state (watchers must
        resynchronise). Callbacks must be quick and must not raise: an exception is recorded
        in ``subscriber_errors`` and that subscriber is dropped, so a bad watcher can never
        stop the node applying. Returns a function that unsubscribes.
        """
        entry = (on_events, on_restore)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    # --- internals ------------------------------------------------------------------------

    def _batch(self) -> WriteBatch:
        return WriteBatch(self._index, self._leases, self._revision)

    def _commit(self, batch: WriteBatch) -> None:
        if not batch.events:
            return
        self._revision = batch.revision
        self._events.append(self._revision, batch.events)
        self._notify(lambda sub: sub[0](self._revision, list(batch.events)))

    def _notify(self, call: Callable[[tuple[Subscriber, RestoreHook | None]], None]) -> None:
        for sub in list(self._subscribers):
            try:
                call(sub)
            except Exception as exc:
                self.subscriber_errors = [*self.subscriber_errors[-9:], exc]
                if sub in self._subscribers:
                    self._subscribers.remove(sub)

    # --- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state (history since the compaction point, leases, counters)."""
        return snapshot_codec.encode(self.capture())

    def capture(self) -> snapshot_codec.Frozen:
        """Freeze the current state cheaply (pointer copies of the containers, no per-version
        work); ``snapshot_codec.encode`` of the result gives this moment's snapshot even if it
        runs in another thread while writes continue."""
        meta = snapshot_codec.Meta(
            revision=self._revision,
            compacted=self._compacted,
            applied_index=self.applied_index,
            next_lease_id=self._leases.next_id,
        )
        return snapshot_codec.capture(meta, self._index, self._leases, self._events)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; raises KVError(bad-snapshot) if corrupt.

        A corrupt snapshot leaves the current state untouched.
        """
        meta, histories, leases, batches = snapshot_codec.load(data)
        self._index.load(histories)
        self._leases.load(leases, meta.next_lease_id)
        for hist in histories.values():
            if hist and hist[-1].lease and not hist[-1].is_tombstone:
                self._leases.attach(hist[-1].lease, hist[-1].key)
        self._events.clear()
        for rev, events in batches:
            self._events.append(rev, events)
        self._revision = meta.revision
        self._compacted = meta.compacted
        self.applied_index = meta.applied_index
        self._notify(lambda sub: sub[1](self._revision) if sub[1] else None)
