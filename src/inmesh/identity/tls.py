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
    :class:`ServerTLS` hands a server one *base* context whose
    ``sni_callback`` moves every new connection onto the *active* context,
    rebuilt from scratch at each rotation (python-tech.md §3.4, option 2). The
    callback runs for every handshake, with or without SNI, before the server
    certificate is chosen and the client's is verified, so new handshakes use
    the new certificate **and the new trust bundle**, while established
    connections keep the context they were accepted with. It was chosen over
    reloading in place with ``load_cert_chain`` because:

    * a rotation may *replace* the trust bundle (root rotation, a CA taken
      out); ``load_verify_locations`` can only add CAs to a live context;
    * each context is built once and never mutated afterwards, so no OpenSSL
      ``SSL_CTX_use_certificate`` runs concurrently with handshakes on other
      threads (OpenSSL does not promise that is safe);
    * the swap is one attribute assignment, atomic under the GIL; a failed
      rebuild leaves the previous context active.

    OpenSSL takes ``verify_mode`` from the base context, not from the swapped
    one, so the base is built with the same mode and a certificate of its own
    (the one current at construction) and is never changed.

    Session resumption is **off** in :class:`ServerTLS` contexts (no TLS 1.3
    tickets, ``OP_NO_TICKET``). OpenSSL keeps resumable sessions in the
    context a connection *started* with (the base, which never changes), and a
    resumed handshake skips certificate verification; measured: a client of a
    removed CA resumed a pre-rotation session after the trust bundle had been
    replaced, at TLS 1.3 and 1.2. With ``OP_NO_TICKET`` and ``num_tickets = 0``
    nothing resumed, and that client was refused. Python has no way to expire those sessions at rotation, so
    ``session_tickets=True`` turns resumption on only for callers who accept
    that sessions survive a rotation for their lifetime. httpx/httpcore
    clients do not resume sessions anyway (python-tech.md §2.5).

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
    certificate (``getpeercert(binary_form=True)``). Parsing costs ~12 µs, so
    results are memoised in a bounded LRU keyed by the DER bytes (4096
    entries); the function is pure, so the cache holds no state that matters.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import ssl
import tempfile
import threading
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
    "verify_peer_identity",
]

logger = logging.getLogger("inmesh.identity")

PEER_ID_CACHE_SIZE = 4096
"""How many peer certificates :func:`peer_spiffe_id` remembers."""

_T = TypeVar("_T", bound="_Reloading")


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


def _base_context(protocol: int, alpn_protocols: Sequence[str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
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
    ``session_tickets=False`` disables session resumption (see the module docstring).
    The context does not follow rotations; :class:`ServerTLS` does.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, alpn_protocols)
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
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, alpn_protocols)
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


class ServerTLS(_Reloading):
    """A server ``SSLContext`` that follows a certificate source's rotations.

    Give :attr:`context` to the server (uvicorn's ``ssl_context_factory``,
    gunicorn's ``ssl_context`` hook, werkzeug's ``ssl_context``,
    ``ssl_ctx.wrap_socket``...). Every new handshake switches, through
    ``sni_callback``, to the context built for the newest certificate;
    established connections are untouched (see the module docstring).

    ``require_client_cert``: True for STRICT (``CERT_REQUIRED``), False for
    PERMISSIVE (``CERT_OPTIONAL``). ``session_tickets``: allow TLS session
    resumption, off by default because resumed sessions outlive a trust
    bundle rotation (see the module docstring).
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
        cert = source.current()
        self.context: ssl.SSLContext = self._build(cert)
        """The context to give the server; it never changes."""
        self._active = self.context
        self._active_version = cert.version
        self._active_cert = cert
        self.context.sni_callback = self._select
        self._follow()
        self.refresh()  # a rotation between current() and subscribe()

    def _build(self, cert: WorkloadCertificate) -> ssl.SSLContext:
        return build_server_context(
            cert,
            require_client_cert=self._require,
            alpn_protocols=self._alpn,
            session_tickets=self._tickets,
        )

    def _select(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        active = self._active
        if active is not ctx:
            conn.context = active

    def _install(self, cert: WorkloadCertificate) -> None:
        new = self._build(cert)
        self._active, self._active_version, self._active_cert = new, cert.version, cert

    @property
    def version(self) -> int:
        """The version of the certificate new handshakes present."""
        return self._active_version

    @property
    def certificate(self) -> WorkloadCertificate:
        """The certificate new handshakes present."""
        return self._active_cert

    @property
    def active_context(self) -> ssl.SSLContext:
        """The context new connections are moved onto (rebuilt at each rotation)."""
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


def peer_spiffe_id_of_connection(conn: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId | None:
    """The SPIFFE ID of the peer of a TLS connection, ``None`` without a peer certificate."""
    der = conn.getpeercert(binary_form=True)
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
