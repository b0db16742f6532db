"""A small mDNS/DNS-SD responder (RFC 6762/6763 subset) so an agent can be found on the LAN.

Each agent advertises ``_shoal._tcp.local.`` with TXT records (cluster id, node id, metadata,
version, peer port) so that ``shoal discover`` lists it before anyone types an address. The agent
is standard-library only, so this is a responder written for it rather than zeroconf. What it
does:

* joins 224.0.0.251:5353 on one interface (or the kernel's default multicast interface), sharing
  the port with other responders and browsers on the same machine (SO_REUSEADDR/SO_REUSEPORT);
* announces its records three times, a second apart, in the background: start-up never waits;
* answers queries for the service type's PTR, the instance's SRV/TXT, the host's A record and the
  ``_services._dns-sd._udp.local.`` enumeration, with the related records as additionals so one
  round trip resolves a service; honours known-answer suppression, QU questions and legacy
  unicast queries, and never multicasts a record more than once a second in reply to QM queries;
* says goodbye (TTL 0) on :meth:`MDNSAdvertiser.close`, so browsers drop the service at once.

What it does not do: probing and conflict resolution (names are made unique by construction, see
:func:`shoal_service`), IPv6, and several interfaces at once.

``python -m agent.mdns publish ...`` publishes one service until SIGTERM: the lab uses it to
publish ``_ssh._tcp`` for each node, as avahi does on ordinary hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent import mdns_wire as wire

log = logging.getLogger("shoal.mdns")

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
SERVICES_ENUM = "_services._dns-sd._udp.local."
SHOAL_TYPE = "_shoal._tcp.local."
SSH_TYPE = "_ssh._tcp.local."

HOST_TTL = 120  # RFC 6762 §10: records naming a host (A, SRV)
OTHER_TTL = 4500  # ... and everything else (PTR, TXT)
LEGACY_TTL = 10  # RFC 6762 §6.7: the TTL cap in replies to legacy unicast queries
MAX_PACKET = 1460  # stay within one Ethernet frame (RFC 6762 §17)
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux; not exported by Python


@dataclass(frozen=True)
class ServiceInfo:
    """One DNS-SD service instance to advertise.

    Attributes:
        type: the service type, e.g. ``"_shoal._tcp.local."``.
        name: the instance label (no dots), e.g. ``"node1"``.
        host: the target host name, e.g. ``"node1.local."``; its A record carries ``address``.
        address: the IPv4 address of the host.
        port: the service's port.
        txt: the TXT ``key=value`` pairs.
    """

    type: str
    name: str
    host: str
    address: str
    port: int
    txt: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.type.endswith("._tcp.local.") and not self.type.endswith("._udp.local."):
            raise ValueError(f"service type {self.type!r} must look like '_name._tcp.local.'")
        if not self.name or "." in self.name or len(self.name.encode()) > wire.MAX_LABEL:
            raise ValueError(f"instance name {self.name!r} must be 1-63 bytes without dots")
        if not self.host.endswith(".local."):
            raise ValueError(f"host name {self.host!r} must end in '.local.'")
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(f"address {self.address!r} is not an IPv4 address")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")
        wire.txt_strings(dict(self.txt))  # raises DNSError (a ValueError) if too long
        wire._labels(self.fullname)
        wire._labels(self.host)

    @property
    def fullname(self) -> str:
        """The instance's full name, ``<name>.<type>``."""
        return f"{self.name}.{self.type}"

    def records(self) -> list[wire.Record]:
        """The PTR, SRV, TXT and A records that describe this service, with their normal TTLs."""
        return [
            wire.Record(self.type, wire.TYPE_PTR, OTHER_TTL, wire.PTR(self.fullname)),
            wire.Record(
                self.fullname, wire.TYPE_SRV, HOST_TTL, wire.SRV(0, 0, self.port, self.host), True
            ),
            wire.Record(
                self.fullname,
                wire.TYPE_TXT,
                OTHER_TTL,
                wire.TXT(wire.txt_strings(dict(self.txt))),
                True,
            ),
            wire.Record(self.host, wire.TYPE_A, HOST_TTL, wire.A(self.address), True),
        ]


