"""The responder's answering rules, driven without a socket (a transport that records sends).

The network tests (test_netns.py) show the responder works with zeroconf over real multicast;
these pin down the rules that are hard to observe there: which records answer which question,
known-answer suppression, QU versus QM, legacy unicast, goodbyes and rate limiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent import mdns_wire as wire
from agent.mdns import (
    MDNS_GROUP,
    MDNS_PORT,
    SERVICES_ENUM,
    MDNSAdvertiser,
    ServiceInfo,
    _Protocol,
    shoal_service,
)

GROUP = (MDNS_GROUP, MDNS_PORT)
ASKER = ("10.0.0.99", MDNS_PORT)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[wire.Message, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((wire.decode(data), addr))

    def close(self) -> None:
        pass


def advertiser(*services: ServiceInfo) -> tuple[MDNSAdvertiser, FakeTransport]:
    adv = MDNSAdvertiser(list(services) or [ssh_service()])
    transport = FakeTransport()
    adv._transport = transport  # type: ignore[assignment]
    return adv, transport


def ssh_service(name: str = "node1", address: str = "10.0.0.1") -> ServiceInfo:
    return ServiceInfo("_ssh._tcp.local.", name, f"{name}.local.", address, 22)


def query(*questions: wire.Question, known: list[wire.Record] | None = None) -> bytes:
    return wire.encode(wire.Message(questions=list(questions), answers=known or []))


def q(name: str, rtype: int, unicast: bool = False) -> wire.Question:
    return wire.Question(name, rtype, unicast)


def test_ptr_query_is_answered_with_everything_needed_to_resolve() -> None:
    adv, t = advertiser()
    adv._on_datagram(query(q("_ssh._tcp.local.", wire.TYPE_PTR)), ASKER)
    [(msg, dest)] = t.sent
    assert dest == GROUP
    assert msg.is_response and msg.flags & wire.FLAG_AA and msg.id == 0 and not msg.questions
    assert [r.data for r in msg.answers] == [wire.PTR("node1._ssh._tcp.local.")]
    types = sorted(r.rtype for r in msg.additionals)
    assert types == [wire.TYPE_A, wire.TYPE_TXT, wire.TYPE_SRV]
    assert all(r.flush for r in msg.additionals)  # unique records carry the cache-flush bit
    assert not msg.answers[0].flush  # PTR records are shared


@pytest.mark.parametrize(
    ("name", "rtype", "expected"),
    [
        ("node1._ssh._tcp.local.", wire.TYPE_SRV, [wire.TYPE_SRV]),
        ("NODE1._SSH._tcp.local.", wire.TYPE_TXT, [wire.TYPE_TXT]),
        ("node1._ssh._tcp.local.", wire.TYPE_ANY, [wire.TYPE_TXT, wire.TYPE_SRV]),
        ("node1.local.", wire.TYPE_A, [wire.TYPE_A]),
        (SERVICES_ENUM, wire.TYPE_PTR, [wire.TYPE_PTR]),
    ],
)
def test_each_question_gets_its_records(name: str, rtype: int, expected: list[int]) -> None:
    adv, t = advertiser()
    adv._on_datagram(query(q(name, rtype)), ASKER)
    [(msg, _)] = t.sent
    assert sorted(r.rtype for r in msg.answers) == expected


def test_questions_about_others_get_no_reply() -> None:
    adv, t = advertiser()
    for name, rtype in [
        ("_http._tcp.local.", wire.TYPE_PTR),
        ("node2.local.", wire.TYPE_A),
        ("node1.local.", wire.TYPE_AAAA),
    ]:
        adv._on_datagram(query(q(name, rtype)), ASKER)
    assert t.sent == []


def test_known_answers_are_suppressed() -> None:
    adv, t = advertiser()
    ptr = wire.Record("_ssh._tcp.local.", wire.TYPE_PTR, 4000, wire.PTR("node1._ssh._tcp.local."))
    adv._on_datagram(query(q("_ssh._tcp.local.", wire.TYPE_PTR), known=[ptr]), ASKER)
    assert t.sent == []
    # ... unless the asker's copy is past half its TTL.
    stale = wire.Record(ptr.name, ptr.rtype, 100, ptr.data)
    adv._on_datagram(query(q("_ssh._tcp.local.", wire.TYPE_PTR), known=[stale]), ASKER)
    assert len(t.sent) == 1


def test_qm_answers_are_multicast_at_most_once_a_second_but_qu_gets_a_unicast_reply() -> None:
    adv, t = advertiser()
    adv._on_datagram(query(q("node1.local.", wire.TYPE_A)), ASKER)
    adv._on_datagram(query(q("node1.local.", wire.TYPE_A)), ASKER)
    assert [dest for _, dest in t.sent] == [GROUP]
    adv._on_datagram(query(q("node1.local.", wire.TYPE_A, unicast=True)), ASKER)
    assert [dest for _, dest in t.sent] == [GROUP, ASKER]


def test_legacy_unicast_query_gets_id_question_and_short_ttls() -> None:
    adv, t = advertiser()
    legacy = ("10.0.0.99", 40000)
    data = wire.encode(wire.Message(id=77, questions=[q("_ssh._tcp.local.", wire.TYPE_PTR)]))
    adv._on_datagram(data, legacy)
    [(msg, dest)] = t.sent
    assert dest == legacy and msg.id == 77
    assert msg.questions == [q("_ssh._tcp.local.", wire.TYPE_PTR)]
    assert all(r.ttl <= 10 and not r.flush for r in [*msg.answers, *msg.additionals])


def test_responses_are_not_answered() -> None:
    adv, t = advertiser()
    data = wire.encode(
        wire.Message(flags=wire.FLAG_QR, questions=[q("_ssh._tcp.local.", wire.TYPE_PTR)])
    )
    adv._on_datagram(data, ASKER)
    assert t.sent == []


def test_malformed_packets_are_counted_and_dropped() -> None:
    adv, t = advertiser()
    proto = _Protocol(adv)
    for junk in (b"", b"\x00" * 5, b"\xff" * 40):
        proto.datagram_received(junk, ASKER)
    assert adv.malformed == 3 and t.sent == []
    proto.datagram_received(query(q("node1.local.", wire.TYPE_A)), ASKER)
    assert len(t.sent) == 1


def test_announcements_then_goodbyes() -> None:
    asyncio.run(_announcements_then_goodbyes())


async def _announcements_then_goodbyes() -> None:
    adv, t = advertiser(ssh_service(), ssh_service("node2", "10.0.0.2"))
    adv.announce_interval = 0.01
    await adv._announce(adv.services)
    assert len(t.sent) == 3
    msg, dest = t.sent[0]
    assert dest == GROUP
    ptrs = [r.data for r in msg.answers if r.rtype == wire.TYPE_PTR]
    assert wire.PTR("_ssh._tcp.local.") in ptrs  # the service type enumeration
    assert len(msg.answers) == 9  # 2 x (PTR, SRV, TXT, A) + the enumeration PTR, once
    t.sent.clear()
    await adv.close()
    [(bye, _)] = t.sent
    assert bye.answers and all(r.ttl == 0 for r in bye.answers)
    assert not adv.running


def test_update_says_goodbye_to_what_changed() -> None:
    asyncio.run(_update_says_goodbye())


async def _update_says_goodbye() -> None:
    old = shoal_service("n1", "", "10.0.0.1", 7400, "0.1.0", {})
    new = shoal_service("n1", "abcd", "10.0.0.1", 7400, "0.1.0", {"disk": "ssd"})
    adv, t = advertiser(old)
    await adv.update([new])
    bye, _ = t.sent[0]
    assert all(r.ttl == 0 for r in bye.answers)
    assert {r.name for r in bye.answers} == {"_shoal._tcp.local.", old.fullname}
    assert all(r.rtype != wire.TYPE_A for r in bye.answers)  # the host record did not change
    await adv.close()


def test_a_big_response_is_split_into_packets_that_fit() -> None:
    services = [ssh_service(f"n{i:02d}", f"10.0.1.{i}") for i in range(40)]
    adv, t = advertiser(*services)
    adv._on_datagram(query(q("_ssh._tcp.local.", wire.TYPE_PTR)), ASKER)
    assert len(t.sent) > 1
    assert all(len(wire.encode(m)) <= 1460 for m, _ in t.sent)
    assert sum(len(m.answers) for m, _ in t.sent) == 40
    assert sum(len(m.additionals) for m, _ in t.sent) == 120  # SRV, TXT and A of each


def test_shoal_service_txt_and_names() -> None:
    info = shoal_service(
        "node1",
        "3f2a9c0e5b7d41a6",
        "198.18.0.2",
        7400,
        "0.1.0",
        {"region": "us-east", "disk": "ssd"},
        cluster_name="prod",
    )
    assert info.type == "_shoal._tcp.local."
    assert info.port == 7400 and info.address == "198.18.0.2"
    assert dict(info.txt) == {
        "cluster": "3f2a9c0e5b7d41a6",
        "node": "node1",
        "version": "0.1.0",
        "peer": "7400",
        "meta": "region=us-east,disk=ssd",
        "name": "prod",
    }
    assert "." not in info.name
    assert info.host == "shoal-node1-198-18-0-2.local."
    dotted = shoal_service("a.b_c", "", "10.0.0.1", 1, "v", {})
    assert "." not in dotted.name and dotted.host == "shoal-a-b-c-10-0-0-1.local."


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "ssh"},
        {"name": "a.b"},
        {"name": ""},
        {"host": "node1"},
        {"address": "300.1.1.1"},
        {"port": 70000},
        {"txt": {"meta": "x" * 300}},
    ],
)
def test_service_info_refuses_bad_fields(kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "type": "_ssh._tcp.local.",
        "name": "n",
        "host": "n.local.",
        "address": "10.0.0.1",
        "port": 22,
    }
    with pytest.raises(ValueError):
        ServiceInfo(**{**base, **kwargs})


def test_advertising_off_opens_nothing() -> None:
    from agent.mdns import advertise_agent

    adv = asyncio.run(
        advertise_agent(
            node_id="n1",
            cluster_id="",
            listen=("10.0.0.1", 7400),
            mdns="off",
            version="0",
            metadata={},
        )
    )
    assert adv is None
