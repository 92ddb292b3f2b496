"""Where a workload's certificate comes from, and how it rotates.

The seam is :class:`CertificateSource`, two verbs::

    cert = source.current()                 # the WorkloadCertificate to use now
    unsubscribe = source.subscribe(on_new)  # on_new(cert) after every rotation

Implementations:

* :class:`DirectorySource` reads Istio's workload files (``cert-chain.pem``,
  ``key.pem``, ``root-cert.pem``) from a directory and re-reads them when they
  change, as written by Istio's agent (``OUTPUT_CERTS``), cert-manager's CSI
  driver, SPIRE's helper or ``inmesh cert issue``;
* :class:`CASource` issues its own short-lived certificate from a
  :class:`~inmesh.identity.ca.LocalCA` (or any
  :class:`~inmesh.identity.ca.CertificateIssuer`) and renews it at half-life;
* :class:`MemorySource` holds a certificate given in code; :meth:`MemorySource.update`
  rotates it (tests, embedding).

Rules every source follows:

* explicit lifecycle: nothing happens before :meth:`start` (which raises
  :class:`~inmesh.errors.CertificateError` when the first certificate is
  expired, not yet valid, of the wrong trust domain, does not match its key or
  does not chain to its bundle); :meth:`close` stops and joins the background
  thread; both work as a context manager;
* a bad rotation never replaces a good certificate: the error is logged on the
  ``inmesh.identity`` logger and counted in :attr:`counters`, and the last good
  certificate stays in use;
* subscribers are called on the source's thread (the poller, the renewer, or
  the caller of :meth:`refresh` / :meth:`tick` / :meth:`update`); an exception
  in one is logged and counted and does not stop the others;
* certificate validity is judged against the injected ``clock``, which here
  must return **wall-clock** seconds since the epoch (:class:`WallClock`), not
  the monotonic clock of :mod:`inmesh._clock`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar, runtime_checkable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from inmesh._clock import Clock
from inmesh.errors import CertificateError, IdentityError
from inmesh.identity import _files
from inmesh.identity.ca import DEFAULT_CERT_TTL, CertificateIssuer
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.spiffe import SpiffeId

__all__ = [
    "WALL_CLOCK",
    "CASource",
    "CertificateSource",
    "DirectorySource",
    "MemorySource",
    "SourceCounters",
    "Subscriber",
    "WallClock",
]

logger = logging.getLogger("inmesh.identity")

_S = TypeVar("_S", bound="_SourceBase")

Subscriber = Callable[[WorkloadCertificate], None]
"""A rotation callback: receives the new certificate."""


@runtime_checkable
class CertificateSource(Protocol):
    """The workload's current certificate, and news of rotations.

    ``current()`` is cheap (a reference read) and always returns a certificate
    that passed the source's checks once started. ``subscribe(cb)`` registers
    ``cb(cert)`` to run after every rotation and returns a function that
    unregisters it.

    Example, a TLS server context that follows rotations::

        with DirectorySource("/etc/certs") as source:
            tls = ServerTLS(source)          # subscribes
            serve(ssl_context=tls.context)
    """

    def current(self) -> WorkloadCertificate:
        """The certificate to use for new connections now."""
        ...

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(cert)`` after each rotation; return a function that unsubscribes."""
        ...


class WallClock:
    """Wall-clock time, :func:`time.time`: what certificate validity is measured in."""

    __slots__ = ()

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()


WALL_CLOCK = WallClock()
"""The real wall clock (stateless)."""


@dataclass
class SourceCounters:
    """What happened in a source, for metrics and tests.

    * ``loads``: certificates accepted, the first one included;
    * ``rotations``: certificates accepted after the first;
    * ``errors``: failed loads or renewals (bad files, failed issuance), each counted once;
    * ``callback_errors``: subscriber callbacks that raised;
    * ``expired``: times the certificate in use was seen expired with no replacement.
    """

    loads: int = 0
    rotations: int = 0
    errors: int = 0
    callback_errors: int = 0
    expired: int = 0


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