def _dns_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-") or "x"


def shoal_service(
    node_id: str,
    cluster_id: str,
    address: str,
    peer_port: int,
    version: str,
    metadata: Mapping[str, str],
    *,
    cluster_name: str = "",
) -> ServiceInfo:
    """The ``_shoal._tcp`` service an agent advertises.

    TXT keys: ``cluster`` (cluster id, empty before ``cluster init``), ``node``, ``version``,
    ``peer`` (the Raft peer port) and ``meta`` (``region=us-east,disk=ssd``); ``name`` carries the
    cluster's name when there is one.

    Names are chosen so that no probing is needed. The instance is ``<node>`` plus the cluster id
    when there is one, so nodes called ``node1`` in two clusters on one LAN do not collide. The
    host is ``shoal-<node>-<address with dashes>.local.``: a name of our own, never the machine's
    hostname, because avahi on the same machine owns ``<hostname>.local.`` and a second, different
    A record for it under the cache-flush bit would make avahi see a conflict and rename itself.
    Two responders can only produce the same host name for the same address, i.e. the same
    record, which is no conflict at all.

    Raises:
        ValueError: a TXT entry would be over 255 bytes (too much metadata) or a name is invalid.
    """
    instance = (f"{node_id} {cluster_id[:16]}" if cluster_id else node_id).replace(".", "-")
    host = f"shoal-{_dns_label(node_id)}-{address.replace('.', '-')}.local."
    txt = {
        "cluster": cluster_id,
        "node": node_id,
        "version": version,
        "peer": str(peer_port),
        "meta": ",".join(f"{k}={v}" for k, v in metadata.items()),
    }
    if cluster_name:
        txt["name"] = cluster_name
    return ServiceInfo(SHOAL_TYPE, instance, host, address, peer_port, txt)


