"""The command registry: every shell command defined once, for the CLI, scripts and the REPL.

A :class:`Command` carries its name, aliases, typed arguments, help with examples and an async
handler returning a :class:`Result` (structured data, never printed text), so the same command
serves a person (rich tables), a pipe (plain columns) and a program (``--json``). Plugins register
into the same :class:`Registry` (entry-point group ``shoal.plugins``). Exit codes are decided
here, once, from the exceptions handlers raise.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.client import ControlError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
UNAVAILABLE_CODES = frozenset({"no-leader", "timeout", "connection-lost", "stopping"})
NOT_FOUND_CODES = frozenset({"not-found", "lease-not-found", "key-not-found"})
PLUGIN_GROUP = "shoal.plugins"


class UsageError(Exception):
    """The command line is wrong; the message says how to fix it (exit 2)."""


class NotFound(Exception):
    """What the command was asked about does not exist (exit 4)."""


class Unavailable(Exception):
    """No member could answer, or the cluster has no quorum (exit 3)."""


@dataclass(frozen=True)
class Arg:
    """One argument: positional unless ``flag`` (``--name``); ``type`` converts and validates."""

    name: str
    help: str = ""
    type: Callable[[str], Any] = str
    default: Any = None
    choices: Sequence[str] | None = None
    flag: bool = False
    required: bool = True
    many: bool = False
    """Positional: takes every remaining token; flag: may be repeated. Either way, a list."""
    completion: str | None = None
    """Where the REPL finds candidates: "keys", "machines", "nodes", "commands"..."""
    short: str | None = None
    """A one-letter form for a flag (``-b``), as clush users type it."""

    @property
    def is_switch(self) -> bool:
        """A boolean flag takes no value: present means True."""
        return self.flag and self.type is bool

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, text: str) -> Any:
        if self.choices is not None and text not in self.choices:
            raise UsageError(f"{self.usage_name}: {text!r} is not one of {', '.join(self.choices)}")
        try:
            return self.type(text)
        except (TypeError, ValueError) as exc:
            kind = getattr(self.type, "__name__", "value")
            raise UsageError(f"{self.usage_name}: {text!r} is not a valid {kind} ({exc})")

    @property
    def usage_name(self) -> str:
        return self.option if self.flag else self.name.upper()


@dataclass
class Result:
    """What a handler returns: data for --json, and hints for the people renderers.

    ``rows`` + ``columns`` make a table (``text`` then heads it); ``text`` alone is a human
    line; ``raw`` is printed as bytes
    (binary values survive); ``stream`` yields further Results as they happen (watch).
    """

    data: Any = None
    text: str | None = None
    rows: list[dict[str, Any]] | None = None
    columns: list[tuple[str, str]] | None = None
    raw: bytes | None = None
    stream: AsyncIterator[Result] | None = None
    code: int = EXIT_OK
    hint: str | None = None
    """What to do next, for people at a terminal: printed after the output, never to a pipe."""


Handler = Callable[[Any, dict[str, Any]], Awaitable[Result]]


@dataclass
class Command:
    name: str
    summary: str
    handler: Handler
    args: list[Arg] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    description: str = ""
    terminal: bool = False
    """The command reads the terminal itself while it runs (``ssh``): front ends must not watch
    keys or print over it, and leave the terminal to it until it returns."""

    def usage(self) -> str:
        parts = [self.name]
        for a in self.args:
            if a.flag:
                parts.append(f"[{a.option}]" if a.is_switch else f"[{a.option} {a.name.upper()}]")
                if a.many:
                    parts[-1] += "..."
            elif a.many:
                parts.append(f"[{a.name.upper()}...]" if not a.required else f"{a.name.upper()}...")
            else:
                parts.append(a.name.upper() if a.required else f"[{a.name.upper()}]")
        return "usage: " + " ".join(parts)

    def help(self) -> str:
        lines = [self.usage(), "", self.summary]
        if self.description:
            lines += ["", self.description]
        if self.aliases:
            lines += ["", "aliases: " + ", ".join(self.aliases)]
        if self.args:
            lines += ["", "arguments:"]
            for a in self.args:
                extra = []
                if a.choices:
                    extra.append("one of " + ", ".join(a.choices))
                if a.default not in (None, False):
                    extra.append(f"default {a.default}")
                tail = f" ({'; '.join(extra)})" if extra else ""
                lines.append(f"  {a.usage_name:<18} {a.help}{tail}")
        if self.examples:
            lines += ["", "examples:", *(f"  {e}" for e in self.examples)]
        return "\n".join(lines)

    def parse(self, tokens: Sequence[str]) -> dict[str, Any]:
        """Tokens after the command name → {arg name: value}; UsageError says what is wrong."""
        flags = {a.option: a for a in self.args if a.flag}
        flags.update({a.short: a for a in self.args if a.flag and a.short})
        positional = [a for a in self.args if not a.flag]
        values: dict[str, Any] = {a.name: ([] if a.many else a.default) for a in self.args}
        loose: list[str] = []
        rest = list(tokens)
        only_positional = False
        while rest:
            tok = rest.pop(0)
            if tok == "--" and not only_positional:
                only_positional = True
                continue
            if (tok.startswith("--") or tok in flags) and not only_positional:
                name, eq, inline = tok.partition("=")
                arg = flags.get(name)
                if arg is None:
                    close = difflib.get_close_matches(name, list(flags), n=1)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    raise UsageError(f"{self.name}: unknown option {name}{hint}\n{self.usage()}")
                if arg.is_switch:
                    if eq:
                        raise UsageError(f"{self.name}: {name} takes no value")
                    values[arg.name] = True
                    continue
                if not eq:
                    if not rest:
                        raise UsageError(f"{self.name}: {name} needs a value\n{self.usage()}")
                    inline = rest.pop(0)
                if arg.many:
                    values[arg.name].append(arg.convert(inline))
                else:
                    values[arg.name] = arg.convert(inline)
                continue
            loose.append(tok)
        for arg in positional:
            if arg.many:
                values[arg.name] = [arg.convert(t) for t in loose]
                loose = []
            elif loose:
                values[arg.name] = arg.convert(loose.pop(0))
            elif arg.required:
                raise UsageError(f"{self.name}: missing {arg.usage_name}\n{self.usage()}")
        if loose:
            raise UsageError(f"{self.name}: unexpected {' '.join(loose)!r}\n{self.usage()}")
        return values


@dataclass(frozen=True)
class Options:
    """Global options; each also comes from a ``SHOAL_*`` variable (the flag wins)."""

    cluster: str | None = None
    json: bool = False
    no_legend: bool = False
    timeout: float = 5.0
    keep_going: bool = False
    timeout_given: bool = False
    """Whether --timeout or SHOAL_TIMEOUT was set (exec has no timeout unless asked)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Options:
        env = os.environ if env is None else env

        def yes(name: str) -> bool:
            return env.get(name, "").lower() in ("1", "true", "yes", "on")

        try:
            timeout = float(env.get("SHOAL_TIMEOUT") or 5.0)
        except ValueError:
            raise UsageError(f"SHOAL_TIMEOUT={env['SHOAL_TIMEOUT']!r} is not a number of seconds")
        return cls(
            cluster=env.get("SHOAL_CLUSTER") or None,
            json=yes("SHOAL_JSON"),
            no_legend=yes("SHOAL_NO_LEGEND"),
            timeout=timeout,
            keep_going=yes("SHOAL_KEEP_GOING"),
            timeout_given=bool(env.get("SHOAL_TIMEOUT")),
        )

    def take(self, tokens: Sequence[str]) -> tuple[Options, list[str]]:
        """Pull global options out of ``tokens`` (anywhere before ``--``); the rest."""
        values = dict(self.__dict__)
        out: list[str] = []
        rest = list(tokens)
        while rest:
            tok = rest.pop(0)
            if tok == "--":
                out += [tok, *rest]
                break
            name, eq, inline = tok.partition("=")
            if name in ("--json", "--no-legend", "--keep-going") and not eq:
                values[name[2:].replace("-", "_")] = True
            elif name in ("--cluster", "--timeout"):
                if not eq:
                    if not rest:
                        raise UsageError(f"{name} needs a value")
                    inline = rest.pop(0)
                if name == "--timeout":
                    values["timeout_given"] = True
                    try:
                        values["timeout"] = float(inline)
                    except ValueError:
                        raise UsageError(f"--timeout: {inline!r} is not a number of seconds")
                else:
                    values["cluster"] = inline
            else:
                out.append(tok)
        return Options(**values), out


