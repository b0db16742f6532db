"""The DNS codec under the agent's responder: round trips, compression, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import mdns_wire as wire


def sample() -> wire.Message:
    inst = "node1 abc._shoal._tcp.local."
    return wire.Message(
        id=0,
        flags=wire.FLAG_QR | wire.FLAG_AA,
        questions=[wire.Question("_shoal._tcp.local.", wire.TYPE_PTR, unicast=True)],
        answers=[
            wire.Record("_shoal._tcp.local.", wire.TYPE_PTR, 4500, wire.PTR(inst)),
            wire.Record(inst, wire.TYPE_SRV, 120, wire.SRV(0, 0, 7400, "h1.local."), flush=True),
            wire.Record(inst, wire.TYPE_TXT, 4500, wire.TXT((b"node=node1", b"meta=a=b,c=d"))),
        ],
        authorities=[wire.Record("h1.local.", wire.TYPE_AAAA, 120, wire.AAAA("fe80::1"))],
        additionals=[
            wire.Record("h1.local.", wire.TYPE_A, 120, wire.A("10.0.0.1"), flush=True),
            wire.Record("h1.local.", wire.TYPE_NSEC, 120, wire.Raw(b"\xc0\x0c\x00\x01\x40")),
        ],
    )


def test_round_trip_keeps_every_field() -> None:
    msg = sample()
    assert wire.decode(wire.encode(msg)) == msg


def test_names_are_compressed_and_decompressed() -> None:
    msg = sample()
    data = wire.encode(msg)
    # "_shoal._tcp.local." is spelled out once; later uses are two-byte pointers.
    assert data.count(b"\x06_shoal\x04_tcp\x05local\x00") == 1
    assert data.count(b"\x05local") == 1
    assert wire.decode(data).answers[1].data == wire.SRV(0, 0, 7400, "h1.local.")


def test_compression_matches_case_insensitively() -> None:
    msg = wire.Message(
        answers=[
            wire.Record("A.Local.", wire.TYPE_A, 1, wire.A("10.0.0.1")),
            wire.Record("b.local.", wire.TYPE_A, 1, wire.A("10.0.0.2")),
        ]
    )
    assert wire.encode(msg).lower().count(b"local") == 1


def test_decodes_pointers_written_by_others() -> None:
    # Header, then question "x.local." PTR, then answer whose name is a pointer to offset 12.
    data = (
        struct.pack("!HHHHHH", 0, 0x8400, 1, 1, 0, 0)
        + b"\x01x\x05local\x00\x00\x0c\x00\x01"
        + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x0a\x00\x00\x05"
    )
    msg = wire.decode(data)
    assert msg.answers == [wire.Record("x.local.", wire.TYPE_A, 120, wire.A("10.0.0.5"))]


@pytest.mark.parametrize("cut", range(len(wire.encode(sample()))))
def test_every_truncation_is_a_clean_dnserror(cut: int) -> None:
    data = wire.encode(sample())[:cut]
    with pytest.raises(wire.DNSError):
        wire.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        # a pointer to itself
        struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x0c\x00\x01",
        # a pointer forwards
        struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + b"\xc0\x20\x00\x0c\x00\x01" + b"\0" * 30,
        # counts far beyond the packet
        struct.pack("!HHHHHH", 0, 0, 0xFFFF, 0xFFFF, 0, 0),
        # an extended label type
        struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + b"\x41abc\x00\x00\x01\x00\x01",
        # an A record whose rdlength runs past the end
        struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\x00\x00\x01\x00\x01\0\0\0\1\xff\xff",
        # a TXT string longer than its record
        struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0)
        + b"\x00\x00\x10\x00\x01\0\0\0\1\x00\x02\x09a",
        # a name of more than 255 bytes
        struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\0\1\0\1",
    ],
)
def test_hostile_packets_raise_dnserror(data: bytes) -> None:
    with pytest.raises(wire.DNSError):
        wire.decode(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_dnserror(data: bytes) -> None:
    try:
        wire.decode(data)
    except wire.DNSError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 200))
def test_mutated_real_packets_never_raise_anything_but_dnserror(junk: bytes, at: int) -> None:
    data = bytearray(wire.encode(sample()))
    at %= len(data)
    data[at : at + len(junk)] = junk
    try:
        wire.decode(bytes(data))
    except wire.DNSError:
        pass


def test_unencodable_names_are_refused() -> None:
    for name in ("a..local.", "x" * 64 + ".local.", ".".join(["abcdefgh"] * 40) + "."):
        with pytest.raises(wire.DNSError):
            wire.encode(wire.Message(questions=[wire.Question(name, wire.TYPE_A)]))


def test_txt_helpers() -> None:
    strings = wire.txt_strings({"node": "n1", "meta": "region=us,disk=ssd"})
    assert strings == (b"node=n1", b"meta=region=us,disk=ssd")
    assert wire.txt_pairs((*strings, b"node=shadowed", b"flag")) == {
        "node": "n1",
        "meta": "region=us,disk=ssd",
        "flag": "",
    }
    with pytest.raises(wire.DNSError, match="255"):
        wire.txt_strings({"meta": "x" * 300})
    # An empty TXT record is encoded as one empty string, as RFC 6763 requires.
    msg = wire.Message(answers=[wire.Record("a.local.", wire.TYPE_TXT, 1, wire.TXT(()))])
    assert wire.decode(wire.encode(msg)).answers[0].data == wire.TXT((b"",))
