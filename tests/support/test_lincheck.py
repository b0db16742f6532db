"""Tests for the linearizability checker the cluster tests rely on.

A checker that accepts everything would make every later test pass, so most tests here are about
rejecting: stale reads, wrong cas outcomes, lost acknowledged writes, values never written, and an
exhaustive brute-force oracle on thousands of small random histories in both directions.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from itertools import combinations, permutations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.lincheck import (
    FINAL_READ_CLIENT,
    Kind,
    Operation,
    check,
    check_no_lost_writes,
    with_final_reads,
)


def put(client: int, call: float, ret: float | None, value: str, key: str = "k") -> Operation:
    return Operation(client, call, ret, "put", key, value=value)


def get(
    client: int, call: float, ret: float | None, output: str | None, key: str = "k"
) -> Operation:
    return Operation(client, call, ret, "get", key, output=output)


def cas(
    client: int,
    call: float,
    ret: float | None,
    expected: str | None,
    new: str,
    output: bool | None,
    key: str = "k",
) -> Operation:
    return Operation(client, call, ret, "cas", key, value=new, expected=expected, output=output)


# --- hand-written histories ---------------------------------------------------------------------


def test_empty_and_sequential_histories_are_linearizable() -> None:
    assert check([]).ok
    history = [
        get(1, 0, 1, None),
        put(1, 2, 3, "a"),
        get(2, 4, 5, "a"),
        put(2, 6, 7, "b"),
        get(1, 8, 9, "b"),
    ]
    assert check(history).ok


def test_stale_read_after_a_completed_write_is_rejected_with_a_readable_explanation() -> None:
    history = [put(1, 0, 1, "a"), put(2, 2, 3, "b"), get(3, 4, 5, "a")]
    result = check(history)
    assert not result.ok and not result.undecided
    assert result.key == "k"
    assert "#2 client 3 get() -> 'a'" in result.explanation
    assert "it read 'a' but the register holds 'b'" in result.explanation


def test_read_of_the_initial_absent_value_after_a_write_is_rejected() -> None:
    assert not check([put(1, 0, 1, "a"), get(2, 2, 3, None)]).ok


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in (None, "a"):
        assert check([put(1, 0, 10, "a"), get(2, 1, 2, seen)]).ok
    # ...but once one read saw the new value, a later read may not go back.
    assert not check([put(1, 0, 10, "a"), get(2, 1, 2, "a"), get(3, 3, 4, None)]).ok
    # Two reads concurrent with each other and with the write may disagree.
    assert check([put(1, 0, 10, "a"), get(2, 1, 5, "a"), get(3, 2, 6, None)]).ok


def test_a_read_cannot_see_a_write_called_after_it_returned() -> None:
    assert not check([get(1, 0, 1, "a"), put(2, 2, 3, "a")]).ok


def test_returning_and_calling_at_the_same_instant_counts_as_concurrent() -> None:
    assert check([put(1, 0, 1, "a"), get(3, 1, 3, None)]).ok
    assert not check([put(1, 0, 1, "a"), get(3, 1.001, 3, None)]).ok


def test_cas_semantics() -> None:
    assert check([cas(1, 0, 1, None, "a", True), get(1, 2, 3, "a")]).ok
    assert check([put(1, 0, 1, "a"), cas(1, 2, 3, "a", "b", True), get(1, 4, 5, "b")]).ok
    # A successful cas needs the expected value to be there.
    assert not check([put(1, 0, 1, "a"), cas(1, 2, 3, "x", "b", True)]).ok
    # A refused cas needs the value to differ from the expected one, and changes nothing.
    assert check([put(1, 0, 1, "a"), cas(1, 2, 3, "x", "b", False), get(1, 4, 5, "a")]).ok
    assert not check([put(1, 0, 1, "a"), cas(1, 2, 3, "a", "b", False)]).ok
    assert not check([put(1, 0, 1, "a"), cas(1, 2, 3, "x", "b", False), get(1, 4, 5, "b")]).ok
    # Two concurrent cas from the same expected value: at most one may win.
    racers = [put(1, 0, 1, "a"), cas(2, 2, 5, "a", "b", True), cas(3, 2, 5, "a", "c", True)]
    assert not check(racers).ok
    assert check([*racers[:2], cas(3, 2, 5, "a", "c", False)]).ok


def test_lost_acknowledged_write_is_caught_by_the_final_read() -> None:
    history = [put(1, 0, 1, "a"), put(2, 2, 3, "b"), get(1, 4, 5, "b")]
    assert check(with_final_reads(history, {"k": "b"}, at=10)).ok
    assert check_no_lost_writes(history, {"k": "b"}) == []

    lost = with_final_reads(history, {"k": "a"}, at=10)
    result = check(lost)
    assert not result.ok
    assert f"client {FINAL_READ_CLIENT} get() -> 'a'" in result.explanation
    problems = check_no_lost_writes(history, {"k": "a"})
    assert len(problems) == 1 and "put('b')" in problems[0]

    assert not check(with_final_reads(history, {"k": None}, at=10)).ok
    assert len(check_no_lost_writes(history, {"k": None})) == 2


def test_no_lost_writes_accepts_any_winner_among_concurrent_writes() -> None:
    history = [put(1, 0, 5, "a"), put(2, 1, 6, "b"), cas(3, 7, 8, "z", "c", False)]
    for final in ("a", "b"):
        assert check_no_lost_writes(history, {"k": final}) == []
        assert check(with_final_reads(history, {"k": final}, at=9)).ok
    assert "nothing wrote" in check_no_lost_writes(history, {"k": "c"})[0]


def test_final_reads_must_come_after_the_history() -> None:
    with pytest.raises(ValueError):
        with_final_reads([put(1, 0, 5, "a")], {"k": "a"}, at=4)
    with pytest.raises(ValueError):
        with_final_reads([put(1, 0, None, "a")], {"k": "a"}, at=0)
    reads = with_final_reads([put(1, 0, None, "a")], {"k": "a", "j": None}, at=1)
    assert [(op.key, op.output, op.call, op.ret) for op in reads[1:]] == [
        ("j", None, 1, 1),
        ("k", "a", 1, 1),
    ]


def test_indeterminate_put_may_or_may_not_have_taken_effect() -> None:
    took_effect = [put(1, 0, None, "a"), get(2, 5, 6, "a"), get(2, 7, 8, "a")]
    did_not = [put(1, 0, None, "a"), get(2, 5, 6, None)]
    late = [put(1, 0, None, "a"), get(2, 5, 6, None), get(2, 7, 8, "a")]
    assert check(took_effect).ok and check(did_not).ok and check(late).ok
    assert check([put(1, 0, None, "a"), cas(2, 5, 6, "a", "b", True)]).ok
    # It takes effect at most once, and not before it was called.
    assert not check([*late, get(2, 9, 10, None)]).ok
    assert not check([get(2, 0, 1, "a"), put(1, 2, None, "a")]).ok


def test_indeterminate_cas_takes_effect_only_when_its_expected_value_is_there() -> None:
    base = [put(1, 0, 1, "a"), cas(2, 2, None, "a", "b", None)]
    assert check([*base, get(3, 4, 5, "b")]).ok
    assert check([*base, get(3, 4, 5, "a")]).ok
    assert not check([put(1, 0, 1, "x"), cas(2, 2, None, "a", "b", None), get(3, 4, 5, "b")]).ok


def test_an_unobserved_indeterminate_write_can_explain_a_refused_cas() -> None:
    # Only the timed-out put('z') can have moved the register away from 'a'.
    history = [put(1, 0, 1, "a"), put(2, 2, None, "z"), cas(3, 4, 5, "a", "b", False)]
    assert check(history).ok
    assert not check([history[0], history[2]]).ok


def test_an_order_that_wastes_an_indeterminate_write_does_not_hide_one_that_saves_it() -> None:
    # Placing put('a') before put('b') needs the timed-out put('a') for the first read, leaving
    # nothing to explain the last read; placing put('b') first keeps it for the last read. The
    # search meets the same (placed ops, value) state both ways and must not confuse the two.
    history = [
        put(1, 0, 3.5, "a"),
        put(2, 0, None, "a"),
        put(3, 0.5, 1, "b"),
        get(4, 2, 3, "a"),
        put(4, 4, 5, "c"),
        get(4, 11, 12, "a"),
    ]
    assert check(history).ok
    assert not check([*history, get(4, 13, 14, "c")]).ok


def test_indeterminate_writes_can_chain() -> None:
    # Only the timed-out put('w1') followed by the timed-out cas('w1' -> 'w2') explains the read.
    history = [put(1, 0, 1, "s"), put(2, 2, None, "w1"), cas(3, 2, None, "w1", "w2", None)]
    assert check([*history, get(4, 5, 6, "w2")]).ok
    assert not check([history[0], history[2], get(4, 5, 6, "w2")]).ok


def test_indeterminate_get_is_ignored() -> None:
    assert check([put(1, 0, 1, "a"), get(2, 2, None, "nonsense")]).ok


def test_keys_are_independent_registers_and_the_failing_key_is_named() -> None:
    history = [put(1, 0, 1, "a", key="x"), put(2, 0, 1, "b", key="y"), get(3, 2, 3, "a", key="x")]
    assert check(history).ok
    bad = [*history, get(3, 4, 5, "a", key="y")]
    result = check(bad)
    assert not result.ok and result.key == "y"


def test_a_value_never_written_is_reported_directly() -> None:
    result = check([put(1, 0, 1, "a"), get(2, 2, 3, "zz")])
    assert not result.ok and "'zz', which no put or cas on this key wrote" in result.explanation


def test_malformed_operations_are_refused() -> None:
    with pytest.raises(ValueError):
        check([Operation(1, 2, 1, "put", "k", value="a")])
    with pytest.raises(ValueError):
        check([Operation(1, 0, 1, "cas", "k", value="a", expected=None, output=None)])
    with pytest.raises(ValueError):
        check([Operation(1, 0, 1, "put", "k")])


def test_timeout_gives_undecided_not_ok() -> None:
    history = simulate(random.Random(7), 5000, clients=8)
    result = check(history, timeout=0.0)
    assert not result.ok and result.undecided
    assert "undecided" in result.explanation


# --- a simulated register: histories that are linearizable by construction ----------------------


def simulate(
    rng: random.Random,
    n_ops: int,
    clients: int,
    keys: tuple[str, ...] = ("k",),
    p_unknown: float = 0.0,
) -> list[Operation]:
    """Clients issue requests back to back against one real sequential map of registers.

    Each request takes effect at a random instant inside its interval, so the history is
    linearizable by construction. A request marked unknown never returns: half of those take
    effect at some point after their call (possibly after later requests returned), half never.
    """
    free_at = [rng.uniform(0, 1) for _ in range(clients)]
    planned: list[tuple[float, int, Operation]] = []  # (effect instant, tiebreak, op)
    unapplied: list[Operation] = []
    for i in range(n_ops):
        client = min(range(clients), key=free_at.__getitem__)
        call = free_at[client]
        ret = call + rng.expovariate(1.0)
        free_at[client] = ret + rng.uniform(0, 0.2)
        kind: Kind = rng.choice(["put", "get", "get", "cas"])
        op = Operation(client, call, ret, kind, rng.choice(keys), value=f"v{i}")
        if kind == "get":
            op = replace(op, value=None)
        if rng.random() < p_unknown:
            op = replace(op, ret=None)
            if rng.random() < 0.5:
                unapplied.append(
                    replace(op, expected=rng.choice([None, f"v{rng.randrange(i + 1)}"]))
                )
                continue
            planned.append((rng.uniform(call, call + 5 * (ret - call)), i, op))
        else:
            planned.append((rng.uniform(call, ret), i, op))
    state: dict[str, str | None] = {}
    written: dict[str, list[str]] = {}
    history = list(unapplied)
    for _, _, op in sorted(planned, key=lambda p: (p[0], p[1])):
        current = state.get(op.key)
        if op.kind == "get":
            op = replace(op, output=current)
        elif op.kind == "cas":
            choices = [current, None, *written.get(op.key, [])[-3:]]
            expected = current if rng.random() < 0.5 else rng.choice(choices)
            op = replace(op, expected=expected, output=expected == current)
        if op.kind == "put" or op.output is True:
            state[op.key] = op.value
            written.setdefault(op.key, []).append(str(op.value))
        history.append(op if op.ret is not None else replace(op, output=None))
    history.sort(key=lambda op: op.call)
    return history


HISTORY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@HISTORY_SETTINGS
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(1, 80),
    clients=st.integers(1, 8),
    n_keys=st.integers(1, 3),
    p_unknown=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_simulated_register_histories_are_accepted(
    seed: int, n_ops: int, clients: int, n_keys: int, p_unknown: float
) -> None:
    keys = tuple(f"k{i}" for i in range(n_keys))
    rng = random.Random(seed)
    history = simulate(rng, n_ops, clients, keys, p_unknown)
    result = check(history, timeout=20)
    assert result.ok, result.explanation


@HISTORY_SETTINGS
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(2, 80),
    clients=st.integers(1, 8),
    p_unknown=st.sampled_from([0.0, 0.1]),
    pick=st.integers(0, 10**6),
)
def test_a_get_of_a_value_never_written_is_rejected(
    seed: int, n_ops: int, clients: int, p_unknown: float, pick: int
) -> None:
    rng = random.Random(seed)
    history = simulate(rng, n_ops, clients, p_unknown=p_unknown)
    gets = [i for i, op in enumerate(history) if op.kind == "get" and op.ret is not None]
    if not gets:
        return
    i = gets[pick % len(gets)]
    history[i] = replace(history[i], output="never-written")
    result = check(history, timeout=20)
    assert not result.ok and not result.undecided
    assert f"#{i} " in result.explanation


@HISTORY_SETTINGS
@given(
    seed=st.integers(0, 2**32),
    n_ops=st.integers(3, 60),
    clients=st.integers(1, 6),
)
def test_a_write_that_overwrote_a_value_cannot_be_undone(
    seed: int, n_ops: int, clients: int
) -> None:
    """Append a read, after everything, of a value that was overwritten by an acknowledged write
    called after the value's writer returned: a stale read the search itself must refute."""
    rng = random.Random(seed)
    history = simulate(rng, n_ops, clients)
    end = max(op.call if op.ret is None else op.ret for op in history)
    writes = [
        (op.call, ret, op.value)
        for op in history
        if op.acknowledged_write and (ret := op.ret) is not None
    ]
    stale = [value for _, ret, value in writes if any(call > ret for call, _, _ in writes)]
    if not stale:
        return
    result = check([*history, get(99, end + 1, end + 2, rng.choice(stale))], timeout=20)
    assert not result.ok and not result.undecided


