"""When to refresh which hostname: pure bookkeeping for :class:`~inmesh.discovery.dns.DnsCache`.

Nothing here reads a clock, sleeps or touches the network: every method takes
``now`` (seconds on any monotonic clock), so the whole policy is unit-tested
with plain numbers. The rules are Envoy's for ``STRICT_DNS`` clusters with
``respect_dns_ttl`` (what Istio configures for DNS ServiceEntries), bounded:

* a new hostname is due at once;
* after a good answer, the next refresh is after the answer's TTL, clamped to
  ``[min_interval, max_interval]``;
* after a failed refresh the last good addresses are kept, and the next try
  backs off exponentially from ``failure_interval`` up to
  ``max_failure_interval`` (never sooner than ``min_interval``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DnsRecord", "RefreshPolicy", "RefreshSchedule"]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How often hostnames are re-resolved and how failures are retried.

    * ``min_interval``/``max_interval``: bounds on the TTL-driven refresh (s).
    * ``failure_interval``/``max_failure_interval``: first and largest delay
      before refreshing again after a failed refresh (doubling in between).
    * ``attempts``: lookups per refresh before it counts as failed; transient
      errors (timeouts, SERVFAIL) are retried after a random delay of up to
      ``retry_initial`` seconds, the bound doubling per attempt up to
      ``retry_max`` (full jitter). NXDOMAIN is not retried.
    """

    min_interval: float = 1.0
    max_interval: float = 300.0
    failure_interval: float = 1.0
    max_failure_interval: float = 30.0
    attempts: int = 3
    retry_initial: float = 0.1
    retry_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError(
                f"need 0 < min_interval <= max_interval, got {self.min_interval} and {self.max_interval}"
            )
        if not 0 < self.failure_interval <= self.max_failure_interval:
            raise ValueError(
                "need 0 < failure_interval <= max_failure_interval, got "
                f"{self.failure_interval} and {self.max_failure_interval}"
            )
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.retry_initial <= self.retry_max:
            raise ValueError(
                f"need 0 <= retry_initial <= retry_max, got {self.retry_initial} and {self.retry_max}"
            )

    def after_success(self, ttl: float) -> float:
        """Seconds until the next refresh after an answer with this TTL."""
        if math.isnan(ttl):
            ttl = self.max_interval
        return min(max(ttl, self.min_interval), self.max_interval)

    def after_failure(self, failures: int) -> float:
        """Seconds until the next refresh after ``failures`` (>= 1) failed refreshes in a row."""
        delay = self.failure_interval * 2.0 ** min(max(failures - 1, 0), 60)
        return max(min(delay, self.max_failure_interval, self.max_interval), self.min_interval)


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """What is known about one hostname.

    ``addresses`` are the last good ones (kept across failures); ``ttl`` and
    ``resolved_at`` describe the answer that gave them (``None`` before the
    first); ``failures`` counts failed refreshes since, ``last_error`` says
    why the latest failed; ``next_refresh`` is when the next is due.
    """

    hostname: str
    addresses: tuple[str, ...]
    next_refresh: float
    ttl: float | None = None
    resolved_at: float | None = None
    failures: int = 0
    last_error: str = ""
    attempted: bool = False


class _Entry:
    __slots__ = ("addresses", "attempted", "due", "failures", "last_error", "resolved_at", "ttl")

    def __init__(self, due: float) -> None:
        self.addresses: tuple[str, ...] = ()
        self.due = due
        self.ttl: float | None = None
        self.resolved_at: float | None = None
        self.failures = 0
        self.last_error = ""
        self.attempted = False


class RefreshSchedule:
    """The refresh state of a set of hostnames, advanced by explicit calls.

    Not thread-safe: :class:`~inmesh.discovery.dns.DnsCache` holds a lock
    around it. Hostnames are used as given (the cache normalizes them).
    """

    __slots__ = ("_entries", "_policy")

    def __init__(self, policy: RefreshPolicy | None = None) -> None:
        """Start with no hostnames."""
        self._policy = policy or RefreshPolicy()
        self._entries: dict[str, _Entry] = {}

    @property
    def policy(self) -> RefreshPolicy:
        """The intervals in force."""
        return self._policy

    @property
    def hostnames(self) -> frozenset[str]:
        """The hostnames being kept fresh."""
        return frozenset(self._entries)

    def set_hostnames(self, hostnames: Iterable[str], now: float) -> tuple[set[str], set[str]]:
        """Keep exactly ``hostnames`` fresh; returns ``(added, removed)``.

        Added names are due at ``now``; removed ones are forgotten with their addresses.
        """
        wanted = set(hostnames)
        removed = set(self._entries) - wanted
        added = wanted - set(self._entries)
        for name in removed:
            del self._entries[name]
        for name in sorted(added):
            self._entries[name] = _Entry(now)
        return added, removed

    def refresh_now(self, hostname: str | None, now: float) -> None:
        """Make ``hostname`` (every hostname if ``None``) due at ``now``."""
        targets = self._entries.values() if hostname is None else [self._entries.get(hostname)]
        for entry in targets:
            if entry is not None and entry.due > now:
                entry.due = now

    def due(self, now: float) -> list[str]:
        """The hostnames to refresh at ``now``, most overdue first."""
        ready = [(e.due, name) for name, e in self._entries.items() if e.due <= now]
        ready.sort()
        return [name for _, name in ready]

    def next_refresh(self) -> float | None:
        """When the earliest refresh is due, or ``None`` without hostnames."""
        return min((e.due for e in self._entries.values()), default=None)

    def record_success(
        self, hostname: str, addresses: tuple[str, ...], ttl: float, now: float
    ) -> bool:
        """A good answer at ``now``; returns whether the set of addresses changed.

        An empty answer counts as a failure. Unknown hostnames (removed while
        being resolved) are ignored.
        """
        entry = self._entries.get(hostname)
        if entry is None:
            return False
        if not addresses:
            self.record_failure(hostname, "empty answer", now)
            return False
        changed = set(addresses) != set(entry.addresses)
        entry.addresses = addresses
        entry.ttl = ttl
        entry.resolved_at = now
        entry.failures = 0
        entry.last_error = ""
        entry.attempted = True
        entry.due = now + self._policy.after_success(ttl)
        return changed

    def record_failure(self, hostname: str, error: str, now: float) -> float | None:
        """A failed refresh at ``now``: keep the addresses, back off.

        Returns the delay until the next try (``None`` for an unknown hostname).
        """
        entry = self._entries.get(hostname)
        if entry is None:
            return None
        entry.failures += 1
        entry.last_error = error
        entry.attempted = True
        delay = self._policy.after_failure(entry.failures)
        entry.due = now + delay
        return delay

    def addresses(self, hostname: str) -> tuple[str, ...]:
        """The last good addresses of ``hostname`` (empty if none yet)."""
        entry = self._entries.get(hostname)
        return entry.addresses if entry is not None else ()

    def record(self, hostname: str) -> DnsRecord | None:
        """A snapshot of ``hostname``'s state, or ``None`` if it is not tracked."""
        e = self._entries.get(hostname)
        if e is None:
            return None
        return DnsRecord(
            hostname=hostname,
            addresses=e.addresses,
            next_refresh=e.due,
            ttl=e.ttl,
            resolved_at=e.resolved_at,
            failures=e.failures,
            last_error=e.last_error,
            attempted=e.attempted,
        )

    def ready(self) -> bool:
        """Whether every hostname has been tried at least once (successfully or not)."""
        return all(e.attempted for e in self._entries.values())
