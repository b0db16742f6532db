"""Node set parsing: ClusterShell syntax and operators, our cluster selectors, and errors.

Property tests check the two promises the rest of the shell relies on: folding loses nothing
(expand(fold(names)) is the same set) and the operators agree with Python's set algebra.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shell import nodesets
from shell.nodesets import NodeSetSyntaxError

MACHINES: list[dict[str, Any]] = [
    {"id": "web1", "address": "10.0.0.1", "metadata": {"role": "web", "dc": "eu"}},
    {"id": "web2", "address": "10.0.0.2", "metadata": {"role": "web", "dc": "us"}},
    {"id": "web10", "address": "10.0.0.10", "metadata": {"role": "web", "dc": "eu"}},
    {"id": "db1", "address": "10.0.0.20", "metadata": {"role": "db", "dc": "eu"}},
    {"id": "db2", "address": "10.0.0.21", "metadata": {}},
]


def test_expand_ranges_and_lists() -> None:
    assert nodesets.expand("web[1-4,7],db[1-2]") == [
        "db1", "db2", "web1", "web2", "web3", "web4", "web7",
    ]  # fmt: skip


def test_zero_padding_is_kept() -> None:
    assert nodesets.expand("n[08-11]") == ["n08", "n09", "n10", "n11"]
    assert nodesets.fold(["n08", "n09", "n10"]) == "n[08-10]"


def test_fold_is_compact_and_natural() -> None:
    assert nodesets.fold(["node10", "node2", "node1", "node3", "db"]) == "db,node[1-3,10]"
    assert nodesets.fold([]) == ""
    assert nodesets.sort(["node10", "node2", "node2"]) == ["node2", "node10"]


def test_operators_apply_left_to_right() -> None:
    assert nodesets.expand("n[1-5]!n3") == ["n1", "n2", "n4", "n5"]
    assert nodesets.expand("n[1-5]&n[4-9]") == ["n4", "n5"]
    assert nodesets.expand("n[1-3]^n[2-4]") == ["n1", "n4"]
    assert nodesets.expand("n[1-5]!n3,n3") == ["n1", "n2", "n3", "n4", "n5"]
    assert nodesets.expand("n[1-5],n9!n[1-4]") == ["n5", "n9"]


def test_all_selector() -> None:
    assert nodesets.fold(nodesets.expand("@all", MACHINES)) == "db[1-2],web[1-2,10]"
    assert nodesets.expand("@all!web[1-10]", MACHINES) == ["db1", "db2"]


def test_metadata_selector() -> None:
    assert nodesets.expand("@role=web", MACHINES) == ["web1", "web2", "web10"]
    assert nodesets.expand("@role=web&@dc=eu", MACHINES) == ["web1", "web10"]
    assert nodesets.expand("@dc=eu!@role=db", MACHINES) == ["web1", "web10"]
    assert nodesets.expand("@role=nothing", MACHINES) == []
    assert nodesets.expand("@role=db,web1", MACHINES) == ["db1", "web1"]


def test_unknown_names_are_reported() -> None:
    assert nodesets.unknown(["web1", "web9", "db3"], MACHINES) == ["web9", "db3"]


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("", 1, "empty node set"),
        ("web[1-3", 4, "never closed"),
        ("web]1", 4, "without a matching"),
        ("web[1-[2]]", 7, "nested"),
        ("web1,", 5, "nothing after operator ','"),
        ("!web1", 1, "nothing before operator '!'"),
        ("web1,,web2", 5, "nothing after operator ','"),
        ("web1, web2", 6, "spaces"),
        ("db1,web[3-1]", 5, "bad range"),
        ("web1&@colour", 6, "unknown selector '@colour'"),
        ("web1,@=x", 7, "needs a key"),
    ],
)
def test_errors_name_the_position(text: str, position: int, reason: str) -> None:
    with pytest.raises(NodeSetSyntaxError) as info:
        nodesets.expand(text, MACHINES)
    assert info.value.position + 1 == position
    assert f"position {position}" in str(info.value)
    assert reason in str(info.value)


def test_selectors_need_the_machine_list() -> None:
    with pytest.raises(NodeSetSyntaxError, match="machine list"):
        nodesets.expand("web1,@all")


def test_huge_ranges_are_refused() -> None:
    with pytest.raises(NodeSetSyntaxError, match="more than"):
        nodesets.expand("n[1-999999999]")


# --- properties ----------------------------------------------------------------------------------

names = st.builds(
    lambda prefix, number: f"{prefix}{'' if number is None else number}",
    st.sampled_from(["node", "web", "db", "rack1-n", "x"]),
    st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
)
name_sets = st.sets(names, max_size=40)


@given(name_sets)
def test_fold_then_expand_round_trips(found: set[str]) -> None:
    folded = nodesets.fold(found)
    assert set(nodesets.expand(folded)) == found if found else folded == ""
    if found:
        assert nodesets.fold(nodesets.expand(folded)) == folded


one_pattern = st.builds(
    lambda prefix, numbers: {f"{prefix}{n}" for n in numbers},
    st.sampled_from(["node", "web", "db"]),
    st.sets(st.integers(min_value=0, max_value=200), min_size=1, max_size=20),
)
"""Names sharing one prefix, so each folds to a single pattern such as ``web[1-3,7]``."""


@given(one_pattern, st.lists(st.tuples(st.sampled_from(",!&^"), one_pattern), max_size=5))
def test_operators_agree_with_python_sets(
    first: set[str], rest: list[tuple[str, set[str]]]
) -> None:
    expected = set(first)
    text = nodesets.fold(first)
    for op, operand in rest:
        folded = nodesets.fold(operand)
        text += op + folded
        expected = {",": expected | operand, "!": expected - operand,
                    "&": expected & operand, "^": expected ^ operand}[op]  # fmt: skip
    assert set(nodesets.expand(text)) == expected


@given(st.sets(st.sampled_from([m["id"] for m in MACHINES]), min_size=1))
def test_all_minus_a_set_is_its_complement(chosen: set[str]) -> None:
    everything = {m["id"] for m in MACHINES}
    # Operators apply left to right, so each name is subtracted on its own: "@all!a!b".
    got = nodesets.expand("@all!" + "!".join(sorted(chosen)), MACHINES)
    assert set(got) == everything - chosen
