"""The node-side command: ``python -m agent serve --config FILE`` and ``python -m agent ctl``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from agent import __version__
from agent.client import ControlClient, ControlError
from agent.config import ConfigError, load_config
from agent.logfmt import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent", description="The shoal node agent.")
    p.add_argument("--version", action="version", version=f"shoal agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the agent (see agent/config.py for the config file)")
    s.add_argument("--config", required=True, help="TOML or JSON configuration file")
    c = sub.add_parser("ctl", help="talk to the local agent's control socket")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="path of the control socket")
    where.add_argument("--config", help="read the socket path from this config file")
    c.add_argument("--json", action="store_true", help="print the raw JSON result")
    ops = c.add_subparsers(dest="op", required=True)
    ops.add_parser("status", help="member id, role, term, leader, commit and applied index")
    pr = ops.add_parser("propose", help="replicate one command and wait until it is applied")
    pr.add_argument("data")
    rec = ops.add_parser("records", help="applied commands, in log order")
    rec.add_argument("--after", type=int, default=0)
    rec.add_argument("--limit", type=int, default=100)
    ops.add_parser("members", help="voters, learners and their peer addresses")
    am = ops.add_parser("add-member", help="add a member (learner, catch up, then voter)")
    am.add_argument("id")
    am.add_argument("address", help="its peer address, host:port")
    rm = ops.add_parser("remove-member", help="remove a member")
    rm.add_argument("id")
    tr = ops.add_parser("transfer", help="move leadership to another voter")
    tr.add_argument("to")
    ops.add_parser("compact", help="snapshot the state now and compact the log")
    return p


_CALLS: dict[str, tuple[str, list[str]]] = {
    "status": ("status", []),
    "propose": ("propose", ["data"]),
    "records": ("records", ["after", "limit"]),
    "members": ("members", []),
    "add-member": ("add_member", ["id", "address"]),
    "remove-member": ("remove_member", ["id"]),
    "transfer": ("transfer_leader", ["to"]),
    "compact": ("compact", []),
}


async def _ctl(args: argparse.Namespace) -> int:
    socket = args.socket or str(load_config(args.config).control_socket)
    method, names = _CALLS[args.op]
    params: dict[str, Any] = {n: getattr(args, n) for n in names}
    try:
        client = await ControlClient.connect(socket)
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach the agent at {socket}: {exc}; is it running?", file=sys.stderr)
        return 3
    async with client:
        try:
            result = await client.call(method, **params)
        except ControlError as exc:
            print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
            return 3 if exc.code in ("no-leader", "timeout", "connection-lost") else 1
    if args.json or not isinstance(result, dict):
        print(json.dumps(result, indent=2))
    elif args.op == "records":
        for row in result["records"]:
            print(row["index"], row.get("data", row.get("data_b64")))
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            shown = value if isinstance(value, str | int) else json.dumps(value)
            print(f"{key:<{width}}  {shown}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = load_config(args.config)
            setup_logging(config.node_id, config.log_level)
            from agent.serve import run

            return run(config)
        return asyncio.run(_ctl(args))
    except ConfigError as exc:
        print(f"shoal agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
