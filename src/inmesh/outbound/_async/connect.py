"""The outbound connector: verified connections, one pool per destination (async source).

What a sidecar does when it opens an upstream connection, as an httpcore
network backend plus a manager of HTTP/1.1 pools
(:class:`~inmesh.outbound._async.http11.AsyncHTTP11Pool`):

* :class:`AsyncVerifyingBackend` connects to an endpoint and, for TLS,
  handshakes with the context and SNI of its
  :class:`~inmesh.upstream.tls.UpstreamTLS` (whatever context and server name
  the pool passes are ignored). Right after the handshake it checks the
  server (:func:`~inmesh.outbound._common.verify_server`): on a mismatch it
  closes the stream and raises :class:`~inmesh.outbound.UpstreamIdentityError`
  before returning it, so the HTTP layer never writes a byte. A stream that
  should be TLS refuses writes until the handshake is done.
* :class:`AsyncConnector` hands each request to the pool of its
  ``(destination, UpstreamTLS, certificate version, PoolLimits)``: a
  connection verified for one destination is never reused for another, even
  if an address is recycled. Pools never retry: retrying is the policy
  layer's job. When the workload certificate rotates (its ``version``
  changes) the mesh pools are replaced: new connections present the new
  certificate and verify against the new bundle, requests in flight on the
  old pools finish, and an old pool is closed once no request holds one of
  its connections (checked at each request and by :meth:`aclose`).
* TLS session resumption: after the first read on a TLS connection, the
  session (with its ticket) is kept per ``(address, port, UpstreamTLS)`` and
  offered to the next handshake with that endpoint; resumed sessions skip
  the chain check (the identity check still runs on the session's
  certificate), so the cache is emptied at every certificate or bundle
  rotation. The offer goes through a context variable read by an
  ``SSLObject``/``SSLSocket`` subclass installed on a plain ``SSLContext``
  (anyio runs ``wrap_bio`` in a worker thread for ``SSLContext`` subclasses).
  Measured with ``benchmarks/tls.py`` (2 shared vCPUs, uvicorn with mTLS,
  new connection + one request, medians of 300, 4 runs): resumption takes
  17-24 % off async (2.5-3.3 ms -> 1.9-2.7 ms) and 21-36 % off sync; the
  ``SSLContext``-subclass alternative is 3-7 points worse in async (anyio's
  thread hop, 60-170 us) and equal in sync, hence the hook.

Thread safety: the connector's and the pools' state is guarded by
``threading.Lock`` s never held across I/O, and a connection belongs to one
request at a time; the generated sync connector can be shared by many
threads.
"""

from __future__ import annotations

import logging
import ssl
import threading
import typing
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType

import httpcore

from inmesh.errors import InmeshError
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import CertificateSource
from inmesh.identity.spiffe import SpiffeId
from inmesh.identity.tls import build_client_context
from inmesh.upstream.tls import UpstreamTLS, UpstreamTLSMode

from .._common import (
    CONNECT_OBSERVER,
    DEFAULT_LIMITS,
    MAX_SESSIONS,
    PEER_ID,
    ConnectorStats,
    Destination,
    PoolLimits,
    SessionCache,
    install_session_hooks,
    offer_session,
    verify_server,
)
from .._errors import (
    MAPPED_EXCEPTIONS,
    ConnectorClosedError,
    UpstreamConnectError,
    UpstreamConnectTimeoutError,
    UpstreamIdentityError,
    UpstreamTLSError,
    handshake_error,
    raise_mapped,
    read_error,
)
from .http11 import AsyncHTTP11Pool

__all__ = ["AsyncConnector", "AsyncVerifyingBackend"]

logger = logging.getLogger("inmesh.outbound")

_SESSION_READS = 4
"""Reads after a handshake during which a resumable session is looked for."""

_PoolKey = tuple[Destination, UpstreamTLS, int, PoolLimits]


