"""``ssl.SSLContext`` builders for mesh mTLS, hot reload, and peer identity.

Building
    :func:`build_server_context` and :func:`build_client_context` turn a
    :class:`~inmesh.identity.certificate.WorkloadCertificate` into a context:
    TLS 1.2 or newer, the workload's chain and key, peers verified against the
    trust bundle only (no system CAs). The client context has
    ``check_hostname=False``: mesh peers are dialled by IP and carry no DNS
    name; the chain is still verified, and the peer's SPIFFE ID is checked by
    inmesh afterwards (:func:`verify_peer_identity`), as Envoy checks SANs.

Hot reload: the choice
    :class:`ServerTLS` hands a server one *listening* context whose
    ``wrap_socket``/``wrap_bio`` create every new connection **from the
    active context**, a plain context rebuilt from scratch at each rotation
    (python-tech.md §3.4, option 2). New handshakes therefore use the new
    certificate **and the new trust bundle**, while established connections
    keep the context they were accepted with. It was chosen over reloading in
    place with ``load_cert_chain`` because:

    * a rotation may *replace* the trust bundle (root rotation, a CA taken
      out); ``load_verify_locations`` can only add CAs to a live context;
    * each context is built once and never mutated afterwards, so no OpenSSL
      ``SSL_CTX_use_certificate`` runs concurrently with handshakes on other
      threads (OpenSSL does not promise that is safe);
    * the swap is one attribute assignment, atomic under the GIL; a failed
      rebuild leaves the previous context active.

    Creating the connection from the active context (rather than switching
    contexts in ``sni_callback`` only, as earlier versions did) matters for
    session resumption: OpenSSL looks resumable sessions up in the context a
    connection was *created* from (its TLS 1.2 session-ID cache, and the keys
    that decrypt tickets), ``SSL_set_SSL_CTX`` never changes that, CPython
    gives every context the same session-ID context, and a resumed handshake
    skips certificate verification. With one listening context, a TLS 1.2
    client of a CA that a rotation had removed could resume a session from
    before the rotation, with or without tickets. Now each version has its own
    session cache and ticket keys, and a rotation starts with empty ones: a
    session from an older version is never found, the client gets a full
    handshake against the new trust bundle.

    The ``sni_callback`` (set on every context, called by OpenSSL for every
    handshake after the session lookup, before the server certificate is
    chosen and the client's verified) covers what creation time cannot: a
    connection created before a rotation whose ClientHello arrives after it,
    or one created from some other context (a server calling the private
    ``_wrap_*`` methods). Such a connection is moved onto the active context,
    and if it resumed a session no newer than the active version's
    installation it is refused (``HANDSHAKE_FAILURE`` alert; counted in
    :attr:`ServerTLS.stale_sessions_refused`). :func:`verified_peer_der` adds
    a last check where inmesh reads the peer certificate: a resumed session
    older than the connection's context yields no certificate, so no identity.

    Session tickets are **off** by default in :class:`ServerTLS` contexts
    (``OP_NO_TICKET``, ``num_tickets = 0``: no TLS 1.3 resumption at all).
    Python cannot turn off OpenSSL's server session-ID cache, so a TLS 1.2
    client can still resume a session *within one certificate version*;
    ``session_tickets=True`` allows tickets too. Either way a resumed session
    never outlives a rotation, and its peer certificate was verified against
    the trust bundle still in force (it is not re-checked for expiry: sessions
    last at most 2 hours, OpenSSL's default). httpx/httpcore clients do not
    resume sessions anyway (python-tech.md §2.5).

    A client context cannot swap per connection and a connection pool keeps
    the context it was built with, so :class:`ClientTLS` builds a new client
    context at each rotation and exposes it with a version number; the
    outbound layer rebuilds its pools when the version changes and lets the
    old ones drain.

Key material on disk
    ``SSLContext.load_cert_chain`` only reads files. The chain and key are
    written to a fresh private directory (mode 0700, on ``/dev/shm`` when
    available), the key **encrypted with a random one-time password** that
    never leaves memory, files mode 0600, and the directory is removed as soon
    as the context has loaded them. The trust bundle is passed in memory
    (``cadata``).

Peer identity
    :func:`peer_spiffe_id` extracts the SPIFFE ID from a peer's DER
    certificate (``getpeercert(binary_form=True)``; on the server side,
    :func:`verified_peer_der` reads it and drops it for a stale resumed
    session, see above). Parsing costs ~12 µs, so
    results are memoised in a bounded LRU keyed by the DER bytes (4096
    entries); the function is pure, so the cache holds no state that matters.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from inmesh.errors import CertificateError, IdentityError
from inmesh.identity.certificate import WorkloadCertificate, spiffe_id_of
from inmesh.identity.sources import CertificateSource
from inmesh.identity.spiffe import SpiffeId

__all__ = [
    "PEER_ID_CACHE_SIZE",
    "ClientTLS",
    "PeerIdentityError",
    "ServerTLS",
    "build_client_context",
    "build_server_context",
    "load_certificate",
    "peer_spiffe_id",
    "peer_spiffe_id_of_connection",
    "verified_peer_der",
    "verify_peer_identity",
]

logger = logging.getLogger("inmesh.identity")

PEER_ID_CACHE_SIZE = 4096
"""How many peer certificates :func:`peer_spiffe_id` remembers."""

_T = TypeVar("_T", bound="_Reloading")
_C = TypeVar("_C", bound=ssl.SSLContext)


class PeerIdentityError(IdentityError):
    """A TLS peer's SPIFFE ID is missing or not among the allowed ones.

    ``peer`` is the peer's ID (``None`` when it presented none); ``allowed``
    the accepted IDs, as sorted URI strings.
    """

    def __init__(self, peer: SpiffeId | None, allowed: Collection[SpiffeId | str]) -> None:
        self.peer = peer
        self.allowed = tuple(sorted(str(a) for a in allowed))
        listed = ", ".join(self.allowed) or "nothing"
        if peer is None:
            msg = f"the peer presented no SPIFFE ID; expected one of [{listed}]"
        else:
            msg = f"peer SPIFFE ID {peer} is not allowed; expected one of [{listed}]"
        super().__init__(msg)


# -- building ---------------------------------------------------------------


def _key_dir() -> str | None:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_certificate(ctx: ssl.SSLContext, cert: WorkloadCertificate) -> None:
    """Load ``cert``'s chain, key and trust bundle into ``ctx``.

    The chain and an encrypted copy of the key go through a private temporary
    directory that is deleted before returning (see the module docstring).
    Raises :class:`CertificateError` if OpenSSL refuses them.
    """
    password = secrets.token_urlsafe(32).encode()
    encrypted_key = cert.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    tmp = tempfile.mkdtemp(prefix="inmesh-tls-", dir=_key_dir())
    try:
        chain_path = os.path.join(tmp, "cert-chain.pem")
        key_path = os.path.join(tmp, "key.pem")
        _write_private(chain_path, cert.cert_chain_pem)
        _write_private(key_path, encrypted_key)
        try:
            ctx.load_cert_chain(chain_path, key_path, password=password)
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"OpenSSL refused the certificate of {cert.spiffe_id}: {exc}"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        ctx.load_verify_locations(cadata=cert.trust_bundle_pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise CertificateError(f"OpenSSL refused the trust bundle: {exc}") from None


def _base_context(protocol: int, alpn_protocols: Sequence[str] | None, cls: type[_C]) -> _C:
    ctx = cls(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if alpn_protocols:
        ctx.set_alpn_protocols(list(alpn_protocols))
    return ctx


def build_server_context(
    cert: WorkloadCertificate,
    *,
    require_client_cert: bool = True,
    alpn_protocols: Sequence[str] | None = None,
    session_tickets: bool = True,
) -> ssl.SSLContext:
    """A server context serving ``cert`` and verifying clients against its bundle.

    ``require_client_cert=True`` (``CERT_REQUIRED``) is STRICT mTLS: a client
    without a certificate chaining to the bundle fails the handshake.
    ``False`` (``CERT_OPTIONAL``) suits PERMISSIVE: a certificate, if sent, is
    still verified, but TLS clients without one are let in.
    ``session_tickets=False`` disables session tickets (TLS 1.2 session IDs
    stay; see the module docstring). The context does not follow rotations;
    :class:`ServerTLS` does.
    """
    return _server_context(
        ssl.SSLContext,
        cert,
        require_client_cert=require_client_cert,
        alpn_protocols=alpn_protocols,
        session_tickets=session_tickets,
    )


def _server_context(
    cls: type[_C],
    cert: WorkloadCertificate,
    *,
    require_client_cert: bool,
    alpn_protocols: Sequence[str] | None,
    session_tickets: bool,
) -> _C:
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, alpn_protocols, cls)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if not session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    load_certificate(ctx, cert)
    return ctx


def build_client_context(
    cert: WorkloadCertificate,
    *,
    alpn_protocols: Sequence[str] | None = None,
) -> ssl.SSLContext:
    """A client context presenting ``cert`` and verifying servers against its bundle.

    ``check_hostname`` is off (the server's SPIFFE ID is checked with
    :func:`verify_peer_identity` after the handshake); the chain is verified
    (``CERT_REQUIRED``). Note that httpcore sets its own ALPN list on the
    context at each connection.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, alpn_protocols, ssl.SSLContext)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    load_certificate(ctx, cert)
    return ctx


