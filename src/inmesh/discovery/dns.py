"""Background DNS resolution of endpoint hostnames.

Endpoints of DNS and DNS_ROUND_ROBIN ServiceEntries carry hostnames (their
``address``, or the service host itself when the entry lists no endpoints:
:attr:`Registry.dns_hostnames <inmesh.discovery.registry.Registry.dns_hostnames>`).
Connecting needs addresses, and a request must never wait for DNS, so:

* :class:`DnsResolver` answers one hostname with dnspython (A/AAAA, system
  ``resolv.conf`` or given nameservers, plus the hosts file), raising
  :class:`DnsLookupError`;
* :class:`DnsCache` keeps a set of hostnames fresh on one daemon thread, honours
  TTLs within bounds, retries failed lookups with tenacity, keeps the last good
  addresses when a refresh fails, and answers :meth:`DnsCache.addresses`
  without locks or I/O. Its owner starts and closes it (or uses ``with``).

The "what to refresh when" logic is pure and lives in ``_schedule.py``
(:class:`RefreshSchedule`, :class:`RefreshPolicy`).

Nothing happens at import: dnspython and tenacity are imported on first use,
and there is no module-level state. Logs go to ``inmesh.discovery.dns``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from inmesh._clock import MONOTONIC, Clock

from ._hosts import is_ip
from ._resolver import DnsAnswer, DnsLookupError, DnsResolver, Family, Resolver
from ._schedule import DnsRecord, RefreshPolicy, RefreshSchedule

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "DnsAnswer",
    "DnsCache",
    "DnsLookupError",
    "DnsRecord",
    "DnsResolver",
    "Family",
    "RefreshPolicy",
    "RefreshSchedule",
    "Resolver",
    "Subscriber",
]

logger = logging.getLogger("inmesh.discovery.dns")

Subscriber = Callable[[str, tuple[str, ...]], None]
"""``callback(hostname, addresses)``, called on the refresher thread when the
set of addresses of a hostname changes."""

_EMPTY: Mapping[str, tuple[str, ...]] = MappingProxyType({})


def _normalize(hostname: str) -> str:
    return hostname.strip().rstrip(".").lower()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DnsLookupError) and exc.transient


class DnsCache:
    """Keeps the addresses of a set of hostnames fresh, on one background thread.

    >>> with DnsCache(DnsResolver()) as cache:
    ...     cache.set_hostnames(registry.dns_hostnames)
    ...     cache.wait_ready(5.0)
    ...     cache.addresses("api.example.com")
    ('93.184.215.14',)

    * ``resolver``: defaults to a :class:`DnsResolver` on the system configuration.
    * ``policy``: refresh bounds and retries (:class:`RefreshPolicy`).
    * ``clock``: the monotonic clock the schedule runs on.

    Lifecycle: :meth:`start` launches the daemon thread; :meth:`close` stops it
    and joins it (waiting at most for the lookup in flight). Both are
    idempotent; ``with`` does both. Reads (:meth:`addresses`,
    :meth:`snapshot`) never block and never do I/O, and keep working after
    :meth:`close` with the last known addresses. Subscribers are called on the
    refresher thread: they must be quick and must not block (from async code,
    hand over with ``loop.call_soon_threadsafe``).
    """

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        policy: RefreshPolicy | None = None,
        clock: Clock = MONOTONIC,
        hostnames: Iterable[str] = (),
        thread_name: str = "inmesh-dns",
    ) -> None:
        """Prepare the cache; nothing runs until :meth:`start`."""
        self._resolver: Resolver = resolver if resolver is not None else DnsResolver()
        self._policy = policy or RefreshPolicy()
        self._clock = clock
        self._thread_name = thread_name
        self._cond = threading.Condition()
        self._schedule = RefreshSchedule(self._policy)
        self._view: Mapping[str, tuple[str, ...]] = _EMPTY
        self._subscribers: tuple[Subscriber, ...] = ()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._retrying: tenacity.Retrying | None = None
        if hostnames:
            self.set_hostnames(hostnames)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the refresher thread (no-op if running); raises ``RuntimeError`` after :meth:`close`."""
        with self._cond:
            if self._closing.is_set():
                raise RuntimeError("DnsCache is closed")
            if self._thread is not None:
                return
            self._retrying = self._make_retrying()
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop refreshing and join the thread (at most ``timeout`` seconds if given)."""
        with self._cond:
            self._closing.set()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the refresher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> DnsCache:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what to resolve ---------------------------------------------------------

    def set_hostnames(self, hostnames: Iterable[str]) -> None:
        """Keep exactly these hostnames fresh (IP literals are skipped: they need no lookup).

        New ones are resolved at once; removed ones are forgotten.
        """
        wanted = {n for n in map(_normalize, hostnames) if n and not is_ip(n)}
        with self._cond:
            _, removed = self._schedule.set_hostnames(wanted, self._clock.now())
            if removed:
                self._view = MappingProxyType(
                    {k: v for k, v in self._view.items() if k not in removed}
                )
            self._cond.notify_all()

    @property
    def hostnames(self) -> frozenset[str]:
        """The hostnames being kept fresh (normalized: lower case, no trailing dot)."""
        with self._cond:
            return self._schedule.hostnames

    def refresh_now(self, hostname: str | None = None) -> None:
        """Resolve ``hostname`` (every hostname if ``None``) again without waiting for its TTL."""
        with self._cond:
            name = None if hostname is None else _normalize(hostname)
            self._schedule.refresh_now(name, self._clock.now())
            self._cond.notify_all()

    # -- reads ---------------------------------------------------------------------

    def addresses(self, hostname: str) -> tuple[str, ...]:
        """The current addresses of ``hostname``: lock-free, never blocks.

        An IP literal is its own address. Empty until the first good answer.
        """
        view = self._view
        found = view.get(hostname)
        if found is not None:
            return found
        name = _normalize(hostname)
        found = view.get(name)
        if found is not None:
            return found
        return (name,) if is_ip(name) else ()

    def snapshot(self) -> Mapping[str, tuple[str, ...]]:
        """Every hostname with addresses, as an immutable mapping."""
        return self._view

    def record(self, hostname: str) -> DnsRecord | None:
        """What is known about ``hostname`` (addresses, TTL, failures), or ``None``."""
        with self._cond:
            return self._schedule.record(_normalize(hostname))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(hostname, addresses)`` on every change; returns the unsubscribe function."""
        with self._cond:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._cond:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every hostname was tried once (resolved or failed); False on timeout or close."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._closing.is_set() or self._schedule.ready(), timeout
                )
                and not self._closing.is_set()
            )

    # -- the refresher thread ------------------------------------------------------

    def _make_retrying(self) -> tenacity.Retrying:
        import tenacity

        p = self._policy
        return tenacity.Retrying(
            sleep=self._sleep,
            stop=self._stop_retrying,
            # full jitter: random in [0, min(retry_max, retry_initial * 2**attempt)]
            wait=tenacity.wait_random_exponential(multiplier=p.retry_initial, max=p.retry_max),
            retry=tenacity.retry_if_exception(_is_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)  # close() cuts retry back-offs short

    def _stop_retrying(self, state: tenacity.RetryCallState) -> bool:
        return self._closing.is_set() or state.attempt_number >= self._policy.attempts

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.debug("DNS lookup attempt %d failed (%s); retrying", state.attempt_number, exc)

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                with self._cond:
                    now = self._clock.now()
                    due = self._schedule.due(now)
                    if not due:
                        nxt = self._schedule.next_refresh()
                        wait = None if nxt is None else max(nxt - now, 0.001)
                        if not self._closing.is_set():
                            self._cond.wait(wait)
                        continue
                for hostname in due:
                    if self._closing.is_set():
                        return
                    self._refresh(hostname)
        except Exception:  # a bug: say so loudly rather than stop refreshing silently
            logger.exception("DNS refresher thread crashed; addresses are no longer refreshed")
            raise

    def _refresh(self, hostname: str) -> None:
        assert self._retrying is not None
        answer: DnsAnswer | None = None
        error: BaseException | None = None
        delay: float | None = None
        try:
            answer = self._retrying(self._resolver.resolve, hostname)
        except DnsLookupError as exc:
            error = exc
        except Exception as exc:
            logger.exception("resolver %r failed on %s", self._resolver, hostname)
            error = exc
        if self._closing.is_set():  # cut short by close(): not a DNS failure
            return
        now = self._clock.now()
        changed = False
        with self._cond:
            before = self._schedule.record(hostname)
            if before is None:  # forgotten while we resolved it
                return
            if answer is not None:
                changed = self._schedule.record_success(hostname, answer.addresses, answer.ttl, now)
                if answer.addresses and answer.addresses != before.addresses:
                    self._view = MappingProxyType({**self._view, hostname: answer.addresses})
            else:
                delay = self._schedule.record_failure(hostname, str(error), now)
            after = self._schedule.record(hostname)
            subscribers = self._subscribers
            self._cond.notify_all()
        if after is None:
            return
        if answer is None:
            reason = error.reason if isinstance(error, DnsLookupError) else repr(error)
            log = logger.warning if after.failures == 1 else logger.debug
            log(
                "DNS refresh of %s failed (%s); keeping %d last good address(es); next try in %.1fs",
                hostname,
                reason,
                len(after.addresses),
                delay or 0.0,
            )
            return
        if before.failures:
            logger.info(
                "DNS refresh of %s succeeded again after %d failure(s)", hostname, before.failures
            )
        if changed:
            logger.debug("%s -> %s (ttl %s)", hostname, ", ".join(after.addresses), answer.ttl)
            for callback in subscribers:
                try:
                    callback(hostname, after.addresses)
                except Exception:
                    logger.exception("DNS subscriber %r failed on %s", callback, hostname)
