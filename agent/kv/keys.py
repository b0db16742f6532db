"""Key conventions: limits, etcd's range encoding and the reserved prefix.

etcd encodes "which keys" as (key, range_end): an empty range_end is the single key, ``b"\\0"``
means every key >= key, anything else the half-open interval [key, range_end). Everything in
the store funnels through :func:`span` so that convention lives in one place.
"""

from __future__ import annotations

from agent.kv.errors import (
    EMPTY_KEY,
    KEY_TOO_LONG,
    RESERVED_PREFIX,
    VALUE_TOO_LARGE,
    KVError,
)

MAX_KEY_BYTES = 1536
MAX_VALUE_BYTES = 1024 * 1024
RESERVED = b"/_shoal/"
ALLOW_RESERVED_FLAG = "allow_reserved"


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix``.

    Increment the last byte below 0xff after dropping trailing 0xff bytes; a prefix of only
    0xff bytes (or an empty one) has no upper bound, spelled ``b"\\0"`` as etcd does.
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def span(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None, bool]:
    """Decode etcd's (key, range_end) into (start, end or None for unbounded, single key?)."""
    if not range_end:
        return key, None, True
    if range_end == b"\0":
        return key, None, False
    return key, range_end, False


def in_span(candidate: bytes, key: bytes, range_end: bytes) -> bool:
    """Whether ``candidate`` is selected by (key, range_end)."""
    start, end, single = span(key, range_end)
    if single:
        return candidate == start
    return candidate >= start and (end is None or candidate < end)


def check_key(key: bytes, what: str = "key") -> None:
    """Refuse an empty key (etcd's "key is not provided")."""
    if not key:
        raise KVError(EMPTY_KEY, f"etcdserver: key is not provided ({what} must not be empty)")


def check_write_key(key: bytes) -> None:
    """A key to be stored: non-empty and at most MAX_KEY_BYTES."""
    check_key(key)
    if len(key) > MAX_KEY_BYTES:
        raise KVError(
            KEY_TOO_LONG,
            f"key is {len(key)} bytes; the limit is {MAX_KEY_BYTES} bytes — use a shorter key",
            size=len(key),
            limit=MAX_KEY_BYTES,
        )


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE_BYTES:
        raise KVError(
            VALUE_TOO_LARGE,
            f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes (1 MiB) — "
            "store large data elsewhere and keep a reference in the key",
            size=len(value),
            limit=MAX_VALUE_BYTES,
        )


def touches_reserved(key: bytes, range_end: bytes) -> bool:
    """Whether (key, range_end) selects any key under the reserved prefix."""
    start, end, single = span(key, range_end)
    if single:
        return start.startswith(RESERVED)
    reserved_end = prefix_end(RESERVED)
    return start < reserved_end and (end is None or end > RESERVED)


def check_reserved(key: bytes, range_end: bytes, allow_reserved: bool) -> None:
    """Writes under the cluster's own prefix need the explicit flag."""
    if not allow_reserved and touches_reserved(key, range_end):
        raise KVError(
            RESERVED_PREFIX,
            f"keys under {RESERVED.decode()!r} hold the cluster's own data; a write there needs "
            f"{ALLOW_RESERVED_FLAG}=true in the request",
            prefix=RESERVED.decode(),
            flag=ALLOW_RESERVED_FLAG,
        )
