"""``python -m agent ctl``: the node-local command line, like etcdctl on a CoreOS node.

It talks to this node's agent through its control socket. Exit codes: 0 success, 1 the request
failed, 2 usage error, 3 cluster unavailable (agent unreachable, no leader, timeout), 4 not found.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
from typing import Any

from agent.client import ControlClient, ControlError
from agent.concurrency import Election, Lock, Session, SessionLost, current_leader, observe
from agent.config import load_config
from agent.kv import prefix_end

DEFAULT_SOCKET = "/var/lib/shoal/control.sock"
UNAVAILABLE = {"no-leader", "timeout", "connection-lost", "stopping"}
NOT_FOUND = {"not-found", "lease-not-found", "key-not-found"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def text(data: str) -> str:
    """A base64 field shown as text where it is UTF-8, else as 0x-hex."""
    raw = base64.b64decode(data)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "0x" + raw.hex()


def add_parser(sub: Any) -> None:
    c = sub.add_parser("ctl", help="talk to this node's agent (like etcdctl)")
    where = c.add_mutually_exclusive_group()
    where.add_argument(
        "--socket", help=f"control socket (default $SHOAL_SOCKET or {DEFAULT_SOCKET})"
    )
    where.add_argument("--config", help="read the socket path from this agent config file")
    c.add_argument("--json", action="store_true", help="print raw JSON results")
    groups = c.add_subparsers(dest="group", required=True)

    groups.add_parser("status", help="member id, role, term, leader, commit/applied, revision")

    kv = groups.add_parser("kv", help="keys and values").add_subparsers(dest="op", required=True)
    put = kv.add_parser("put", help="set KEY to VALUE")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=int, help="the key disappears after this many seconds")
    put.add_argument("--lease", type=lambda v: int(v, 16), help="attach to this lease (hex id)")
    put.add_argument("--allow-reserved", action="store_true", help="write under /_shoal/")
    get = kv.add_parser("get", help="read KEY (or every key with the prefix)")
    get.add_argument("key")
    get.add_argument("--prefix", action="store_true")
    get.add_argument("--rev", type=int, default=0, help="read at this past revision")
    get.add_argument("--limit", type=int, default=0)
    get.add_argument("--keys-only", action="store_true")
    get.add_argument("--serializable", action="store_true", help="local read, maybe stale")
    dele = kv.add_parser("del", help="delete KEY (or every key with the prefix)")
    dele.add_argument("key")
    dele.add_argument("--prefix", action="store_true")
    dele.add_argument("--allow-reserved", action="store_true")
    watch = kv.add_parser("watch", help="print changes to KEY until Ctrl-C")
    watch.add_argument("key")
    watch.add_argument("--prefix", action="store_true")
    watch.add_argument("--rev", type=int, default=0, help="replay history from this revision")
    watch.add_argument("--prev-kv", action="store_true")
    comp = kv.add_parser("compact", help="drop history before REVISION")
    comp.add_argument("revision", type=int)

    lease = groups.add_parser("lease", help="leases").add_subparsers(dest="op", required=True)
    grant = lease.add_parser("grant", help="grant a lease of TTL seconds")
    grant.add_argument("ttl", type=int)
    for name, text_ in (("revoke", "revoke (deletes attached keys)"), ("keepalive", "keep alive")):
        p = lease.add_parser(name, help=text_)
        p.add_argument("id", type=lambda v: int(v, 16), help="lease id (hex)")
    ttl = lease.add_parser("ttl", help="remaining time to live")
    ttl.add_argument("id", type=lambda v: int(v, 16))
    ttl.add_argument("--keys", action="store_true")
    lease.add_parser("list", help="every lease")

    elect = groups.add_parser("elect", help="elections").add_subparsers(dest="op", required=True)
    camp = elect.add_parser("campaign", help="campaign for NAME, hold leadership until Ctrl-C")
    camp.add_argument("name")
    camp.add_argument("value")
    lead = elect.add_parser("leader", help="who leads NAME")
    lead.add_argument("name")
    obs = elect.add_parser("observe", help="print each new leader of NAME")
    obs.add_argument("name")

    lock = groups.add_parser("lock", help="run COMMAND while holding lock NAME")
    lock.add_argument("name")
    lock.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    lock.add_argument("--ttl", type=int, default=10, help="session TTL in seconds")


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        return str(load_config(args.config).control_socket)
    return os.environ.get("SHOAL_SOCKET", DEFAULT_SOCKET)


def key_range(key: str, prefix: bool) -> dict[str, str]:
    raw = key.encode()
    out = {"key": b64(raw)}
    if prefix:
        out["range_end"] = b64(prefix_end(raw))
    return out


async def run(args: argparse.Namespace) -> int:
    # SIGTERM cancels like Ctrl-C, so held elections and locks are resigned, not left to expire.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    path = socket_path(args)
    try:
        client = await ControlClient.connect(path)
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach the agent at {path}: {exc}; is it running?", file=sys.stderr)
        return 3
    try:
        async with client:
            return await dispatch(client, args)
    except ControlError as exc:
        print(f"error: {exc.message} [{exc.code}]", file=sys.stderr)
        if exc.code in UNAVAILABLE:
            return 3
        return 4 if exc.code in NOT_FOUND else 1
    except SessionLost as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def emit(args: argparse.Namespace, result: Any, human: str) -> int:
    print(json.dumps(result) if args.json else human)
    return 0


async def dispatch(client: ControlClient, args: argparse.Namespace) -> int:
    group, op = args.group, str(getattr(args, "op", ""))
    if group == "status":
        st = await client.call("status")
        if args.json:
            return emit(args, st, "")
        for key in ("id", "role", "term", "leader", "commit", "applied", "revision", "voters"):
            value = st.get(key)
            print(f"{key:<9} {', '.join(value) if isinstance(value, list) else value}")
        return 0
    if group == "kv":
        return await kv_command(client, args, op)
    if group == "lease":
        return await lease_command(client, args, op)
    if group == "elect":
        return await elect_command(client, args, op)
    return await lock_command(client, args)


async def kv_command(client: ControlClient, args: argparse.Namespace, op: str) -> int:
    if op == "put":
        lease = args.lease or 0
        if args.ttl:
            lease = int((await client.call("lease.grant", ttl=args.ttl))["id"])
        res = await client.call(
            "kv.put",
            key=b64(args.key.encode()),
            value=b64(args.value.encode()),
            lease=lease,
            allow_reserved=args.allow_reserved,
        )
        return emit(args, res, f"OK (revision {res['header']['revision']})")
    if op == "get":
        res = await client.call(
            "kv.get",
            **key_range(args.key, args.prefix),
            revision=args.rev,
            limit=args.limit,
            keys_only=args.keys_only,
            serializable=args.serializable,
        )
        if args.json:
            return emit(args, res, "")
        if not res["kvs"]:
            print(f"{args.key}: not found", file=sys.stderr)
            return 4
        for kv in res["kvs"]:
            print(text(kv["key"]) if args.keys_only else f"{text(kv['key'])}\n{text(kv['value'])}")
        return 0
    if op == "del":
        res = await client.call(
            "kv.delete", **key_range(args.key, args.prefix), allow_reserved=args.allow_reserved
        )
        return emit(args, res, str(res["deleted"]))
    if op == "compact":
        res = await client.call("kv.compact", revision=args.revision)
        return emit(args, res, f"compacted revision {args.revision}")
    stream = client.stream(
        "kv.watch",
        **key_range(args.key, args.prefix),
        start_revision=args.rev,
        prev_kv=args.prev_kv,
    )
    async for item in stream:
        for ev in item.get("events", []):
            if args.json:
                print(json.dumps(ev), flush=True)
            else:
                value = "" if ev["type"] == "DELETE" else "\n" + text(ev["kv"]["value"])
                print(f"{ev['type']}\n{text(ev['kv']['key'])}{value}", flush=True)
    return 0


async def lease_command(client: ControlClient, args: argparse.Namespace, op: str) -> int:
    if op == "grant":
        res = await client.call("lease.grant", ttl=args.ttl)
        return emit(args, res, f"lease {int(res['id']):x} granted with TTL({res['ttl']}s)")
    if op == "revoke":
        res = await client.call("lease.revoke", id=args.id)
        return emit(args, res, f"lease {args.id:x} revoked")
    if op == "keepalive":
        while True:
            res = await client.call("lease.keepalive", id=args.id)
            print(
                json.dumps(res)
                if args.json
                else f"lease {args.id:x} keepalived with TTL({res['ttl']})",
                flush=True,
            )
            await asyncio.sleep(max(0.5, int(res["ttl"]) / 3))
    if op == "ttl":
        res = await client.call("lease.ttl", id=args.id, keys=args.keys)
        if int(res["ttl"]) < 0:
            print(f"lease {args.id:x} already expired", file=sys.stderr)
            return 4
        keys = f", attached keys {[text(k) for k in res['keys']]}" if args.keys else ""
        return emit(
            args,
            res,
            f"lease {args.id:x} granted with TTL({res['granted_ttl']}s), "
            f"remaining({res['ttl']}s){keys}",
        )
    res = await client.call("lease.list")
    return emit(args, res, "\n".join(f"{int(i):x}" for i in res["leases"]) or "no leases")


async def elect_command(client: ControlClient, args: argparse.Namespace, op: str) -> int:
    if op == "leader":
        leader = await current_leader(client, args.name)
        if leader is None:
            print(f"election {args.name!r} has no leader", file=sys.stderr)
            return 4
        print(leader.value.decode(errors="replace"))
        return 0
    if op == "observe":
        async for leader in observe(client, args.name):
            print(
                "(no leader)" if leader is None else leader.value.decode(errors="replace"),
                flush=True,
            )
        return 0
    session = await Session.open(client)
    election = Election(session, args.name)
    try:
        await election.campaign(args.value.encode())
        print(f"{args.name}: elected with {args.value!r} (key {election.key.decode()})", flush=True)
        reason = await election.lost()  # session gone, or resigned by another client
        print(f"leadership lost: {reason}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(ControlError):
            await election.resign()
        await session.close()


async def lock_command(client: ControlClient, args: argparse.Namespace) -> int:
    command = [c for c in args.command if c != "--"] if args.command else []
    session = await Session.open(client, args.ttl)
    lock = Lock(session, args.name)
    try:
        await lock.acquire()
        if not command:
            print(lock.key.decode(), flush=True)
            await session.lost.wait()
            return 1
        proc = await asyncio.create_subprocess_exec(*command, start_new_session=True)
        lost = asyncio.create_task(lock.lost())
        done = asyncio.create_task(proc.wait())
        await asyncio.wait({lost, done}, return_when=asyncio.FIRST_COMPLETED)
        if done.done():
            lost.cancel()
            return int(done.result())
        reason = lost.result()
        print(f"lock {args.name!r} lost ({reason}); stopping the command", file=sys.stderr)
        _terminate(proc.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, 5)
        if not done.done():
            _terminate(proc.pid, signal.SIGKILL)
            await done
        return 1
    finally:
        with contextlib.suppress(ControlError):
            await lock.release()
        await session.close()


def _terminate(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
