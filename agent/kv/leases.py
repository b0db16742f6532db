"""Lease state: which leases exist, their granted TTL, and which keys hang on each.

Only the replicated part lives here. When a lease expires is the runtime's business (it holds
the clocks and keep-alives) and it proposes ``lease_expire`` for the store to apply; the
remaining time for ``time_to_live`` comes from a hook the runtime installs on the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.kv.errors import (
    INVALID_LEASE_ID,
    INVALID_TTL,
    LEASE_EXISTS,
    LEASE_TTL_TOO_LARGE,
    KVError,
    lease_not_found,
)

MAX_LEASE_ID = 2**63 - 1
MAX_LEASE_TTL = 9_000_000_000  # seconds, as etcd's MaxLeaseTTL
DEFAULT_MIN_TTL = 2  # etcd's minimum with its default timing (1.5 x election timeout, rounded up)


@dataclass(slots=True)
class Lease:
    id: int
    ttl: int
    keys: set[bytes] = field(default_factory=set)


class LeaseTable:
    """Leases by id; ids handed out for ``id=0`` come from a counter that only moves up."""

    def __init__(self, min_ttl: int = DEFAULT_MIN_TTL) -> None:
        self.min_ttl = min_ttl
        self._leases: dict[int, Lease] = {}
        self.next_id = 1

    def check_grant(self, lease_id: int, ttl: int) -> tuple[int, int]:
        """Validate a grant; return the (id, ttl) it would create. Changes nothing."""
        if isinstance(lease_id, bool) or not 0 <= lease_id <= MAX_LEASE_ID:
            raise KVError(
                INVALID_LEASE_ID,
                f"lease id {lease_id} is out of range; use 0 (let the cluster pick) or an id "
                f"from 1 to {MAX_LEASE_ID}",
                lease=lease_id,
            )
        if ttl < 0:
            raise KVError(INVALID_TTL, f"lease TTL {ttl} is negative; give seconds >= 0", ttl=ttl)
        if ttl > MAX_LEASE_TTL:
            raise KVError(
                LEASE_TTL_TOO_LARGE,
                f"etcdserver: too large lease TTL ({ttl}s; the limit is {MAX_LEASE_TTL}s)",
                ttl=ttl,
                limit=MAX_LEASE_TTL,
            )
        if lease_id == 0:
            lease_id = self._pick_id()
        elif lease_id in self._leases:
            raise KVError(
                LEASE_EXISTS,
                f"etcdserver: lease already exists (lease {lease_id}); revoke it or use another id",
                lease=lease_id,
            )
        return lease_id, max(ttl, self.min_ttl)

    def _pick_id(self) -> int:
        candidate = self.next_id
        if candidate > MAX_LEASE_ID:
            candidate = 1
        while candidate in self._leases:
            candidate += 1
        return candidate

    def grant(self, lease_id: int, ttl: int) -> Lease:
        lease_id, ttl = self.check_grant(lease_id, ttl)
        lease = Lease(lease_id, ttl)
        self._leases[lease_id] = lease
        self.next_id = max(self.next_id, lease_id + 1)
        return lease

    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def require(self, lease_id: int) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise lease_not_found(lease_id)
        return lease

    def remove(self, lease_id: int) -> Lease:
        return self._leases.pop(lease_id)

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id) if lease_id else None
        if lease is not None:
            lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        if lease_id:
            lease = self._leases.get(lease_id)
            if lease is not None:
                lease.keys.discard(key)

    def ids(self) -> list[int]:
        return sorted(self._leases)

    def all(self) -> list[Lease]:
        return [self._leases[i] for i in sorted(self._leases)]

    def load(self, leases: list[tuple[int, int]], next_id: int) -> None:
        self._leases = {i: Lease(i, ttl) for i, ttl in leases}
        self.next_id = next_id
