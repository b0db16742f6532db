"""The bottom toolbar: the cluster's name, leader, term, members healthy/total and revision.

A background task refreshes it every few seconds and asks prompt_toolkit to redraw; the toolbar
function only reads the last snapshot, so drawing never waits on the network. It tells the truth
about the connection: "connecting…" until the first answer, "unreachable" (with the age of what
it last knew) when the cluster stops answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prompt_toolkit.formatted_text import StyleAndTextTuples

REFRESH_SECONDS = 3.0


@dataclass
class Snapshot:
    """What the toolbar last learned; ``state`` is connecting, ok, unreachable or none."""

    cluster: str = "?"
    state: str = "connecting"
    leader: str | None = None
    term: int | None = None
    healthy: int | None = None
    total: int | None = None
    revision: int | None = None
    error: str = ""
    updated: float = field(default_factory=time.monotonic)

    def update(self, answer: dict[str, Any]) -> None:
        for key in ("cluster", "leader", "term", "healthy", "total", "revision"):
            if key in answer:
                setattr(self, key, answer[key])
        self.state, self.error, self.updated = "ok", "", time.monotonic()

    def fragments(self) -> StyleAndTextTuples:
        """The toolbar as styled text (class names styled in shell/repl/app.py)."""
        out: StyleAndTextTuples = [("class:toolbar.cluster", f" {self.cluster} ")]
        if self.state == "none":
            return [*out, ("class:toolbar.warn", f" {self.error or 'no cluster'} ")]
        if self.state == "connecting":
            return [*out, ("class:toolbar.dim", " connecting… ")]
        if self.state == "unreachable":
            out.append(("class:toolbar.bad", " unreachable "))
            if self.error:
                out.append(("class:toolbar.dim", f" {self.error[:80]} "))
            return out
        health = "?" if self.healthy is None else str(self.healthy)
        total = "?" if self.total is None else str(self.total)
        quorum = self.healthy is not None and self.total and self.healthy * 2 > self.total
        out += [
            ("class:toolbar", f" leader {self.leader or 'none'} "),
            ("class:toolbar", f" term {self.term if self.term is not None else '?'} "),
            ("class:toolbar.ok" if quorum else "class:toolbar.bad", f" members {health}/{total} "),
            ("class:toolbar", f" rev {self.revision if self.revision is not None else '?'} "),
        ]
        return out


async def keep_fresh(
    snapshot: Snapshot,
    fetch: Callable[[], Awaitable[dict[str, Any]]],
    redraw: Callable[[], None],
    interval: float = REFRESH_SECONDS,
) -> None:
    """Refresh ``snapshot`` forever (until cancelled); each failure marks it unreachable."""
    while True:
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # races with the answer, and this loop would then outlive the session
            async with asyncio.timeout(interval + 5):
                answer = await fetch()
            snapshot.update(answer)
        except asyncio.CancelledError:
            raise
        except LookupError as exc:  # no cluster configured: nothing to connect to, say so once
            snapshot.state, snapshot.error = "none", str(exc)
            redraw()
            return
        except Exception as exc:
            snapshot.state = "unreachable"
            snapshot.error = str(exc) or type(exc).__name__
        redraw()
        await asyncio.sleep(interval)
