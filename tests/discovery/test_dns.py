"""Background DNS: the pure refresh schedule, then the resolver and cache against a real dnsmasq."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inmesh.discovery import (
    DnsAnswer,
    DnsCache,
    DnsLookupError,
    RefreshPolicy,
    RefreshSchedule,
)

from .conftest import Dnsmasq, build_registry

FAST = RefreshPolicy(
    min_interval=0.1,
    max_interval=300.0,
    failure_interval=0.1,
    max_failure_interval=0.2,
    attempts=2,
    retry_initial=0.02,
    retry_max=0.05,
)


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def failures(cache: DnsCache, hostname: str) -> int:
    rec = cache.record(hostname)
    return rec.failures if rec is not None else 0


# -- the pure schedule ------------------------------------------------------------------


def test_policy_clamps_ttls_and_backs_off_failures() -> None:
    p = RefreshPolicy(min_interval=1, max_interval=300, failure_interval=1, max_failure_interval=30)
    assert [p.after_success(t) for t in (0, 0.5, 1, 60, 86400, math.inf)] == [1, 1, 1, 60, 300, 300]
    assert [p.after_failure(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert p.after_failure(10_000) == 30
    assert RefreshPolicy(min_interval=5, failure_interval=1).after_failure(1) == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_interval": 0},
        {"min_interval": 10, "max_interval": 5},
        {"failure_interval": 0},
        {"failure_interval": 10, "max_failure_interval": 5},
        {"attempts": 0},
        {"retry_initial": 2, "retry_max": 1},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RefreshPolicy(**kwargs)  # type: ignore[arg-type]


def test_schedule_decides_what_to_refresh_when() -> None:
    s = RefreshSchedule(RefreshPolicy(min_interval=1, max_interval=300, failure_interval=2))
    assert s.next_refresh() is None and s.due(0) == [] and s.ready()
    added, removed = s.set_hostnames(["b.test", "a.test"], now=100)
    assert added == {"a.test", "b.test"} and removed == set()
    assert s.due(100) == ["a.test", "b.test"] and not s.ready()

    assert s.record_success("a.test", ("10.0.0.1",), ttl=30, now=100.5) is True
    assert s.record_success("b.test", ("10.0.0.2",), ttl=0, now=100.5) is True  # TTL 0 -> min
    assert s.ready()
    assert s.due(101) == [] and s.next_refresh() == 101.5
    assert s.due(101.5) == ["b.test"]
    assert s.due(200) == ["b.test", "a.test"]  # most overdue first

    # a failure keeps the last good addresses and backs off
    assert s.record_failure("a.test", "timeout", now=131) == 2
    assert s.record_failure("a.test", "timeout", now=133) == 4
    rec = s.record("a.test")
    assert rec is not None
    assert (rec.addresses, rec.failures, rec.last_error, rec.next_refresh) == (
        ("10.0.0.1",),
        2,
        "timeout",
        137,
    )
    assert rec.ttl == 30 and rec.resolved_at == 100.5
    # ... until the next good answer, which resets the count
    assert s.record_success("a.test", ("10.0.0.1",), ttl=30, now=137) is False
    rec = s.record("a.test")
    assert rec is not None and rec.failures == 0 and rec.last_error == ""

    # the order of the addresses is kept but is not a change
    assert s.record_success("a.test", ("10.0.0.3", "10.0.0.1"), ttl=30, now=140) is True
    assert s.record_success("a.test", ("10.0.0.1", "10.0.0.3"), ttl=30, now=141) is False
    assert s.addresses("a.test") == ("10.0.0.1", "10.0.0.3")

    # an empty answer is a failure; refresh_now makes names due
    assert s.record_success("b.test", (), ttl=30, now=150) is False
    assert s.addresses("b.test") == ("10.0.0.2",) and s.record("b.test").failures == 1  # type: ignore[union-attr]
    s.refresh_now("a.test", now=142)
    assert s.due(142) == ["a.test"]
    s.refresh_now(None, now=142)
    assert s.due(142) == ["a.test", "b.test"]

    # removed names are forgotten, late answers for them ignored
    assert s.set_hostnames(["a.test", "c.test"], now=143) == ({"c.test"}, {"b.test"})
    assert s.record_success("b.test", ("10.0.0.9",), ttl=1, now=144) is False
    assert s.record_failure("b.test", "late", now=144) is None
    assert s.addresses("b.test") == () and s.record("b.test") is None
    assert s.hostnames == {"a.test", "c.test"}


# -- the cache with a scripted resolver (no network) --------------------------------------


class ScriptedResolver:
    """Answers from a script: an exception instance is raised, a tuple is returned."""

    def __init__(self, script: dict[str, list[tuple[str, ...] | Exception]]) -> None:
        self.script = script
        self.calls: list[str] = []

    def resolve(self, hostname: str) -> DnsAnswer:
        self.calls.append(hostname)
        steps = self.script[hostname]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        return DnsAnswer(hostname, step, 60.0)


def test_transient_failures_are_retried_with_tenacity() -> None:
    flaky = DnsLookupError("flaky.test", "timed out", transient=True)
    resolver = ScriptedResolver({"flaky.test": [flaky, flaky, ("10.0.0.1",)]})
    policy = RefreshPolicy(attempts=3, retry_initial=0.0, retry_max=0.0)
    with DnsCache(resolver, policy=policy, hostnames=["flaky.test"]) as cache:
        assert cache.wait_ready(3)
        assert cache.addresses("flaky.test") == ("10.0.0.1",)
    assert resolver.calls == ["flaky.test"] * 3


def test_permanent_failures_are_not_retried() -> None:
    missing = DnsLookupError("gone.test", "NXDOMAIN", transient=False)
    resolver = ScriptedResolver({"gone.test": [missing]})
    with DnsCache(resolver, policy=RefreshPolicy(attempts=5), hostnames=["gone.test"]) as cache:
        assert cache.wait_ready(3)
        rec = cache.record("gone.test")
        assert rec is not None and rec.failures == 1 and "NXDOMAIN" in rec.last_error
    assert resolver.calls == ["gone.test"]


def test_close_cuts_retry_backoff_short_and_joins_the_thread() -> None:
    flaky = DnsLookupError("slow.test", "timed out", transient=True)
    resolver = ScriptedResolver({"slow.test": [flaky]})
    policy = RefreshPolicy(attempts=5, retry_initial=30, retry_max=30)
    cache = DnsCache(resolver, policy=policy, hostnames=["slow.test"], thread_name="dns-close-test")
    cache.start()
    cache.start()  # idempotent
    assert wait_for(lambda: len(resolver.calls) == 1)
    started = time.monotonic()
    cache.close()
    assert time.monotonic() - started < 1.0
    assert not cache.running
    assert "dns-close-test" not in [t.name for t in threading.enumerate()]
    cache.close()  # idempotent
    with pytest.raises(RuntimeError):
        cache.start()


def test_reads_normalize_names_and_pass_ip_literals_through() -> None:
    resolver = ScriptedResolver({"api.test": [("10.0.0.1", "10.0.0.2")]})
    with DnsCache(resolver, hostnames=["API.test.", "10.9.9.9", "::1", ""]) as cache:
        assert cache.hostnames == {"api.test"}
        assert cache.wait_ready(3)
        assert cache.addresses("api.test") == ("10.0.0.1", "10.0.0.2")
        assert cache.addresses("Api.Test.") == ("10.0.0.1", "10.0.0.2")
        assert cache.addresses("10.9.9.9") == ("10.9.9.9",)
        assert cache.addresses("unknown.test") == ()
        assert dict(cache.snapshot()) == {"api.test": ("10.0.0.1", "10.0.0.2")}
    assert resolver.calls == ["api.test"]


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    resolver = ScriptedResolver({"a.test": [("10.0.0.1",)], "b.test": [("10.0.0.2",)]})
    seen: list[tuple[str, tuple[str, ...]]] = []

    def broken(hostname: str, addresses: tuple[str, ...]) -> None:
        raise RuntimeError("boom")

    cache = DnsCache(resolver)
    cache.subscribe(broken)
    unsubscribe = cache.subscribe(lambda h, a: seen.append((h, a)))
    with caplog.at_level(logging.ERROR, logger="inmesh.discovery.dns"), cache:
        cache.set_hostnames(["a.test"])
        assert cache.wait_ready(3)
        unsubscribe()
        cache.set_hostnames(["a.test", "b.test"])
        assert cache.wait_ready(3)
        assert cache.addresses("b.test") == ("10.0.0.2",)
    assert seen == [("a.test", ("10.0.0.1",))]
    assert any("subscriber" in r.message for r in caplog.records)


# -- against a real DNS server ---------------------------------------------------------------


def test_resolver_returns_every_a_record_and_the_ttl(dnsmasq: Dnsmasq) -> None:
    dnsmasq.set_hosts("127.0.0.11 svc.inmesh.test\n127.0.0.12 svc.inmesh.test\n")
    answer = dnsmasq.resolver().resolve("SVC.inmesh.test.")
    assert answer.hostname == "svc.inmesh.test"
    assert sorted(answer.addresses) == ["127.0.0.11", "127.0.0.12"]
    assert answer.ttl == 1.0  # --local-ttl


def test_resolver_address_families(dnsmasq: Dnsmasq) -> None:
    dnsmasq.set_hosts("127.0.0.21 dual.inmesh.test\n::21 dual.inmesh.test\n::22 six.inmesh.test\n")
    assert dnsmasq.resolver().resolve("six.inmesh.test").addresses == ("::22",)  # no A: AAAA
    assert dnsmasq.resolver().resolve("dual.inmesh.test").addresses == ("127.0.0.21",)
    both = dnsmasq.resolver(family="all").resolve("dual.inmesh.test")
    assert both.addresses == ("127.0.0.21", "::21")
    assert dnsmasq.resolver(family="v6_only").resolve("dual.inmesh.test").addresses == ("::21",)
    with pytest.raises(DnsLookupError) as info:
        dnsmasq.resolver(family="v4_only").resolve("six.inmesh.test")
    assert not info.value.transient and "no A record" in str(info.value)


def test_resolver_errors_say_whether_to_retry(dnsmasq: Dnsmasq) -> None:
    with pytest.raises(DnsLookupError) as info:
        dnsmasq.resolver().resolve("missing.inmesh.test")
    assert not info.value.transient and "NXDOMAIN" in info.value.reason
    with pytest.raises(DnsLookupError) as info:
        dnsmasq.resolver().resolve("outside.example")  # dnsmasq has no upstream: REFUSED
    assert info.value.transient
    dnsmasq.stop()
    started = time.monotonic()
    with pytest.raises(DnsLookupError) as info:
        dnsmasq.resolver(timeout=0.3).resolve("missing.inmesh.test")
    assert info.value.transient and time.monotonic() - started < 2.0


def test_resolver_reads_the_hosts_file_first(dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    hosts = tmp_path / "etc-hosts"
    hosts.write_text("# local names\n127.0.0.1 localhost\n10.9.8.7 pinned.inmesh.test  # pin\n")
    dnsmasq.set_hosts("127.0.0.31 pinned.inmesh.test\n127.0.0.32 other.inmesh.test\n")
    resolver = dnsmasq.resolver(hosts_file=hosts, hosts_ttl=7.0)
    assert resolver.resolve("localhost") == DnsAnswer("localhost", ("127.0.0.1",), 7.0)
    assert resolver.resolve("pinned.inmesh.test").addresses == ("10.9.8.7",)
    assert resolver.resolve("other.inmesh.test").addresses == ("127.0.0.32",)
    assert resolver.resolve("10.1.1.1").addresses == ("10.1.1.1",)
    hosts.write_text("10.9.8.6 pinned.inmesh.test\n")  # edits are picked up
    assert resolver.resolve("pinned.inmesh.test").addresses == ("10.9.8.6",)


def test_cache_follows_dns_changes_after_the_ttl(dnsmasq: Dnsmasq) -> None:
    dnsmasq.set_hosts("127.0.0.41 api.inmesh.test\n127.0.0.42 api.inmesh.test\n")
    changes: list[tuple[str, tuple[str, ...]]] = []
    changed = threading.Event()
    with DnsCache(dnsmasq.resolver(), policy=FAST) as cache:

        def on_change(hostname: str, addresses: tuple[str, ...]) -> None:
            changes.append((hostname, addresses))
            changed.set()

        cache.subscribe(on_change)
        cache.set_hostnames(["api.inmesh.test"])
        assert cache.wait_ready(3)
        assert sorted(cache.addresses("api.inmesh.test")) == ["127.0.0.41", "127.0.0.42"]
        changed.clear()
        dnsmasq.set_hosts("127.0.0.43 api.inmesh.test\n")
        started = time.monotonic()
        assert changed.wait(3), "no refresh after the 1 s TTL"
        assert time.monotonic() - started < 2.5
        assert cache.addresses("api.inmesh.test") == ("127.0.0.43",)
        rec = cache.record("api.inmesh.test")
        assert rec is not None and rec.ttl == 1.0 and rec.failures == 0
    assert [a for _, a in changes][-1] == ("127.0.0.43",)
    assert len(changes) == 2


def test_cache_keeps_the_last_good_addresses_while_dns_is_down(dnsmasq: Dnsmasq) -> None:
    dnsmasq.set_hosts("127.0.0.51 db.inmesh.test\n")
    with DnsCache(dnsmasq.resolver(timeout=0.2), policy=FAST) as cache:
        cache.set_hostnames(["db.inmesh.test"])
        assert cache.wait_ready(3)
        assert cache.addresses("db.inmesh.test") == ("127.0.0.51",)

        dnsmasq.stop()
        cache.refresh_now()
        assert wait_for(lambda: failures(cache, "db.inmesh.test") >= 1)
        rec = cache.record("db.inmesh.test")
        assert rec is not None and "timed out" in rec.last_error
        assert cache.addresses("db.inmesh.test") == ("127.0.0.51",)

        # the server comes back with another address: picked up on the next try
        dnsmasq.set_hosts("127.0.0.52 db.inmesh.test\n", reload=False)
        dnsmasq.start()
        assert wait_for(lambda: cache.addresses("db.inmesh.test") == ("127.0.0.52",))
        rec = cache.record("db.inmesh.test")
        assert rec is not None and rec.failures == 0


def test_cache_keeps_the_last_good_addresses_on_nxdomain(dnsmasq: Dnsmasq) -> None:
    dnsmasq.set_hosts("127.0.0.61 old.inmesh.test\n")
    with DnsCache(dnsmasq.resolver(), policy=FAST, hostnames=["old.inmesh.test"]) as cache:
        assert cache.wait_ready(3)
        dnsmasq.set_hosts("")
        cache.refresh_now("old.inmesh.test")
        assert wait_for(lambda: failures(cache, "old.inmesh.test") >= 1)
        assert cache.addresses("old.inmesh.test") == ("127.0.0.61",)  # as Envoy's STRICT_DNS


def test_registry_hostnames_resolve_through_the_cache(dnsmasq: Dnsmasq) -> None:
    reg = build_registry(
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: search, namespace: default}
        spec:
          hosts: [search.example.com]
          resolution: DNS
          ports: [{number: 443, name: tls, protocol: TLS}]
          endpoints:
          - {address: node1.inmesh.test}
          - {address: node2.inmesh.test, ports: {tls: 8443}}
          - {address: 127.0.0.70}
        """
    )
    assert reg.dns_hostnames == {"node1.inmesh.test", "node2.inmesh.test"}
    dnsmasq.set_hosts("127.0.0.71 node1.inmesh.test\n127.0.0.72 node2.inmesh.test\n")
    with DnsCache(dnsmasq.resolver(), policy=FAST) as cache:
        cache.set_hostnames(reg.dns_hostnames)
        assert cache.wait_ready(3)
        found = reg.lookup("search.example.com:443", caller_namespace="default")
        assert found is not None
        targets = [
            (a, ep.port) for ep in reg.endpoints(*found) for a in cache.addresses(ep.address)
        ]
    assert targets == [("127.0.0.71", 443), ("127.0.0.72", 8443), ("127.0.0.70", 443)]
