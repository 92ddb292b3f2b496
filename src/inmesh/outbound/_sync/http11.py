"""The connector's HTTP/1.1 connection pool, on h11 (generated from the _async twin by scripts/unasync.py: do not edit).

One :class:`HTTP11Pool` per connector pool key; it speaks HTTP/1.1
over the network streams of an httpcore network backend (the connector's
verifying backend), takes ``httpcore.Request`` and returns
``httpcore.Response``, and raises httpcore's exceptions, so the connector,
its error mapping and the transport see exactly what httpcore's own pool
gives them. It replaces httpcore's pool because:

* **cost**: on an in-memory connection a keep-alive request through
  httpcore's pool costs about 87 µs of CPU, 33 µs of which is h11 itself;
  the rest (per-request pool bookkeeping over every connection, six trace
  hooks, locks, cancellation shields, two stream wrappers) is more than the
  whole mesh decision path. This pool does the same work in a few µs over
  h11 (``benchmarks/outbound.py``, docs/performance.md);
* **threads**: httpcore's sync pool can close a connection another thread
  has just taken (its ``has_expired`` check, encode/httpcore#1110). Here the
  pool's state changes only under its lock, a connection belongs to one
  request at a time, and only the idle connection about to be reused is
  checked;
* **Envoy's limits**: ``max_requests_per_connection`` and
  ``max_connection_duration`` (:class:`~inmesh.outbound.PoolLimits`).

What it does, as httpcore does it:

* idle connections are kept per origin (scheme, host, port), most recently
  used first, for ``keepalive_expiry`` seconds; one whose socket is readable
  while idle (the server closed it, or sent bytes nobody asked for) is
  closed instead of reused;
* ``max_connections`` bounds the connections open at once; a request then
  waits up to its ``pool`` timeout (``httpcore.PoolTimeout``), and an idle
  connection to another origin is closed to make room;
* the request head and a body sent in one piece go out in one write; a
  write error does not end the request before its response is read (a
  server may answer, e.g. 413, and close before reading the whole body);
* 1xx responses are skipped, except ``101 Switching Protocols`` (and a 2xx
  answer to ``CONNECT``): the response's ``network_stream`` is then the
  upgraded stream, and the connection leaves the pool;
* a connection goes back to the pool only when both the request and the
  response were complete; anything else (an error, cancellation, a body
  closed early) closes it, shielded from cancellation.

httpcore's ``trace`` request extension is not supported.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
import typing

import h11
import httpcore

from .._common import DEFAULT_LIMITS, PoolLimits
from .._errors import ConnectorClosedError
from .._io import Shield, Waiter

__all__ = ["HTTP11Connection", "HTTP11Pool"]

logger = logging.getLogger("inmesh.outbound")

READ_SIZE = 64 * 1024
"""Bytes asked of the stream per read (httpcore's value)."""

MAX_HEAD_SIZE = 100 * 1024
"""The largest response head accepted (httpcore's value; h11's default is 16 KiB)."""

_NO_TIMEOUTS: dict[str, float | None] = {}
_new = object.__new__
_Origin = tuple[bytes, bytes, int]
_DATA = h11.Data
_END = h11.EndOfMessage
_RESPONSE = h11.Response


def _origin(url: httpcore.URL) -> _Origin:
    port = url.port
    if port is None:
        port = 443 if url.scheme == b"https" else 80
    return (url.scheme, url.host, port)


class HTTP11Pool:
    """HTTP/1.1 connections to the origins of the requests it is given.

    * ``backend``: opens the connections (``connect_tcp``, then
      ``start_tls`` for ``https`` URLs);
    * ``ssl_context``: passed to ``start_tls`` (the connector's verifying
      backend ignores it and uses its own);
    * ``limits``: :class:`~inmesh.outbound.PoolLimits`.

    Safe to share between threads (sync) or tasks (async): its state is
    guarded by a ``threading.Lock`` never held across I/O.
    """

    def __init__(
        self,
        backend: httpcore.NetworkBackend,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: PoolLimits = DEFAULT_LIMITS,
    ) -> None:
        self._backend = backend
        self._ssl_context = ssl_context
        self.limits = limits
        """The limits this pool enforces."""
        self._lock = threading.Lock()
        self._idle: dict[_Origin, collections.deque[HTTP11Connection]] = {}
        self._idle_count = 0
        self._open = 0  # connections open or being opened
        self._in_use = 0  # of which taken by a request
        self._connections: set[HTTP11Connection] = set()
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._closed = False

    # -- requests -------------------------------------------------------------

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        """Send ``request`` on a pooled or new connection; its response, body unread.

        The connection returns to the pool when the body has been read to its
        end and closed.
        """
        timeouts = request.extensions.get("timeout") or _NO_TIMEOUTS
        origin = _origin(request.url)
        connection = self._acquire(origin, request, timeouts)
        return connection.handle_request(request, timeouts)

    def _acquire(
        self, origin: _Origin, request: httpcore.Request, timeouts: dict[str, float | None]
    ) -> HTTP11Connection:
        while True:
            stale: list[HTTP11Connection] = []
            waiter: Waiter | None = None
            connection: HTTP11Connection | None = None
            connect = False
            with self._lock:
                if self._closed:
                    raise ConnectorClosedError("the connection pool is closed")
                idle = self._idle.get(origin)
                if idle:
                    connection = self._take_idle(idle, stale)
                if connection is None:
                    limit = self.limits.max_connections
                    if limit is not None and self._open >= limit and self._idle_count:
                        stale.append(self._evict_oldest())  # room for this origin
                    if limit is None or self._open < limit:
                        self._open += 1
                        self._in_use += 1
                        connect = True
                    else:
                        waiter = Waiter()
                        self._waiters.append(waiter)
                else:
                    self._in_use += 1
            if stale:
                _close_quietly(stale)
            if connection is not None:
                return connection
            if connect:
                return self._connect(origin, request, timeouts)
            assert waiter is not None
            try:
                woken = waiter.wait(timeouts.get("pool"))
            except BaseException:  # cancelled while waiting
                self._give_up(waiter)
                raise
            if not woken:
                self._give_up(waiter)
                raise httpcore.PoolTimeout("no connection became available in time")

    def _give_up(self, waiter: Waiter) -> None:
        """``waiter`` stops waiting; a turn it was given goes to the next one."""
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:  # woken meanwhile
                self._wake()

    def _take_idle(
        self, idle: collections.deque[HTTP11Connection], stale: list[HTTP11Connection]
    ) -> HTTP11Connection | None:
        """The newest reusable idle connection (lock held); unusable ones go to ``stale``."""
        now = time.monotonic()
        while idle and idle[0].expires_at <= now:  # the oldest first: expired ones
            stale.append(self._forget(idle.popleft()))
            self._wake()
        while idle:
            connection = idle.pop()
            if connection.expires_at > now and not connection.is_readable():
                self._idle_count -= 1
                return connection
            stale.append(self._forget(connection))
            self._wake()
        return None

    def _forget(self, connection: HTTP11Connection) -> HTTP11Connection:
        """``connection``, taken off an idle list to be closed, leaves the pool (lock held)."""
        self._idle_count -= 1
        self._open -= 1
        self._connections.discard(connection)
        return connection

    def _evict_oldest(self) -> HTTP11Connection:
        """Remove the least recently used idle connection of any origin (lock held)."""
        oldest: collections.deque[HTTP11Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].released_at < oldest[0].released_at):
                oldest = idle
        assert oldest is not None
        return self._forget(oldest.popleft())

    def _wake(self) -> None:
        """Tell the first waiting request to look again (lock held)."""
        if self._waiters:
            self._waiters.popleft().ready()

    def _connect(
        self, origin: _Origin, request: httpcore.Request, timeouts: dict[str, float | None]
    ) -> HTTP11Connection:
        url = request.url
        host = url.host.decode("ascii")
        timeout = timeouts.get("connect")
        try:
            stream = self._backend.connect_tcp(
                host,
                url.port or (443 if url.scheme == b"https" else 80),
                timeout=timeout,
                socket_options=self.limits.socket_options or None,
            )
            if url.scheme == b"https":
                context = self._ssl_context or ssl.create_default_context()
                try:
                    stream = stream.start_tls(context, server_hostname=host, timeout=timeout)
                except BaseException:
                    with Shield(), contextlib.suppress(Exception):
                        stream.close()
                    raise
        except BaseException:
            with self._lock:
                self._open -= 1
                self._in_use -= 1
                self._wake()
            raise
        connection = HTTP11Connection(self, stream, origin)
        with self._lock:
            if self._closed:
                self._open -= 1
                self._in_use -= 1
                closed = True
            else:
                self._connections.add(connection)
                closed = False
        if closed:
            _close_quietly([connection])
            raise ConnectorClosedError("the connection pool is closed")
        return connection

    def _release(self, connection: HTTP11Connection, reusable: bool) -> None:
        """A request is done with ``connection``: keep it idle, or close it."""
        now = time.monotonic()
        limits = self.limits
        close: list[HTTP11Connection] = []
        with self._lock:
            self._in_use -= 1
            if reusable and not self._closed and connection.reusable(now, limits):
                expiry = limits.keepalive_expiry
                expires = now + expiry if expiry is not None else float("inf")
                duration = limits.max_connection_duration
                if duration is not None:  # too old to reuse once found idle past it
                    expires = min(expires, connection.created_at + duration)
                connection.expires_at = expires
                connection.released_at = now
                idle = self._idle.get(connection.origin)
                if idle is None:
                    idle = self._idle[connection.origin] = collections.deque()
                idle.append(connection)
                self._idle_count += 1
                keep = limits.max_keepalive_connections
                if keep is not None and self._idle_count > keep:
                    close.append(self._evict_oldest())
            else:
                close.append(connection)
                self._open -= 1
                self._connections.discard(connection)
            self._wake()
        if close:
            _close_quietly(close)

    # -- state ----------------------------------------------------------------

    def is_idle(self) -> bool:
        """No request holds a connection of this pool."""
        return not self._in_use

    @property
    def connection_count(self) -> int:
        """Connections open (or being opened) now."""
        return self._open

    @property
    def idle_count(self) -> int:
        """Connections kept idle now."""
        return self._idle_count

    def close(self) -> None:
        """Close the idle connections and end the ones in use; later requests
        raise :class:`~inmesh.outbound.ConnectorClosedError`.

        A connection in use is shut down, not closed: whoever is reading or
        writing it wakes up with an error and closes it when its request
        ends. Closing a socket another thread is blocked on would free its
        file descriptor while OpenSSL still reads that number, and a new
        connection given the same number would have its bytes read by the
        old request (a truncated body or ``WRONG_VERSION_NUMBER`` there).
        """
        with self._lock:
            self._closed = True
            idle = [c for queue in self._idle.values() for c in queue]
            active = list(self._connections.difference(idle))
            self._connections.clear()
            self._idle.clear()
            self._open -= self._idle_count  # the others leave as their requests end
            self._idle_count = 0
            waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            waiter.ready()
        for connection in active:
            connection.abort()
        _close_quietly(idle)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} open={self._open} idle={self._idle_count} "
            f"in_use={self._in_use}>"
        )


