"""The REPL's loop: read a line, run it through the registry, print it, stay alive.

Fast to start: the first prompt needs only prompt_toolkit and this package. The registry (whose
commands import the SSH stack) loads in a thread after the prompt is up, and the cluster
connection is made in the background by the toolbar's first refresh; a command typed before
either is ready simply waits for it. Every line is parsed like a script line
(:func:`shell.batch.parse_script`: ``;``, ``#``, ``$VAR``) and each command runs through
:func:`shell.batch.run_one` — the registry's parser and the renderers, never a copy of them.

Ctrl-C while a command runs cancels it (a watch's stream is closed, which cancels it on the
agent) and returns to the prompt; the keys are read from the same input the prompt uses, in raw
mode, so this works on a terminal and on the pipe the tests drive. A command that reads the
terminal itself (``ssh``: ``Command.terminal``) is left alone with it: no key watching, and its
Ctrl-C is a byte for the remote side. Ctrl-D or ``exit`` leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import History
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPress, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from shell.clusterstate import current, shoal_home
from shell.registry import EXIT_USAGE, Options, Registry, UsageError, error_message
from shell.repl.completer import ShellCompleter
from shell.repl.lexer import ShoalLexer
from shell.repl.sources import ClusterSources, Source, lab_nodes
from shell.repl.toolbar import REFRESH_SECONDS, Snapshot, keep_fresh

if TYPE_CHECKING:
    from shell.commands.context import Context

EXIT_INTERRUPTED = 130
STYLE = Style.from_dict(
    {
        "bottom-toolbar": "noreverse bg:#1c1c1c #a8a8a8",
        "toolbar.cluster": "bold #ffffff bg:#005f87",
        "toolbar.ok": "#5fd75f",
        "toolbar.bad": "bold #ff5f5f",
        "toolbar.warn": "#ffaf00",
        "toolbar.dim": "#767676",
        "prompt": "bold #5fafd7",
    }
)


def join_continued(text: str) -> str:
    """A line ending with a backslash continues on the next: one command, as a shell reads it."""
    return text.replace("\\\r\n", " ").replace("\\\n", " ")


def highlight_help(text: str) -> str:
    """``help`` output with its examples coloured by the same lexer as the prompt's input."""
    from pygments import highlight
    from pygments.formatters import TerminalFormatter

    lines, out, in_examples = text.splitlines(), [], False
    for line in lines:
        if in_examples and line.startswith("  "):
            line = "  " + highlight(line[2:], ShoalLexer(), TerminalFormatter()).rstrip("\n")
        in_examples = line == "examples:" or (in_examples and line.startswith("  "))
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _build_registry() -> Registry:
    from shell.commands import build_registry

    return build_registry()