class _SourceBase:
    """Lifecycle, subscribers, versioning and counters shared by the sources."""

    _thread_name = "inmesh-identity"

    def __init__(self, *, trust_domain: str | None, clock: Clock) -> None:
        self._expected_td = trust_domain
        self._clock = clock
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        self._current: WorkloadCertificate | None = None
        self._version = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._expired_version = 0
        self.counters = SourceCounters()
        """The source's :class:`SourceCounters`."""

    # -- public ------------------------------------------------------------

    def current(self) -> WorkloadCertificate:
        """The certificate in use. Raises :class:`IdentityError` before :meth:`start`."""
        cert = self._current
        if cert is None:
            raise IdentityError(
                f"{type(self).__name__} is not started: call start() or use it in a 'with' block"
            )
        return cert

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(cert)`` after every rotation; returns the unsubscribe function."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                subs = list(self._subscribers)
                if callback in subs:
                    subs.remove(callback)
                self._subscribers = tuple(subs)

        return unsubscribe

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._started

    def close(self) -> None:
        """Stop the background thread and wait for it. Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._started = False

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:  # pragma: no cover - overridden
        """Load the first certificate (raising on a bad one) and start rotating."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------

    def _now(self) -> dt.datetime:
        return _utc(self._clock.now())

    def _validate(self, cert: WorkloadCertificate) -> None:
        cert.check(now=self._now(), trust_domain=self._expected_td)

    def _accept(self, cert: WorkloadCertificate) -> WorkloadCertificate:
        """Install ``cert`` as the next version and notify subscribers."""
        with self._lock:
            self._version += 1
            cert = cert.with_version(self._version)
            first = self._current is None
            self._current = cert
            self.counters.loads += 1
            if not first:
                self.counters.rotations += 1
            subscribers = self._subscribers
        if first:
            logger.info("%s: loaded %r", self._describe(), cert)
        else:
            logger.info("%s: rotated to %r", self._describe(), cert)
            for cb in subscribers:
                try:
                    cb(cert)
                except Exception:
                    with self._lock:
                        self.counters.callback_errors += 1
                    logger.exception("%s: a rotation subscriber failed", self._describe())
        return cert

    def _count_error(self) -> None:
        with self._lock:
            self.counters.errors += 1

    def _check_expiry(self) -> None:
        cert = self._current
        if cert is None or cert.version == self._expired_version:
            return
        if self._now() > cert.not_after:
            self._expired_version = cert.version
            with self._lock:
                self.counters.expired += 1
            logger.error(
                "%s: the certificate in use expired at %s and no valid replacement is available; "
                "peers will refuse it",
                self._describe(),
                f"{cert.not_after:%Y-%m-%dT%H:%M:%SZ}",
            )

    def _start_thread(self, target: Callable[[], None]) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=target, name=self._thread_name, daemon=True)
        self._thread.start()

    def _describe(self) -> str:
        return type(self).__name__


class MemorySource(_SourceBase):
    """A certificate handed over in code; :meth:`update` rotates it.

    No thread. ``start()`` checks the first certificate like the other sources.
    """

    def __init__(
        self,
        certificate: WorkloadCertificate,
        *,
        trust_domain: str | None = None,
        clock: Clock = WALL_CLOCK,
    ) -> None:
        super().__init__(trust_domain=trust_domain, clock=clock)
        self._initial = certificate
        self._update_lock = threading.RLock()

    def start(self) -> None:
        """Check and install the initial certificate. Raises :class:`CertificateError`."""
        with self._update_lock:
            if self._current is None:
                self._validate(self._initial)
                self._accept(self._initial)
            self._started = True

    def update(self, certificate: WorkloadCertificate) -> WorkloadCertificate:
        """Rotate to ``certificate`` (checked first; raises :class:`CertificateError`).

        Subscribers have run when this returns.
        """
        with self._update_lock:
            try:
                self._validate(certificate)
            except CertificateError:
                self._count_error()
                raise
            return self._accept(certificate)


_FileSig = tuple[tuple[int, int, int] | None, ...]


