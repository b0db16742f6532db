"""The chunked sorted key set behaves exactly like a sorted list, across sublist splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.kv import sortedkeys
from agent.kv.sortedkeys import SortedKeys

small_keys = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 4 + 97 for x in b))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), small_keys), max_size=200),
    small_keys,
    small_keys,
)
def test_matches_a_sorted_list(ops: list[tuple[bool, bytes]], lo: bytes, hi: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sortedkeys, "LOAD", 3)  # tiny sublists: splits and removals everywhere
        keys = SortedKeys()
        model: set[bytes] = set()
        for add, key in ops:
            if add and key not in model:
                keys.add(key)
                model.add(key)
            elif not add:
                keys.discard(key)
                model.discard(key)
        ordered = sorted(model)
        assert list(keys) == ordered and len(keys) == len(model)
        assert list(keys.irange(lo, hi)) == [k for k in ordered if lo <= k < hi]
        assert list(keys.irange(lo, None)) == [k for k in ordered if k >= lo]
        assert keys.count(lo, hi) == len([k for k in ordered if lo <= k < hi])
        assert keys.count(lo, None) == len([k for k in ordered if k >= lo])
        assert all(k in keys for k in ordered)
        assert list(SortedKeys(ordered[::-1])) == ordered


def test_a_copy_is_unaffected_by_later_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sortedkeys, "LOAD", 2)
    keys = SortedKeys([b"b", b"d", b"f", b"h", b"j"])
    frozen = keys.copy()
    for key in (b"a", b"c", b"e", b"g", b"i", b"k"):
        keys.add(key)  # splits sublists the copy must not share
    keys.discard(b"d")
    assert list(frozen) == [b"b", b"d", b"f", b"h", b"j"] and len(frozen) == 5
    assert list(keys) == [b"a", b"b", b"c", b"e", b"f", b"g", b"h", b"i", b"j", b"k"]
