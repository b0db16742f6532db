"""The ``shoal`` command. The shell proper (registry, REPL, cluster commands) arrives with the
shell issue; until then this entry point only reports the version and what exists."""

from __future__ import annotations

import sys

from agent import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("--version", "-V"):
        print(f"shoal {__version__}")
        return 0
    print(
        "shoal: the shell is not built yet. Try `make lab` for a local 3-agent cluster, or\n"
        "`python -m agent --help` for the node-side agent.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
