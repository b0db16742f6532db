"""Lease deadlines on the leader, with a hand-driven clock."""

from __future__ import annotations

from agent.lessor import Lessor


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_only_the_leader_expires_and_keepalive_restarts_the_ttl() -> None:
    clock = Clock()
    lessor = Lessor(clock, extend_on_promote=1.0)
    lessor.granted(1, 5)
    clock.t += 50
    assert lessor.expired() == []  # followers never expire anything
    assert lessor.keep_alive(1) is None
    lessor.promote([(1, 5)])
    clock.t += 5.5  # within ttl + election timeout of the promotion
    assert lessor.expired() == []
    assert lessor.keep_alive(1) == 5
    clock.t += 4.9
    assert lessor.expired() == []
    assert lessor.remaining(1) == 0  # 0.1 s left: etcd truncates
    clock.t += 0.2
    assert lessor.expired() == [1]
    assert lessor.expired() == [], "an expiry is proposed once, not on every check"


def test_a_new_leader_extends_rather_than_expires_early() -> None:
    clock = Clock()
    lessor = Lessor(clock, extend_on_promote=1.0)
    lessor.promote([(7, 2), (8, 10)])
    clock.t += 2.5
    assert lessor.expired() == []
    clock.t += 0.6
    assert lessor.expired() == [7]
    assert lessor.remaining(8) == 7  # 7.9 s left


def test_failed_expiry_is_retried_and_revoked_leases_are_forgotten() -> None:
    clock = Clock()
    lessor = Lessor(clock, extend_on_promote=0.0)
    lessor.promote([])
    lessor.granted(3, 2)
    lessor.granted(4, 2)
    clock.t += 3
    assert sorted(lessor.expired()) == [3, 4]
    lessor.retry(3)
    lessor.revoked(4)
    clock.t += 0.1
    assert lessor.expired() == [3]
    assert lessor.remaining(4) is None
    lessor.demote()
    assert lessor.remaining(3) is None
