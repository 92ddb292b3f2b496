"""What the async and sync connectors share; no I/O.

* :class:`PoolLimits`: the connection-pool knobs of one destination.
* :func:`verify_server`: the identity check run right after the handshake,
  before the stream is handed to the HTTP layer (mesh mTLS: exactly one SPIFFE
  ID, among the expected ones; TLS origination: Envoy's SAN matching).
* TLS session resumption: :class:`SessionCache` holds the last resumable
  session per (endpoint, :class:`~inmesh.upstream.tls.UpstreamTLS`);
  :func:`install_session_hooks` makes a plain ``ssl.SSLContext`` offer the
  session that :func:`offer_session` put in a context variable, so the
  context keeps its exact type (anyio hands ``wrap_bio`` to a worker thread
  for any subclass; see ``benchmarks/tls.py`` for what that costs).
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
import ssl
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from inmesh.identity.spiffe import SpiffeId
from inmesh.identity.tls import peer_spiffe_id
from inmesh.upstream.tls import UpstreamTLS, UpstreamTLSMode

from ._errors import UpstreamIdentityError

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_SESSIONS",
    "PEER_ID",
    "ConnectorStats",
    "Destination",
    "PoolLimits",
    "SessionCache",
    "SessionKey",
    "dns_name_matches",
    "install_session_hooks",
    "keepalive_options",
    "offer_session",
    "san_matches",
    "verify_server",
]

CONNECT_OBSERVER: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "inmesh_connect_observer", default=None
)
"""Set by the transport around an attempt: an object with ``connect_started()`` and
``connect_finished()`` (a circuit-breaker ticket), told when the attempt has to
set up a new connection (TCP connect and TLS handshake), as Envoy counts such a
request as pending."""

PEER_ID = "inmesh.peer_id"
"""``stream.get_extra_info(PEER_ID)``: the verified SPIFFE ID of the server (mesh mTLS), else ``None``."""

Destination = Hashable
"""A destination key: any hashable value naming where requests go, such as
Envoy's cluster name ``outbound|8080||backend.default.svc.cluster.local``."""

MAX_SESSIONS = 1024
"""How many endpoints' TLS sessions a connector remembers."""


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Connection-pool settings of one destination.

    * ``max_connections``: connections open at once (a request waits for one
      up to its ``pool`` timeout); ``None`` is unlimited (Envoy's default
      circuit breaker is practically unlimited too; admission control is
      inmesh's, not the pool's).
    * ``max_keepalive_connections``: idle connections kept (``None``: all).
    * ``keepalive_expiry``: seconds an idle connection is kept, Istio's
      ``connectionPool.http.idleTimeout`` default of one hour.
    * ``max_requests_per_connection``: a connection is closed after this many
      requests (``connectionPool.http.maxRequestsPerConnection``; ``None``:
      no limit).
    * ``max_connection_duration``: seconds after which a connection is no
      longer reused (``connectionPool.tcp.maxConnectionDuration``; ``None``:
      no limit).
    * ``socket_options``: set on each new connection's socket
      (``connectionPool.tcp.tcpKeepalive``, see :func:`keepalive_options`).
    """

    max_connections: int | None = None
    max_keepalive_connections: int | None = None
    keepalive_expiry: float | None = 3600.0
    max_requests_per_connection: int | None = None
    max_connection_duration: float | None = None
    socket_options: tuple[tuple[int, int, int], ...] = ()
    """``(level, option, value)`` set on every new socket (see :func:`keepalive_options`)."""


def keepalive_options(
    probes: int | None = None, idle: int | None = None, interval: int | None = None
) -> tuple[tuple[int, int, int], ...]:
    """Socket options for TCP keep-alive: SO_KEEPALIVE on, and the counts and
    times given (whole seconds; ``None``, or a time below one second, keeps
    the OS default). Options this platform lacks are left out."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for option, value in (
        (getattr(socket, "TCP_KEEPCNT", None), probes),
        # Linux's TCP_KEEPIDLE is macOS's TCP_KEEPALIVE
        (getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)), idle),
        (getattr(socket, "TCP_KEEPINTVL", None), interval),
    ):
        if option is not None and value is not None and value >= 1:
            options.append((socket.IPPROTO_TCP, option, value))
    return tuple(options)


