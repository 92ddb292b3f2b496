from __future__ import annotations

from inmesh.balancing import Host, health_generation, reconcile_hosts
from inmesh.discovery.registry import Endpoint


def test_host_fields_and_counters() -> None:
    ep = Endpoint("10.0.0.1", 80, weight=3, locality="r/z/s")
    h = Host(ep, 5.0)
    assert (h.weight, h.locality, h.created, h.active, h.healthy) == (3, "r/z/s", 5.0, 0, True)
    h.begin()
    h.begin()
    assert h.active == 2
    h.end()
    h.end()
    h.end()
    assert h.active == 0


def test_identity_equality() -> None:
    ep = Endpoint("10.0.0.1", 80)
    a, b = Host(ep), Host(ep)
    assert a != b
    assert len({a, b, a}) == 2


def test_health_changes_bump_the_generation() -> None:
    h = Host(Endpoint("10.0.0.1", 80))
    g = health_generation()
    h.healthy = True  # no change
    assert health_generation() == g
    h.healthy = False
    assert health_generation() == g + 1
    assert not h.healthy


def test_reconcile_keeps_host_objects() -> None:
    e1, e2, e3 = (Endpoint(f"10.0.0.{i}", 80) for i in (1, 2, 3))
    first = reconcile_hosts((), [e1, e2], now=1.0)
    first[0].begin()
    first[1].healthy = False
    second = reconcile_hosts(first, [e3, e2, e1], now=7.0)
    assert second[1] is first[1] and second[2] is first[0]
    assert second[2].active == 1 and not second[1].healthy
    assert second[0].created == 7.0 and second[2].created == 1.0
    # a changed endpoint (weight) is a new host
    third = reconcile_hosts(second, [Endpoint("10.0.0.1", 80, weight=2)], now=9.0)
    assert third[0] is not first[0] and third[0].created == 9.0


def test_reconcile_duplicates_get_their_own_hosts() -> None:
    e = Endpoint("10.0.0.1", 80)
    first = reconcile_hosts((), [e, e], now=0.0)
    assert first[0] is not first[1]
    again = reconcile_hosts(first, [e, e, e], now=1.0)
    assert again[:2] == first and again[2].created == 1.0