def _where(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AsyncVerifyingBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend whose connections prove the server's identity.

    * ``tls``: what the connections must be; ``context``: the ``SSLContext``
      for it (``None`` for plain text);
    * ``destination``: the key reported in errors;
    * ``sessions``: where resumable TLS sessions are kept (``None``: no
      resumption); ``context`` must have :func:`install_session_hooks`;
    * ``backend``: the real network backend (default: ``httpcore.AnyIOBackend()``).

    Give it to an :class:`~inmesh.outbound._async.http11.AsyncHTTP11Pool` (or an
    ``httpcore.AsyncConnectionPool`` with ``retries=0``).
    """

    def __init__(
        self,
        tls: UpstreamTLS,
        context: ssl.SSLContext | None,
        *,
        destination: Destination | None = None,
        sessions: SessionCache | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        if tls.secure and context is None:
            raise ValueError(f"{tls.describe()} needs an SSLContext")
        self.tls = tls
        """The settings every connection follows."""
        self.context = context
        """The context handshakes use."""
        self.destination = destination
        """The destination key, for errors."""
        self.sessions = sessions
        """The session cache (``None``: no resumption)."""
        self._inner = backend if backend is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to ``host:port``; raise :class:`UpstreamConnectError` / ``...Timeout``."""
        observer = CONNECT_OBSERVER.get()
        if observer is None:
            return await self._map_connect(host, port, timeout, local_address, socket_options)
        observer.connect_started()
        try:
            stream = await self._map_connect(host, port, timeout, local_address, socket_options)
        except BaseException:
            observer.connect_finished()
            raise
        if not self.tls.secure:
            observer.connect_finished()
            return stream
        stream.observer = observer  # finished at the end of start_tls
        return stream

    async def _map_connect(
        self,
        host: str,
        port: int,
        timeout: float | None,
        local_address: str | None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> _AsyncVerifyingStream:
        endpoint = (host, port)
        try:
            stream = await self._inner.connect_tcp(
                host,
                port,
                timeout=timeout,
                local_address=local_address,
                socket_options=socket_options,
            )
        except httpcore.ConnectTimeout as exc:
            raise UpstreamConnectTimeoutError(
                f"connecting to {_where(endpoint)} timed out",
                endpoint=endpoint,
                destination=self.destination,
            ) from exc
        except httpcore.ConnectError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {_where(endpoint)}: {exc}",
                endpoint=endpoint,
                destination=self.destination,
            ) from exc
        return _AsyncVerifyingStream(stream, self, endpoint)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to a Unix socket (reported as endpoint ``(path, 0)``)."""
        endpoint = (path, 0)
        try:
            stream = await self._inner.connect_unix_socket(
                path, timeout=timeout, socket_options=socket_options
            )
        except httpcore.ConnectTimeout as exc:
            raise UpstreamConnectTimeoutError(
                f"connecting to {path} timed out", endpoint=endpoint, destination=self.destination
            ) from exc
        except httpcore.ConnectError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {path}: {exc}", endpoint=endpoint, destination=self.destination
            ) from exc
        return _AsyncVerifyingStream(stream, self, endpoint)

    async def sleep(self, seconds: float) -> None:
        """Sleep with the real backend."""
        await self._inner.sleep(seconds)


class _AsyncVerifyingStream(httpcore.AsyncNetworkStream):
    """A stream of :class:`AsyncVerifyingBackend`: verifies at ``start_tls``."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkStream,
        backend: AsyncVerifyingBackend,
        endpoint: tuple[str, int],
        *,
        peer: SpiffeId | None = None,
        handshaken: bool = False,
    ) -> None:
        self._inner = inner
        self._backend = backend
        self._endpoint = endpoint
        self._peer = peer
        self._unsecured = backend.tls.secure and not handshaken
        self._session_reads = _SESSION_READS if handshaken and backend.sessions is not None else 0
        self.observer: typing.Any = None
        """Told ``connect_finished()`` when the TLS handshake is over (see CONNECT_OBSERVER)."""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            data = await self._inner.read(max_bytes, timeout)
        except (httpcore.ReadError, ssl.SSLError) as exc:
            mapped = read_error(exc, endpoint=self._endpoint, destination=self._backend.destination)
            if mapped is None:
                raise
            raise mapped from exc
        if self._session_reads:
            self._keep_session()
        return data

    def _keep_session(self) -> None:
        self._session_reads -= 1
        ssl_object = self._inner.get_extra_info("ssl_object")
        session = getattr(ssl_object, "session", None)
        sessions = self._backend.sessions
        if session is not None and session.has_ticket and sessions is not None:
            host, port = self._endpoint
            sessions.put((host, port, self._backend.tls), session)
            self._session_reads = 0

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._unsecured:
            raise UpstreamTLSError(
                f"refusing to send to {_where(self._endpoint)} before the TLS handshake "
                f"({self._backend.tls.describe()})",
                endpoint=self._endpoint,
                destination=self._backend.destination,
            )
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        backend = self._backend
        tls = backend.tls
        context = backend.context
        if context is None:
            raise UpstreamTLSError(
                f"{_where(self._endpoint)}: a plaintext destination cannot start TLS",
                endpoint=self._endpoint,
                destination=backend.destination,
            )
        host, port = self._endpoint
        sessions = backend.sessions
        session = sessions.get((host, port, tls)) if sessions is not None else None
        observer, self.observer = self.observer, None
        try:
            with offer_session(session):
                stream = await self._inner.start_tls(context, tls.sni, timeout)
        except Exception as exc:
            mapped = handshake_error(exc, endpoint=self._endpoint, destination=backend.destination)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            if observer is not None:
                observer.connect_finished()
        try:
            peer = verify_server(
                stream.get_extra_info("ssl_object"),
                tls,
                endpoint=self._endpoint,
                destination=backend.destination,
            )
        except UpstreamIdentityError:
            await stream.aclose()
            raise
        return _AsyncVerifyingStream(stream, backend, self._endpoint, peer=peer, handshaken=True)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == PEER_ID:
            return self._peer
        return self._inner.get_extra_info(info)


