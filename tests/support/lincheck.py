"""A linearizability checker for histories of shoal's replicated key-value store.

A test drives the cluster from several concurrent clients while a nemesis kills, pauses and
partitions nodes, records every request as an :class:`Operation`, and asks :func:`check` whether
some total order of the operations both respects real time (an operation that returned before
another was called comes first) and is a legal run of a map of registers. That is the whole
correctness claim of a linearizable store, so it is checked exactly rather than by heuristics.

How the search works (Wing & Gong 1993, with Lowe's memoization as used by Porcupine):

* **P-compositionality.** Keys are independent registers, so a history is linearizable iff each
  key's sub-history is. Each key is searched alone, which keeps every search small.
* **Depth-first search over linearized prefixes.** After a prefix, the next operation may be any
  one not yet linearized that was called no later than the earliest return among the completed
  operations still left: whatever was called after that return must follow that operation.
* **Memoization.** A search state is (set of linearized operations as an ``int`` bitset, register
  value); two paths reaching the same state have the same future, so each state is expanded once.
* **Indeterminate operations** (``ret is None``: timed out, connection lost) may have taken effect
  at any time after their call, or never. The literature gives them a return at +infinity; since
  no completed operation can observe an effect placed after all of them, that is the same as
  making them optional, and the search succeeds once every *completed* operation is placed. An
  indeterminate get has no effect and is dropped. Because they are optional, a state that used a
  subset of them can do everything a state that used a superset can, so the cache keeps, per
  (completed set, value), the sets of used indeterminate operations and prunes any superset.
* **Indeterminate ops just in time.** Any linearization can be rewritten so that each
  indeterminate op that took effect sits right before an op that needs it (one reading what it
  wrote, or a refused cas expecting the value it replaced), so only such ops are tried; see
  :meth:`_KeySearch._maybe_candidates`. Without this, every pending one would be tried at every
  step, and a run with a hundred timeouts would never finish.
* **Forgetting what nobody can see.** The register value is only ever compared with values some
  get returned or some cas expected; once every such operation is placed, the value is as good as
  any other unseen one, and all of them are merged into one placeholder. States that differ only
  in such values then share a cache entry. Likewise indeterminate ops with the same effect are
  interchangeable, so only the earliest-called unused one of each kind is tried.

Ties: an operation that returns at the very instant another is called counts as concurrent with
it, so clock granularity can never make a correct history fail.

No acknowledged write may go missing: a register has no "final value" rule of its own, so after
the run the test reads every key once more and appends those reads to the history with
:func:`with_final_reads`. A read that starts after every acknowledged operation returned must see
the latest of them; if a write was lost, :func:`check` cannot place that read and fails. That final
read inside the checked history is the proof; :func:`check_no_lost_writes` only names the writes
that went missing, for a readable failure message.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

Kind = Literal["put", "get", "cas"]

# The client id given to the reads appended by with_final_reads, so they stand out in reports.
FINAL_READ_CLIENT = -1

# How many of the last steps of the longest linearization a failure report shows.
_REPORT_STEPS = 12

# Effect codes: what applying an operation does to the register (see _KeySearch._apply).
_PUT, _GET, _CAS_OK, _CAS_FAILED, _MAYBE_PUT, _MAYBE_CAS = range(6)

# The register value standing for every value that no get returns and no cas expects.
_UNOBSERVED = object()

# Returned by _KeySearch._apply when an operation cannot take effect in the current state.
_REFUSED = object()


@dataclass(frozen=True)
class Operation:
    """One client request and what came back.

    ``call`` is when the request was sent and ``ret`` when the response arrived; ``ret is None``
    means the outcome is unknown (timeout, lost connection), so the operation may or may not
    have taken effect, at any time after ``call``. ``value`` is what a put writes or a cas writes
    on success; ``expected`` is the value a cas requires (``None``: the key is absent).
    ``output`` is what a get read (``None``: absent), a cas's success flag, ``None`` for a put,
    and is ignored for an indeterminate operation.
    """

    client: int
    call: float
    ret: float | None
    kind: Kind
    key: str
    value: str | None = None
    expected: str | None = None
    output: str | bool | None = None

    @property
    def acknowledged_write(self) -> bool:
        """Whether the store confirmed this operation changed the key (a put, or a cas that won)."""
        if self.ret is None:
            return False
        return self.kind == "put" or (self.kind == "cas" and self.output is True)


@dataclass(frozen=True)
class Result:
    """The verdict of :func:`check`.

    ``undecided`` means the search ran out of time; ``ok`` is then False, so a test that asserts
    ``ok`` never passes on a history it did not actually check. ``key`` and ``explanation`` say
    where and why a history failed; ``explored`` counts search states, for performance reports.
    """

    ok: bool
    undecided: bool = False
    key: str | None = None
    explanation: str = ""
    explored: int = 0


def describe(op: Operation, index: int | None = None) -> str:
    """One line naming an operation, its times and its outcome, for failure reports."""
    where = f"#{index} " if index is not None else ""
    if op.kind == "put":
        what = f"put({op.value!r})"
    elif op.kind == "get":
        what = "get()"
    else:
        what = f"cas({op.expected!r} -> {op.value!r})"
    if op.ret is None:
        return f"{where}client {op.client} {what} -> unknown [{op.call:.6f}, never returned]"
    if op.kind == "get":
        outcome = repr(op.output)
    elif op.kind == "cas":
        outcome = "swapped" if op.output else "refused"
    else:
        outcome = "ok"
    return f"{where}client {op.client} {what} -> {outcome} [{op.call:.6f}, {op.ret:.6f}]"


def check(history: Sequence[Operation], *, timeout: float = 60.0) -> Result:
    """Decide whether ``history`` is linearizable as a map of independent registers.

    Every key starts absent. ``timeout`` bounds the whole check in seconds; running out gives
    ``Result(ok=False, undecided=True)``. A failure's explanation numbers operations by their
    position in ``history``.
    """
    deadline = time.monotonic() + timeout
    by_key: dict[str, list[tuple[int, Operation]]] = {}
    for index, op in enumerate(history):
        _validate(op, index)
        by_key.setdefault(op.key, []).append((index, op))
    explored = 0
    for key in sorted(by_key):
        result = _KeySearch(key, by_key[key]).run(deadline)
        explored += result.explored
        if not result.ok:
            return replace(result, explored=explored)
    return Result(ok=True, explored=explored)


def with_final_reads(
    history: Sequence[Operation], final_reads: Mapping[str, str | None], at: float
) -> list[Operation]:
    """``history`` plus one get per key in ``final_reads``, called and returned at ``at``.

    ``at`` must be later than every call and every return in ``history``, so each final read is
    ordered after every acknowledged operation and must see the latest of them: checking the
    result with :func:`check` is what proves no acknowledged write went missing. Operations that
    never returned stay concurrent with the final reads, as in reality they may still land.
    """
    latest = max((op.call if op.ret is None else op.ret for op in history), default=at - 1.0)
    if at <= latest:
        raise ValueError(f"final reads at {at} must come after the history's last event {latest}")
    reads = [
        Operation(FINAL_READ_CLIENT, at, at, "get", key, output=value)
        for key, value in sorted(final_reads.items())
    ]
    return [*history, *reads]


def check_no_lost_writes(
    history: Sequence[Operation], final_reads: Mapping[str, str | None]
) -> list[str]:
    """Name the acknowledged writes that a final read of each key shows were lost.

    A write is lost when it was acknowledged yet the final value was written only by operations
    that had all returned before that write was even called, so the write must have come later
    and been overwritten by nothing. This is a necessary condition only, meant to make a failure
    readable; the proof is :func:`check` on :func:`with_final_reads`. Keys missing from
    ``final_reads`` are not examined. Returns one message per problem; empty means none found.
    """
    problems: list[str] = []
    for key, final in sorted(final_reads.items()):
        ops = [(i, op) for i, op in enumerate(history) if op.key == key]
        acked = [(i, op) for i, op in ops if op.acknowledged_write]
        if final is None:
            problems.extend(
                f"key {key!r}: acknowledged {describe(op, i)} is lost: the final read found the "
                "key absent"
                for i, op in acked
            )
            continue
        writer_rets = [
            float("inf") if op.ret is None else op.ret
            for _, op in ops
            if op.value == final and op.kind != "get" and (op.ret is None or op.output is not False)
        ]
        if not writer_rets:
            problems.append(f"key {key!r}: the final read returned {final!r}, which nothing wrote")
            continue
        last_written = max(writer_rets)
        problems.extend(
            f"key {key!r}: acknowledged {describe(op, i)} is lost: the final read returned "
            f"{final!r}, whose last writer returned at {last_written:.6f}, before this was called"
            for i, op in acked
            if op.call > last_written
        )
    return problems


def _validate(op: Operation, index: int) -> None:
    """Reject malformed operations up front, so a harness bug is not reported as a store bug."""
    problem = None
    if op.kind not in ("put", "get", "cas"):
        problem = f"unknown kind {op.kind!r}"
    elif op.kind != "get" and not isinstance(op.value, str):
        problem = "a put or cas must write a string value"
    elif op.ret is not None and op.ret < op.call:
        problem = "returned before it was called"
    elif op.ret is not None and op.kind == "cas" and not isinstance(op.output, bool):
        problem = "a completed cas must have a True/False output"
    elif op.ret is not None and op.kind == "get" and not isinstance(op.output, str | None):
        problem = "a completed get must output a string or None"
    if problem is not None:
        raise ValueError(f"operation #{index} ({op}): {problem}")


class _Frame:
    """One node of the depth-first search: a linearized prefix and what may follow it."""

    __slots__ = ("cands", "depth", "done", "lo_call", "lo_ret", "maybe", "pos", "state", "via")

    def __init__(
        self,
        done: int,
        maybe: int,
        state: object,
        lo_call: int,
        lo_ret: int,
        cands: list[int],
        via: int,
        depth: int,
    ) -> None:
        self.done = done  # bitset of linearized completed operations (by call order)
        self.maybe = maybe  # bitset of indeterminate operations assumed to have taken effect
        self.state = state  # register value, canonicalized
        self.lo_call = lo_call  # first completed op in call order not linearized
        self.lo_ret = lo_ret  # first completed op in return order not linearized
        self.cands = cands  # operations that may be linearized next
        self.pos = 0  # next candidate to try
        self.via = via  # the operation whose linearization led here (-1 at the root)
        self.depth = depth  # number of completed operations linearized


class _KeySearch:
    """The search over one key's sub-history.

    Operations are numbered for the search: completed ones ``0..m-1`` in call order, then
    indeterminate ones ``m..`` in call order.
    """

    def __init__(self, key: str, indexed: Iterable[tuple[int, Operation]]) -> None:
        self.key = key
        relevant = [p for p in indexed if not (p[1].ret is None and p[1].kind == "get")]
        complete = sorted((p for p in relevant if p[1].ret is not None), key=_call_then_ret)
        maybe = sorted((p for p in relevant if p[1].ret is None), key=lambda p: p[1].call)
        self.index = [i for i, _ in complete] + [i for i, _ in maybe]
        self.ops = [op for _, op in complete] + [op for _, op in maybe]
        self.m = len(complete)
        self.effects = [self._effect(op) for op in self.ops]
        self.calls = [op.call for op in self.ops[: self.m]]
        self.rets = [op.ret for op in self.ops[: self.m] if op.ret is not None]
        self.ret_order = sorted(range(self.m), key=self.rets.__getitem__)
        self.bit = [1 << j for j in range(self.m)]
        self.maybe_calls = [op.call for op in self.ops[self.m :]]
        self.maybe_bit = [1 << k for k in range(len(maybe))]
        # Who compares the register with each value: completed ops (by bit) and indeterminate
        # cas (by bit). Once all of them are placed, the value is as good as any unobserved one.
        self.observers: dict[object, tuple[int, int]] = {}
        for c, (code, compared, _) in enumerate(self.effects):
            if code in (_GET, _CAS_OK, _CAS_FAILED, _MAYBE_CAS):
                by_done, by_maybe = self.observers.get(compared, (0, 0))
                if c < self.m:
                    self.observers[compared] = (by_done | self.bit[c], by_maybe)
                else:
                    self.observers[compared] = (by_done, by_maybe | self.maybe_bit[c - self.m])
        # Indeterminate ops by the value they write, in call order.
        self.maybe_writers: dict[object, list[int]] = {}
        for k in range(len(maybe)):
            self.maybe_writers.setdefault(self.effects[self.m + k][2], []).append(k)

    def _effect(self, op: Operation) -> tuple[int, object, object]:
        """The operation as (effect code, compared value, written value)."""
        if op.ret is None:
            return (_MAYBE_PUT if op.kind == "put" else _MAYBE_CAS, op.expected, op.value)
        if op.kind == "put":
            return (_PUT, None, op.value)
        if op.kind == "get":
            return (_GET, op.output, None)
        return (_CAS_OK if op.output else _CAS_FAILED, op.expected, op.value)

    def _live(self, value: object, done: int, maybe: int) -> object:
        """``value``, or _UNOBSERVED if nothing left to place ever compares the register with it.

        Merging such values merges search states that differ only in history nobody can see.
        """
        watchers = self.observers.get(value)
        if watchers is None:
            return _UNOBSERVED
        by_done, by_maybe = watchers
        if done & by_done != by_done or maybe & by_maybe != by_maybe:
            return value
        return _UNOBSERVED

    def run(self, deadline: float) -> Result:
        """Search for a linearization; on failure explain the deepest dead end found."""
        unwritten = self._unwritten_observation()
        if unwritten is not None:
            return Result(ok=False, key=self.key, explanation=unwritten)
        m = self.m
        if m == 0:
            return Result(ok=True)
        full = (1 << m) - 1
        bit, maybe_bit, effects = self.bit, self.maybe_bit, self.effects
        stack = [self._frame(0, 0, self._live(None, 0, 0), 0, 0, -1, 0)]
        cache: dict[tuple[int, object], list[int]] = {}
        best_depth, best_path, pending = 0, [], True
        steps = explored = 0
        while stack:
            frame = stack[-1]
            if frame.pos == len(frame.cands):
                if pending:  # leaving the deepest prefix so far: keep it for the report
                    best_path, pending = [f.via for f in stack[1:]], False
                stack.pop()
                continue
            c = frame.cands[frame.pos]
            frame.pos += 1
            steps += 1
            if not steps & 0xFFF and time.monotonic() > deadline:
                if pending:
                    best_path = [f.via for f in stack[1:]]
                why = f"gave up after {explored} search states (timeout)"
                return Result(False, True, self.key, self._explain(best_path, why), explored)
            new = self._apply(effects[c], frame.state)
            if new is _REFUSED:
                continue
            done, maybe, depth = frame.done, frame.maybe, frame.depth
            if c < m:
                done |= bit[c]
                depth += 1
                if done == full:
                    return Result(ok=True, explored=explored)
            else:
                maybe |= maybe_bit[c - m]
            new = self._live(new, done, maybe)
            if c >= m and new == frame.state:
                continue  # an indeterminate op that changes nothing visible: leave it out
            seen = cache.get((done, new))
            if seen is None:
                cache[(done, new)] = [maybe]
            elif any(s & maybe == s for s in seen):
                continue  # reached before with no more indeterminate ops used, and it failed
            else:
                seen.append(maybe)
            explored += 1
            stack.append(self._frame(done, maybe, new, frame.lo_call, frame.lo_ret, c, depth))
            if depth > best_depth:
                best_depth, pending = depth, True
        return Result(False, False, self.key, self._explain(best_path, None), explored)

    @staticmethod
    def _apply(effect: tuple[int, object, object], state: object) -> object:
        """The register value after the operation, or _REFUSED if it cannot go here.

        ``state`` may be _UNOBSERVED, which equals no value any operation compares with.
        """
        code, compared, written = effect
        if code == _GET:
            return state if state == compared else _REFUSED
        if code in (_PUT, _MAYBE_PUT):
            return written
        if code == _CAS_FAILED:
            return state if state != compared else _REFUSED
        return written if state == compared else _REFUSED

    def _frame(
        self, done: int, maybe: int, state: object, lo_call: int, lo_ret: int, via: int, depth: int
    ) -> _Frame:
        """A search node for a prefix; works out which operations may be linearized next."""
        bit, calls, m = self.bit, self.calls, self.m
        while done & bit[lo_call]:
            lo_call += 1
        while done & bit[self.ret_order[lo_ret]]:
            lo_ret += 1
        horizon = self.rets[self.ret_order[lo_ret]]
        cands = []
        j = lo_call
        effects = self.effects
        while j < m and calls[j] <= horizon:
            if not done & bit[j]:
                code, compared, _ = effects[j]
                if (code == _GET and compared == state) or (
                    code == _CAS_FAILED and compared != state
                ):
                    # It fits now and changes nothing; any order placing it later can place it
                    # here instead (everything that had to precede it is placed), so this is
                    # the only branch worth trying.
                    return _Frame(done, maybe, state, lo_call, lo_ret, [j], via, depth)
                cands.append(j)
            j += 1
        reached = bisect_right(self.maybe_calls, horizon)
        if reached:
            cands.extend(self._maybe_candidates(cands, done, maybe, state, reached))
        return _Frame(done, maybe, state, lo_call, lo_ret, cands, via, depth)

    def _maybe_candidates(
        self, complete: list[int], done: int, maybe: int, state: object, reached: int
    ) -> list[int]:
        """The indeterminate ops worth trying next, given the completed candidates.

        Any linearization can be rewritten so that each run of indeterminate ops taking effect
        is immediately followed by a completed op that needs the run: leave out one that changes
        nothing, is last, or is overwritten by the next op; move one later past a refused cas
        that does not need it (it never returned, so later is always allowed); and move a refused
        cas earlier past a pair whose first op wrote what the cas expected. What remains: each
        op of the run is a cas expecting what the previous one wrote, and the completed op reads
        or expects (and gets) what the last one wrote, or the run is one op and the completed op
        is a refused cas expecting the value the run replaced. So the search tries an
        indeterminate op only when it starts such a run, or continues one.
        """
        effects, m, writers = self.effects, self.m, self.maybe_writers
        wanted: list[object] = []
        for j in complete:
            code, compared, _ = effects[j]
            if code in (_GET, _CAS_OK):
                wanted.append(compared)
            elif code == _CAS_FAILED and compared == state:
                unused = (k for k in range(reached) if not maybe & self.maybe_bit[k])
                return self._distinct_effects(unused, done, maybe)
        found: list[int] = []
        seen_values = set(wanted)
        while wanted:
            for k in writers.get(wanted.pop(), ()):
                if k >= reached:
                    break
                if not maybe & self.maybe_bit[k]:
                    found.append(k)
                    code, compared, _ = effects[m + k]
                    if code == _MAYBE_CAS and compared not in seen_values:
                        seen_values.add(compared)
                        wanted.append(compared)
        return self._distinct_effects(sorted(found), done, maybe)

    def _distinct_effects(self, ks: Iterable[int], done: int, maybe: int) -> list[int]:
        """Search numbers of the first of each group of indeterminate ops with equal effects.

        All of them were called already and never expire, so which one of a group is used
        makes no difference to what can follow.
        """
        tried: set[tuple[int, object, object]] = set()
        out: list[int] = []
        for k in ks:
            code, compared, written = self.effects[self.m + k]
            effect = (code, compared, self._live(written, done, maybe))
            if effect not in tried:
                tried.add(effect)
                out.append(self.m + k)
        return out

    def _unwritten_observation(self) -> str | None:
        """Report a get or successful cas that saw a value no operation on the key wrote.

        The search would reject such a history too, but only after exhausting every order up to
        that operation; this answers at once and names the culprit directly.
        """
        written = {op.value for op in self.ops if op.kind != "get" and op.output is not False}
        written.update(op.value for op in self.ops if op.ret is None)
        for i, op in zip(self.index, self.ops, strict=True):
            if op.ret is None:
                continue
            seen = op.output if op.kind == "get" else op.expected if op.output is True else None
            if seen is not None and seen not in written:
                return (
                    f"key {self.key!r}: {describe(op, i)} observed {seen!r}, which no put or cas "
                    "on this key wrote, so no order of the history explains it"
                )
        return None

    def _explain(self, path: list[int], gave_up: str | None) -> str:
        """Describe the longest linearized prefix found and why no operation can extend it."""
        m = self.m
        value: str | None = None
        for c in path:
            op = self.ops[c]
            if op.kind == "put" or (op.kind == "cas" and op.output is not False):
                value = op.value
        placed = {c for c in path if c < m}
        lines = [
            f"key {self.key!r}: "
            + (f"undecided, {gave_up}" if gave_up else "the history is not linearizable")
            + f" ({m} completed and {len(self.ops) - m} indeterminate operations on this key).",
            f"The longest linearization found places {len(placed)} of {m} completed operations; "
            f"the register then holds {value!r}. Its last steps, in order:",
        ]
        for c in path[-_REPORT_STEPS:]:
            taken = "  (assumed to have taken effect)" if c >= m else ""
            lines.append(f"  {describe(self.ops[c], self.index[c])}{taken}")
        if not path:
            lines.append("  (none: not even the first operation can go first)")
        blocker = next(j for j in self.ret_order if j not in placed)
        horizon = self.rets[blocker]
        lines.append(
            f"Next, {describe(self.ops[blocker], self.index[blocker])} must take effect before "
            "anything called after it returned, "
            + (
                "and these were still to try:"
                if gave_up
                else "but none of the ops that may go next fits:"
            )
        )
        for j in range(m):
            if j not in placed and self.calls[j] <= horizon:
                op = self.ops[j]
                lines.append(f"  {describe(op, self.index[j])}: {_why(op, value)}")
        maybe_count = sum(1 for call in self.maybe_calls if call <= horizon)
        if maybe_count:
            lines.append(
                f"Indeterminate operations called by then: {maybe_count}; no choice of which "
                "of them took effect, and when, helps."
            )
        return "\n".join(lines)


def _call_then_ret(pair: tuple[int, Operation]) -> tuple[float, float]:
    op = pair[1]
    return (op.call, op.call if op.ret is None else op.ret)


def _why(op: Operation, value: str | None) -> str:
    """Why a completed operation cannot take effect when the register holds ``value``."""
    if op.kind == "get" and op.output != value:
        return f"it read {op.output!r} but the register holds {value!r}"
    if op.kind == "cas" and op.output is True and op.expected != value:
        return f"it expected {op.expected!r} but the register holds {value!r}"
    if op.kind == "cas" and op.output is False and op.expected == value:
        return f"it was refused, yet the register holds the expected {value!r}"
    return "it fits here, but every way of continuing after it fails"
