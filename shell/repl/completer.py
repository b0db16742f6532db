"""Completion from the registry (commands, subcommands, flags, choices) and the live cluster.

The command tree comes from the registry itself, never a copy, so a plugin's command completes
like a built-in one. Live values (keys, machines, leases, nodes, elections) come from the sources an
argument names (``Arg.completion``, see shell/repl/sources.py); they are awaited in
:meth:`ShellCompleter.get_completions_async`, which prompt_toolkit runs as a task beside the UI,
so a slow cluster never freezes typing. The registry may not be loaded yet (it loads after the
first prompt): until it is, nothing is offered.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from shell.registry import Arg, Command, Registry
from shell.repl.sources import Source

GLOBAL_FLAGS = ("--json", "--no-legend", "--cluster", "--timeout", "--help")
SOURCE_TIMEOUT = 2.5


def completion_name(arg: Arg) -> str | None:
    """Where ``arg``'s values come from: the source it names (``Arg.completion``), if any."""
    return arg.completion


def split_words(text: str) -> tuple[list[str], str]:
    """The complete words of the command under the cursor, and the word being typed.

    Only the last ``;``-separated command counts; a line continued with a backslash is one line.
    An unfinished quote is closed for the split so completion still works inside it.
    """
    text = text.replace("\\\n", " ").split(";")[-1]
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:
        try:
            words = shlex.split(text + '"')
        except ValueError:
            words = shlex.split(text + "'")
    if text and not text[-1].isspace() and words:
        return words[:-1], words[-1]
    return words, ""


class ShellCompleter(Completer):
    """Completes a shoal command line; ``registry`` and ``sources`` are read at each Tab."""

    def __init__(
        self,
        registry: Callable[[], Registry | None],
        sources: Callable[[], Mapping[str, Source]],
    ) -> None:
        self.registry = registry
        self.sources = sources

    # --- what the line asks for ------------------------------------------------------------

    def _plan(self, words: list[str], word: str) -> tuple[list[tuple[str, str]], str | None]:
        """Static candidates (text, meta) and the live source to ask, for this position."""
        registry = self.registry()
        if registry is None:
            return [], None
        command, rest = self._command(registry, words)
        if command is None:
            return self._names(registry, words), None
        flags = {a.option: a for a in command.args if a.flag}
        if rest and rest[-1] in flags and not flags[rest[-1]].is_switch:
            flag = flags[rest[-1]]
            return [(c, "") for c in flag.choices or ()], completion_name(flag)
        if word.startswith("-"):
            used = set(rest)
            options = [(a.option, a.help) for a in command.args if a.flag and a.option not in used]
            options += [(f, "global option") for f in GLOBAL_FLAGS if f not in used]
            return options, None
        arg = self._next_positional(command, flags, rest)
        if arg is None:
            return [], None
        source = completion_name(arg)
        if source == "commands":
            return self._names(registry, rest), None
        return [(c, "") for c in arg.choices or ()], source

    @staticmethod
    def _command(registry: Registry, words: list[str]) -> tuple[Command | None, list[str]]:
        for width in (3, 2, 1):
            if len(words) >= width:
                found = registry.lookup(" ".join(words[:width]))
                if found is not None:
                    return found, words[width:]
        return None, words

    @staticmethod
    def _names(registry: Registry, words: list[str]) -> list[tuple[str, str]]:
        """Command names (or a group's subcommands) with their summaries."""
        if not words:
            out: dict[str, str] = {g: "group" for g in registry.groups()}
            for name in registry._names:
                if " " not in name:
                    found = registry.lookup(name)
                    out[name] = found.summary if found else ""
            return sorted(out.items())
        prefix = " ".join(words) + " "
        subs: dict[str, str] = {}
        for name in registry._names:
            if name.startswith(prefix):
                found = registry.lookup(name)
                subs[name[len(prefix) :].split()[0]] = found.summary if found else ""
        return sorted(subs.items())

    @staticmethod
    def _next_positional(command: Command, flags: Mapping[str, Arg], rest: list[str]) -> Arg | None:
        count, skip = 0, False
        for tok in rest:
            if skip:
                skip = False
            elif tok.startswith("--"):
                arg = flags.get(tok.partition("=")[0])
                skip = arg is not None and not arg.is_switch and "=" not in tok
            else:
                count += 1
        positional = [a for a in command.args if not a.flag]
        for arg in positional:
            if arg.many:
                return arg
            if count == 0:
                return arg
            count -= 1
        return None

    # --- prompt_toolkit's side ------------------------------------------------------------

    @staticmethod
    def _completions(candidates: Iterable[tuple[str, str]], word: str) -> Iterable[Completion]:
        for text, meta in candidates:
            if text.startswith(word):
                shown = shlex.quote(text) if text and shlex.quote(text) != text else text
                yield Completion(shown, -len(word), display=text, display_meta=meta)

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        """The registry's candidates only (no network): for synchronous callers."""
        words, word = split_words(document.text_before_cursor)
        static, _ = self._plan(words, word)
        yield from self._completions(static, word)

    async def get_completions_async(
        self, document: Document, event: CompleteEvent
    ) -> AsyncGenerator[Completion, None]:
        words, word = split_words(document.text_before_cursor)
        static, source_name = self._plan(words, word)
        for completion in self._completions(static, word):
            yield completion
        source = self.sources().get(source_name) if source_name else None
        if source is None:
            return
        try:
            async with asyncio.timeout(SOURCE_TIMEOUT):
                live = await source(word)
        except Exception:  # an unreachable cluster completes nothing; the toolbar says why
            return
        seen = {text for text, _ in static}
        for completion in self._completions(((v, "") for v in live if v not in seen), word):
            yield completion