class _AsyncMappedStream:
    """A response body whose errors go through :func:`mapped_exception`."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                if part:
                    yield part
        except MAPPED_EXCEPTIONS as exc:
            raise_mapped(exc)

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            try:
                await close()
            except MAPPED_EXCEPTIONS as exc:
                raise_mapped(exc)


class _Pool:
    """A connection pool, its key's parts, and how many requests are being handed to it."""

    __slots__ = ("leases", "pool", "tls", "version")

    def __init__(self, pool: AsyncHTTP11Pool, tls: UpstreamTLS, version: int) -> None:
        self.pool = pool
        self.tls = tls
        self.version = version
        self.leases = 0

    def is_idle(self) -> bool:
        return not self.leases and self.pool.is_idle()


class AsyncConnector:
    """Connections to upstream endpoints, secured and verified as an
    :class:`~inmesh.upstream.tls.UpstreamTLS` says, pooled per destination.

    * ``identity``: the workload's certificate source, needed for
      ``ISTIO_MUTUAL``; its :meth:`~CertificateSource.current` is read at each
      mesh request, and a new ``version`` rotates the mesh pools.
    * ``limits``: the default :class:`PoolLimits` (a request may pass others).
    * ``session_resumption``: keep TLS sessions per endpoint and resume them;
      ``max_sessions`` bounds how many.
    * ``network_backend``: the real backend (default: ``httpcore.AnyIOBackend()``).

    Close it with :meth:`aclose` (or use it as a context manager).
    """

    def __init__(
        self,
        identity: CertificateSource | None = None,
        *,
        limits: PoolLimits = DEFAULT_LIMITS,
        session_resumption: bool = True,
        max_sessions: int = MAX_SESSIONS,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._identity = identity
        self._limits = limits
        self._sessions = SessionCache(max_sessions) if session_resumption else None
        self._network_backend = network_backend
        self._lock = threading.Lock()
        self._pools: dict[_PoolKey, _Pool] = {}
        self._draining: list[_Pool] = []
        self._mesh_cert: WorkloadCertificate | None = None
        self._mesh_contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        self._tls_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._closed = False

    async def handle_async_request(
        self,
        destination: Destination,
        tls: UpstreamTLS,
        request: httpcore.Request,
        *,
        limits: PoolLimits | None = None,
    ) -> httpcore.Response:
        """Send ``request`` to its URL's endpoint through ``destination``'s pool for ``tls``.

        ``destination`` is any hashable key naming the destination (a cluster
        name such as ``outbound|8080||backend.default.svc.cluster.local``);
        ``request.url`` holds the endpoint's address and port, and its scheme
        must be ``tls.scheme``. Errors are httpx / inmesh exceptions (see
        :mod:`inmesh.outbound`), also while the response body is read.
        """
        response = await self.exchange(destination, tls, request, limits)
        response.stream = _AsyncMappedStream(typing.cast(AsyncIterable[bytes], response.stream))
        return response

    async def exchange(
        self,
        destination: Destination,
        tls: UpstreamTLS,
        request: httpcore.Request,
        limits: PoolLimits | None = None,
    ) -> httpcore.Response:
        """:meth:`handle_async_request` without the wrapper on the response body.

        Errors up to the response headers are translated; the body is the
        pool's own stream, raising httpcore's exceptions, which the caller translates with
        :func:`~inmesh.outbound._errors.mapped_exception` (the mesh transport
        does, in its one response stream).
        """
        scheme = b"https" if tls.secure else b"http"
        if request.url.scheme != scheme:
            raise ValueError(
                f"a {tls.describe()} destination needs {scheme.decode()} URLs, "
                f"got {request.url.scheme.decode(errors='replace')}"
            )
        if self._draining:
            await self._close_idle_draining()
        entry = self._lease(destination, tls, limits if limits is not None else self._limits)
        try:
            return await entry.pool.handle_async_request(request)
        except MAPPED_EXCEPTIONS as exc:
            raise_mapped(exc)
        finally:
            with self._lock:
                entry.leases -= 1

    async def retire(self, destination: Destination) -> int:
        """Stop using ``destination``'s pools (it left the configuration).

        Requests in flight finish; the pools close once idle (now, at a later
        request, or at :meth:`aclose`). Returns how many pools were retired.
        """
        with self._lock:
            keys = [key for key in self._pools if key[0] == destination]
            for key in keys:
                self._draining.append(self._pools.pop(key))
        if keys:
            await self._close_idle_draining()
        return len(keys)

    def stats(self) -> ConnectorStats:
        """Counts of pools, draining pools and sessions, and the certificate version."""
        with self._lock:
            cert = self._mesh_cert
            return ConnectorStats(
                pools=len(self._pools),
                draining=len(self._draining),
                sessions=len(self._sessions) if self._sessions is not None else 0,
                identity_version=cert.version if cert is not None else None,
            )

    async def aclose(self) -> None:
        """Close every pool and connection; later requests raise :class:`ConnectorClosedError`."""
        with self._lock:
            self._closed = True
            entries = [*self._pools.values(), *self._draining]
            self._pools = {}
            self._draining = []
            self._mesh_contexts = {}
            self._tls_contexts = {}
            if self._sessions is not None:
                self._sessions.clear()
        for entry in entries:
            await entry.pool.aclose()

    async def __aenter__(self) -> AsyncConnector:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    # -- pools --------------------------------------------------------------

    def _lease(self, destination: Destination, tls: UpstreamTLS, limits: PoolLimits) -> _Pool:
        mesh = tls.mode is UpstreamTLSMode.ISTIO_MUTUAL
        version = self._mesh_version() if mesh else 0
        key = (destination, tls, version, limits)
        with self._lock:
            if self._closed:
                raise ConnectorClosedError("the connector is closed")
            entry = self._pools.get(key)
            if entry is None:
                cert = self._mesh_cert
                if mesh and cert is not None and cert.version != version:  # rotated meanwhile
                    version = cert.version
                    key = (destination, tls, version, limits)
                    entry = self._pools.get(key)
                if entry is None:
                    entry = self._pools[key] = self._new_pool(destination, tls, version, limits)
            entry.leases += 1
        return entry

    def _new_pool(
        self, destination: Destination, tls: UpstreamTLS, version: int, limits: PoolLimits
    ) -> _Pool:
        """Called with the lock held."""
        context = self._context_for(tls, destination) if tls.secure else None
        backend = AsyncVerifyingBackend(
            tls,
            context,
            destination=destination,
            sessions=self._sessions,
            backend=self._network_backend,
        )
        pool = AsyncHTTP11Pool(backend, ssl_context=context, limits=limits)
        return _Pool(pool, tls, version)

    async def _close_idle_draining(self) -> None:
        with self._lock:
            idle = [entry for entry in self._draining if entry.is_idle()]
            if not idle:
                return
            self._draining = [entry for entry in self._draining if entry not in idle]
        for entry in idle:
            await entry.pool.aclose()

    # -- identity and contexts ----------------------------------------------

    def _mesh_version(self) -> int:
        """The workload certificate version; rotates the mesh pools when it changed."""
        source = self._identity
        if source is None:
            raise UpstreamTLSError(
                "ISTIO_MUTUAL needs the workload identity; the connector has none"
            )
        try:
            cert = source.current()
        except InmeshError as exc:
            raise UpstreamTLSError(f"no workload certificate for mesh mTLS: {exc}") from exc
        known = self._mesh_cert
        if known is not None and known.version == cert.version:
            return cert.version
        with self._lock:
            cert = source.current()  # the newest, whichever thread gets here first
            known = self._mesh_cert
            if known is None or known.version != cert.version:
                self._install_identity(cert, known)
            return cert.version

    def _install_identity(self, cert: WorkloadCertificate, old: WorkloadCertificate | None) -> None:
        """Called with the lock held."""
        self._mesh_cert = cert
        self._mesh_contexts = {}
        stale = [
            key
            for key, entry in self._pools.items()
            if entry.tls.mode is UpstreamTLSMode.ISTIO_MUTUAL and entry.version != cert.version
        ]
        for key in stale:
            self._draining.append(self._pools.pop(key))
        if self._sessions is not None:
            self._sessions.clear()
        if old is not None:
            logger.info(
                "workload certificate rotated (version %d -> %d): %d mesh pool(s) draining",
                old.version,
                cert.version,
                len(stale),
            )

    def _context_for(self, tls: UpstreamTLS, destination: Destination) -> ssl.SSLContext:
        """Called with the lock held."""
        if tls.mode is UpstreamTLSMode.ISTIO_MUTUAL:
            ctx = self._mesh_contexts.get(tls.alpn)
            if ctx is None:
                cert = self._mesh_cert
                if cert is None:  # pragma: no cover - _lease installed one
                    raise UpstreamTLSError("no workload certificate for mesh mTLS")
                try:
                    ctx = build_client_context(cert, alpn_protocols=tls.alpn or None)
                except InmeshError as exc:
                    raise UpstreamTLSError(
                        f"cannot build the mesh TLS context: {exc}", destination=destination
                    ) from exc
                self._mesh_contexts[tls.alpn] = install_session_hooks(ctx)
            return ctx
        key = (
            tls.ca_certificates,
            tls.client_certificate,
            tls.private_key,
            tls.ca_crl,
            tls.insecure_skip_verify,
            tls.alpn,
        )
        ctx = self._tls_contexts.get(key)
        if ctx is None:
            ctx = self._tls_contexts[key] = install_session_hooks(
                _origination_context(tls, destination)
            )
        return ctx


def _origination_context(tls: UpstreamTLS, destination: Destination) -> ssl.SSLContext:
    """An ``SSLContext`` for TLS origination (``SIMPLE`` / ``MUTUAL``); reads the files.

    Names are checked by :func:`verify_server`, not by OpenSSL
    (``check_hostname`` is off). With ``ca_crl`` every certificate of the
    chain is checked against it, as Envoy does by default.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.check_hostname = False
    what = "the CA certificates"
    try:
        if tls.insecure_skip_verify:
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.verify_mode = ssl.CERT_REQUIRED
            if tls.ca_certificates:
                ctx.load_verify_locations(cafile=tls.ca_certificates)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            if tls.ca_crl:
                what = "the CRL"
                ctx.load_verify_locations(cafile=tls.ca_crl)
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        if tls.client_certificate and tls.private_key:
            what = "the client certificate and key"
            ctx.load_cert_chain(tls.client_certificate, tls.private_key)
    except (OSError, ValueError) as exc:
        raise UpstreamTLSError(
            f"{tls.describe()}: cannot load {what}: {exc}", destination=destination
        ) from exc
    if tls.alpn:
        ctx.set_alpn_protocols(list(tls.alpn))
    return ctx
