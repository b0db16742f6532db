"""The ``shoal`` command: the REPL at a terminal, else one command, ``-c``, a script or stdin.

Every command is the command registry's (shell/commands/); this module only decides which front
end runs. Exit codes: 0 success, 1 failed, 2 usage error, 3 cluster unavailable, 4 not found.
"""

from __future__ import annotations

import sys

from agent import __version__

USAGE = """usage: shoal COMMAND [ARGS]

commands:
  lab         a local cluster of network-namespace machines with real sshd (root)
  discover    find machines and agents over mDNS, an inventory or a node set
  cluster     init | join | leave | status | destroy a cluster over SSH
  machines    the live machines of the current cluster
  version     print the version

  kv, lease, elect, lock, leader, members, plugins ...   (`shoal help commands` lists them)
  -c 'CMD; CMD'            run commands (`--json` for machine-readable output)
  run FILE [ARGS]          run a script (one command a line; also #!/usr/bin/env shoal)
  (no command, at a terminal) the interactive shell; `--cluster NAME` picks the cluster

`shoal COMMAND --help` explains each one.
"""


def _only_global_options(args: list[str]) -> bool:
    """``shoal`` or ``shoal --cluster NAME`` (global options, no command): the REPL's line."""
    if not args:
        return True
    if not args[0].startswith("--") or args[0] in ("--help", "--version"):
        return False
    from shell.batch import _leading_options
    from shell.registry import UsageError

    try:
        _, rest = _leading_options(args)
    except UsageError:
        return False
    return not rest


def _repl(args: list[str]) -> int:
    """The interactive shell (shell/repl), imported only when a person is at the terminal."""
    from shell.batch import _leading_options
    from shell.repl.app import main as repl_main

    options, _ = _leading_options(args)
    return repl_main(options)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if sys.stdin.isatty() and sys.stdout.isatty() and _only_global_options(args):
        return _repl(args)
    if not args and not sys.stdin.isatty():
        from shell.batch import main as shell_main

        return shell_main(["run", "-"])
    if not args or (args[0] in ("-h", "--help", "help") and len(args) == 1):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("--version", "-V", "version"):
        print(f"shoal {__version__}")
        return 0
    from shell.batch import main as shell_main

    try:
        return shell_main(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