def _close_quietly(connections: list[HTTP11Connection]) -> None:
    """Close connections the pool gave up on, shielded from cancellation; a
    failure to close one (its peer already gone) is logged, not raised."""
    with Shield():
        for connection in connections:
            try:
                connection.close()
            except Exception as exc:  # closing a dead connection
                logger.debug("closing %r failed: %r", connection, exc)


class HTTP11Connection:
    """One HTTP/1.1 connection of an :class:`HTTP11Pool`, used by one request at a time."""

    __slots__ = (
        "_h11",
        "_pool",
        "_stream",
        "closed",
        "created_at",
        "expires_at",
        "origin",
        "released_at",
        "requests",
    )

    def __init__(
        self, pool: HTTP11Pool, stream: httpcore.NetworkStream, origin: _Origin
    ) -> None:
        self._pool = pool
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_SIZE)
        self.origin = origin
        """The (scheme, host, port) it is connected to."""
        self.created_at = time.monotonic()
        self.released_at = self.created_at
        self.expires_at = float("inf")
        """When it stops being reusable while idle (``time.monotonic()``)."""
        self.requests = 0
        """Requests sent on it."""
        self.closed = False

    def is_readable(self) -> bool:
        """Readable while idle: the server closed it (or misbehaves)."""
        return bool(self._stream.get_extra_info("is_readable"))

    def reusable(self, now: float, limits: PoolLimits) -> bool:
        """May carry another request under ``limits``."""
        if self.closed:
            return False
        most = limits.max_requests_per_connection
        if most is not None and self.requests >= most:
            return False
        duration = limits.max_connection_duration
        return duration is None or now - self.created_at < duration

    def handle_request(
        self, request: httpcore.Request, timeouts: dict[str, float | None]
    ) -> httpcore.Response:
        """Send ``request``; the response with its head read and its body to stream."""
        self.requests += 1
        try:
            # On a write error the server may have answered and closed: read what it said.
            with contextlib.suppress(httpcore.WriteError):
                self._send(request, timeouts.get("write"))
            read_timeout = timeouts.get("read")
            while True:
                event = self._next_event(read_timeout)
                if type(event) is _RESPONSE:
                    break
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    break
        except BaseException:
            with Shield():
                self._pool._release(self, False)
            raise
        assert isinstance(event, (h11.Response, h11.InformationalResponse))
        status = event.status_code
        stream: httpcore.NetworkStream = self._stream
        if status == 101 or (request.method == b"CONNECT" and 200 <= status < 300):
            stream = _UpgradeStream(stream, self._h11.trailing_data[0])
        response: httpcore.Response = _new(httpcore.Response)
        response.status = status
        response.headers = event.headers.raw_items()
        response.stream = _Body(self, read_timeout)
        response.extensions = {
            "http_version": b"HTTP/" + event.http_version,
            "reason_phrase": event.reason,
            "network_stream": stream,
        }
        response._stream_consumed = False
        return response

    def _send(self, request: httpcore.Request, timeout: float | None) -> None:
        h = self._h11
        try:
            head = h.send(
                h11.Request(
                    method=request.method, target=request.url.target, headers=request.headers
                )
            )
        except h11.LocalProtocolError as exc:
            raise httpcore.LocalProtocolError(str(exc)) from exc
        pending = head or b""
        body = typing.cast(typing.Iterable[bytes], request.stream)
        try:
            for chunk in body:
                if not chunk:
                    continue
                data = h.send(_DATA(data=chunk))
                if pending:
                    data = pending + data if data else pending
                    pending = b""
                if data:
                    self._stream.write(data, timeout)
            end = h.send(_END())
        except h11.LocalProtocolError as exc:
            raise httpcore.LocalProtocolError(str(exc)) from exc
        if end:
            pending += end
        if pending:
            self._stream.write(pending, timeout)

    def _next_event(self, timeout: float | None) -> typing.Any:
        h = self._h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpcore.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            data = self._stream.read(READ_SIZE, timeout)
            if not data and h.their_state is h11.SEND_RESPONSE:
                raise httpcore.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
            h.receive_data(data)

    def _response_closed(self) -> None:
        h = self._h11
        reusable = h.our_state is h11.DONE and h.their_state is h11.DONE
        if reusable:
            h.start_next_cycle()
        self._pool._release(self, reusable)

    def abort(self) -> None:
        """Shut the socket down both ways: a request blocked on it wakes up with
        an error (end of stream), and the descriptor stays its own until it
        closes the connection."""
        sock = self._stream.get_extra_info("socket")
        with contextlib.suppress(OSError):
            if isinstance(sock, socket.socket):
                # socket.socket's own shutdown: SSLSocket.shutdown also drops its
                # SSL object, which the request's reader may still be using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            elif sock is not None and hasattr(sock, "shutdown"):  # asyncio's TransportSocket
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the network stream (the pool's bookkeeping is the pool's)."""
        if not self.closed:
            self.closed = True
            self._stream.close()

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        state = "closed" if self.closed else "open"
        return (
            f"<{type(self).__name__} {scheme.decode()}://{host.decode()}:{port} {state}, "
            f"{self.requests} request(s)>"
        )


class _Body:
    """A response body read from its connection; closing it releases the connection."""

    __slots__ = ("_connection", "_done", "_timeout")

    def __init__(self, connection: HTTP11Connection, timeout: float | None) -> None:
        self._connection = connection
        self._timeout = timeout
        self._done = False

    def __iter__(self) -> typing.Iterator[bytes]:
        connection = self._connection
        timeout = self._timeout
        try:
            while True:
                event = connection._next_event(timeout)
                kind = type(event)
                if kind is _DATA:
                    yield bytes(event.data)
                elif kind is _END or event is h11.PAUSED:
                    break
        except BaseException:
            with Shield():
                self.close()
            raise

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._connection._response_closed()


class _UpgradeStream(httpcore.NetworkStream):
    """The stream of an upgraded connection: bytes h11 read past the head come first."""

    def __init__(self, stream: httpcore.NetworkStream, leading: bytes) -> None:
        self._stream = stream
        self._leading = leading

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._leading:
            data, self._leading = self._leading[:max_bytes], self._leading[max_bytes:]
            return data
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return self._stream.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)