# --- the exhaustive oracle ----------------------------------------------------------------------


def brute_force(history: list[Operation]) -> bool:
    """Linearizability of a one-key history by trying every order of every allowed subset."""
    ops = [op for op in history if not (op.ret is None and op.kind == "get")]
    done = [op for op in ops if op.ret is not None]
    maybe = [op for op in ops if op.ret is None]
    for size in range(len(maybe) + 1):
        for chosen in combinations(maybe, size):
            for order in permutations([*done, *chosen]):
                if _respects_real_time(order) and _legal(order):
                    return True
    return False


def _respects_real_time(order: tuple[Operation, ...]) -> bool:
    return not any(
        later.ret is not None and later.ret < earlier.call
        for i, earlier in enumerate(order)
        for later in order[i + 1 :]
    )


def _legal(order: tuple[Operation, ...]) -> bool:
    state: str | None = None
    for op in order:
        if op.kind == "put":
            state = op.value
        elif op.kind == "get":
            if op.output != state:
                return False
        elif op.ret is None:
            state = op.value if state == op.expected else state
        elif op.output is True:
            if state != op.expected:
                return False
            state = op.value
        elif state == op.expected:
            return False
    return True


def random_small_history(rng: random.Random) -> list[Operation]:
    """Up to 6 operations with coarse integer times (so ties happen) and random outcomes."""
    values = ["a", "b", "c"]
    history = []
    for client in range(rng.randint(1, 6)):
        call = rng.randint(0, 6)
        ret: int | None = None if rng.random() < 0.2 else call + rng.randint(0, 4)
        kind: Kind = rng.choice(["put", "get", "cas"])
        if kind == "put":
            history.append(put(client, call, ret, rng.choice(values)))
        elif kind == "get":
            history.append(get(client, call, ret, rng.choice([None, *values])))
        else:
            outcome = None if ret is None else rng.random() < 0.5
            expected = rng.choice([None, *values])
            history.append(cas(client, call, ret, expected, rng.choice(values), outcome))
    return history