GLOBAL_HELP = """global options (also from the environment):
  --json             machine-readable output: one JSON document per command   SHOAL_JSON=1
  --no-legend        plain columns without a header, for grep and awk        SHOAL_NO_LEGEND=1
  --cluster NAME     which cluster                                            SHOAL_CLUSTER
  --timeout SECONDS  how long to wait for the cluster (5)                     SHOAL_TIMEOUT
  --keep-going       scripts: run the remaining commands after a failure      SHOAL_KEEP_GOING=1
  state lives in $SHOAL_HOME (default ~/.shoal)

exit codes: 0 success · 1 the command failed · 2 usage error · 3 cluster unavailable (no quorum,
  unreachable) · 4 not found"""


class Registry:
    """Commands by name and alias; multi-word names ("kv get") form groups ("kv")."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self._names: dict[str, str] = {}

    def register(self, command: Command) -> Command:
        for name in (command.name, *command.aliases):
            if name in self._names:
                raise ValueError(f"command {name!r} is already registered")
        self.commands[command.name] = command
        for name in (command.name, *command.aliases):
            self._names[name] = command.name
        return command

    def groups(self) -> set[str]:
        return {n.split()[0] for n in self._names if " " in n}

    def lookup(self, name: str) -> Command | None:
        key = self._names.get(name)
        return None if key is None else self.commands[key]

    def resolve(self, tokens: Sequence[str]) -> tuple[Command, list[str]]:
        """The command the tokens start with (longest name first) and its remaining tokens."""
        if not tokens:
            raise UsageError("no command given; try `help`")
        for width in (3, 2, 1):
            if len(tokens) >= width:
                found = self.lookup(" ".join(tokens[:width]))
                if found is not None:
                    return found, list(tokens[width:])
        first = tokens[0]
        if first in self.groups():
            subs = sorted(n.split(maxsplit=1)[1] for n in self._names if n.startswith(first + " "))
            given = tokens[1] if len(tokens) > 1 else ""
            close = difflib.get_close_matches(given, subs, n=1) if given else []
            hint = f"; did you mean `{first} {close[0]}`?" if close else ""
            what = f"unknown command `{first} {given}`" if given else f"`{first}` needs a command"
            raise UsageError(f"{what}{hint}\n{first} commands: {', '.join(subs)}")
        raise UsageError(f"unknown command {first!r}{self.suggest(first)}")

    def suggest(self, name: str) -> str:
        candidates = sorted(set(self._names) | self.groups())
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        return f"; did you mean {close[0]!r}?" if close else ""

    def parse(self, tokens: Sequence[str]) -> tuple[Command, dict[str, Any]]:
        command, rest = self.resolve(tokens)
        return command, command.parse(rest)

    def help(self, topic: Sequence[str] = ()) -> str:
        """Help for one command (or a group), or the overall list."""
        if topic:
            name = " ".join(topic)
            if name in self.groups():
                cmds = [c for c in self.commands.values() if c.name.startswith(name + " ")]
                return "\n".join(f"  {c.name:<18} {c.summary}" for c in cmds)
            command, rest = self.resolve(topic)
            if rest:
                raise UsageError(f"help: no command {name!r}{self.suggest(name)}")
            return command.help()
        width = max((len(c.name) for c in self.commands.values()), default=0)
        lines = ["commands:"]
        lines += [f"  {c.name:<{width}}  {c.summary}" for c in self.commands.values()]
        return "\n".join([*lines, "", GLOBAL_HELP, "", "`help COMMAND` explains one command."])


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception a command raised (anything unknown: 1, failed)."""
    from shell.clusteraccess import ClusterUnavailable
    from shell.ssh import ControlUnavailable

    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Unavailable | ClusterUnavailable | ControlUnavailable | TimeoutError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ControlError):
        if exc.code in UNAVAILABLE_CODES:
            return EXIT_UNAVAILABLE
        if exc.code in NOT_FOUND_CODES:
            return EXIT_NOT_FOUND
        if exc.code == "bad-request":
            return EXIT_USAGE
    return EXIT_FAILED


def error_message(exc: BaseException) -> str:
    if isinstance(exc, ControlError):
        return f"{exc.message} [{exc.code}]"
    if isinstance(exc, TimeoutError):
        return "cluster unavailable: no answer in time"
    return str(exc) or type(exc).__name__


def load_plugins(registry: Registry) -> list[str]:
    """Call every ``shoal.plugins`` entry point with the registry; the names loaded."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        ep.load()(registry)
        loaded.append(ep.name)
    return loaded
