from __future__ import annotations

import random
from collections import Counter

import pytest

from inmesh.balancing import (
    LeastRequestBalancer,
    RandomBalancer,
    RoundRobinBalancer,
    SlowStart,
    build_balancer,
)
from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import (
    LoadBalancerSettings,
    LocalityDistribute,
    LocalityLoadBalancerSetting,
    SimpleLB,
    WarmupConfiguration,
)

from .conftest import FakeClock, ScriptedRandom, make_hosts

RR = LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN)
RANDOM = LoadBalancerSettings(simple=SimpleLB.RANDOM)


def shares(counts: Counter[object], hosts: list[object], n: int) -> list[float]:
    return [counts[h] / n for h in hosts]


# ---------------------------------------------------------------------------
# LEAST_REQUEST


def test_p2c_takes_the_less_loaded_of_two_draws() -> None:
    a, b, c = make_hosts(3)
    a.active, b.active = 3, 1
    lb = build_balancer(None, [a, b, c], clock=FakeClock(), rng=ScriptedRandom([0.0, 0.5]))
    assert isinstance(lb, LeastRequestBalancer)
    assert lb.pick() is b
    lb = build_balancer(None, [a, b, c], clock=FakeClock(), rng=ScriptedRandom([0.5, 0.0]))
    assert lb.pick() is b


def test_p2c_tie_goes_to_the_first_draw() -> None:
    a, b, _ = hosts = make_hosts(3)
    lb = build_balancer(None, hosts, clock=FakeClock(), rng=ScriptedRandom([0.5, 0.0]))
    assert lb.pick() is b
    lb = build_balancer(None, hosts, clock=FakeClock(), rng=ScriptedRandom([0.0, 0.5]))
    assert lb.pick() is a


def test_p2c_prefers_less_loaded_hosts(rng: random.Random) -> None:
    hosts = make_hosts(3)
    hosts[0].active = 10  # busy: only picked when both draws hit it (1/9)
    lb = build_balancer(None, hosts, clock=FakeClock(), rng=rng)
    n = 18000
    counts = Counter(lb.pick() for _ in range(n))
    busy, idle1, idle2 = shares(counts, hosts, n)  # type: ignore[arg-type]
    assert busy == pytest.approx(1 / 9, abs=0.015)
    assert idle1 == pytest.approx(4 / 9, abs=0.02)
    assert idle2 == pytest.approx(4 / 9, abs=0.02)


def test_p2c_with_live_counts_balances_in_flight_requests(rng: random.Random) -> None:
    hosts = make_hosts(4)
    lb = build_balancer(None, hosts, clock=FakeClock(), rng=rng)
    for _ in range(400):  # requests that never finish
        h = lb.pick()
        assert h is not None
        h.begin()
    actives = [h.active for h in hosts]
    assert max(actives) - min(actives) <= 6  # pure random would spread ~ +-20


def test_weighted_least_request_follows_weights(rng: random.Random) -> None:
    hosts = make_hosts(2, weights=[1, 3])
    lb = build_balancer(None, hosts, clock=FakeClock(), rng=rng)
    n = 4000
    counts = Counter(lb.pick() for _ in range(n))
    assert shares(counts, hosts, n) == pytest.approx([0.25, 0.75], abs=0.01)  # type: ignore[arg-type]


def test_weighted_least_request_discounts_active_requests(rng: random.Random) -> None:
    hosts = make_hosts(2, weights=[1, 3])
    hosts[1].active = 2  # 3 / (2 + 1) == 1 / (0 + 1)
    lb = build_balancer(None, hosts, clock=FakeClock(), rng=rng)
    n = 4000
    counts = Counter(lb.pick() for _ in range(n))
    assert shares(counts, hosts, n) == pytest.approx([0.5, 0.5], abs=0.01)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# ROUND_ROBIN and RANDOM


