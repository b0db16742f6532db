"""A command that owns the terminal (``Command.terminal``, as ``ssh``) inside the REPL.

The REPL neither watches keys over it nor cancels it for a Ctrl-C that is a byte for it; keys the
prompt read ahead of it are handed to it (``ssh node1⏎ls⏎`` runs ls on node1), and given back
to the next prompt if it never read them.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from shell import terminal
from shell.registry import Command, Result
from tests.repl.conftest import Driver, Fake, drive, fake_registry, make_repl


def repl_with_terminal_commands(fake: Fake, release: asyncio.Event, got: list[bytes]) -> Any:
    registry = fake_registry(fake)

    async def owner(ctx: Any, a: dict[str, Any]) -> Result:
        got.append(terminal.take_typeahead())  # what bridge() sends first
        fake.started.set()
        await release.wait()
        return Result(text="owner done")

    async def refuses(ctx: Any, a: dict[str, Any]) -> Result:
        return Result(text="refused before the session", code=4)

    registry.register(Command("owner", "owns the terminal", owner, terminal=True))
    registry.register(Command("refuses", "owns it, reads nothing", refuses, terminal=True))
    return make_repl(fake, registry=registry)


def test_keys_typed_ahead_go_to_the_terminal_command_and_ctrl_c_does_not_cancel_it() -> None:
    fake, got, release = Fake(), [], asyncio.Event()

    async def script(d: Driver) -> None:
        await d.prompt_ready()
        d.pipe.send_text("owner\rls -l\r")  # one write: the prompt reads the rest ahead
        await asyncio.wait_for(fake.started.wait(), 5)
        d.pipe.send_text("\x03")  # nobody watches keys: it stays for the next prompt
        await asyncio.sleep(0.2)
        release.set()
        await d.line("echo after\r")
        await d.line("\x04")

    code, d = drive(script, repl_with_terminal_commands(fake, release, got))
    assert code == 0
    assert got == [b"ls -l\r"]
    assert "owner done" in d.out_text() and "echo after" in d.out_text()
    assert "cancelled" not in d.err_text()
    assert "ls" not in d.err_text()  # `ls -l` never reached shoal's prompt


def test_keys_a_terminal_command_never_read_come_back_to_the_prompt() -> None:
    fake = Fake()

    async def script(d: Driver) -> None:
        await d.prompt_ready()
        d.pipe.send_text("refuses\recho back at the prompt\r")
        for _ in range(100):
            if "echo back at the prompt" in d.out_text():
                break
            await asyncio.sleep(0.05)
        await d.line("\x04")

    repl = repl_with_terminal_commands(fake, asyncio.Event(), [])
    code, d = drive(script, repl)
    assert code == 0
    assert "refused before the session" in d.out_text()
    assert "echo back at the prompt" in d.out_text()
    assert terminal.take_typeahead() == b""


def test_a_sigint_while_the_terminal_is_raw_does_not_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raw mode turns Ctrl-C into a byte; a SIGINT then comes from elsewhere (kill), and the
    session is left alone (the tests' stdin is no terminal, so "raw" is given)."""
    monkeypatch.setattr(terminal, "is_raw", lambda fd=0: True)
    fake = Fake()
    release = asyncio.Event()

    async def script(d: Driver) -> None:
        await d.line("owner\r")
        await asyncio.wait_for(fake.started.wait(), 5)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.2)
        release.set()
        await d.line("\x04")

    code, d = drive(script, repl_with_terminal_commands(fake, release, []))
    assert code == 0
    assert "owner done" in d.out_text()
    assert "cancelled" not in d.err_text()
