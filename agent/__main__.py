"""The node-side command: ``python -m agent serve --config FILE`` and ``python -m agent ctl``."""

from __future__ import annotations

import argparse
import sys

from agent import __version__, ctl
from agent.config import ConfigError, load_config
from agent.logfmt import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent", description="The shoal node agent.")
    p.add_argument("--version", action="version", version=f"shoal agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the agent (see agent/config.py for the config file)")
    s.add_argument("--config", required=True, help="TOML or JSON configuration file")
    ctl.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args.config)
            setup_logging(config.node_id, config.log_level)
            from agent.serve import run

            return run(config)
        return ctl.main(args)
    except ConfigError as exc:
        print(f"shoal agent: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
