from __future__ import annotations

import random
import time

import pytest

from inmesh.balancing import (
    Balancer,
    LeastRequestBalancer,
    MaglevBalancer,
    RandomBalancer,
    RingHashBalancer,
    RoundRobinBalancer,
    build_balancer,
)
from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import (
    BackendUtilizationLB,
    ConsistentHashLB,
    LoadBalancerSettings,
    LocalityFailover,
    LocalityLoadBalancerSetting,
    MagLev,
    SimpleLB,
    WarmupConfiguration,
)

from .conftest import FakeClock, make_hosts


@pytest.mark.parametrize(
    ("settings", "cls"),
    [
        (None, LeastRequestBalancer),
        (LoadBalancerSettings(), LeastRequestBalancer),
        (LoadBalancerSettings(simple=SimpleLB.UNSPECIFIED), LeastRequestBalancer),
        (LoadBalancerSettings(simple=SimpleLB.LEAST_CONN), LeastRequestBalancer),
        (LoadBalancerSettings(simple=SimpleLB.LEAST_REQUEST), LeastRequestBalancer),
        (LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN), RoundRobinBalancer),
        (LoadBalancerSettings(simple=SimpleLB.RANDOM), RandomBalancer),
        (LoadBalancerSettings(simple=SimpleLB.PASSTHROUGH), RandomBalancer),
        (LoadBalancerSettings(backend_utilization=BackendUtilizationLB()), LeastRequestBalancer),
        (
            LoadBalancerSettings(consistent_hash=ConsistentHashLB(use_source_ip=True)),
            RingHashBalancer,
        ),
        (
            LoadBalancerSettings(
                consistent_hash=ConsistentHashLB(use_source_ip=True, maglev=MagLev(table_size=5003))
            ),
            MaglevBalancer,
        ),
    ],
)
def test_algorithm_selection(settings: LoadBalancerSettings | None, cls: type) -> None:
    lb = build_balancer(settings, make_hosts(3), clock=FakeClock(), rng=random.Random(0))
    assert type(lb) is cls
    assert lb.uses_hash is (cls in (RingHashBalancer, MaglevBalancer))
    assert len(lb.hosts) == 3
    assert lb.pick() in lb.hosts


def test_balancer_protocol_is_structural() -> None:
    lb: Balancer = build_balancer(None, make_hosts(2), clock=FakeClock(), rng=random.Random(0))
    assert lb.pick(None, ()) is not None


def test_pick_is_fast() -> None:
    """A loose guard: the common paths stay in the microsecond range."""
    hosts = make_hosts(20)
    rng = random.Random(0)
    for settings in (
        None,
        LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN),
        LoadBalancerSettings(consistent_hash=ConsistentHashLB(use_source_ip=True)),
    ):
        lb = build_balancer(settings, hosts, clock=FakeClock(), rng=rng)
        start = time.perf_counter()
        for i in range(20000):
            lb.pick(i)
        assert (time.perf_counter() - start) / 20000 < 50e-6


SETTINGS = [
    None,
    LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN),
    LoadBalancerSettings(simple=SimpleLB.RANDOM),
    LoadBalancerSettings(
        simple=SimpleLB.ROUND_ROBIN, warmup=WarmupConfiguration(duration=Duration.of(30))
    ),
    LoadBalancerSettings(warmup=WarmupConfiguration(duration=Duration.of(30))),
    LoadBalancerSettings(consistent_hash=ConsistentHashLB(http_header_name="x")),
    LoadBalancerSettings(
        consistent_hash=ConsistentHashLB(http_header_name="x", maglev=MagLev(table_size=1009))
    ),
    LoadBalancerSettings(
        locality_lb_setting=LocalityLoadBalancerSetting(
            failover=(LocalityFailover(from_="r1", to="r2"),)
        )
    ),
]
LOCALITIES = ["r1/z1/a", "r1/z1/b", "r1/z2/a", "r2/z1/a", "r3/z1/a"]


@pytest.mark.parametrize("seed", range(40))
def test_property_never_unhealthy_without_panic(seed: int) -> None:
    """With outlier detection (panic disabled) a pick is always healthy, or None
    exactly when no host is healthy."""
    r = random.Random(seed)
    clock = FakeClock(100.0)
    n = r.randint(1, 12)
    hosts = make_hosts(
        n,
        weights=[r.choice([1, 1, 2, 5]) for _ in range(n)],
        localities=[r.choice(LOCALITIES) for _ in range(n)],
    )
    for h in hosts:
        h.created = r.choice([0.0, 90.0, 100.0])
    settings = r.choice(SETTINGS)
    lb = build_balancer(
        settings,
        hosts,
        local_locality=r.choice(LOCALITIES),
        outlier_detection=True,
        clock=clock,
        rng=random.Random(seed),
    )
    for _ in range(30):
        for h in hosts:
            h.healthy = r.random() < 0.6
        clock.t += r.random() * 5
        any_healthy = any(h.healthy for h in hosts)
        for _ in range(20):
            key = r.getrandbits(64) if r.random() < 0.7 else None
            avoid = set(r.sample(hosts, r.randint(0, n)))
            host = lb.pick(key, avoid)
            if any_healthy:
                assert host is not None and host.healthy
            else:
                assert host is None
            if host is not None:
                host.begin()
        for h in hosts:
            h.active = 0
