"""The REPL loop driven through a real PromptSession: errors, Ctrl-C, history, exit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.client import ControlError
from shell.registry import Command, Result
from shell.repl.app import EXIT_INTERRUPTED, join_continued
from shell.repl.history import make_history
from tests.repl.conftest import Driver, Fake, drive, fake_registry, make_repl


def test_unknown_command_says_did_you_mean_and_the_loop_goes_on() -> None:
    async def script(d: Driver) -> None:
        await d.line("ecko hi\r")
        await d.line("kv gte /a\r")
        await d.line("echo still here\r")
        await d.line("\x04")

    code, d = drive(script)
    assert code == 0
    assert "unknown command 'ecko'; did you mean 'echo'?" in d.err_text()
    assert "did you mean `kv get`?" in d.err_text()
    assert "echo still here" in d.out_text()


def test_wrong_arguments_print_the_usage_line() -> None:
    async def script(d: Driver) -> None:
        await d.line("kv get\r")
        await d.line("kv get /a --bogus\r")
        await d.line("\x04")

    _, d = drive(script)
    assert "kv get: missing KEY\nusage: kv get KEY [--prefix] [--rev REV]" in d.err_text()
    assert "unknown option --bogus" in d.err_text()


def test_ctrl_c_cancels_a_running_command_and_the_next_one_runs() -> None:
    fake = Fake()

    async def script(d: Driver) -> None:
        await d.line("slow\r")
        await asyncio.wait_for(fake.started.wait(), 5)
        d.pipe.send_text("\x03")
        await d.line("echo after\r")
        await d.line("\x04")

    code, d = drive(script, fake=fake)
    assert code == 0
    assert "cancelled" in d.err_text()
    assert "slow finished" not in d.out_text()
    assert "echo after" in d.out_text()


def test_ctrl_c_stops_a_stream_cleanly() -> None:
    fake = Fake()

    async def script(d: Driver) -> None:
        await d.line("kv watch /a\r")
        await asyncio.wait_for(fake.started.wait(), 5)
        await asyncio.sleep(0.2)
        d.pipe.send_text("\x03")
        await d.line("echo after\r")
        await d.line("\x04")

    _, d = drive(script, fake=fake)
    assert "PUT /a 1\nPUT /a 2" in d.out_text()
    assert fake.stream_closed
    assert d.out_text().rstrip().endswith("echo after")


def test_ctrl_c_at_the_prompt_clears_the_line() -> None:
    async def script(d: Driver) -> None:
        await d.line("echo never")
        d.pipe.send_text("\x03")
        await d.line("echo yes\r")
        await d.line("\x04")

    _, d = drive(script)
    assert d.out_text() == "echo yes\n"


def test_exit_and_its_code() -> None:
    async def script(d: Driver) -> None:
        await d.line("echo one; exit 3; echo never\r")

    code, d = drive(script)
    assert code == 3
    assert d.out_text() == "echo one\n"


def test_a_trailing_backslash_continues_the_line() -> None:
    async def script(d: Driver) -> None:
        await d.line("echo one \\\r")
        await d.line("two\r")
        await d.line("\x04")

    _, d = drive(script)
    assert d.out_text() == "echo one two\n"
    assert join_continued("a \\\nb") == "a  b"


def test_history_persists_across_two_sessions(tmp_path: Path) -> None:
    path = tmp_path / "history"

    async def first(d: Driver) -> None:
        await d.line("echo remembered\r")
        await d.line("\x04")

    drive(first, make_repl(Fake(), history=make_history(path)))
    assert "echo remembered" in path.read_text()

    async def second(d: Driver) -> None:
        await d.prompt_ready()
        await asyncio.sleep(0.2)  # ThreadedHistory loads the file in a thread
        await d.line("\x1b[A\r")  # up arrow: the last line of the first session
        await d.line("\x04")

    _, d = drive(second, make_repl(Fake(), history=make_history(path)))
    assert d.out_text() == "echo remembered\n"


def test_a_member_lost_mid_command_is_named_and_the_repl_lives() -> None:
    fake = Fake()
    registry = fake_registry(fake)

    class DeadClient:
        async def close(self) -> None:
            pass

    async def dies(ctx: Any, a: dict[str, Any]) -> Result:
        await ctx.drop()  # what Context.call does on connection-lost
        raise ControlError("connection-lost", "cannot talk to the agent", {})

    registry.register(Command("dies", "the member goes away", dies))
    repl = make_repl(fake, registry=registry)

    async def script(d: Driver) -> None:
        ctx = await repl.context()
        ctx._client, ctx.member = DeadClient(), "node2"  # type: ignore[assignment]
        await d.line("dies\r")
        await d.line("echo alive\r")
        await d.line("\x04")

    code, d = drive(script, repl)
    assert code == 0
    assert "cannot talk to the agent [connection-lost]" in d.err_text()
    assert "lost the connection to node2 during the command" in d.err_text()
    assert "echo alive" in d.out_text()


def test_interrupted_code() -> None:
    assert EXIT_INTERRUPTED == 130


def test_sigint_outside_raw_mode_cancels_the_command_too() -> None:
    """A real SIGINT (Ctrl-C when the terminal is not in raw mode) cancels, never exits."""
    import os
    import signal

    fake = Fake()

    async def script(d: Driver) -> None:
        await d.line("slow\r")
        await asyncio.wait_for(fake.started.wait(), 5)
        os.kill(os.getpid(), signal.SIGINT)
        await d.line("echo after\r")
        await d.line("\x04")

    before = signal.getsignal(signal.SIGINT)
    code, d = drive(script, fake=fake)
    assert code == 0
    assert "cancelled" in d.err_text()
    assert "echo after" in d.out_text()
    assert signal.getsignal(signal.SIGINT) is before  # restored on leaving
