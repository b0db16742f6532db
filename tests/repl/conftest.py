"""Fixtures for REPL tests: a fake registry and a driver for a real PromptSession.

The session reads a prompt_toolkit pipe and draws to ``DummyOutput`` (as prompt_toolkit's own
tests/test_cli.py does); keys are sent in steps, each after the previous step has been taken in,
because typeahead sent all at once would reach the next prompt instead of a running command.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from shell.commands import builtin
from shell.registry import Arg, Command, Options, Registry, Result
from shell.repl.app import Repl


@dataclass
class Fake:
    """What the fake commands saw: started/closed events and the arguments they got."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: bool = False
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def lease_id(text: str) -> int:
    return int(text, 16)


def fake_registry(fake: Fake) -> Registry:
    """A few commands shaped like the real ones, answering without a cluster."""
    registry = Registry()

    async def echo(ctx: Any, a: dict[str, Any]) -> Result:
        fake.calls.append(("echo", a))
        return Result(a, text=("ECHO " + " ".join(a["words"])).upper() if a["loud"] else
                      "echo " + " ".join(a["words"]))  # fmt: skip

    async def slow(ctx: Any, a: dict[str, Any]) -> Result:
        fake.calls.append(("slow", a))
        fake.started.set()
        await asyncio.sleep(60)
        return Result(text="slow finished")

    async def watch(ctx: Any, a: dict[str, Any]) -> Result:
        async def events() -> AsyncIterator[Result]:
            try:
                n = 0
                while True:
                    n += 1
                    yield Result(text=f"PUT {a['key']} {n}")
                    fake.started.set()
                    await asyncio.sleep(0.05)
            finally:
                fake.stream_closed = True

        return Result(stream=events())

    async def get(ctx: Any, a: dict[str, Any]) -> Result:
        fake.calls.append(("kv get", a))
        return Result(a, text=f"value of {a['key']}")

    async def revoke(ctx: Any, a: dict[str, Any]) -> Result:
        return Result(text=f"lease {a['id']:x} revoked")

    key = Arg("key", "the key", completion="keys")
    registry.register(
        Command(
            "echo",
            "print the words",
            echo,
            [Arg("words", "words", many=True), Arg("loud", "", type=bool, flag=True)],
        )
    )
    registry.register(Command("slow", "sleep a minute", slow))
    registry.register(
        Command(
            "kv get",
            "one key",
            get,
            [
                key,
                Arg("prefix", "every key under", type=bool, flag=True, default=False),
                Arg("rev", "at a revision", type=int, flag=True, default=0),
            ],
        )
    )
    registry.register(Command("kv watch", "watch a key", watch, [key]))
    registry.register(Command("kv put", "set a key", get, [key, Arg("value", "the value")]))
    registry.register(
        Command(
            "lease revoke",
            "end a lease",
            revoke,
            [Arg("id", "lease id", type=lease_id, completion="leases")],
        )
    )
    registry.register(  # typed like a lease id but naming no source: nothing live is offered
        Command("lease forget", "no source", revoke, [Arg("id", "lease id", type=lease_id)])
    )
    registry.register(
        Command("machines", "the machines", echo, [Arg("machine", "", completion="machines")])
    )
    builtin.register(registry)
    return registry


FAKE_KEYS = ["/app/db/host", "/app/db/port", "/app/name", "/other"]


async def fake_keys(typed: str) -> list[str]:
    from shell.repl.sources import next_segment

    return next_segment(typed, FAKE_KEYS)


async def fake_machines(typed: str) -> list[str]:
    return [m for m in ("m-1a2b", "m-3c4d") if m.startswith(typed)]


async def fake_leases(typed: str) -> list[str]:
    return [x for x in ("694d7c1a", "694d7c1b") if x.startswith(typed)]


FAKE_SOURCES = {"keys": fake_keys, "machines": fake_machines, "leases": fake_leases}


class Driver:
    """A :class:`Repl` on a pipe; ``send`` types keys once the REPL is waiting for them."""

    def __init__(self, pipe: PipeInput, repl: Repl) -> None:
        self.pipe = pipe
        self.repl = repl
        self.out = repl.out
        self.err = repl.err

    async def prompt_ready(self, timeout: float = 5.0) -> None:
        """Wait until a prompt is running (so the keys reach it, not a command)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            session = self.repl.session
            if session is not None and session.app.is_running:
                await asyncio.sleep(0.02)
                return
            if loop.time() > deadline:
                raise AssertionError("the prompt never came")
            await asyncio.sleep(0.01)

    async def line(self, text: str) -> None:
        await self.prompt_ready()
        self.pipe.send_text(text)
        await asyncio.sleep(0.05)

    def out_text(self) -> str:
        assert isinstance(self.out, io.StringIO)
        return self.out.getvalue()

    def err_text(self) -> str:
        assert isinstance(self.err, io.StringIO)
        return self.err.getvalue()


Script = Callable[[Driver], Awaitable[None]]


def drive(script: Script, repl: Repl | None = None, fake: Fake | None = None) -> tuple[int, Driver]:
    """Run the REPL with ``script`` typing into it; the exit code and the driver."""

    async def main() -> tuple[int, Driver]:
        nonlocal repl
        with create_pipe_input() as pipe:
            if repl is None:
                repl = make_repl(fake or Fake())
            repl.input, repl.output = pipe, DummyOutput()
            driver = Driver(pipe, repl)
            task = asyncio.create_task(repl.run())
            await script(driver)
            code = await asyncio.wait_for(task, 10)
            return code, driver

    return asyncio.run(main())


def make_repl(fake: Fake, **kw: Any) -> Repl:
    kw.setdefault("registry", fake_registry(fake))
    kw.setdefault("sources", FAKE_SOURCES)
    kw.setdefault("status", None)
    kw.setdefault("history", InMemoryHistory())
    return Repl(Options(), out=io.StringIO(), err=io.StringIO(), **kw)


@pytest.fixture(autouse=True)
def shoal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Never the user's ~/.shoal: history and cluster state in a temporary home."""
    home = tmp_path / "shoal-home"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    monkeypatch.delenv("SHOAL_CLUSTER", raising=False)
    yield home
