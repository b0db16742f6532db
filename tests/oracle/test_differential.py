"""Differential runs: the same random sequence of requests on shoal and on etcd, transcripts equal.

The hand-written tests pin down behaviour we thought of; this one finds what we did not. Each
seed drives a random mix of puts, deletes, ranges (limits, sorts, historical revisions),
transactions (every compare target, nested branches, duplicate keys) and the odd compaction
over a handful of keys, while a prefix watch with prev_kv records every event. Results are
normalized (revisions relative to the run's start, keys without the prefix, errors as codes);
the first entry where the two transcripts differ is reported with the request that caused it.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from tests.oracle.backends import BackendError
from tests.oracle.conftest import Oracle

KEYS = ["a", "b", "c", "d", "e"]
VALUES = [b"", b"x", b"y", b"zz"]
OPS_PER_RUN = 90
SEEDS = range(1, 1 + int(os.environ.get("ORACLE_SEEDS", "4")))
"""More seeds for a longer hunt: ORACLE_SEEDS=200 pytest tests/oracle/test_differential.py"""


class Script:
    """Random requests for one run; ``o`` supplies the prefix and the current revision."""

    def __init__(self, seed: int, o: Oracle) -> None:
        self.rng = random.Random(seed)
        self.o = o
        self.current = 0  # the current revision, relative to the run's start
        self.compacted = 0

    def key(self) -> bytes:
        return self.o.k(self.rng.choice(KEYS))

    def span(self) -> dict[str, Any]:
        r = self.rng.random()
        if r < 0.5:
            return {"key": self.key()}
        if r < 0.8:
            lo, hi = sorted(self.rng.sample(KEYS, 2))
            return {"key": self.o.k(lo), "range_end": self.o.k(hi)}
        return {"key": self.o.k(""), "range_end": self.o.end}

    def revision(self) -> int:
        """0 (current) or a past revision of this run, possibly compacted or one in the future."""
        r = self.rng.random()
        if r < 0.6 or self.current == 0:
            return 0
        if r < 0.95:
            return self.o.base + self.rng.randint(1, self.current)
        return self.o.base + self.current + 1

    def put(self) -> dict[str, Any]:
        return {
            "op": "put",
            "key": self.key(),
            "value": self.rng.choice(VALUES),
            "prev_kv": self.rng.random() < 0.5,
        }

    def delete(self) -> dict[str, Any]:
        return {"op": "delete_range", **self.span(), "prev_kv": self.rng.random() < 0.5}

    def range(self) -> dict[str, Any]:
        op: dict[str, Any] = {"op": "range", **self.span()}
        if self.rng.random() < 0.4:
            op["limit"] = self.rng.randint(1, 3)
        if self.rng.random() < 0.4:
            op["sort_order"] = self.rng.choice(["none", "ascend", "descend"])
            op["sort_target"] = self.rng.choice(["key", "version", "create", "mod", "value"])
        if self.rng.random() < 0.15:
            op["keys_only"] = True
        if self.rng.random() < 0.1:
            op["count_only"] = True
        if revision := self.revision():
            op["revision"] = revision
        return op

    def compare(self) -> dict[str, Any]:
        target = self.rng.choice(["value", "version", "create", "mod", "lease"])
        value: Any
        if target == "value":
            value = self.rng.choice(VALUES)
        elif target == "version":
            value = self.rng.randint(0, 3)
        elif target == "lease":
            value = 0
        else:
            rel = self.rng.randint(0, self.current + 1)
            value = self.o.base + rel if rel else 0
        cmp = {"key": self.key(), "target": target, "value": value}
        cmp["result"] = self.rng.choice(["=", "!=", "<", ">"])
        if self.rng.random() < 0.2:
            cmp["range_end"] = self.o.end
        return cmp

    def branch(self, depth: int) -> list[dict[str, Any]]:
        ops = []
        for _ in range(self.rng.randint(0, 3)):
            r = self.rng.random()
            if r < 0.4:
                ops.append(self.put())
            elif r < 0.55:
                ops.append(self.delete())
            elif r < 0.9 or depth > 0:
                ops.append(self.range())
            else:
                ops.append(self.txn(depth + 1))
        return ops

    def txn(self, depth: int = 0) -> dict[str, Any]:
        return {
            "op": "txn",
            "compare": [self.compare() for _ in range(self.rng.randint(0, 2))],
            "success": self.branch(depth),
            "failure": self.branch(depth),
        }

    def next(self) -> dict[str, Any]:
        r = self.rng.random()
        if r < 0.3:
            return self.put()
        if r < 0.4:
            return self.delete()
        if r < 0.65:
            return self.range()
        if r < 0.97 or self.current <= self.compacted + 2:
            return self.txn()
        return {"op": "compact", "revision": self.o.base + self.current - 1}


async def _apply(o: Oracle, req: dict[str, Any]) -> Any:
    args = {k: v for k, v in req.items() if k != "op"}
    kind = req["op"]
    if kind == "put":
        return await o.b.put(args.pop("key"), args.pop("value"), **args)
    if kind == "delete_range":
        return await o.b.delete(args.pop("key"), args.pop("range_end", b""), **args)
    if kind == "range":
        return await o.b.get(args.pop("key"), args.pop("range_end", b""), **args)
    if kind == "txn":
        return await o.b.txn(args["compare"], args["success"], args["failure"])
    return await o.b.compact(args["revision"])


async def _transcript(o: Oracle, seed: int) -> tuple[list[Any], list[Any]]:
    """(one normalized result per request, every event the prefix watch saw)."""
    script = Script(seed, o)
    watch = await o.b.watch(o.k(""), o.end, prev_kv=True)
    out: list[Any] = []
    try:
        for _ in range(OPS_PER_RUN):
            req = script.next()
            try:
                result = await _apply(o, req)
            except BackendError as exc:
                out.append((o.strip(o.rel(req)), "error", exc.code))
                continue
            if req["op"] == "compact":
                script.compacted = script.current - 1
            script.current = result["revision"] - o.base
            out.append((o.strip(o.rel(req)), o.strip(o.rel(_unheader(result)))))
        # Every write's events, and nothing more, in order.
        events = await watch.events(_writes(out)) if _writes(out) else []
        assert await watch.quiet() == []
    finally:
        await watch.close()
    return out, o.strip(o.rel(events))


def _unheader(result: dict[str, Any]) -> dict[str, Any]:
    """Blank the header revision of nested txn responses: etcd 3.4 never fills it (it stays
    0), shoal reports the txn's revision; see test_shoal_differences.py."""
    if "responses" not in result:
        return result
    out = dict(result)
    out["responses"] = [
        {**_unheader(r), "revision": None} if r["op"] == "txn" else r for r in result["responses"]
    ]
    return out


def _writes(transcript: list[Any]) -> int:
    """How many events the successful writes of a transcript produced (from their results)."""
    count = 0
    for entry in transcript:
        if len(entry) != 2:
            continue
        req, res = entry
        count += _events_of(req, res)
    return count


def _events_of(req: dict[str, Any], res: dict[str, Any]) -> int:
    if req["op"] == "put":
        return 1
    if req["op"] == "delete_range":
        return int(res["deleted"])
    if req["op"] == "txn":
        branch = req["success"] if res["succeeded"] else req["failure"]
        return sum(_events_of(q, r) for q, r in zip(branch, res["responses"], strict=True))
    return 0


def _first_difference(a: list[Any], b: list[Any]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"entry {i}:\n  shoal: {x!r}\n  etcd:  {y!r}"
    return f"lengths differ: shoal {len(a)}, etcd {len(b)}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_requests_agree(both: tuple[Oracle, Oracle], seed: int) -> None:
    shoal, etcd = both
    ours, ours_events = shoal.run(_transcript(shoal, seed), timeout=60)
    theirs, their_events = etcd.run(_transcript(etcd, seed), timeout=60)
    assert ours == theirs, _first_difference(ours, theirs)
    assert ours_events == their_events, _first_difference(ours_events, their_events)