def test_round_robin_rotates_from_a_random_start(rng: random.Random) -> None:
    hosts = make_hosts(5)
    lb = build_balancer(RR, hosts, clock=FakeClock(), rng=rng)
    assert isinstance(lb, RoundRobinBalancer)
    picks = [lb.pick() for _ in range(15)]
    start = hosts.index(picks[0])  # type: ignore[arg-type]
    assert picks == [hosts[(start + i) % 5] for i in range(15)]
    starts = {
        build_balancer(RR, hosts, clock=FakeClock(), rng=random.Random(s)).pick() for s in range(40)
    }
    assert len(starts) > 1


def test_round_robin_edf_weights_are_exact(rng: random.Random) -> None:
    hosts = make_hosts(3, weights=[1, 2, 3])
    lb = build_balancer(RR, hosts, clock=FakeClock(), rng=rng)
    counts = Counter(lb.pick() for _ in range(600))
    for host, expected in zip(hosts, [100, 200, 300], strict=True):
        assert abs(counts[host] - expected) <= 1
    # smooth: the heaviest host never gets more than 3 in a row
    run, longest, last = 0, 0, None
    for _ in range(600):
        h = lb.pick()
        run = run + 1 if h is last else 1
        longest, last = max(longest, run), h
    assert longest <= 3


def test_random_is_uniform_and_ignores_weights(rng: random.Random) -> None:
    hosts = make_hosts(4, weights=[1, 1, 1, 5])
    lb = build_balancer(RANDOM, hosts, clock=FakeClock(), rng=rng)
    assert isinstance(lb, RandomBalancer)
    n = 40000
    counts = Counter(lb.pick() for _ in range(n))
    for share in shares(counts, hosts, n):  # type: ignore[arg-type]
        assert share == pytest.approx(0.25, abs=0.015)


# ---------------------------------------------------------------------------
# avoid (retry host predicate previous_hosts)


def test_avoid_reselects(rng: random.Random) -> None:
    hosts = make_hosts(3)
    lb = build_balancer(RR, hosts, clock=FakeClock(), rng=rng)
    first = lb.pick()
    nxt = hosts[(hosts.index(first) + 1) % 3]  # type: ignore[arg-type]
    assert lb.pick(avoid={nxt}) is hosts[(hosts.index(first) + 2) % 3]  # type: ignore[arg-type]
    for _ in range(50):
        assert lb.pick(avoid=hosts[:2]) is hosts[2]


def test_avoid_gives_up_after_five_reselections(rng: random.Random) -> None:
    hosts = make_hosts(4)
    lb = build_balancer(RR, hosts, clock=FakeClock(), rng=rng)
    first = lb.pick()
    i = hosts.index(first)  # type: ignore[arg-type]
    # everything avoided: 1 + 5 selections, the last one is returned
    assert lb.pick(avoid=set(hosts)) is hosts[(i + 6) % 4]
    assert lb.pick() is hosts[(i + 7) % 4]


def test_avoid_with_random_and_least_request(rng: random.Random) -> None:
    hosts = make_hosts(10)
    for settings in (None, RANDOM):
        lb = build_balancer(settings, hosts, clock=FakeClock(), rng=rng)
        avoid = set(hosts[:5])
        hits = sum(lb.pick(avoid=avoid) in avoid for _ in range(2000))
        assert hits < 70  # 6 selections all in the avoided half: (1/2)^6, ~31 of 2000


# ---------------------------------------------------------------------------
# Panic threshold


def test_panic_uses_all_hosts_below_50_percent(rng: random.Random) -> None:
    hosts = make_hosts(4)
    for h in hosts[1:]:
        h.healthy = False
    lb = build_balancer(RANDOM, hosts, clock=FakeClock(), rng=rng)
    assert {lb.pick() for _ in range(200)} == set(hosts)


def test_no_panic_at_50_percent(rng: random.Random) -> None:
    hosts = make_hosts(4)
    hosts[0].healthy = hosts[1].healthy = False
    lb = build_balancer(RANDOM, hosts, clock=FakeClock(), rng=rng)
    assert {lb.pick() for _ in range(200)} == set(hosts[2:])


