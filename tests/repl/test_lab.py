"""The REPL against a real 3-node lab cluster: live toolbar, live key and machine completion."""

from __future__ import annotations

import asyncio
import io

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory

from shell.registry import Options
from shell.repl.app import Repl
from tests.e2e.conftest import Shoal, needs_root, shoal  # noqa: F401 (the fixture)
from tests.repl.conftest import Driver, drive

pytestmark = [needs_root, pytest.mark.timeout(600)]


def test_live_completion_and_toolbar(shoal: Shoal, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    lab = shoal.lab_up("r", 3)
    shoal.ok("cluster", "init", "--lab", lab.name)
    shoal.ok("-c", "kv put /app/db/host h; kv put /app/name n; kv put /other o")
    monkeypatch.setenv("SHOAL_HOME", str(shoal.home))

    repl = Repl(Options(), history=InMemoryHistory(), out=io.StringIO(), err=io.StringIO())
    repl.refresh = 1.0
    found: dict[str, list[str]] = {}

    def toolbar() -> str:
        return "".join(f[1] for f in repl.snapshot.fragments())

    async def offered(text: str) -> list[str]:
        assert repl.session is not None and repl.session.completer is not None
        doc = Document(text, len(text))
        completions = repl.session.completer.get_completions_async(doc, CompleteEvent(True))
        return [c.display_text async for c in completions]

    async def script(d: Driver) -> None:
        await d.prompt_ready()
        for _ in range(300):  # the toolbar connects in the background
            if repl.snapshot.state == "ok":
                break
            await asyncio.sleep(0.1)
        found["toolbar"] = [toolbar()]
        found["keys /"] = await offered("kv get /")
        found["keys /app/"] = await offered("kv get /app/")
        found["machines"] = await repl.sources()["machines"]("")
        found["nodes"] = await repl.sources()["nodes"]("")
        await d.line("kv get /app/name\r")
        for _ in range(100):
            if "n\n" in d.out_text():
                break
            await asyncio.sleep(0.1)
        await d.line("kv watch /w\r")  # a real stream, stopped by Ctrl-C
        await asyncio.sleep(1.0)
        await asyncio.to_thread(shoal.ok, "-c", "kv put /w 1")
        for _ in range(100):
            if "PUT /w 1" in d.out_text():
                break
            await asyncio.sleep(0.1)
        d.pipe.send_text("\x03")
        await d.line("kv get /w\r")
        for _ in range(100):
            if d.out_text().endswith("PUT /w 1\n1\n"):
                break
            await asyncio.sleep(0.1)
        # the member this session talks to dies: a line names it, and the REPL carries on
        assert repl.ctx is not None and repl.ctx.member is not None
        found["killed"] = [repl.ctx.member]
        await asyncio.to_thread(shoal.ok, "lab", "kill", "--name", lab.name, repl.ctx.member)
        await d.line("kv get /app/name\r")
        for _ in range(100):
            if "lost the connection" in d.err_text():
                break
            await asyncio.sleep(0.1)
        await d.line("kv get /app/db/host\r")
        for _ in range(150):
            if d.out_text().endswith("h\n") and "members 2/3" in toolbar():
                break
            await asyncio.sleep(0.1)
        found["toolbar after"] = [toolbar()]
        await d.line("\x04")

    code, d = drive(script, repl)
    assert code == 0, d.err_text()
    assert "members 3/3" in found["toolbar"][0], found["toolbar"]
    assert "leader " in found["toolbar"][0] and "leader none" not in found["toolbar"][0]
    assert found["keys /"] == ["/app/", "/other"]
    assert found["keys /app/"] == ["/app/db/", "/app/name"]
    assert len(found["machines"]) == 3
    assert len(found["nodes"]) == 3
    assert d.out_text().startswith("n\nPUT /w 1\n1\n"), d.err_text()
    assert d.out_text().endswith("h\n"), d.err_text()
    assert f"lost the connection to {found['killed'][0]} during the command" in d.err_text()
    assert "members 2/3" in found["toolbar after"][0]
    assert "cancelled" in d.err_text()