class Repl:
    """One interactive session. Every seam a test needs is a parameter.

    ``registry``: given, or built in a thread after the first prompt. ``sources``: live
    completion sources (default: the cluster's, see shell/repl/sources.py). ``status``: what
    the toolbar polls (default: the cluster's status; ``None`` in tests that want no cluster).
    ``input``/``output``: prompt_toolkit's (a pipe and DummyOutput in tests); ``out``/``err``:
    where command results and errors go.
    """

    def __init__(
        self,
        options: Options | None = None,
        *,
        registry: Registry | None = None,
        sources: Mapping[str, Source] | None = None,
        status: Callable[[], Awaitable[dict[str, Any]]] | bool | None = True,
        history: History | None = None,
        input: Input | None = None,
        output: Output | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        refresh: float = REFRESH_SECONDS,
    ) -> None:
        self.options = options or Options.from_env()
        self.registry: Registry | None = registry
        self._sources = sources
        self._status = status
        self.history = history
        self.input, self.output = input, output
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.refresh = refresh
        self.snapshot = Snapshot(cluster=self.options.cluster or current(shoal_home()) or "?")
        self.ctx: Context | None = None
        self._bg_ctx: Context | None = None
        self._cluster_sources: ClusterSources | None = None
        self._registry_task: asyncio.Task[Registry] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._toolbar: asyncio.Task[Any] | None = None
        self.session: PromptSession[str] | None = None
        self._running: asyncio.Task[int] | None = None
        self._interrupted = False
        self._terminal_command = False
        """The running command owns the terminal (Command.terminal): no key watching."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- pieces made lazily ----------------------------------------------------------------

    async def get_registry(self) -> Registry:
        if self.registry is None:
            if self._registry_task is None:
                self._registry_task = asyncio.create_task(asyncio.to_thread(_build_registry))
            # shielded: a cancelled command must not cancel the load for the next one
            self.registry = await asyncio.shield(self._registry_task)
        return self.registry

    async def context(self) -> Context:
        """The commands' context: one cluster connection for the whole session."""
        if self.ctx is None:
            from shell.commands.context import Context

            self.ctx = Context(await self.get_registry(), self.options, self.err)
            self.ctx.ask = self.ask
        return self.ctx

    async def ask(self, question: str) -> bool:
        """A yes/no question for a command (``cluster destroy``) on the REPL's own input.

        Only commands marked ``terminal`` ask: the REPL is not watching the keys meanwhile, so
        this prompt owns them, and Ctrl-C cancels the command cleanly.
        """
        session: PromptSession[str] = PromptSession(input=self.input, output=self.output)
        try:
            answer = await session.prompt_async(question)
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    async def background(self) -> Context:
        """A second connection for the toolbar and completion.

        Separate from the commands' so that cancelling a command (which may drop its
        connection) never disturbs the toolbar, and a slow completion never queues behind a
        command.
        """
        if self._bg_ctx is None:
            from shell.commands.context import Context

            self._bg_ctx = Context(await self.get_registry(), self.options)
        return self._bg_ctx

    def sources(self) -> Mapping[str, Source]:
        if self._sources is not None:
            return self._sources
        if self._cluster_sources is None:
            if self._bg_ctx is None:  # no cluster (yet): what needs none
                return {"lab-nodes": lab_nodes}

            ctx = self._bg_ctx

            def node_ids() -> list[str]:
                return [spec.id for spec in ctx.state().nodes]

            self._cluster_sources = ClusterSources(ctx.call, node_ids)
        return self._cluster_sources.sources()

    async def cluster_status(self) -> dict[str, Any]:
        """The toolbar's numbers: every member's health (over SSH) and one member's status."""
        from shell import bootstrap
        from shell.clusterstate import StateError

        ctx = await self.background()
        try:
            state = ctx.state()
        except StateError as exc:
            raise LookupError(str(exc))
        self.snapshot.cluster = state.name
        rows = await bootstrap.cluster_status(state, ctx.pool(), timeout=min(3.0, self.refresh))
        healthy = sum(1 for r in rows if r.get("health") == "healthy")
        if not healthy:
            down = "; ".join(f"{r['id']}: {r.get('error') or r.get('health')}" for r in rows)
            raise ConnectionError(f"no member answers ({down})")
        st = await ctx.call("status")
        return {
            "cluster": state.name,
            "leader": st.get("leader"),
            "term": st.get("term"),
            "revision": st.get("revision"),
            "healthy": healthy,
            "total": len(rows),
        }

    # --- the prompt ------------------------------------------------------------------------

    def _prompt(self) -> StyleAndTextTuples:
        name = self.snapshot.cluster
        return [("class:prompt", "shoal> " if name == "?" else f"shoal:{name}> ")]

    def _key_bindings(self) -> KeyBindings:
        kb = KeyBindings()

        @Condition
        def continued() -> bool:
            return get_app().current_buffer.document.text_before_cursor.endswith("\\")

        @kb.add("enter", filter=continued)
        def _(event: KeyPressEvent) -> None:
            """A trailing backslash continues the command on the next line."""
            event.current_buffer.insert_text("\n")

        return kb

    def make_session(self) -> PromptSession[str]:
        from shell.repl.history import make_history

        self.session = PromptSession(
            message=self._prompt,
            history=self.history if self.history is not None else make_history(),
            completer=ShellCompleter(lambda: self.registry, self.sources),
            complete_while_typing=False,
            lexer=PygmentsLexer(ShoalLexer),
            bottom_toolbar=self.snapshot.fragments if self._status is not None else None,
            style=STYLE,
            key_bindings=self._key_bindings(),
            prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
            enable_history_search=False,
            input=self.input,
            output=self.output,
        )
        return self.session

    def _redraw(self) -> None:
        if self.session is not None and self.session.app.is_running:
            self.session.app.invalidate()

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> int:
        """Prompt until Ctrl-D or ``exit``; the exit code (``exit N`` gives N)."""
        session = self.make_session()
        self._loop = asyncio.get_running_loop()
        previous = self._catch_sigint()
        if self.registry is None:
            self._registry_task = asyncio.create_task(asyncio.to_thread(_build_registry))
        self._start_toolbar()
        try:
            while True:
                try:
                    text = await session.prompt_async()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                code = await self.execute(text)
                if self.ctx is not None and self.ctx.exit_requested:
                    return code
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            await self.close()

    def _catch_sigint(self) -> Any:
        """Route SIGINT to :meth:`interrupt` (main thread only); the handler it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            return signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):
            return None

    async def execute(self, text: str) -> int:
        """Run one input (maybe several ``;``-separated commands); the last exit code."""
        from shell.batch import parse_script

        try:
            lines = parse_script(join_continued(text), (), os.environ)
        except UsageError as exc:
            self.err.write(f"shoal: {exc}\n")
            return EXIT_USAGE
        code = 0
        for line in lines:
            code = await self.run_command(line.tokens)
            if self.ctx is not None and self.ctx.cluster_changed:
                await self.follow_cluster_change()
            if code == EXIT_INTERRUPTED or (self.ctx is not None and self.ctx.exit_requested):
                break
        self.out.flush()
        return code

    def _start_toolbar(self) -> None:
        """Keep the toolbar fresh, unless that is already happening (it stops by itself while
        there is no cluster, and starts again once a command made one)."""
        if self._status is None or (self._toolbar is not None and not self._toolbar.done()):
            return
        fetch = self.cluster_status if self._status is True else self._status
        assert callable(fetch)
        self._toolbar = asyncio.create_task(
            keep_fresh(self.snapshot, fetch, self._redraw, self.refresh)
        )
        self._tasks.append(self._toolbar)

    async def follow_cluster_change(self) -> None:
        """A command made, joined or destroyed a cluster: the prompt, toolbar and completion
        follow it (the background connection is made again on the current cluster)."""

        assert self.ctx is not None
        self.ctx.cluster_changed = False
        self.snapshot.cluster = self.options.cluster or current(shoal_home()) or "?"
        self.snapshot.state, self.snapshot.error = "connecting", ""
        bg, self._bg_ctx, self._cluster_sources = self._bg_ctx, None, None
        if bg is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await bg.close()
        self._start_toolbar()
        self._redraw()

    async def run_command(self, tokens: list[str]) -> int:
        """One command through the registry; Ctrl-C cancels it; errors never end the REPL."""
        from shell.batch import run_one

        asks_help = bool(tokens) and (tokens[0] in ("help", "?") or "--help" in tokens)
        is_help = asks_help and self.out.isatty()
        buffer = io.StringIO()  # help is coloured after it is rendered
        out: TextIO = buffer if is_help else self.out
        seen: dict[str, Any] = {}

        async def dispatch() -> int:
            ctx = seen["ctx"] = await self.context()
            seen["member"] = ctx.member
            return await run_one(ctx, tokens, out, self.err, "")

        owns_terminal = await self._owns_terminal(tokens)
        task = asyncio.create_task(dispatch())
        self._running, self._interrupted = task, False
        self._terminal_command = owns_terminal

        def on_keys() -> None:
            assert self.input is not None
            for press in self.input.read_keys():
                if press.key == Keys.ControlC:
                    self.interrupt()

        lent = self._lend_typeahead() if owns_terminal else []
        try:
            if owns_terminal:  # it reads the keys itself (raw mode) and restores the terminal
                code = await task
            else:
                code = await self._with_keys(task, on_keys)
        except asyncio.CancelledError:
            if not self._interrupted:
                raise
            self.err.write("^C (cancelled)\n")
            return EXIT_INTERRUPTED
        except Exception as exc:  # a bug in a handler: say it, keep the session
            self.err.write(f"shoal: {error_message(exc)}\n")
            return 1
        finally:
            self._running, self._terminal_command = None, False
            if lent:
                self._reclaim_typeahead(lent)
        if is_help:
            self.out.write(highlight_help(buffer.getvalue()))
        self._report_lost_member(seen["ctx"], seen["member"], code)
        return code

    async def _owns_terminal(self, tokens: list[str]) -> bool:
        """Whether the command reads the terminal itself (``ssh``, see Command.terminal)."""
        try:
            registry = await self.get_registry()
            _, rest = self.options.take(tokens)
            if "--help" in rest or "-h" in rest:
                return False
            command, _ = registry.resolve(rest)
        except Exception:  # a usage error: the usual path runs it, and says what is wrong
            return False
        return command.terminal

    def _lend_typeahead(self) -> list[KeyPress]:
        """Keys the prompt read ahead (``ssh node1⏎ls⏎``) go to the command that takes the
        terminal, as they would from a shell; the keys, to take back if it never read them."""
        from prompt_toolkit.input.typeahead import get_typeahead

        from shell import terminal

        if self.session is None:
            return []
        keys = get_typeahead(self.session.input)
        text = "".join(k.data for k in keys)
        terminal.give_typeahead(text.encode("utf-8", "surrogateescape"))
        return keys

    def _reclaim_typeahead(self, keys: list[KeyPress]) -> None:
        """The command ended before reading the keys it was lent: the next prompt gets them."""
        from prompt_toolkit.input.typeahead import store_typeahead

        from shell import terminal

        if terminal.take_typeahead() and self.session is not None:
            store_typeahead(self.session.input, keys)

    def interrupt(self) -> None:
        """Ctrl-C: cancel the running command, if there is one (at the prompt it clears)."""
        task = self._running
        if task is not None and not task.done():
            self._interrupted = True
            task.cancel()

    def _on_sigint(self, signum: int, frame: object) -> None:
        """SIGINT outside raw mode (between prompt and command): the same as the Ctrl-C key.

        A Python-level handler, not the loop's: prompt_toolkit saves and restores it around
        each prompt, so it stays in force for the whole session.
        """
        if self._terminal_command:
            from shell.terminal import is_raw

            if is_raw(0):  # Ctrl-C is a byte for the remote side now; this came from elsewhere
                return
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.interrupt)

    async def _with_keys(self, task: asyncio.Task[int], on_keys: Callable[[], None]) -> int:
        """Await ``task`` while watching the input for Ctrl-C (raw mode: no SIGINT, a key)."""
        if self.input is None:
            from prompt_toolkit.input import create_input

            self.input = create_input()
        try:
            raw, attach = self.input.raw_mode(), self.input.attach(on_keys)
        except Exception:  # an input that cannot be watched: the command just runs
            return await task
        with raw, attach:
            return await task

    def _report_lost_member(self, ctx: Context, member: str | None, code: int) -> None:
        """If the member this session talked to went away mid-command, name it plainly."""
        if code and member is not None and ctx._client is None and ctx.member == member:
            self.err.write(
                f"shoal: lost the connection to {member} during the command; "
                "the next command connects to another member\n"
            )
            ctx.member = None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)  # bounded: leaving must never hang
        if self._registry_task is not None and not self._registry_task.done():
            await asyncio.gather(self._registry_task, return_exceptions=True)
        for ctx in (self.ctx, self._bg_ctx):
            if ctx is not None:
                try:
                    async with asyncio.timeout(3):
                        await ctx.close()
                except Exception:
                    pass


def main(options: Options | None = None) -> int:
    """``shoal`` at a terminal: the REPL on the current cluster (or ``--cluster``)."""
    try:
        return asyncio.run(Repl(options).run())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
