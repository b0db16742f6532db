"""clush -b gathering and prefixed output, on results made by hand (no lab needed)."""

from __future__ import annotations

import pytest

from shell import gather
from shell.execute import NodeResult, Target, exit_summary, highest_rc, targets_for


def r(node: str, out: str = "", rc: int | None = 0, error: str | None = None) -> NodeResult:
    return NodeResult(node, rc=rc, stdout=out, error=error)


def test_identical_outputs_print_once_under_the_folded_set() -> None:
    results = [r(f"n{i}", "Linux\n") for i in (10, 2, 1, 3)] + [r("n4", "BSD\n")]
    groups = gather.gather(results)
    assert [(g.label, g.lines) for g in groups] == [("n[1-3,10]", ("Linux",)), ("n4", ("BSD",))]
    assert gather.format_gathered(groups) == (
        "---------------\nn[1-3,10] (4)\n---------------\nLinux\n"
        "---------------\nn4 (1)\n---------------\nBSD\n"
    )


def test_empty_outputs_are_left_out_unless_asked() -> None:
    results = [r("a1"), r("a2", "x\n")]
    assert [g.label for g in gather.gather(results)] == ["a2"]
    assert [g.label for g in gather.gather(results, include_empty=True)] == ["a1", "a2"]
    assert gather.format_gathered([]) == ""


def test_prefixed_output_keeps_each_nodes_order() -> None:
    results = [r("n10", "c\nd\n"), r("n2", "a\nb\n")]
    assert gather.format_prefixed(results) == "n2: a\nn2: b\nn10: c\nn10: d\n"


def test_errors_and_exit_codes() -> None:
    results = [r("n1"), r("n2", rc=3), r("n3", rc=3), r("n4", rc=None, error="n4: timed out")]
    assert gather.format_errors(results) == ["n4: timed out", "n[2-3]: exited with exit code 3"]
    assert exit_summary(results) == {0: "n1", 3: "n[2-3]", None: "n4"}
    assert highest_rc(results) == 255
    assert highest_rc(results[:3]) == 3
    assert highest_rc([]) == 0


def test_targets_from_machine_records() -> None:
    machines = [
        {"id": "n1", "address": "10.0.0.1", "metadata": {}},
        {"id": "n2", "address": "10.0.0.2:2222", "metadata": {}},
        {"id": "n3", "address": "[fd00::3]:2200", "metadata": {}},
        {"id": "n4", "address": "fd00::4", "metadata": {}},
    ]
    assert targets_for(["n1", "n2", "n3", "n4"], machines, user="ops") == [
        Target("n1", "10.0.0.1", 22, "ops"),
        Target("n2", "10.0.0.2", 2222, "ops"),
        Target("n3", "fd00::3", 2200, "ops"),
        Target("n4", "fd00::4", 22, "ops"),
    ]
    with pytest.raises(ValueError, match=r"n\[5-6\]"):
        targets_for(["n1", "n5", "n6"], machines)
