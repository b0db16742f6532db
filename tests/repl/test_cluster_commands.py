"""A cluster's whole life from inside the REPL, on a real lab: discover, lab, cluster init,
destroy (which asks first). The prompt and toolbar follow the cluster the commands made."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable

import pytest
from prompt_toolkit.history import InMemoryHistory

from shell.registry import Options
from shell.repl.app import Repl
from tests.e2e.conftest import Shoal, needs_root, shoal  # noqa: F401 (the fixture)
from tests.repl.conftest import Driver, drive

pytestmark = [needs_root, pytest.mark.timeout(600)]


async def until(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Wait for ``check`` (a bound on waiting, not a claim about speed)."""
    for _ in range(int(seconds * 10)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def test_discover_lab_init_and_destroy_inside_the_repl(
    shoal: Shoal,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = shoal.lab_up("c", 3)
    monkeypatch.setenv("SHOAL_HOME", str(shoal.home))
    repl = Repl(Options(), history=InMemoryHistory(), out=io.StringIO(), err=io.StringIO())
    repl.refresh = 1.0
    questions: list[str] = []
    asked = asyncio.Event()
    answer_prompt = repl.ask

    async def ask(question: str) -> bool:
        questions.append(question)
        asked.set()
        return await answer_prompt(question)

    repl.ask = ask  # type: ignore[method-assign]  # watch the question, answer it for real
    seen: dict[str, str] = {}

    def toolbar() -> str:
        return "".join(f[1] for f in repl.snapshot.fragments())

    async def script(d: Driver) -> None:
        await d.prompt_ready()
        await until(lambda: repl.snapshot.state == "none", "the toolbar to say: no cluster")
        seen["before"] = toolbar()
        seen["lab nodes"] = ",".join(await repl.sources()["lab-nodes"]("node"))

        await d.line("discover --expect 3 --timeout 20\r")
        await until(lambda: "3 hosts" in d.err_text(), "discover to finish")
        await d.line("lab status\r")  # the only lab that is up: no --name needed
        await until(lambda: d.out_text().count("up (pid") >= 3, "lab status")

        await d.line(f"cluster init --lab {lab.name}\r")
        await until(lambda: "is up" in d.out_text(), "cluster init")
        await until(lambda: "members 3/3" in toolbar(), "the toolbar on the new cluster")
        seen["after init"] = toolbar()
        await d.line("kv put /made/in/repl yes\r")
        await until(lambda: "OK (revision" in d.out_text(), "kv put on the new cluster")

        await d.line("cluster destroy\r")
        await asyncio.wait_for(asked.wait(), 60)
        await asyncio.sleep(0.3)
        d.pipe.send_text("n\r")
        await until(lambda: "nothing done" in d.out_text(), "the refusal to be honoured")
        await d.line("kv get /made/in/repl\r")
        await until(lambda: d.out_text().endswith("yes\n"), "the cluster to be still there")
        await d.line("cluster destroy --yes\r")
        await until(lambda: f"cluster {lab.name} stopped" in d.out_text(), "cluster destroy")
        await d.line("\x04")

    code, d = drive(script, repl)
    assert code == 0, d.err_text()
    assert "no cluster" in seen["before"]
    assert seen["lab nodes"] == "node1,node2,node3"  # completion before any cluster exists
    assert "3 hosts, 0 with an agent" in d.err_text()
    assert "lab bridge" in d.err_text()
    for node in ("node1", "node2", "node3"):
        assert node in d.out_text()
    assert lab.name in seen["after init"] and "leader " in seen["after init"]
    assert len(questions) == 1 and lab.name in questions[0] and "stop every agent" in questions[0]
    # after destroy no agent runs, and the lab itself is untouched
    status = json.loads(shoal.ok("lab", "status", "--name", lab.name, "--json").stdout)
    assert [n["agent"] for n in status["nodes"]] == ["not running"] * 3
    assert [n["sshd"] for n in status["nodes"]] == ["up"] * 3
