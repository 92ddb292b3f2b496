"""Serve an ASGI or WSGI app with the mesh's mTLS, as a sidecar's inbound listener would.

::

    serve(app, mesh, "0.0.0.0", 8080)                  # blocks; SIGINT/SIGTERM stop it
    await serve_async(app, mesh, "0.0.0.0", 8080)      # inside a running loop
    with serve_in_thread(app, mesh) as server:         # background thread, ephemeral port
        httpx.get(f"https://127.0.0.1:{server.port}/", verify=client_ctx)

The app (ASGI, or WSGI served through a2wsgi; :func:`is_asgi` tells them
apart, ``interface=`` overrides) is wrapped in
:class:`~inmesh.inbound.asgi.MeshASGIMiddleware` and run by uvicorn's
machinery (lifespan, HTTP/1.1 protocols, graceful shutdown) with
:mod:`inmesh.inbound.uvicorn`'s protocol classes, but inmesh owns the
listening socket: one accept loop that, like Envoy's TLS inspector, peeks at
the first byte of every connection (``0x16`` is a TLS handshake) and picks,
**per connection, from the PeerAuthentication mode in force at accept time**:

========== ===================================== ======================================
mode       TLS ClientHello                       anything else (plaintext)
========== ===================================== ======================================
STRICT     TLS, client certificate REQUIRED:     closed without a byte written (the
           none, or one not chaining to the      client sees a reset/EOF, as with Envoy)
           mesh root, expired or not yet valid,
           fails the handshake
PERMISSIVE TLS, client certificate optional      plaintext HTTP, no identity
           (verified if sent)
DISABLE    closed (plaintext-only port)          plaintext HTTP, no identity
========== ===================================== ======================================

So one port serves both in PERMISSIVE, and a configuration change applies to
new connections while established ones continue (their requests are still
judged per request by the middleware). The server certificate and trust
bundle come from ``context.certificates`` through
:class:`~inmesh.identity.tls.ServerTLS` (one for STRICT, one for
PERMISSIVE): a rotation is picked up by the next handshake. A TLS client of
a workload without certificates is closed. Silent clients are closed after
``sniff_timeout`` seconds, slow handshakes after ``handshake_timeout``.

Stopping: SIGINT/SIGTERM when run in the main thread (uvicorn's graceful
shutdown: stop accepting, finish in-flight requests within
``graceful_timeout``, run the lifespan shutdown), or :meth:`MeshServer.stop`
from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

import uvicorn

from inmesh.errors import InmeshError
from inmesh.inbound.asgi import MeshASGIMiddleware
from inmesh.inbound.context import InboundContext
from inmesh.inbound.uvicorn import AutoHTTPProtocol
from inmesh.policy.peer_authn import MtlsMode

__all__ = [
    "BackgroundServer",
    "MeshServer",
    "ServeError",
    "is_asgi",
    "serve",
    "serve_async",
    "serve_in_thread",
]

logger = logging.getLogger("inmesh.inbound")

Interface = Literal["auto", "asgi", "wsgi"]

_TLS_HANDSHAKE = 0x16
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ServeError(InmeshError, RuntimeError):
    """The server could not start (the app's lifespan startup failed, the port is taken...)."""


def is_asgi(app: Any) -> bool:
    """Guess whether ``app`` is an ASGI app (else WSGI).

    ASGI: ``app`` or its ``__call__`` is a coroutine function (FastAPI,
    Starlette, Quart, a2wsgi and inmesh middleware instances...). WSGI: a
    plain callable taking two positional arguments (``environ,
    start_response``), or a Flask app. Pass ``interface=`` to
    :class:`MeshServer` when the guess is wrong.
    """
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(
        getattr(app, "__call__", None)  # noqa: B004
    ):
        return True
    if hasattr(app, "wsgi_app"):  # Flask
        return False
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) != 2