def _default_multicast_source() -> str | None:
    """The address the kernel would send multicast from; connect() on UDP sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((MDNS_GROUP, MDNS_PORT))
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address == "0.0.0.0" else address


async def advertise_agent(
    *,
    node_id: str,
    cluster_id: str,
    listen: tuple[str, int],
    mdns: str,
    version: str,
    metadata: Mapping[str, str],
    cluster_name: str = "",
) -> MDNSAdvertiser | None:
    """Start advertising an agent as the config asks; None when off or impossible.

    ``mdns`` is the config's setting: ``"off"``, ``"all"`` (the kernel's default multicast
    interface) or the address of the interface to use. The advertised address is the peer
    listen address when that is a specific IPv4 address, else the mdns interface address, else
    the address the default multicast route leaves from. Never raises for network trouble: it
    logs a warning and returns None, because a missing advertisement must not stop an agent.
    """
    if mdns == "off":
        return None
    interface = None if mdns == "all" else mdns
    host = listen[0]
    try:
        address = str(ipaddress.IPv4Address(host))
        if address == "0.0.0.0":
            raise ValueError(address)
    except ValueError:
        address = interface or _default_multicast_source() or ""
    if not address:
        log.warning("mDNS: no IPv4 address to advertise (listen %s); not advertising", host)
        return None
    try:
        info = shoal_service(
            node_id, cluster_id, address, listen[1], version, metadata, cluster_name=cluster_name
        )
    except ValueError as exc:
        log.warning("mDNS: cannot advertise this agent: %s", exc)
        return None
    advertiser = MDNSAdvertiser([info], interface)
    try:
        await advertiser.start()
    except OSError as exc:
        log.warning("mDNS: cannot advertise on %s: %s", interface or "the default interface", exc)
        return None
    log.info("mDNS: advertising %s at %s:%d", info.fullname, address, listen[1])
    return advertiser


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: MDNSAdvertiser) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # A packet from the network must never take the agent down, whatever is wrong with it.
        try:
            self.owner._on_datagram(data, addr)
        except wire.DNSError as exc:
            self.owner.malformed += 1
            log.debug("ignoring malformed mDNS packet from %s: %s", addr[0], exc)
        except Exception:
            self.owner.malformed += 1
            log.exception("error handling mDNS packet from %s (ignored)", addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("mDNS socket error: %s", exc)


def _open_socket(interface_address: str | None) -> socket.socket:
    """A UDP socket on port 5353 in the mDNS group, shareable with other responders/browsers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):
            # Without this Linux delivers the group's packets from *every* interface on which any
            # socket joined it; we answer only on the interface we advertise on.
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.bind(("", MDNS_PORT))
        iface = socket.inet_aton(interface_address or "0.0.0.0")
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(MDNS_GROUP) + iface
        )
        if interface_address:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MDNSAdvertiser:
    """Advertises services over mDNS from inside a running asyncio loop.

    Args:
        services: what to advertise.
        interface_address: the IPv4 address of the interface to use, or None for the kernel's
            default multicast interface (the one the default route leaves by).
        announcements: how many unsolicited announcements to send at start (RFC 6762 §8.3
            asks for at least two).
        announce_interval: seconds between them.
    """

    def __init__(
        self,
        services: list[ServiceInfo],
        interface_address: str | None = None,
        *,
        announcements: int = 3,
        announce_interval: float = 1.0,
    ) -> None:
        self.interface_address = interface_address
        self.announcements = announcements
        self.announce_interval = announce_interval
        self.queries_answered = 0
        self.malformed = 0
        self._services = list(services)
        self._transport: asyncio.DatagramTransport | None = None
        self._announcer: asyncio.Task[None] | None = None
        self._last_multicast: dict[tuple[str, int, object], float] = {}

    @property
    def services(self) -> list[ServiceInfo]:
        return list(self._services)

    @property
    def running(self) -> bool:
        return self._transport is not None

    async def start(self) -> None:
        """Open the socket and start announcing in the background; returns at once.

        Raises:
            OSError: the socket cannot be set up (port 5353 held exclusively by another program,
                no such interface address, no multicast route). The agent should log this and
                run on without mDNS: discovery is a convenience, never a reason not to start.
        """
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        sock = _open_socket(self.interface_address)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        self._announcer = asyncio.create_task(self._announce(self._services))

    async def update(self, services: list[ServiceInfo]) -> None:
        """Replace the advertised services (e.g. after ``cluster init`` set the cluster id).

        Records no longer advertised get goodbyes; the new set is announced again.
        """
        new_records = [r for s in services for r in s.records()]
        gone = [
            r
            for s in self._services
            for r in s.records()
            if not any(r.same_data(n) for n in new_records)
        ]
        self._services = list(services)
        if self._transport is None:
            return
        self._send_goodbyes(gone)
        if self._announcer is not None:
            self._announcer.cancel()
        self._announcer = asyncio.create_task(self._announce(self._services))

    async def close(self) -> None:
        """Send goodbyes (TTL 0) for every record, then close the socket."""
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
            self._announcer = None
        if self._transport is None:
            return
        self._send_goodbyes([r for s in self._services for r in s.records()])
        self._transport.close()
        self._transport = None

    # -- sending -------------------------------------------------------------------------------

    def _all_records(self, services: Iterable[ServiceInfo]) -> list[wire.Record]:
        records: list[wire.Record] = []
        for s in services:
            for r in s.records():
                if not any(r.same_data(x) for x in records):
                    records.append(r)
        for t in sorted({s.type for s in services}):
            records.append(wire.Record(SERVICES_ENUM, wire.TYPE_PTR, OTHER_TTL, wire.PTR(t)))
        return records

    async def _announce(self, services: list[ServiceInfo]) -> None:
        for i in range(self.announcements):
            if i:
                await asyncio.sleep(self.announce_interval)
            records = self._all_records(services)
            self._send(records, [], (MDNS_GROUP, MDNS_PORT))
            self._note_multicast(records)

    def _send_goodbyes(self, records: list[wire.Record]) -> None:
        goodbyes = [wire.Record(r.name, r.rtype, 0, r.data, r.flush) for r in records]
        if goodbyes:
            self._send(goodbyes, [], (MDNS_GROUP, MDNS_PORT))

    def _send(
        self,
        answers: list[wire.Record],
        additionals: list[wire.Record],
        dest: tuple[str, int],
        *,
        msg_id: int = 0,
        questions: list[wire.Question] | None = None,
    ) -> None:
        """Send a response, split over several packets if it would not fit in one."""
        if self._transport is None:
            return
        packets = _packets(msg_id, questions or [], answers, additionals)
        for packet in packets:
            try:
                self._transport.sendto(packet, dest)
            except OSError as exc:
                log.debug("cannot send mDNS packet to %s: %s", dest[0], exc)

    def _note_multicast(self, records: list[wire.Record]) -> None:
        now = time.monotonic()
        for r in records:
            self._last_multicast[_record_key(r)] = now

    # -- answering -----------------------------------------------------------------------------

    def _answers_for(self, q: wire.Question) -> tuple[list[wire.Record], list[wire.Record]]:
        """Records answering ``q``, and the additional records that save the asker a round trip."""
        qname = wire.name_key(q.name)
        any_type = q.rtype == wire.TYPE_ANY
        answers: list[wire.Record] = []
        extra: list[wire.Record] = []
        if qname == SERVICES_ENUM and (any_type or q.rtype == wire.TYPE_PTR):
            for t in sorted({s.type for s in self._services}):
                answers.append(wire.Record(SERVICES_ENUM, wire.TYPE_PTR, OTHER_TTL, wire.PTR(t)))
        for s in self._services:
            ptr, srv, txt, a = s.records()
            if qname == wire.name_key(s.type) and (any_type or q.rtype == wire.TYPE_PTR):
                answers.append(ptr)
                extra += [srv, txt, a]
            if qname == wire.name_key(s.fullname):
                if any_type or q.rtype == wire.TYPE_SRV:
                    answers.append(srv)
                    extra.append(a)
                if any_type or q.rtype == wire.TYPE_TXT:
                    answers.append(txt)
            if qname == wire.name_key(s.host) and (any_type or q.rtype == wire.TYPE_A):
                answers.append(a)
        return answers, extra

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = wire.decode(data)
        if msg.is_response or msg.opcode != 0 or not msg.questions:
            return  # responses (ours included) and non-standard queries: nothing to answer
        legacy = addr[1] != MDNS_PORT
        answers: list[wire.Record] = []
        extra: list[wire.Record] = []
        unicast_wanted = legacy
        for q in msg.questions:
            if q.rclass not in (wire.CLASS_IN, wire.CLASS_ANY):
                continue
            got, more = self._answers_for(q)
            if got and q.unicast:
                unicast_wanted = True
            answers += got
            extra += more
        # Known-answer suppression (RFC 6762 §7.1): skip what the asker already holds with at
        # least half its TTL left.
        answers = [
            r
            for r in _dedupe(answers)
            if not any(k.same_data(r) and k.ttl >= r.ttl // 2 for k in msg.answers)
        ]
        if not answers:
            return
        extra = [r for r in _dedupe(extra) if not any(r.same_data(a) for a in answers)]
        self.queries_answered += 1
        if legacy:
            # RFC 6762 §6.7: reply to the source port with the query's id and question, short TTLs
            # and no cache-flush bits (legacy resolvers would misread them).
            def cap(rs: list[wire.Record]) -> list[wire.Record]:
                return [wire.Record(r.name, r.rtype, min(r.ttl, LEGACY_TTL), r.data) for r in rs]

            self._send(cap(answers), cap(extra), addr, msg_id=msg.id, questions=msg.questions)
            return
        now = time.monotonic()
        multicast: list[wire.Record] = []
        unicast: list[wire.Record] = []
        for r in answers:
            last = self._last_multicast.get(_record_key(r), -1e9)
            if unicast_wanted and now - last < r.ttl / 4:
                unicast.append(r)  # QU, and everyone saw it recently: tell only the asker
            elif now - last >= 1.0 or unicast_wanted:
                multicast.append(r)  # RFC 6762 §6: at most once a second per record for QM
        if multicast:
            self._send(multicast, extra, (MDNS_GROUP, MDNS_PORT))
            self._note_multicast(multicast)
        if unicast:
            self._send(unicast, extra, addr)


def _packets(
    msg_id: int,
    questions: list[wire.Question],
    answers: list[wire.Record],
    additionals: list[wire.Record],
) -> list[bytes]:
    """Encode a response as one packet, or as several of at most MAX_PACKET bytes if needed.

    Records are packed in order, answers before additionals; a single record too big for a
    packet of its own still goes out, alone.
    """
    flags = wire.FLAG_QR | wire.FLAG_AA
    data = wire.encode(wire.Message(msg_id, flags, questions, answers, [], additionals))
    if len(data) <= MAX_PACKET:
        return [data]
    packets: list[bytes] = []
    an: list[wire.Record] = []
    ar: list[wire.Record] = []
    last = b""
    for record, is_answer in [(r, True) for r in answers] + [(r, False) for r in additionals]:
        trial_an, trial_ar = ([*an, record], ar) if is_answer else (an, [*ar, record])
        trial = wire.encode(wire.Message(msg_id, flags, questions, trial_an, [], trial_ar))
        if len(trial) > MAX_PACKET and (an or ar):
            packets.append(last)
            an, ar = ([record], []) if is_answer else ([], [record])
            last = wire.encode(wire.Message(msg_id, flags, questions, an, [], ar))
        else:
            an, ar, last = trial_an, trial_ar, trial
    packets.append(last)
    return packets


def _record_key(r: wire.Record) -> tuple[str, int, object]:
    return (wire.name_key(r.name), r.rtype, wire._data_key(r.data))


def _dedupe(records: list[wire.Record]) -> list[wire.Record]:
    out: list[wire.Record] = []
    for r in records:
        if not any(r.same_data(x) for x in out):
            out.append(r)
    return out


# ---------------------------------------------------------------------------------------------
# ``python -m agent.mdns publish``


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agent.mdns", description="Publish DNS-SD services over mDNS."
    )
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="publish one service until SIGTERM or SIGINT")
    pub.add_argument("--type", required=True, help="service type, e.g. _ssh._tcp.local.")
    pub.add_argument("--name", required=True, help="instance name, e.g. node1")
    pub.add_argument("--host", required=True, help="host name, e.g. node1.local.")
    pub.add_argument("--address", required=True, help="the host's IPv4 address")
    pub.add_argument("--port", required=True, type=int)
    pub.add_argument("--txt", action="append", default=[], metavar="KEY=VALUE")
    pub.add_argument(
        "--interface",
        help="address of the interface to advertise on (default: --address; 'default' for the "
        "kernel's default multicast interface)",
    )
    return p


async def _publish(info: ServiceInfo, interface: str | None) -> int:
    advertiser = MDNSAdvertiser([info], interface)
    await advertiser.start()
    print(f"publishing {info.fullname} at {info.address}:{info.port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await advertiser.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    txt: dict[str, str] = {}
    for item in args.txt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"agent.mdns: --txt {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        txt[key] = value
    host = args.host if args.host.endswith(".") else args.host + "."
    stype = args.type if args.type.endswith(".") else args.type + "."
    try:
        info = ServiceInfo(stype, args.name, host, args.address, args.port, txt)
    except ValueError as exc:
        print(f"agent.mdns: {exc}", file=sys.stderr)
        return 2
    interface = args.interface or args.address
    try:
        return asyncio.run(_publish(info, None if interface == "default" else interface))
    except OSError as exc:
        print(f"agent.mdns: cannot advertise on {interface}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())


__all__ = [
    "MDNS_GROUP",
    "MDNS_PORT",
    "SHOAL_TYPE",
    "SSH_TYPE",
    "MDNSAdvertiser",
    "ServiceInfo",
    "advertise_agent",
    "shoal_service",
]
