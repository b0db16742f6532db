"""The interactive shell: a prompt_toolkit REPL over the command registry.

One concern per module (STYLE.md, ptpython): ``app`` runs the loop, ``completer`` offers
commands, flags and live names, ``sources`` fetches those names from the cluster, ``lexer``
colours the input, ``toolbar`` keeps the cluster's state at the bottom, ``history`` remembers
lines across sessions. Nothing here re-implements a command: every line goes through
:mod:`shell.registry` and :mod:`shell.render` (via :func:`shell.batch.run_one`).
"""