class DirectorySource(_SourceBase):
    """Istio's workload files in a directory, re-read when they change.

    ``directory`` holds ``cert-chain.pem`` (leaf then intermediates),
    ``key.pem`` and ``root-cert.pem`` (names overridable). A daemon thread
    polls every ``poll_interval`` seconds (0 disables it; call :meth:`refresh`)
    the inode, size and mtime of the three files, so both in-place writes and
    symlink swaps (Kubernetes secret volumes) are seen. Changed files are read
    and checked; a certificate that fails (half-written, key not yet
    matching, expired, wrong trust domain...) is logged and counted, and the
    last good one stays in use; the same files are not retried until they
    change again. Because the three files are replaced one at a time, a
    failure on files modified less than ``settle`` seconds ago is first
    retried at the next poll, so an ordinary rotation never counts as an error.
    """

    _thread_name = "inmesh-identity-dir"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        trust_domain: str | None = None,
        poll_interval: float = 0.5,
        clock: Clock = WALL_CLOCK,
        cert_chain: str = _files.CERT_CHAIN,
        key: str = _files.KEY,
        trust_bundle: str = _files.ROOT_CERT,
        settle: float = 1.0,
    ) -> None:
        super().__init__(trust_domain=trust_domain, clock=clock)
        self.directory = Path(directory)
        """The watched directory."""
        self.poll_interval = poll_interval
        """Seconds between checks of the files (0: no thread)."""
        self.settle = settle
        """Changed files that fail to load while younger than this (seconds) are retried
        silently: a writer may be between two of the three files."""
        self._names = (cert_chain, key, trust_bundle)
        self._seen: _FileSig | None = None
        self._refresh_lock = threading.RLock()  # subscribers run under it, and may call refresh()

    def _describe(self) -> str:
        return f"DirectorySource({str(self.directory)!r})"

    def _signature(self) -> _FileSig:
        sig: list[tuple[int, int, int] | None] = []
        for name in self._names:
            try:
                st = os.stat(self.directory / name)
            except OSError:
                sig.append(None)
            else:
                sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    @staticmethod
    def _age(sig: _FileSig) -> float:
        """Seconds since the newest of the files was modified (file times are real time)."""
        mtimes = [entry[2] for entry in sig if entry is not None]
        return time.time() - max(mtimes) / 1e9 if mtimes else float("inf")

    def _load(self) -> WorkloadCertificate:
        chain, key, bundle = self._names
        cert = WorkloadCertificate.from_directory(
            self.directory, cert_chain=chain, key=key, trust_bundle=bundle
        )
        try:
            self._validate(cert)
        except CertificateError as exc:
            raise CertificateError(f"{self.directory}: {exc}") from None
        return cert

    def start(self) -> None:
        """Read and check the files (raises :class:`CertificateError`), then start polling."""
        if self._started:
            return
        with self._refresh_lock:
            sig = self._signature()
            cert = self._load()
            self._seen = sig
            self._accept(cert)
        self._started = True
        if self.poll_interval > 0:
            self._start_thread(self._run)

    def refresh(self) -> bool:
        """Re-read the files if they changed; True when a new certificate was taken."""
        if self._current is None:
            raise IdentityError(f"{self._describe()} is not started")
        with self._refresh_lock:
            sig = self._signature()  # taken before reading: a write during the read shows next time
            if sig == self._seen:
                return False
            try:
                cert = self._load()
            except CertificateError as exc:
                if self._age(sig) < self.settle:
                    # probably mid-rotation (the key written, the chain not yet): retry
                    # at the next poll before calling it an error
                    logger.debug("%s: changed files not usable yet: %s", self._describe(), exc)
                    return False
                self._seen = sig
                self._count_error()
                logger.warning(
                    "%s: ignoring the changed files, keeping the certificate in use (version %d): %s",
                    self._describe(),
                    self.current().version,
                    exc,
                )
                return False
            self._seen = sig
            cur = self.current()
            if (cert.cert_chain_pem, cert.key_pem, cert.trust_bundle_pem) == (
                cur.cert_chain_pem,
                cur.key_pem,
                cur.trust_bundle_pem,
            ):
                return False  # touched or rewritten with the same content
            self._accept(cert)
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
                self._check_expiry()
            except Exception:  # never let the poller die
                self._count_error()
                logger.exception("%s: unexpected error while polling", self._describe())


class _StopRequestedError(Exception):
    """Raised inside a retry sleep when the source is closing."""