DEFAULT_LIMITS = PoolLimits()
"""The limits used when a destination gives none."""


@dataclass(frozen=True, slots=True)
class ConnectorStats:
    """A snapshot of a connector, for tests, metrics and debugging.

    ``pools``: pools new requests go to; ``draining``: pools of a previous
    certificate, closed once idle; ``sessions``: resumable TLS sessions kept;
    ``identity_version``: the workload certificate version in use (``None``
    before the first mesh connection).
    """

    pools: int
    draining: int
    sessions: int
    identity_version: int | None


# -- identity checks ----------------------------------------------------------


def dns_name_matches(pattern: str, name: str) -> bool:
    """Envoy's ``dnsNameMatch``: equal ignoring case, or ``*.rest`` covering one label.

    >>> dns_name_matches("*.example.com", "api.example.com"), dns_name_matches("*.example.com", "a.b.example.com")
    (True, False)
    """
    pattern, name = pattern.lower(), name.lower()
    if pattern == name:
        return True
    if pattern.startswith("*.") and len(name) > len(pattern) - 1:
        head = name[: len(name) - len(pattern) + 1]
        return "." not in head and name.endswith(pattern[1:])
    return False


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b.strip())
    except ValueError:
        return False


def san_matches(expected: str, sans: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``expected`` equals one of a certificate's SANs, as Envoy's exact
    matcher without a SAN type: DNS names with wildcard matching, URIs and
    e-mail addresses exactly, IP addresses by value."""
    for kind, value in sans:
        if kind == "DNS":
            if dns_name_matches(value, expected):
                return True
        elif kind == "IP Address":
            if _same_ip(expected, value):
                return True
        elif value == expected:
            return True
    return False


def verify_server(
    ssl_object: Any,
    tls: UpstreamTLS,
    *,
    endpoint: tuple[str, int] | None = None,
    destination: Hashable | None = None,
) -> SpiffeId | None:
    """Check the server of a finished handshake against ``tls``; return its SPIFFE ID.

    Mesh mTLS: the certificate must carry exactly one SPIFFE ID, one of
    ``tls.subject_alt_names`` when that is not empty. TLS origination: unless
    ``insecure_skip_verify``, one of ``tls.subject_alt_names`` (when not
    empty) must match a SAN (:func:`san_matches`); the SPIFFE ID is not
    looked at and ``None`` is returned. Raises :class:`UpstreamIdentityError`.
    ``ssl_object`` is an ``ssl.SSLObject`` or the object httpcore's sync
    backend reports; the chain itself was verified by OpenSSL.
    """
    expected = tls.subject_alt_names
    if tls.mode is UpstreamTLSMode.ISTIO_MUTUAL:
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        sid = peer_spiffe_id(der) if der else None
        if sid is not None and (not expected or sid.uri in expected):
            return sid
        names = _names(ssl_object) if der else ()
        if sid is None:
            problem = "presented no certificate" if not der else "presented no single SPIFFE ID"
        else:
            problem = f"presented SPIFFE ID {sid.uri}"
        raise _mismatch(problem, sid.uri if sid else None, names, expected, endpoint, destination)
    if tls.insecure_skip_verify or not expected or tls.mode is not UpstreamTLSMode.TLS:
        return None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    sans: tuple[tuple[str, str], ...] = tuple((cert or {}).get("subjectAltName", ()))
    if any(san_matches(name, sans) for name in expected):
        return None
    names = tuple(f"{kind}:{value}" for kind, value in sans)
    problem = (
        f"presented [{', '.join(names)}]" if names else "presented no subject alternative name"
    )
    raise _mismatch(problem, None, names, expected, endpoint, destination)


def _names(ssl_object: Any) -> tuple[str, ...]:
    try:
        cert = ssl_object.getpeercert()
    except (ValueError, ssl.SSLError):  # pragma: no cover - handshake is done
        return ()
    return tuple(f"{kind}:{value}" for kind, value in (cert or {}).get("subjectAltName", ()))


def _mismatch(
    problem: str,
    peer: str | None,
    names: tuple[str, ...],
    expected: frozenset[str],
    endpoint: tuple[str, int] | None,
    destination: Hashable | None,
) -> UpstreamIdentityError:
    listed = sorted(expected)
    where = "the server" if endpoint is None else f"the server at {endpoint[0]}:{endpoint[1]}"
    wanted = f"expected one of [{', '.join(listed)}]" if listed else "expected a SPIFFE ID"
    return UpstreamIdentityError(
        f"{where} {problem}; {wanted}",
        endpoint=endpoint,
        destination=destination,
        peer=peer,
        peer_names=names,
        expected=tuple(listed),
    )


# -- TLS session resumption -----------------------------------------------------

SessionKey = tuple[str, int, UpstreamTLS]
"""``(address, port, tls)``: whose sessions may be offered to whom."""


class SessionCache:
    """The newest resumable ``ssl.SSLSession`` per :data:`SessionKey`, bounded.

    Sessions belong to the ``SSLContext`` that made them, and a resumed
    handshake does not re-verify the server's chain, so the connector
    :meth:`clear` s the cache whenever the workload certificate or the trust
    bundle rotates. Thread-safe; reads take no lock.
    """

    def __init__(self, max_entries: int = MAX_SESSIONS) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: dict[SessionKey, ssl.SSLSession] = {}

    def get(self, key: SessionKey) -> ssl.SSLSession | None:
        """The session to offer to ``key``'s endpoint, if any."""
        return self._entries.get(key)

    def put(self, key: SessionKey, session: ssl.SSLSession) -> None:
        """Remember ``session`` for ``key`` (the oldest entry goes when full)."""
        with self._lock:
            entries = self._entries
            entries.pop(key, None)
            if len(entries) >= self._max:
                del entries[next(iter(entries))]
            entries[key] = session

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)