# -- following rotations ----------------------------------------------------


class _Reloading:
    """Subscribe to a source and rebuild on rotation; close unsubscribes."""

    def __init__(self, source: CertificateSource) -> None:
        self.source = source
        """The certificate source followed."""
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self.reload_errors = 0
        """Rotations whose context could not be built (the previous one stays active)."""

    def _follow(self) -> None:
        self._unsubscribe = self.source.subscribe(self._on_rotation)

    def _on_rotation(self, cert: WorkloadCertificate) -> None:
        with self._lock:
            if cert.version <= self.version:
                return
            try:
                self._install(cert)
            except Exception:
                self.reload_errors += 1
                logger.exception(
                    "%s: cannot build a TLS context for %r, keeping version %d",
                    type(self).__name__,
                    cert,
                    self.version,
                )

    def refresh(self) -> bool:
        """Catch up with ``source.current()`` now; True if a new context was built.

        Rotations are followed automatically; this is for a source whose
        subscribers ran before this object existed.
        """
        before = self.version
        self._on_rotation(self.source.current())
        return self.version != before

    @property
    def version(self) -> int:  # pragma: no cover - overridden
        """The version of the certificate new handshakes use."""
        raise NotImplementedError

    def _install(self, cert: WorkloadCertificate) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        """Stop following the source. The contexts stay usable."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _VersionContext(ssl.SSLContext):
    """The context :class:`ServerTLS` built for one certificate version."""

    inmesh_version: int
    """The version of the certificate it presents."""
    inmesh_installed_at: float
    """Wall-clock time (``time.time()``) at which it became the active context."""


class _ListeningContext(ssl.SSLContext):
    """:attr:`ServerTLS.context`: creates each connection from the active context.

    ``wrap_socket``/``wrap_bio`` return an ``SSLSocket``/``SSLObject`` made by
    the active context itself, so OpenSSL's session cache and ticket keys are
    that version's (see the module docstring). A listening socket (not
    connected: no TLS yet) is wrapped by this context, so that its
    ``accept()``, which calls ``self.context.wrap_socket``, comes back here.
    This context is a complete one for the certificate current at
    construction, used only by code that bypasses these two methods.
    """

    inmesh_server: ServerTLS

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        try:
            sock.getpeername()
        except OSError:  # a listening (or unconnected) socket: no SSL object is made
            return super().wrap_socket(
                sock,
                server_side=server_side,
                do_handshake_on_connect=do_handshake_on_connect,
                suppress_ragged_eofs=suppress_ragged_eofs,
                server_hostname=server_hostname,
                session=session,
            )
        return self.inmesh_server.active_context.wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.inmesh_server.active_context.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )


def _session_time(conn: ssl.SSLObject | ssl.SSLSocket) -> int | None:
    """When the (resumed) session of ``conn`` was established, ``None`` if unknown."""
    try:
        session = conn.session
    except (ValueError, ssl.SSLError):
        return None
    return None if session is None else session.time


class ServerTLS(_Reloading):
    """A server ``SSLContext`` that follows a certificate source's rotations.

    Give :attr:`context` to the server (uvicorn's ``ssl_context_factory``,
    asyncio's ``ssl=``, gunicorn's ``ssl_context`` hook, werkzeug's
    ``ssl_context``, ``ssl_ctx.wrap_socket``...). Every new connection is
    created from the context built for the newest certificate and trust
    bundle, which has a session cache of its own: no TLS session from before a
    rotation can be resumed after it. Established connections are untouched
    (see the module docstring). Configure TLS through the arguments below:
    settings changed on :attr:`context` after construction do not reach the
    per-version contexts connections are made from.

    ``require_client_cert``: True for STRICT (``CERT_REQUIRED``), False for
    PERMISSIVE (``CERT_OPTIONAL``). ``session_tickets``: also allow TLS
    session tickets (TLS 1.3 resumption), off by default; resumption, when it
    happens, stays within one certificate version.
    """

    def __init__(
        self,
        source: CertificateSource,
        *,
        require_client_cert: bool = True,
        alpn_protocols: Sequence[str] | None = None,
        session_tickets: bool = False,
    ) -> None:
        super().__init__(source)
        self._require = require_client_cert
        self._tickets = session_tickets
        self._alpn = tuple(alpn_protocols) if alpn_protocols else None
        self.stale_sessions_refused = 0
        """Handshakes refused for resuming a session from before the active version."""
        cert = source.current()
        listening = self._build(_ListeningContext, cert)
        listening.inmesh_server = self
        listening.sni_callback = self._select
        self.context: ssl.SSLContext = listening
        """The context to give the server; it never changes."""
        self._active = self._version_context(cert)
        self._active_cert = cert
        self._follow()
        self.refresh()  # a rotation between current() and subscribe()

    def _build(self, cls: type[_C], cert: WorkloadCertificate) -> _C:
        return _server_context(
            cls,
            cert,
            require_client_cert=self._require,
            alpn_protocols=self._alpn,
            session_tickets=self._tickets,
        )

    def _version_context(self, cert: WorkloadCertificate) -> _VersionContext:
        ctx = self._build(_VersionContext, cert)
        ctx.inmesh_version = cert.version
        ctx.sni_callback = self._select
        # before it is published: every session it will cache is newer than this
        ctx.inmesh_installed_at = time.time()
        return ctx

    def _select(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
    ) -> int | None:
        """``sni_callback``: move a connection made from another context onto the active one."""
        active = self._active
        if ctx is active:
            return None
        if conn.session_reused:
            # OpenSSL resumed a session from ``ctx``'s cache: refuse it unless it
            # was established after the active version was installed (seconds:
            # a session of the same second is refused too).
            established = _session_time(conn)
            if established is None or established <= active.inmesh_installed_at:
                self.stale_sessions_refused += 1
                logger.info(
                    "refusing a TLS handshake that resumed a session from before "
                    "certificate version %d",
                    active.inmesh_version,
                )
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        conn.context = active
        return None

    def _install(self, cert: WorkloadCertificate) -> None:
        new = self._version_context(cert)
        self._active, self._active_cert = new, cert

    @property
    def version(self) -> int:
        """The version of the certificate new handshakes present."""
        return self._active.inmesh_version

    @property
    def certificate(self) -> WorkloadCertificate:
        """The certificate new handshakes present."""
        return self._active_cert

    @property
    def active_context(self) -> ssl.SSLContext:
        """The context new connections are created from (rebuilt at each rotation)."""
        return self._active


class ClientTLS(_Reloading):
    """The client ``SSLContext`` for the source's newest certificate.

    :attr:`context` is a new object after each rotation (:attr:`version` tells
    which); connection pools built on an old one keep working with the old
    certificate until they are replaced.
    """

    def __init__(
        self, source: CertificateSource, *, alpn_protocols: Sequence[str] | None = None
    ) -> None:
        super().__init__(source)
        self._alpn = tuple(alpn_protocols) if alpn_protocols else None
        cert = source.current()
        self._context = build_client_context(cert, alpn_protocols=self._alpn)
        self._version = cert.version
        self._cert = cert
        self._follow()
        self.refresh()  # a rotation between current() and subscribe()

    def _install(self, cert: WorkloadCertificate) -> None:
        ctx = build_client_context(cert, alpn_protocols=self._alpn)
        self._context, self._version, self._cert = ctx, cert.version, cert

    @property
    def context(self) -> ssl.SSLContext:
        """The context for new connections."""
        return self._context

    @property
    def version(self) -> int:
        """The version of the certificate :attr:`context` presents."""
        return self._version

    @property
    def certificate(self) -> WorkloadCertificate:
        """The certificate :attr:`context` presents."""
        return self._cert


# -- peer identity ----------------------------------------------------------


@functools.lru_cache(maxsize=PEER_ID_CACHE_SIZE)
def _peer_id_cached(der: bytes) -> SpiffeId | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"the peer certificate is not valid DER: {exc}") from None
    return spiffe_id_of(cert)


def peer_spiffe_id(der: bytes | bytearray | memoryview) -> SpiffeId | None:
    """The SPIFFE ID in a peer's DER certificate, or ``None`` if it has none.

    "None" means: no ``spiffe://`` URI SAN, several, or an invalid one
    (X509-SVID requires exactly one). Raises :class:`CertificateError` if
    ``der`` is not a certificate at all. Results are cached (bounded LRU).
    """
    return _peer_id_cached(bytes(der))


def verified_peer_der(conn: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """The peer's leaf certificate (DER) of an established TLS connection, or ``None``.

    ``None`` without a peer certificate, and also, on the server side of a
    :class:`ServerTLS` connection, when the handshake resumed a session
    established before the connection's certificate version was installed:
    that certificate was verified against an older trust bundle, so it must
    not yield an identity. :class:`ServerTLS` never lets such a handshake
    complete; this is a second line of defence. (Session times are whole
    seconds, so a stale session from the second of the rotation itself goes
    unnoticed here; the handshake-time check refuses those.)
    """
    der = conn.getpeercert(binary_form=True)
    if not der:
        return None
    ctx = getattr(conn, "context", None)  # (duck-typed stand-ins may have none)
    if isinstance(ctx, _VersionContext) and conn.server_side and conn.session_reused:
        established = _session_time(conn)
        if established is None or established < int(ctx.inmesh_installed_at):
            logger.warning(
                "ignoring the peer certificate of a TLS connection that resumed a session "
                "from before certificate version %d",
                ctx.inmesh_version,
            )
            return None
    return der


def peer_spiffe_id_of_connection(conn: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId | None:
    """The SPIFFE ID of the peer of a TLS connection, ``None`` without a peer certificate.

    The certificate is read with :func:`verified_peer_der`.
    """
    der = verified_peer_der(conn)
    return peer_spiffe_id(der) if der else None


def verify_peer_identity(
    peer: SpiffeId | bytes | None,
    allowed: Collection[SpiffeId | str],
) -> SpiffeId:
    """Return the peer's ID if it is in ``allowed``, else raise :class:`PeerIdentityError`.

    ``peer`` is a :class:`SpiffeId`, the peer's DER certificate, or ``None``
    (no certificate). ``allowed`` holds IDs or their URI strings; pass a
    ``frozenset`` built once for constant-time lookups.
    """
    sid = peer_spiffe_id(peer) if isinstance(peer, (bytes, bytearray, memoryview)) else peer
    if sid is None:
        raise PeerIdentityError(None, allowed)
    if sid in allowed or sid.uri in allowed:
        return sid
    raise PeerIdentityError(sid, allowed)
