"""DNS message encoding and decoding for the agent's mDNS responder (RFC 1035, RFC 6762 subset).

The agent is standard-library only, so it cannot use zeroconf; this module is the small part of a
DNS library an mDNS responder needs: the header, questions and the A, PTR, TXT, SRV and AAAA
records, with name compression both ways. Everything else is kept as raw bytes so that a packet
carrying record types we do not know still decodes.

Packets come from anyone on the link, so :func:`decode` treats its input as hostile: every length
and pointer is bounds-checked, compression pointers must point backwards (no loops), and any
problem raises :class:`DNSError` — never IndexError or struct.error — so the responder can drop
the packet and carry on.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

TYPE_A = 1
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_NSEC = 47
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# In mDNS the top bit of the class is reused: in a question it asks for a unicast reply (QU), in
# a record it tells caches to flush older records of the same name and type (RFC 6762 §10.2).
CLASS_TOP_BIT = 0x8000

FLAG_QR = 0x8000  # a response
FLAG_AA = 0x0400  # authoritative answer; mDNS responses always set it
FLAG_TC = 0x0200  # truncated: more known answers follow in another packet
OPCODE_MASK = 0x7800

MAX_NAME = 255
MAX_LABEL = 63
_MAX_POINTER_JUMPS = 64


class DNSError(ValueError):
    """The packet (or a name or record to encode) is malformed."""


@dataclass(frozen=True)
class A:
    """An IPv4 address record's data."""

    address: str


@dataclass(frozen=True)
class AAAA:
    """An IPv6 address record's data."""

    address: str


@dataclass(frozen=True)
class PTR:
    """A pointer record's data: the name pointed to (a service instance, for DNS-SD)."""

    target: str


@dataclass(frozen=True)
class TXT:
    """A text record's data: the raw character-strings (``key=value`` in DNS-SD)."""

    strings: tuple[bytes, ...]