def test_outlier_detection_disables_panic(rng: random.Random) -> None:
    hosts = make_hosts(4)
    for h in hosts[1:]:
        h.healthy = False
    lb = build_balancer(RANDOM, hosts, outlier_detection=True, clock=FakeClock(), rng=rng)
    assert {lb.pick() for _ in range(100)} == {hosts[0]}
    hosts[0].healthy = False  # noticed at the next pick
    assert lb.pick() is None
    hosts[2].healthy = True
    assert lb.pick() is hosts[2]


def test_explicit_panic_threshold(rng: random.Random) -> None:
    hosts = make_hosts(4)
    hosts[0].healthy = False  # 75% healthy: 1.4 * 75% >= 100%, never panic
    lb = build_balancer(
        RANDOM, hosts, outlier_detection=True, panic_threshold=80, clock=FakeClock(), rng=rng
    )
    assert hosts[0] not in {lb.pick() for _ in range(200)}
    hosts[1].healthy = False  # 50% < 80%: panic
    assert hosts[0] in {lb.pick() for _ in range(200)}


def test_no_hosts() -> None:
    lb = build_balancer(None, [], clock=FakeClock(), rng=random.Random(0))
    assert lb.pick() is None
    assert lb.hosts == ()


# ---------------------------------------------------------------------------
# Locality


LOCS = ["r1/z1/s1", "r1/z1/s1", "r1/z1/s1", "r1/z1/s1", "r1/z2/s1", "r1/z2/s1", "r2/z1/s1"]


def test_locality_failover_needs_outlier_detection(rng: random.Random) -> None:
    hosts = make_hosts(7, localities=LOCS)
    lb = build_balancer(None, hosts, local_locality="r1/z1/s1", clock=FakeClock(), rng=rng)
    assert {h.locality for h in (lb.pick() for _ in range(300)) if h} == set(LOCS)
    lb = build_balancer(
        None, hosts, local_locality="r1/z1/s1", outlier_detection=True, clock=FakeClock(), rng=rng
    )
    assert {h.locality for h in (lb.pick() for _ in range(300)) if h} == {"r1/z1/s1"}


def test_locality_spills_over_as_health_drops(rng: random.Random) -> None:
    hosts = make_hosts(7, localities=LOCS)
    lb = build_balancer(
        RANDOM, hosts, local_locality="r1/z1/s1", outlier_detection=True, clock=FakeClock(), rng=rng
    )
    hosts[0].healthy = hosts[1].healthy = False  # P0 health 70%
    n = 10000
    counts = Counter(h.locality for h in (lb.pick() for _ in range(n)) if h)
    assert counts["r1/z1/s1"] / n == pytest.approx(0.70, abs=0.02)
    assert counts["r1/z2/s1"] / n == pytest.approx(0.30, abs=0.02)
    for h in hosts[:4]:
        h.healthy = False
    assert {h.locality for h in (lb.pick() for _ in range(200)) if h} == {"r1/z2/s1"}
    for h in hosts[:6]:
        h.healthy = False
    assert {lb.pick() for _ in range(50)} == {hosts[6]}


def test_locality_distribute_weights(rng: random.Random) -> None:
    hosts = make_hosts(7, localities=LOCS)
    settings = LoadBalancerSettings(
        locality_lb_setting=LocalityLoadBalancerSetting(
            distribute=(LocalityDistribute(from_="r1/z1/*", to={"r1/z1/*": 80, "r2/z1/*": 20}),)
        )
    )
    lb = build_balancer(settings, hosts, local_locality="r1/z1/s1", clock=FakeClock(), rng=rng)
    n = 5000
    counts = Counter(h.locality for h in (lb.pick() for _ in range(n)) if h)
    assert counts == {"r1/z1/s1": 4000, "r2/z1/s1": 1000}  # EDF over localities: exact


# ---------------------------------------------------------------------------
# Slow start