class CASource(_SourceBase):
    """A certificate issued in-process and renewed at half-life.

    At :meth:`start` it asks ``ca`` for a certificate for ``spiffe_id`` valid
    ``ttl`` (24 h by default, Istio's default) and checks it. A background
    thread renews it once ``renew_at`` of its lifetime has passed (half-life,
    as Istio's agent does with ``SECRET_GRACE_PERIOD_RATIO=0.5``). A failed
    renewal is retried ``retry_attempts`` times with exponential back-off
    (tenacity, starting at ``retry_wait`` seconds); if all fail, the error is
    logged and counted, the current certificate stays, and the next check
    (``check_interval`` seconds later) tries again.

    The renewal decision uses the injected ``clock`` only: tests pass a fake
    clock and call :meth:`tick` (or let the thread run with a short
    ``check_interval``) without sleeping.
    """

    _thread_name = "inmesh-identity-ca"

    def __init__(
        self,
        ca: CertificateIssuer,
        spiffe_id: SpiffeId | str,
        *,
        ttl: dt.timedelta = DEFAULT_CERT_TTL,
        trust_domain: str | None = None,
        clock: Clock = WALL_CLOCK,
        renew_at: float = 0.5,
        check_interval: float = 30.0,
        retry_attempts: int = 3,
        retry_wait: float = 1.0,
    ) -> None:
        super().__init__(trust_domain=trust_domain, clock=clock)
        if not 0.0 < renew_at < 1.0:
            raise ValueError(f"renew_at must be between 0 and 1, got {renew_at}")
        if retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        self.ca = ca
        """The issuer."""
        self.spiffe_id = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        """The identity requested."""
        self.ttl = ttl
        """The requested lifetime of each certificate."""
        self.renew_at = renew_at
        """The fraction of the lifetime after which the certificate is renewed."""
        self.check_interval = check_interval
        """The longest the renewer sleeps between two looks at the clock."""
        self._retry_attempts = retry_attempts
        self._retry_wait = retry_wait
        self._tick_lock = threading.RLock()  # subscribers run under it, and may call tick()

    def _describe(self) -> str:
        return f"CASource({self.spiffe_id})"

    def _issue(self) -> WorkloadCertificate:
        cert = self.ca.issue(self.spiffe_id, ttl=self.ttl, now=self._now())
        if cert.spiffe_id != self.spiffe_id:
            raise CertificateError(
                f"the CA issued {cert.spiffe_id}, not the requested {self.spiffe_id}"
            )
        self._validate(cert)
        return cert

    def start(self) -> None:
        """Issue and check the first certificate (raises :class:`CertificateError`), start renewing."""
        if self._started:
            return
        if self._expected_td is not None and self.spiffe_id.trust_domain != self._expected_td:
            raise CertificateError(
                f"the requested SPIFFE ID {self.spiffe_id} is in trust domain "
                f"{self.spiffe_id.trust_domain!r}, expected {self._expected_td!r}"
            )
        try:
            cert = self._issue()
        except CertificateError:
            raise
        except Exception as exc:
            raise CertificateError(
                f"{self._describe()}: issuing the first certificate failed: {exc}"
            ) from exc
        self._accept(cert)
        self._started = True
        self._start_thread(self._run)

    def renewal_time(self) -> dt.datetime:
        """When the certificate in use is due for renewal."""
        cert = self.current()
        return cert.not_before + (cert.not_after - cert.not_before) * self.renew_at

    def renewal_due(self) -> bool:
        """True once ``renew_at`` of the current certificate's lifetime has passed."""
        return self._now() >= self.renewal_time()

    def tick(self) -> bool:
        """Renew if due (with retries). True when a new certificate was installed.

        The background thread calls this; tests call it after moving a fake clock.
        """
        with self._tick_lock:
            if not self.renewal_due():
                return False
            return self._renew()

    def _renew(self) -> bool:
        retrying = Retrying(
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_exponential(multiplier=self._retry_wait, max=max(self._retry_wait, 60.0)),
            retry=retry_if_exception_type(Exception),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            cert = retrying(self._issue)
        except _StopRequestedError:
            return False
        except Exception as exc:
            self._count_error()
            logger.error(
                "%s: renewing the certificate failed after %d attempts, keeping version %d "
                "(valid until %s): %s",
                self._describe(),
                self._retry_attempts,
                self.current().version,
                f"{self.current().not_after:%Y-%m-%dT%H:%M:%SZ}",
                exc,
            )
            return False
        self._accept(cert)
        return True

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _StopRequestedError

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "%s: renewal attempt %d failed (%s), retrying",
            self._describe(),
            state.attempt_number,
            exc,
        )

    def _seconds_until_renewal(self) -> float:
        return (self.renewal_time() - self._now()).total_seconds()

    def _run(self) -> None:
        wait = min(max(self._seconds_until_renewal(), 0.0), self.check_interval)
        while not self._stop.wait(wait):
            try:
                self.tick()
                self._check_expiry()
            except Exception:
                self._count_error()
                logger.exception("%s: unexpected error in the renewer", self._describe())
            remaining = self._seconds_until_renewal()
            # still due after a tick: the renewal failed, or the CA can only issue
            # certificates that are born half-used (it expires soon); do not spin
            wait = self.check_interval if remaining <= 0 else min(remaining, self.check_interval)
