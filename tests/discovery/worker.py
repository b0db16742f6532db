"""Programs the discovery tests run *inside* their network namespaces (``ip netns exec``).

Multicast must only ever leave from interfaces the tests created, so everything that sends or
listens on 224.0.0.251 runs here, in a namespace, bound to that namespace's address; the test
process itself only starts these and reads their stdout (JSON, one object a line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time
from typing import Any

from agent import mdns_wire as wire
from agent.mdns import MDNS_GROUP, MDNS_PORT, advertise_agent


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def agent(args: argparse.Namespace) -> None:
    """Advertise ``_shoal._tcp`` exactly as the agent does (``advertise_agent``)."""
    meta = dict(item.split("=", 1) for item in args.meta.split(",") if item)
    t0 = time.monotonic()
    adv = await advertise_agent(
        node_id=args.node,
        cluster_id=args.cluster,
        listen=(args.address, args.peer_port),
        mdns=args.mdns or args.address,
        version="0.1.0",
        metadata=meta,
    )
    elapsed = time.monotonic() - t0
    if adv is None:
        emit({"ready": False})
        return
    emit({"ready": True, "start_seconds": elapsed, "name": adv.services[0].fullname})
    await _until_signal()
    emit({"answered": adv.queries_answered, "malformed": adv.malformed})
    await adv.close()


async def discover_cmd(args: argparse.Namespace) -> None:
    from shell.discovery import discover

    t0 = time.monotonic()
    found: list[dict[str, Any]] = []

    def on_found(host: Any) -> None:
        found.append({"t": time.monotonic() - t0, "address": host.address})

    hosts = await discover(
        timeout=args.timeout, expect=args.expect, interfaces=[args.interface], on_found=on_found
    )
    emit(
        {
            "elapsed": time.monotonic() - t0,
            "hosts": [h.to_json() for h in hosts],
            "found": found,
        }
    )


async def watch(args: argparse.Namespace) -> None:
    """A long-lived browser printing add/remove events, to see goodbyes arrive."""
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

    azc = AsyncZeroconf(interfaces=[args.interface], ip_version=IPVersion.V4Only)
    t0 = time.monotonic()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        kind = {ServiceStateChange.Added: "added", ServiceStateChange.Removed: "removed"}
        if state_change in kind:
            emit({"event": kind[state_change], "name": name, "t": time.monotonic() - t0})

    browser = AsyncServiceBrowser(azc.zeroconf, [args.type], handlers=[on_change])
    emit({"ready": True})
    await _until_signal()
    await browser.async_cancel()
    await azc.async_close()


def _socket(interface: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    s.bind((interface, port))
    return s


def garbage(args: argparse.Namespace) -> None:
    """Send malformed packets, by multicast and unicast, from port 5353 and from another port."""
    good_query = wire.encode(
        wire.Message(questions=[wire.Question("_shoal._tcp.local.", wire.TYPE_PTR)])
    )
    header_only_lies = bytes.fromhex("0000 0000 ffff ffff ffff ffff")
    loop_pointer = bytes.fromhex("0000 0000 0001 0000 0000 0000") + b"\xc0\x0c\x00\x0c\x00\x01"
    forward_pointer = bytes.fromhex("0000 0000 0001 0000 0000 0000") + b"\xc0\x20\x00\x0c\x00\x01"
    bad_rdlen = (
        bytes.fromhex("0000 0000 0001 0001 0000 0000")
        + good_query[12:]
        + b"\x00\x00\x01\x00\x01\x00\x00\x00\x10\xff\xff"
    )
    packets = [
        b"",
        b"\x00",
        b"\xff" * 11,
        header_only_lies,
        loop_pointer,
        forward_pointer,
        good_query[:-3],
        bad_rdlen,
        bytes(range(256)) * 4,
        b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 10,
    ]
    sent = 0
    with _socket(args.interface) as s:
        for p in packets:
            for dest in ((MDNS_GROUP, MDNS_PORT), (args.target, MDNS_PORT)):
                s.sendto(p, dest)
                sent += 1
    emit({"sent": sent})


def legacy_query(args: argparse.Namespace) -> None:
    """A one-shot legacy unicast query (source port != 5353): the reply comes back to us."""
    q = wire.Message(
        id=0x1234, questions=[wire.Question(args.name, {"PTR": 12, "A": 1, "SRV": 33}[args.qtype])]
    )
    with _socket(args.interface) as s:
        s.settimeout(2.0)
        s.sendto(wire.encode(q), (MDNS_GROUP, MDNS_PORT))
        try:
            data, addr = s.recvfrom(9000)
        except TimeoutError:
            emit({"reply": None})
            return
    msg = wire.decode(data)
    emit(
        {
            "from": addr[0],
            "id": msg.id,
            "questions": [q.name for q in msg.questions],
            "answers": [[r.name, r.rtype, r.ttl, repr(r.data), r.flush] for r in msg.answers],
            "additionals": [[r.name, r.rtype, r.ttl, repr(r.data)] for r in msg.additionals],
        }
    )


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent")
    a.add_argument("--node", required=True)
    a.add_argument("--cluster", default="")
    a.add_argument("--address", required=True)
    a.add_argument("--peer-port", type=int, default=7400)
    a.add_argument("--meta", default="")
    a.add_argument("--mdns", help="the config's mdns setting (default: --address)")
    d = sub.add_parser("discover")
    d.add_argument("--interface", required=True)
    d.add_argument("--timeout", type=float, default=3.0)
    d.add_argument("--expect", type=int)
    w = sub.add_parser("watch")
    w.add_argument("--interface", required=True)
    w.add_argument("--type", default="_shoal._tcp.local.")
    g = sub.add_parser("garbage")
    g.add_argument("--interface", required=True)
    g.add_argument("--target", required=True)
    q = sub.add_parser("legacy-query")
    q.add_argument("--interface", required=True)
    q.add_argument("--name", required=True)
    q.add_argument("--qtype", default="PTR")
    args = p.parse_args()
    if args.cmd == "agent":
        asyncio.run(agent(args))
    elif args.cmd == "discover":
        asyncio.run(discover_cmd(args))
    elif args.cmd == "watch":
        asyncio.run(watch(args))
    elif args.cmd == "garbage":
        garbage(args)
    else:
        legacy_query(args)


if __name__ == "__main__":
    main()