WARMUP = WarmupConfiguration(duration=Duration.of(60))


def test_slow_start_factor() -> None:
    s = SlowStart(window=10.0)
    assert s.factor(0.0) == 0.1  # minimum 10%
    assert s.factor(5.0) == pytest.approx(0.5)
    assert s.factor(10.0) == 1.0
    assert SlowStart(10.0, 0.0, 2.0).factor(2.5) == pytest.approx(0.5)  # sqrt(0.25)
    assert SlowStart(10.0, 0.0).factor(0.0) == pytest.approx(0.0001)  # max(age, 1ms)


def test_slow_start_from_settings() -> None:
    assert SlowStart.from_settings(None) is None
    assert SlowStart.from_settings(LoadBalancerSettings()) is None
    assert SlowStart.from_settings(LoadBalancerSettings(warmup=WARMUP)) == SlowStart(60.0)
    legacy = LoadBalancerSettings(warmup_duration_secs=Duration.of(30))
    assert SlowStart.from_settings(legacy) == SlowStart(30.0)
    custom = LoadBalancerSettings(
        warmup=WarmupConfiguration(duration=Duration.of(20), minimum_percent=5, aggression=2.0),
        warmup_duration_secs=Duration.of(30),
    )
    assert SlowStart.from_settings(custom) == SlowStart(20.0, 0.05, 2.0)


@pytest.mark.parametrize("simple", [SimpleLB.ROUND_ROBIN, SimpleLB.LEAST_REQUEST])
def test_slow_start_ramps_a_new_host(simple: SimpleLB, rng: random.Random) -> None:
    clock = FakeClock(100.0)
    old = make_hosts(3, created=0.0)
    new = make_hosts(1, created=100.0, base=10)[0]
    hosts = [*old, new]
    settings = LoadBalancerSettings(simple=simple, warmup=WARMUP)

    def new_share(at: float) -> float:
        clock.t = at
        lb = build_balancer(settings, hosts, clock=clock, rng=rng)
        n = 7000
        return sum(lb.pick() is new for _ in range(n)) / n

    assert new_share(100.0) == pytest.approx(0.1 / 3.1, abs=0.01)  # minimum 10%
    assert new_share(130.0) == pytest.approx(0.5 / 3.5, abs=0.015)  # half way
    assert new_share(170.0) == pytest.approx(0.25, abs=0.02)  # out of the window


def test_slow_start_window_closes_on_a_live_balancer(rng: random.Random) -> None:
    clock = FakeClock(100.0)
    hosts = [*make_hosts(3, created=0.0), make_hosts(1, created=100.0, base=10)[0]]
    lb = build_balancer(
        LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN, warmup=WARMUP),
        hosts,
        clock=clock,
        rng=rng,
    )
    early = sum(lb.pick() is hosts[3] for _ in range(310))
    assert early <= 12
    clock.t = 200.0  # window over: plain rotation again
    picks = [lb.pick() for _ in range(8)]
    assert Counter(picks) == {h: 2 for h in hosts}


def test_slow_start_not_applied_when_all_hosts_are_new(rng: random.Random) -> None:
    clock = FakeClock(5.0)
    hosts = make_hosts(3, created=5.0)
    lb = build_balancer(
        LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN, warmup=WARMUP),
        hosts,
        clock=clock,
        rng=rng,
    )
    picks = [lb.pick() for _ in range(6)]
    assert Counter(picks) == {h: 2 for h in hosts}


def test_slow_start_ignored_by_random(rng: random.Random) -> None:
    clock = FakeClock(100.0)
    hosts = [*make_hosts(3, created=0.0), make_hosts(1, created=100.0, base=10)[0]]
    lb = build_balancer(
        LoadBalancerSettings(simple=SimpleLB.RANDOM, warmup=WARMUP), hosts, clock=clock, rng=rng
    )
    n = 8000
    assert sum(lb.pick() is hosts[3] for _ in range(n)) / n == pytest.approx(0.25, abs=0.02)