@dataclass(frozen=True)
class SRV:
    """A service location record's data."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class Raw:
    """Data of a record type this module does not interpret, kept verbatim."""

    data: bytes


RData = A | AAAA | PTR | TXT | SRV | Raw


@dataclass(frozen=True)
class Question:
    """One question; ``unicast`` is the mDNS QU bit (the asker prefers a unicast reply)."""

    name: str
    rtype: int
    unicast: bool = False
    rclass: int = CLASS_IN


@dataclass(frozen=True)
class Record:
    """One resource record; ``flush`` is the mDNS cache-flush bit for unique records."""

    name: str
    rtype: int
    ttl: int
    data: RData
    flush: bool = False
    rclass: int = CLASS_IN

    def same_data(self, other: Record) -> bool:
        """Whether two records are the same record, ignoring TTL and flush bit (RFC 6762 §7.1)."""
        return (
            self.rtype == other.rtype
            and name_key(self.name) == name_key(other.name)
            and _data_key(self.data) == _data_key(other.data)
        )


@dataclass
class Message:
    """A whole DNS message."""

    id: int = 0
    flags: int = 0
    questions: list[Question] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authorities: list[Record] = field(default_factory=list)
    additionals: list[Record] = field(default_factory=list)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def name_key(name: str) -> str:
    """The form names are compared in: DNS names are case-insensitive; the root dot optional."""
    return name.lower().rstrip(".") + "."


def _data_key(data: RData) -> object:
    if isinstance(data, PTR):
        return ("ptr", name_key(data.target))
    if isinstance(data, SRV):
        return ("srv", data.priority, data.weight, data.port, name_key(data.target))
    return data


# ---------------------------------------------------------------------------------------------
# Encoding


def _labels(name: str) -> list[bytes]:
    text = name.rstrip(".")
    if not text:
        return []
    labels = [part.encode() for part in text.split(".")]
    for label in labels:
        if not label or len(label) > MAX_LABEL:
            raise DNSError(f"bad label in name {name!r}: labels are 1 to {MAX_LABEL} bytes")
    if sum(len(label) + 1 for label in labels) + 1 > MAX_NAME:
        raise DNSError(f"name {name!r} is longer than {MAX_NAME} bytes")
    return labels


class _Writer:
    """Accumulates a message, compressing names against the suffixes already written."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.offsets: dict[tuple[bytes, ...], int] = {}

    def name(self, name: str) -> None:
        labels = _labels(name)
        for i in range(len(labels)):
            suffix = tuple(label.lower() for label in labels[i:])
            offset = self.offsets.get(suffix)
            if offset is not None:
                self.buf += struct.pack("!H", 0xC000 | offset)
                return
            if len(self.buf) < 0x3FFF:
                self.offsets[suffix] = len(self.buf)
            self.buf.append(len(labels[i]))
            self.buf += labels[i]
        self.buf.append(0)

    def question(self, q: Question) -> None:
        self.name(q.name)
        self.buf += struct.pack("!HH", q.rtype, q.rclass | (CLASS_TOP_BIT if q.unicast else 0))

    def record(self, r: Record) -> None:
        self.name(r.name)
        self.buf += struct.pack(
            "!HHI", r.rtype, r.rclass | (CLASS_TOP_BIT if r.flush else 0), r.ttl & 0xFFFFFFFF
        )
        length_at = len(self.buf)
        self.buf += b"\0\0"
        data = r.data
        if isinstance(data, A):
            self.buf += ipaddress.IPv4Address(data.address).packed
        elif isinstance(data, AAAA):
            self.buf += ipaddress.IPv6Address(data.address).packed
        elif isinstance(data, PTR):
            self.name(data.target)
        elif isinstance(data, SRV):
            self.buf += struct.pack("!HHH", data.priority, data.weight, data.port)
            self.name(data.target)
        elif isinstance(data, TXT):
            strings = data.strings or (b"",)  # RFC 6763 §6.1: never an empty TXT record
            for s in strings:
                if len(s) > 255:
                    raise DNSError(f"TXT string longer than 255 bytes: {s[:40]!r}...")
                self.buf.append(len(s))
                self.buf += s
        else:
            self.buf += data.data
        rdlength = len(self.buf) - length_at - 2
        if rdlength > 0xFFFF:
            raise DNSError("record data longer than 65535 bytes")
        struct.pack_into("!H", self.buf, length_at, rdlength)


def encode(msg: Message) -> bytes:
    """The wire form of ``msg``, names compressed. Raises DNSError for unencodable names/data."""
    w = _Writer()
    w.buf += struct.pack(
        "!HHHHHH",
        msg.id & 0xFFFF,
        msg.flags & 0xFFFF,
        len(msg.questions),
        len(msg.answers),
        len(msg.authorities),
        len(msg.additionals),
    )
    try:
        for q in msg.questions:
            w.question(q)
        for r in (*msg.answers, *msg.authorities, *msg.additionals):
            w.record(r)
    except (ValueError, struct.error) as exc:  # ipaddress and struct range errors
        if isinstance(exc, DNSError):
            raise
        raise DNSError(f"cannot encode: {exc}") from exc
    return bytes(w.buf)


