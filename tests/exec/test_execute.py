"""Parallel exec against a real 5-node lab: live lines, gathering, timeouts, dead machines, codes.

Every test opens its own pool inside its own event loop (a pool belongs to one loop), runs, and
closes it; the lab is shared by the module and left as found (a crashed node is restored).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shell import execute, gather
from shell.execute import NodeResult, Target
from shell.lab import chaos
from shell.lab.state import LabState
from tests.exec.conftest import make_pool, targets
from tests.lab.conftest import Labs, needs_root

pytestmark = needs_root


def run(
    lab: LabState,
    command: str | list[str],
    *,
    timeout: float | None = 20.0,
    only: list[Target] | None = None,
    on_line: execute.LineCallback | None = None,
    connect_timeout: float = 10.0,
) -> list[NodeResult]:
    async def go() -> list[NodeResult]:
        pool = make_pool(lab, connect_timeout)
        try:
            return await execute.run_parallel(
                only or targets(lab), command, pool=pool, timeout=timeout, on_line=on_line
            )
        finally:
            await pool.close()

    return asyncio.run(go())


def test_hostname_gathers_into_distinct_outputs(lab5: LabState) -> None:
    results = run(lab5, "hostname")
    assert [r.node for r in results] == lab5.node_names()
    assert all(r.ok for r in results), [r.error for r in results]
    groups = gather.gather(results)
    assert [(g.label, g.lines) for g in groups] == [(n, (n,)) for n in lab5.node_names()]


def test_uname_gathers_into_one_group(lab5: LabState) -> None:
    results = run(lab5, ["uname", "-s"])
    groups = gather.gather(results)
    assert len(groups) == 1
    assert groups[0].label == "node[1-5]"
    text = gather.format_gathered(groups)
    assert text == "---------------\nnode[1-5] (5)\n---------------\nLinux\n"
    assert text.count("Linux") == 1


def test_lines_arrive_live_and_in_order_per_node(lab5: LabState) -> None:
    seen: list[tuple[str, str, str, float]] = []
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; echo e$i >&2; done; sleep 1; echo last"
    started = time.monotonic()
    results = run(
        lab5, script, on_line=lambda n, s, line: seen.append((n, s, line, time.monotonic()))
    )
    finished = time.monotonic()
    assert all(r.ok for r in results)
    for node in lab5.node_names():
        out = [line for n, s, line, _ in seen if n == node and s == "stdout"]
        err = [line for n, s, line, _ in seen if n == node and s == "stderr"]
        assert out == [str(i) for i in range(1, 11)] + ["last"]
        assert err == [f"e{i}" for i in range(1, 11)]
        first = next(t for n, s, line, t in seen if n == node and line == "1")
        assert first - started < finished - started - 0.5  # before the command ended: live
    by_node = {r.node: r for r in results}
    assert by_node["node2"].stdout.splitlines()[-1] == "last"
    prefixed = gather.format_prefixed(results)
    assert prefixed.splitlines()[:2] == ["node1: 1", "node1: 2"]


def test_timeout_is_reported_per_node(lab5: LabState) -> None:
    results = run(lab5, "sleep 5", timeout=1)
    for r in results:
        assert r.timed_out and r.rc is None
        assert r.error == f"{r.node}: command timed out after 1s"
    assert execute.highest_rc(results) == 255
    assert execute.exit_summary(results) == {None: "node[1-5]"}


def test_exit_codes_summary_and_highest(lab5: LabState) -> None:
    # node1 exits 1, node2 exits 2, ..., node5 exits 5; node3 exits 0 to make a mixed summary.
    script = 'n=$(hostname); n=${n#node}; [ "$n" = 3 ] && exit 0; exit $n'
    results = run(lab5, ["sh", "-c", script])
    assert {r.node: r.rc for r in results} == {
        "node1": 1, "node2": 2, "node3": 0, "node4": 4, "node5": 5,
    }  # fmt: skip
    assert execute.exit_summary(results) == {
        0: "node3", 1: "node1", 2: "node2", 4: "node4", 5: "node5"
    }  # fmt: skip
    assert execute.highest_rc(results) == 5
    assert "node5: exited with exit code 5" in gather.format_errors(results)


def test_argv_is_quoted(lab5: LabState) -> None:
    results = run(lab5, ["echo", "a b; echo injected", "$(hostname)"], only=targets(lab5)[:1])
    assert results[0].stdout == "a b; echo injected $(hostname)\n"


def test_copy_via_sftp(lab5: LabState, tmp_path: Path) -> None:
    local = tmp_path / "payload.txt"
    local.write_text("hello nodes\n")

    async def go() -> list[NodeResult]:
        pool = make_pool(lab5)
        try:
            copied = await execute.copy(local, targets(lab5), "/tmp/payload.txt", pool)
            assert all(r.ok for r in copied), [r.error for r in copied]
            return await execute.run_parallel(
                targets(lab5), ["cat", "/tmp/payload.txt"], pool=pool, timeout=10
            )
        finally:
            await pool.close()

    results = asyncio.run(go())
    groups = gather.gather(results)
    assert [(g.label, g.lines) for g in groups] == [("node[1-5]", ("hello nodes",))]


def test_copy_to_a_bad_path_names_the_node(lab5: LabState, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_text("x")

    async def go() -> list[NodeResult]:
        pool = make_pool(lab5)
        try:
            return await execute.copy(local, targets(lab5)[:2], "/no/such/dir/f", pool)
        finally:
            await pool.close()

    results = asyncio.run(go())
    assert [r.ok for r in results] == [False, False]
    assert all(r.error and r.error.startswith(f"{r.node}: ") for r in results)


def test_crashed_node_before_the_command(labs: Labs, lab5: LabState) -> None:
    chaos.crash(lab5.name, "node3", home=labs.home)
    try:
        results = run(lab5, "hostname", timeout=6, connect_timeout=3)
        by_node = {r.node: r for r in results}
        bad = by_node.pop("node3")
        assert bad.rc is None and bad.error and bad.error.startswith("node3: ")
        assert all(r.ok and r.stdout == f"{r.node}\n" for r in by_node.values())
        assert execute.exit_summary(results) == {0: "node[1-2,4-5]", None: "node3"}
    finally:
        chaos.restore(lab5.name, "node3", home=labs.home)


def test_crashed_node_mid_command(labs: Labs, lab5: LabState) -> None:
    async def go() -> list[NodeResult]:
        pool = make_pool(lab5)
        crashed = asyncio.Event()

        def on_line(node: str, stream: str, line: str) -> None:
            if node == "node3" and line == "started":
                crashed.set()

        async def crash_when_started() -> None:
            await crashed.wait()
            await asyncio.to_thread(chaos.crash, lab5.name, "node3", home=labs.home)

        crasher = asyncio.create_task(crash_when_started())
        try:
            return await execute.run_parallel(
                targets(lab5), "echo started; sleep 2; echo finished",
                pool=pool, timeout=6, on_line=on_line,
            )  # fmt: skip
        finally:
            crasher.cancel()
            await pool.close()

    try:
        results = asyncio.run(go())
        by_node = {r.node: r for r in results}
        bad = by_node.pop("node3")
        assert bad.rc is None and bad.error and bad.error.startswith("node3: ")
        assert bad.stdout == "started\n"
        for r in by_node.values():
            assert r.ok and r.stdout == "started\nfinished\n"
    finally:
        chaos.restore(lab5.name, "node3", home=labs.home)


def test_gather_with_stderr_and_prefix_printer(lab5: LabState) -> None:
    lines: list[str] = []
    printer = gather.LinePrinter(lines.append)
    results = run(lab5, "echo out; echo err >&2", on_line=printer, only=targets(lab5)[:2])
    assert sorted(lines) == ["node1: err\n", "node1: out\n", "node2: err\n", "node2: out\n"]
    assert [g.lines for g in gather.gather(results, stream="both")] == [("out", "err")]
