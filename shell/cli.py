"""The ``shoal`` command.

Until the command registry and REPL arrive (the shell issue), this is a thin dispatcher over the
library modules, each of which owns its own arguments: ``shoal lab …`` (shell/lab),
``shoal discover …`` (shell/discovery), ``shoal cluster …`` and ``shoal machines``
(shell/cluster_cli). Exit codes: 0 success, 1 failed, 2 usage error, 3 cluster unavailable,
4 not found.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

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


def _lab(argv: list[str]) -> int:
    from shell.lab.cli import main

    return main(argv)


def _discover(argv: list[str]) -> int:
    from shell.discovery import main

    if not any(a == "--interface" or a.startswith("--interface=") for a in argv):
        bridges = lab_bridges()
        if bridges:  # a lab is up: browse on its bridge, not on the machine's real network
            print(
                f"browsing on the lab bridge {', '.join(bridges)} "
                "(give --interface ADDR to choose another)",
                file=sys.stderr,
            )
            argv = [*argv, *(x for b in bridges for x in ("--interface", b))]
    return main(argv)


def lab_bridges() -> list[str]:
    """The host-side addresses of the labs that are up."""
    from shell.lab.paths import labs_dir
    from shell.lab.state import load

    out: list[str] = []
    root = labs_dir()
    if not root.is_dir():
        return out
    for entry in sorted(root.iterdir()):
        if (entry / "lab.json").exists():
            try:
                out.append(str(load(entry.name).host_address))
            except Exception:  # a half-written lab is not worth failing discovery over
                continue
    return out


def _cluster(argv: list[str]) -> int:
    from shell.cluster_cli import main

    return main(argv)


def _machines(argv: list[str]) -> int:
    from shell.cluster_cli import main

    return main(["machines", *argv])


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "lab": _lab,
    "discover": _discover,
    "cluster": _cluster,
    "machines": _machines,
}


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
    command = COMMANDS.get(args[0])
    if command is None:
        from shell.batch import handles
        from shell.batch import main as shell_main

        if handles(args):
            try:
                return shell_main(args)
            except KeyboardInterrupt:
                return 130
        close = [c for c in COMMANDS if c.startswith(args[0][:2])]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"shoal: unknown command {args[0]!r}{hint}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    try:
        return command(args[1:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