def test_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(20240601)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        history = random_small_history(rng)
        expected = brute_force(history)
        assert check(history).ok == expected, history
        verdicts[expected] += 1
    # Both verdicts must be well represented, or the comparison proves little.
    assert min(verdicts.values()) > 300, verdicts


def test_agrees_with_brute_force_on_small_simulated_histories_with_one_change() -> None:
    rng = random.Random(99)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        history = simulate(rng, rng.randint(2, 6), clients=rng.randint(1, 4), p_unknown=0.2)
        reads = [i for i, op in enumerate(history) if op.kind == "get" and op.ret is not None]
        if reads:
            i = rng.choice(reads)
            written = [op.value for op in history if op.kind != "get"]
            history[i] = replace(history[i], output=rng.choice([None, *written]))
        expected = brute_force(history)
        assert check(history).ok == expected, history
        verdicts[expected] += 1
    assert min(verdicts.values()) > 100, verdicts


# --- performance report -------------------------------------------------------------------------


@pytest.mark.parametrize("p_unknown", [0.0, 0.02])
def test_performance_report_3000_ops_8_clients_one_key(p_unknown: float) -> None:
    history = simulate(random.Random(1), 3000, clients=8, p_unknown=p_unknown)
    started = time.perf_counter()
    result = check(history, timeout=120)
    elapsed = time.perf_counter() - started
    unknown = sum(op.ret is None for op in history)
    print(
        f"\nlincheck: {len(history)} ops ({unknown} indeterminate), 8 clients, one key: "
        f"ok={result.ok} in {elapsed:.2f}s, {result.explored} search states"
    )
    assert result.ok, result.explanation


def test_a_lost_write_at_the_end_of_a_large_history_is_found_not_timed_out() -> None:
    history = simulate(random.Random(2), 3000, clients=8, p_unknown=0.02)
    end = max(op.call if op.ret is None else op.ret for op in history)
    acked = [op for op in history if op.acknowledged_write]
    # Claim the store ended up holding a value overwritten long ago by acknowledged writes.
    final = {"k": acked[-50].value}
    started = time.perf_counter()
    result = check(with_final_reads(history, final, at=end + 1), timeout=120)
    elapsed = time.perf_counter() - started
    print(f"\nlincheck: lost write in {len(history)} ops rejected in {elapsed:.2f}s")
    assert not result.ok and not result.undecided
    assert f"client {FINAL_READ_CLIENT} get()" in result.explanation
    assert check_no_lost_writes(history, final)
