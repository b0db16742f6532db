"""The toolbar: truthful about connecting/unreachable, and refreshed by a background task."""

from __future__ import annotations

import asyncio
from typing import Any

from shell.repl.toolbar import Snapshot, keep_fresh
from tests.repl.conftest import Driver, Fake, drive, make_repl


def text(s: Snapshot) -> str:
    return "".join(f[1] for f in s.fragments())


def test_states() -> None:
    s = Snapshot(cluster="demo")
    assert "connecting…" in text(s)
    s.update({"leader": "node1", "term": 4, "healthy": 2, "total": 3, "revision": 17})
    assert text(s) == " demo  leader node1  term 4  members 2/3  rev 17 "
    s.state, s.error = "unreachable", "no member answers"
    assert "unreachable" in text(s) and "no member answers" in text(s)


def test_keep_fresh_goes_unreachable_and_back() -> None:
    answers: list[Any] = [ConnectionError("down"), {"leader": "n1", "term": 2}]
    seen: list[str] = []
    s = Snapshot(cluster="c")

    async def fetch() -> dict[str, Any]:
        answer = answers.pop(0) if answers else {"leader": "n1", "term": 2}
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    async def go() -> None:
        task = asyncio.create_task(keep_fresh(s, fetch, lambda: seen.append(s.state), 0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(go())
    assert seen[:2] == ["unreachable", "ok"]
    assert s.leader == "n1"


def test_no_cluster_says_so() -> None:
    async def fetch() -> dict[str, Any]:
        raise LookupError("no cluster yet")

    s = Snapshot()
    asyncio.run(keep_fresh(s, fetch, lambda: None, 0.01))
    assert s.state == "none" and "no cluster yet" in text(s)


def test_the_session_refreshes_its_toolbar_in_the_background() -> None:
    polls: list[int] = []

    async def status() -> dict[str, Any]:
        polls.append(1)
        return {"cluster": "demo", "leader": "n1", "term": 1, "healthy": 3, "total": 3}

    repl = make_repl(Fake(), status=status, refresh=0.02)

    async def script(d: Driver) -> None:
        await d.prompt_ready()
        await asyncio.sleep(0.3)
        await d.line("\x04")

    drive(script, repl)
    assert len(polls) >= 3
    assert "members 3/3" in text(repl.snapshot)
    assert repl.snapshot.cluster == "demo"