# ---------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DNSError(f"truncated packet: wanted {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def name(self) -> str:
        """Read a possibly compressed name at the current position and move past it."""
        labels: list[str] = []
        pos = self.pos
        end: int | None = None  # where the reader continues after the first pointer
        jumps = 0
        total = 1
        data = self.data
        while True:
            if pos >= len(data):
                raise DNSError("truncated name")
            length = data[pos]
            if length & 0xC0 == 0xC0:
                if pos + 1 >= len(data):
                    raise DNSError("truncated compression pointer")
                target = ((length & 0x3F) << 8) | data[pos + 1]
                if end is None:
                    end = pos + 2
                # Only backwards pointers are legal in practice; requiring it rules out loops.
                if target >= pos or jumps >= _MAX_POINTER_JUMPS:
                    raise DNSError(f"bad compression pointer to {target} at offset {pos}")
                jumps += 1
                pos = target
                continue
            if length & 0xC0:
                raise DNSError(f"unsupported label type {length:#x} at offset {pos}")
            pos += 1
            if length == 0:
                break
            if pos + length > len(data):
                raise DNSError("truncated label")
            total += length + 1
            if total > MAX_NAME:
                raise DNSError("name longer than 255 bytes")
            labels.append(data[pos : pos + length].decode("utf-8", errors="replace"))
            pos += length
        self.pos = end if end is not None else pos
        return ".".join(labels) + "."

    def question(self) -> Question:
        name = self.name()
        rtype, rclass = self.unpack("!HH")
        return Question(name, rtype, bool(rclass & CLASS_TOP_BIT), rclass & ~CLASS_TOP_BIT)

    def record(self) -> Record:
        name = self.name()
        rtype, rclass, ttl, rdlength = self.unpack("!HHIH")
        start = self.pos
        end = start + rdlength
        if end > len(self.data):
            raise DNSError(f"record data runs past the end of the packet ({name} type {rtype})")
        data: RData
        if rtype == TYPE_A and rdlength == 4:
            data = A(str(ipaddress.IPv4Address(self.take(4))))
        elif rtype == TYPE_AAAA and rdlength == 16:
            data = AAAA(str(ipaddress.IPv6Address(self.take(16))))
        elif rtype == TYPE_PTR:
            data = PTR(self.name())
        elif rtype == TYPE_SRV:
            priority, weight, port = self.unpack("!HHH")
            data = SRV(priority, weight, port, self.name())
        elif rtype == TYPE_TXT:
            strings = []
            while self.pos < end:
                (n,) = self.unpack("!B")
                strings.append(self.take(n))
            data = TXT(tuple(strings))
        else:
            data = Raw(self.take(rdlength))
        if self.pos != end:
            raise DNSError(f"record data length mismatch for {name} type {rtype}")
        return Record(name, rtype, ttl, data, bool(rclass & CLASS_TOP_BIT), rclass & ~CLASS_TOP_BIT)


def decode(data: bytes) -> Message:
    """Parse one DNS message. Raises DNSError (only) if it is malformed in any way."""
    r = _Reader(data)
    try:
        msg_id, flags, qd, an, ns, ar = r.unpack("!HHHHHH")
        # Every question or record takes at least 5 bytes, so absurd counts fail fast.
        if (qd + an + ns + ar) * 5 > len(data):
            raise DNSError("section counts exceed the packet size")
        msg = Message(msg_id, flags)
        msg.questions = [r.question() for _ in range(qd)]
        msg.answers = [r.record() for _ in range(an)]
        msg.authorities = [r.record() for _ in range(ns)]
        msg.additionals = [r.record() for _ in range(ar)]
    except DNSError:
        raise
    except (struct.error, ValueError, IndexError) as exc:
        raise DNSError(f"malformed packet: {exc}") from exc
    return msg


def txt_strings(pairs: dict[str, str]) -> tuple[bytes, ...]:
    """DNS-SD ``key=value`` strings for a TXT record (RFC 6763 §6)."""
    out = []
    for key, value in pairs.items():
        if not key or "=" in key or not key.isascii():
            raise DNSError(f"TXT key {key!r} must be printable ASCII without '='")
        item = f"{key}={value}".encode()
        if len(item) > 255:
            raise DNSError(f"TXT entry {key!r} is {len(item)} bytes; the limit is 255")
        out.append(item)
    return tuple(out)


def txt_pairs(strings: tuple[bytes, ...]) -> dict[str, str]:
    """The inverse of :func:`txt_strings`; the first occurrence of a key wins (RFC 6763 §6.4)."""
    out: dict[str, str] = {}
    for s in strings:
        key, _, value = s.decode("utf-8", errors="replace").partition("=")
        if key and key.lower() not in {k.lower() for k in out}:
            out[key] = value
    return out
