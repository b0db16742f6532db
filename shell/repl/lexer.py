"""A pygments lexer for the shell's command language.

Used twice: to colour what is being typed (prompt_toolkit's ``PygmentsLexer``) and to colour the
examples of ``help`` output, so a command looks the same in the docs as at the prompt. It knows
the shape of a line, not the registry (the registry loads after the first prompt, and a plugin's
commands should colour too): the first word of each ``;``-separated command is the command, the
words after it that look like names are subcommands or arguments.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
)

__all__ = ["ShoalLexer"]

_END = r"(?=[\s;]|$)"


class ShoalLexer(RegexLexer):
    """Commands, flags, strings, node sets (``web[1-3]``), ``/keys``, numbers, ``$VARS``."""

    name = "shoal"
    aliases = ["shoal"]
    filenames = ["*.shoal"]

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*$", Comment.Single),
            (r";", Punctuation),
            (r"\\$", Text),
            (r"([A-Za-z?][\w-]*)" + _END, Keyword, "args"),
            (r"--[\w-]+", Name.Attribute, "args"),
            (r"\S+", Text, "args"),
        ],
        "args": [
            (r"[ \t]+", Whitespace),
            (r"\\\n", Text),
            (r"\n", Whitespace, "#pop"),
            (r";", Punctuation, "#pop"),
            (r"#.*$", Comment.Single),
            (r"(--[\w-]+)(=)", bygroups(Name.Attribute, Operator)),
            (r"--[\w-]*", Name.Attribute),
            (r'"(\\\\|\\"|[^"])*"?', String.Double),
            (r"'[^']*'?", String.Single),
            (r"\$\{?[\w@#]+\}?", Name.Variable),
            (r"/[^\s;]*", String.Other),
            (r"[\w.-]*\[[\d,\s-]*\][\w.-]*" + _END, Name.Class),
            (r"-?\d+(\.\d+)?" + _END, Number),
            (r"0x[0-9a-fA-F]+" + _END, Number.Hex),
            (r"[a-z][\w-]*" + _END, Name.Function),
            (r"[^\s;]+", Text),
        ],
    }