class _Offer:
    """One session for one handshake; taken at most once."""

    __slots__ = ("session",)

    def __init__(self, session: ssl.SSLSession) -> None:
        self.session: ssl.SSLSession | None = session

    def take(self) -> ssl.SSLSession | None:
        session, self.session = self.session, None
        return session


_OFFER: ContextVar[_Offer | None] = ContextVar("inmesh_tls_session_offer", default=None)


@contextmanager
def offer_session(session: ssl.SSLSession | None) -> Iterator[None]:
    """Within the block, the next handshake of this task/thread on a hooked
    context tries to resume ``session`` (nothing happens for ``None``)."""
    if session is None:
        yield
        return
    token = _OFFER.set(_Offer(session))
    try:
        yield
    finally:
        _OFFER.reset(token)


def _apply_offer(conn: ssl.SSLObject | ssl.SSLSocket) -> None:
    offer = _OFFER.get()
    session = offer.take() if offer is not None else None
    if session is not None:
        # another context's session, or too late: a full handshake then
        with suppress(ValueError, ssl.SSLError):
            conn.session = session


class _ResumingSSLObject(ssl.SSLObject):
    """``SSLObject`` that sets the offered session before its first handshake step."""

    def do_handshake(self) -> None:
        _apply_offer(self)
        super().do_handshake()


class _ResumingSSLSocket(ssl.SSLSocket):
    """``SSLSocket`` twin of :class:`_ResumingSSLObject` (httpcore's sync backend)."""

    def do_handshake(self, block: bool = False) -> None:
        _apply_offer(self)
        super().do_handshake(block)


def install_session_hooks(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``ctx``'s connections resume the session :func:`offer_session` offers.

    Uses the documented per-instance ``sslobject_class`` / ``sslsocket_class``
    attributes; ``type(ctx)`` stays ``ssl.SSLContext``. Returns ``ctx``.
    """
    ctx.sslobject_class = _ResumingSSLObject
    ctx.sslsocket_class = _ResumingSSLSocket
    return ctx