class _Listener:
    """The accept loop with TLS sniffing; quacks like ``asyncio.Server`` for uvicorn's shutdown."""

    def __init__(
        self,
        owner: MeshServer,
        sock: socket.socket,
        create_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        self._owner = owner
        self._sock = sock
        self._create_protocol = create_protocol
        self._loop = asyncio.get_running_loop()
        self._port: int = sock.getsockname()[1]
        self._pending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = self._loop.create_task(self._accept_loop())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        for task in list(self._pending):
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept_loop(self) -> None:
        loop = self._loop
        while True:
            try:
                conn, _addr = await loop.sock_accept(self._sock)
            except OSError as exc:
                if self._closed:
                    return
                if exc.errno in _RESOURCE_ERRNOS:
                    logger.error("accept() failed (%s); pausing accepts for 0.1 s", exc)
                    await asyncio.sleep(0.1)
                else:
                    logger.debug("accept() failed: %s", exc)
                continue
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio sets TCP_NODELAY only when sock.proto == IPPROTO_TCP, which
                # sockets accepted from socket.create_server() do not report: without
                # it a response written in two parts waits ~40 ms for a delayed ACK.
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handle(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _peek(self, conn: socket.socket) -> bytes:
        """The first byte the client sent, left in the socket (``b""``: it closed)."""
        loop = self._loop
        deadline = loop.time() + self._owner.sniff_timeout
        fd = conn.fileno()
        while True:
            ready = loop.create_future()

            def on_readable(ready: asyncio.Future[None] = ready) -> None:
                if not ready.done():
                    ready.set_result(None)

            loop.add_reader(fd, on_readable)
            try:
                await asyncio.wait_for(ready, max(deadline - loop.time(), 0))
            finally:
                loop.remove_reader(fd)
            try:
                return conn.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue  # a spurious wake-up

    async def _handle(self, conn: socket.socket) -> None:
        try:
            try:
                first = await self._peek(conn)
            except asyncio.TimeoutError:
                logger.debug(
                    "closing a connection that sent nothing for %ss", self._owner.sniff_timeout
                )
                conn.close()
                return
            if not first:
                conn.close()
                return
            is_tls = first[0] == _TLS_HANDSHAKE
            mode = self._owner.context.mtls_mode(self._port)
            ctx = self._owner._ssl_context(mode, is_tls)
            if ctx is False:
                logger.debug(
                    "refusing a %s connection on port %d (PeerAuthentication %s)",
                    "TLS" if is_tls else "plaintext",
                    self._port,
                    mode.value,
                )
                conn.close()
                return
            if ctx is None:
                await self._loop.connect_accepted_socket(self._create_protocol, conn)
                return
            kwargs: dict[str, Any] = {"ssl_handshake_timeout": self._owner.handshake_timeout}
            if sys.version_info >= (3, 11):
                kwargs["ssl_shutdown_timeout"] = self._owner.tls_shutdown_timeout
            await self._loop.connect_accepted_socket(self._create_protocol, conn, ssl=ctx, **kwargs)
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, ssl.SSLError, asyncio.TimeoutError, EOFError) as exc:
            # a failed handshake: no certificate under STRICT, unknown CA, expired...
            logger.debug("connection on port %d failed before HTTP: %r", self._port, exc)
            conn.close()


class _UvicornServer(uvicorn.Server):
    """uvicorn's server with inmesh's listener instead of ``loop.create_server``."""

    def __init__(self, config: uvicorn.Config, owner: MeshServer) -> None:
        super().__init__(config)
        self._owner = owner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        owner = self._owner
        sock = owner._bind()
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sock.close()
            owner._fail(ServeError("the application's lifespan startup failed"))
            self.should_exit = True
            return
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol() -> asyncio.Protocol:
            factory: Any = config.http_protocol_class
            protocol: asyncio.Protocol = factory(
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )
            return protocol

        listener = _Listener(owner, sock, create_protocol)
        self.servers = [listener]  # type: ignore[list-item]  # quacks like asyncio.Server
        listener.start()
        self.started = True
        owner._on_started()


class MeshServer:
    """One server: an app, a mesh context, an address; run it, stop it.

    * ``app``: ASGI or WSGI (``interface``: ``"auto"`` guesses with
      :func:`is_asgi`, or ``"asgi"`` / ``"wsgi"``); WSGI apps run in a2wsgi's
      thread pool of ``wsgi_workers`` threads;
    * ``context``: :class:`inmesh.Mesh` or any
      :class:`~inmesh.inbound.context.InboundContext` (its certificate source
      must be started);
    * ``host``, ``port`` (``0``: an ephemeral port, see :attr:`port`), or
      ``sock``: an already bound socket;
    * ``fail_closed``: passed to the middleware (never matters here: inmesh
      owns the listener and always sees the certificate);
    * ``sniff_timeout``, ``handshake_timeout``: seconds a new connection may
      take to send its first byte, and to finish the TLS handshake;
      ``tls_shutdown_timeout``: seconds to wait for a client's TLS close
      (Python 3.11+); ``graceful_timeout``: seconds in-flight requests get at
      shutdown;
    * ``on_started(server)``: called once the server accepts connections (on
      its event loop; keep it short), e.g. to print :attr:`port`;
    * ``uvicorn_options``: more ``uvicorn.Config`` keyword arguments
      (``log_config`` defaults to ``None``: inmesh does not touch logging
      configuration; ``proxy_headers`` is forced off, since forwarded
      headers must not change what the mesh sees; an ``http`` class must be
      one of :mod:`inmesh.inbound.uvicorn`'s, or identities are not seen; TLS
      options are ignored: the mesh's certificates are used).

    A server runs once: build a new one to serve again. A socket given as
    ``sock`` is closed when the server stops.
    """

    def __init__(
        self,
        app: Any,
        context: InboundContext,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        interface: Interface = "auto",
        sock: socket.socket | None = None,
        fail_closed: bool = False,
        wsgi_workers: int = 10,
        backlog: int = 2048,
        sniff_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        tls_shutdown_timeout: float = 2.0,
        graceful_timeout: float | None = 30.0,
        on_started: Callable[[MeshServer], None] | None = None,
        uvicorn_options: Mapping[str, Any] | None = None,
    ) -> None:
        if interface not in ("auto", "asgi", "wsgi"):
            raise ValueError(f"interface must be 'auto', 'asgi' or 'wsgi', not {interface!r}")
        self.context = context
        """The mesh as the server side sees it."""
        self.host = host
        """The address to bind."""
        self.sniff_timeout = sniff_timeout
        """Seconds a new connection may stay silent before it is closed."""
        self.handshake_timeout = handshake_timeout
        """Seconds a TLS handshake may take."""
        self.tls_shutdown_timeout = tls_shutdown_timeout
        """Seconds to wait for the client's TLS close_notify when closing (3.11+)."""
        self.on_started = on_started
        """Called (on the server's loop) once it accepts connections."""
        self._requested_port = port
        self._port = port
        self._sock = sock
        self._backlog = backlog
        self._bound: socket.socket | None = None
        self._tls: dict[MtlsMode, Any] = {}
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._warned_no_certs = False
        self._executor: Any = None
        asgi = is_asgi(app) if interface == "auto" else interface == "asgi"
        if not asgi:
            from a2wsgi import WSGIMiddleware

            from inmesh.inbound.wsgi import MeshWSGIMiddleware

            inner: Any = MeshWSGIMiddleware(app, context)
            wsgi = WSGIMiddleware(inner, workers=wsgi_workers)
            self._executor = wsgi.executor
            app = wsgi
        self.app = MeshASGIMiddleware(app, context, fail_closed=fail_closed)
        """The app as served (wrapped in the middleware, and a2wsgi for WSGI)."""
        options: dict[str, Any] = {
            "log_config": None,
            "timeout_graceful_shutdown": graceful_timeout,
            "backlog": backlog,
            "lifespan": "auto",
        }
        options.update(uvicorn_options or {})
        options.update(
            app=self.app,
            host=host,
            port=port,
            interface="asgi3",
            proxy_headers=False,
        )
        options.setdefault("http", AutoHTTPProtocol)
        self._server = _UvicornServer(uvicorn.Config(**options), self)

    # -- state ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the requested one before start)."""
        return self._port

    @property
    def started(self) -> bool:
        """True once the server accepts connections."""
        return self._server.started and self._error is None

    # -- running ------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until :meth:`stop` or SIGINT/SIGTERM (main thread only). Raises :class:`ServeError`."""
        try:
            await self._server.serve()
        finally:
            self._cleanup()
        if self._error is not None:
            raise self._error

    def run(self) -> None:
        """:meth:`serve` in a new event loop, blocking (uvicorn's loop choice)."""
        try:
            self._server.run()
        finally:
            self._cleanup()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Ask the server to shut down gracefully; thread-safe, returns at once."""
        self._server.should_exit = True

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the server accepts connections (or failed); True if it started."""
        self._started.wait(timeout)
        return self.started

    # -- internals ------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        try:
            if self._sock is not None:
                sock = self._sock
            else:
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                sock = socket.create_server(
                    (self.host, self._requested_port), family=family, backlog=self._backlog
                )
            sock.setblocking(False)
        except OSError as exc:
            error = ServeError(f"cannot listen on {self.host}:{self._requested_port}: {exc}")
            self._fail(error)
            raise error from None
        self._bound = sock
        self._port = sock.getsockname()[1]
        self._prepare_tls()
        return sock

    def _prepare_tls(self) -> None:
        source = self.context.certificates
        if source is None:
            return
        from inmesh.identity.tls import ServerTLS

        self._tls[MtlsMode.STRICT] = ServerTLS(source, require_client_cert=True)
        self._tls[MtlsMode.PERMISSIVE] = ServerTLS(source, require_client_cert=False)

    def _ssl_context(self, mode: MtlsMode, is_tls: bool) -> ssl.SSLContext | Literal[False] | None:
        """The context for a new connection, ``None`` for plaintext, ``False`` to refuse it."""
        if not is_tls:
            return False if mode is MtlsMode.STRICT else None
        if mode is MtlsMode.DISABLE:
            return False
        tls = self._tls.get(mode)
        if tls is None:
            if not self._warned_no_certs:
                self._warned_no_certs = True
                logger.warning(
                    "refusing TLS connections: this workload has no certificate "
                    "(PeerAuthentication %s needs one)",
                    mode.value,
                )
            return False
        ctx: ssl.SSLContext = tls.context
        return ctx

    def _on_started(self) -> None:
        modes = self.context.mtls_mode(self.port)
        logger.info(
            "inmesh serving on %s:%d (PeerAuthentication %s%s)",
            self.host,
            self.port,
            modes.value,
            ": TLS and plaintext on the same port" if modes is MtlsMode.PERMISSIVE else "",
        )
        if modes is MtlsMode.STRICT and not self._tls:
            logger.warning(
                "PeerAuthentication STRICT but this workload has no certificate: "
                "every connection will be refused"
            )
        self._started.set()
        if self.on_started is not None:
            try:
                self.on_started(self)
            except Exception:
                logger.exception("the on_started callback failed")

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._started.set()

    def _cleanup(self) -> None:
        for tls in self._tls.values():
            tls.close()
        self._tls.clear()
        if self._bound is not None:
            self._bound.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._started.set()


class BackgroundServer:
    """A :class:`MeshServer` running in a daemon thread; see :func:`serve_in_thread`."""

    def __init__(self, server: MeshServer) -> None:
        self.server = server
        """The server."""
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"inmesh-serve-{server.host}", daemon=True
        )

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # reported by start() / stop()
            self._error = exc

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start the thread and wait until the server accepts connections."""
        self._thread.start()
        if not self.server.wait_started(timeout):
            self.server.stop()
            self._thread.join(timeout)
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise ServeError(f"the server did not start within {timeout} s")
        return self

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    @property
    def host(self) -> str:
        """The bound address."""
        return self.server.host

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down gracefully and join the thread. Re-raises a server failure."""
        self.server.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ServeError(f"the server thread did not stop within {timeout} s")
        error, self._error = self._error, None
        if error is not None and not isinstance(error, ServeError):
            raise error

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    app: Any, context: InboundContext, host: str = "127.0.0.1", port: int = 8080, **options: Any
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; blocks. ``options``: see :class:`MeshServer`.

    In the main thread the signals trigger uvicorn's graceful shutdown, after
    which uvicorn re-raises the signal to the previous handler: SIGINT then
    surfaces as :class:`KeyboardInterrupt`, SIGTERM ends the process unless a
    handler was installed (``inmesh serve`` installs one and exits 0).
    """
    MeshServer(app, context, host, port, **options).run()


async def serve_async(
    app: Any, context: InboundContext, host: str = "127.0.0.1", port: int = 8080, **options: Any
) -> None:
    """Serve ``app`` in the running event loop until cancelled or signalled.

    Cancelling the task stops the server (without the graceful phase). For
    a graceful programmatic stop, build a :class:`MeshServer` and call
    :meth:`MeshServer.stop`.
    """
    await MeshServer(app, context, host, port, **options).serve()


def serve_in_thread(
    app: Any,
    context: InboundContext,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    start_timeout: float = 10.0,
    **options: Any,
) -> BackgroundServer:
    """Start ``app`` in a background thread; returns once it accepts connections.

    ``port=0`` binds an ephemeral port: read it from ``.port``. Stop it with
    ``.stop()`` or a ``with`` block; the thread is joined. For tests and for
    apps that serve next to other work.
    """
    return BackgroundServer(MeshServer(app, context, host, port, **options)).start(start_timeout)
