"""One write at one revision: the mutations a put, delete, txn or lease revoke performs.

A :class:`WriteBatch` is opened at the store's current revision ``begin``; every change it
makes is stamped ``begin + 1`` (its sub-revision is its position in ``events``). Reads made
through the batch see its own earlier writes, like etcd's write txn. The store commits the
batch — bumping the revision by exactly one — only if something changed.

Callers validate first: nothing here raises on user input, so a batch never half-applies.
"""

from __future__ import annotations

from agent.kv.leases import LeaseTable
from agent.kv.model import (
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutRequest,
    PutResponse,
)
from agent.kv.mvcc import MVCCIndex


class WriteBatch:
    def __init__(self, index: MVCCIndex, leases: LeaseTable, begin: int) -> None:
        self.index = index
        self.leases = leases
        self.begin = begin
        self.events: list[Event] = []

    @property
    def revision(self) -> int:
        """The revision every change in this batch gets."""
        return self.begin + 1

    @property
    def view_revision(self) -> int:
        """The revision a read inside the batch reports (etcd: begin, +1 once it wrote)."""
        return self.begin + 1 if self.events else self.begin

    def put(self, req: PutRequest) -> PutResponse:
        rev = self.revision
        prev = self.index.get(req.key)
        value, lease = req.value, req.lease
        if prev is not None:
            if req.ignore_value:
                value = prev.value
            if req.ignore_lease:
                lease = prev.lease
            kv = KeyValue(req.key, prev.create_revision, rev, prev.version + 1, value, lease)
            if prev.lease != lease:
                self.leases.detach(prev.lease, req.key)
        else:
            kv = KeyValue(req.key, rev, rev, 1, value, lease)
        self.index.put(kv)
        self.leases.attach(lease, req.key)
        self.events.append(Event("PUT", kv, prev))
        return PutResponse(rev, prev if req.prev_kv else None)

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        doomed = self.index.range(req.key, req.range_end)
        for kv in doomed:
            self.delete_kv(kv)
        prev = tuple(doomed) if req.prev_kv else ()
        return DeleteRangeResponse(self.view_revision, len(doomed), prev)

    def delete_kv(self, kv: KeyValue) -> None:
        dead = self.index.delete(kv.key, self.revision)
        self.leases.detach(kv.lease, kv.key)
        self.events.append(Event("DELETE", dead, kv))
