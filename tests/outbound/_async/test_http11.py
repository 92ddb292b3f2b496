"""The connector's HTTP/1.1 pool against scripted servers on 127.0.0.1 (async source).

Each server runs a handler per accepted connection in a thread, over a real
socket: keep-alive, limits, servers that close, misbehave or upgrade.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator

import httpcore
import pytest

from inmesh.outbound import ConnectorClosedError, PoolLimits
from inmesh.outbound._async.http11 import AsyncHTTP11Pool
from inmesh.outbound._io import AsyncAttemptScope, sleep_async
from tests.outbound import AsyncWorkers

Handler = Callable[[socket.socket, int, "RawServer"], None]


class RawServer:
    """TCP on 127.0.0.1: ``handler(sock, index, server)`` per connection, in a thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.ended: list[threading.Event] = []
        self.release = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="test-raw-accept")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            ended = threading.Event()
            index = self.accepted
            self.accepted += 1
            self.ended.append(ended)
            self._conns.append(conn)
            thread = threading.Thread(target=self._run, args=(conn, index, ended))
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket, index: int, ended: threading.Event) -> None:
        try:
            self.handler(conn, index, self)
        except OSError:
            pass
        finally:
            conn.close()
            ended.set()

    def close(self) -> None:
        self._stop.set()
        self.release.set()
        self.sock.close()
        self._thread.join()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)


def read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    """The next request's head (its body, by content-length, is read and dropped); ``None`` at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    del buf[:length]
    return head


def answer_index(conn: socket.socket, index: int, server: RawServer) -> None:
    """Keep-alive: every request gets ``200`` with the connection's index as body."""
    buf = bytearray()
    while (head := read_request(conn, buf)) is not None:
        body = str(index).encode()
        if head.startswith(b"HEAD "):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            continue
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest.fixture
def raw_server() -> Generator[Callable[[Handler], RawServer], None, None]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., AsyncHTTP11Pool]]:
    made: list[AsyncHTTP11Pool] = []

    def make(**limits: float | None) -> AsyncHTTP11Pool:
        pool = AsyncHTTP11Pool(httpcore.AnyIOBackend(), limits=PoolLimits(**limits))  # type: ignore[arg-type]
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.aclose()


def request(
    port: int,
    method: str = "GET",
    *,
    content: bytes | None = None,
    upgrade: bytes | None = None,
    **timeouts: float,
) -> httpcore.Request:
    headers = [(b"host", b"test")]
    if upgrade is not None:
        headers += [(b"connection", b"upgrade"), (b"upgrade", upgrade)]
    if content is not None:
        headers.append((b"content-length", str(len(content)).encode()))
    return httpcore.Request(
        method,
        f"http://127.0.0.1:{port}/",
        headers=headers,
        content=content,
        extensions={"timeout": timeouts} if timeouts else {},
    )


async def fetch(via: AsyncHTTP11Pool, port: int, method: str = "GET", **kw: float) -> bytes:
    response = await via.handle_async_request(request(port, method, **kw))
    try:
        return await response.aread()
    finally:
        await response.aclose()


@pytest.mark.anyio
async def test_keep_alive_reuses_one_connection(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    server = raw_server(answer_index)
    pool = pools()
    assert [await fetch(pool, server.port) for _ in range(5)] == [b"0"] * 5
    assert await fetch(pool, server.port, "HEAD") == b""  # no body, still reusable
    assert await fetch(pool, server.port) == b"0"
    assert (pool.connection_count, pool.idle_count, server.accepted) == (1, 1, 1)
    assert pool.is_idle()


@pytest.mark.anyio
async def test_max_requests_per_connection(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    server = raw_server(answer_index)
    pool = pools(max_requests_per_connection=2)
    got = [await fetch(pool, server.port) for _ in range(5)]
    assert got == [b"0", b"0", b"1", b"1", b"2"]
    assert server.ended[0].wait(5) and server.ended[1].wait(5)  # closed, not left idle


@pytest.mark.anyio
async def test_keepalive_expiry_and_max_connection_duration(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    server = raw_server(answer_index)
    expiring = pools(keepalive_expiry=0.1)
    assert await fetch(expiring, server.port) == b"0"
    await sleep_async(0.2)
    assert await fetch(expiring, server.port) == b"1"
    assert server.ended[0].wait(5)
    aging = pools(max_connection_duration=0.3)
    assert await fetch(aging, server.port) == b"2"
    await sleep_async(0.1)
    assert await fetch(aging, server.port) == b"2"  # idle in between, still young
    await sleep_async(0.3)
    assert await fetch(aging, server.port) == b"3"  # found idle past its duration
    held = await aging.handle_async_request(request(server.port))
    await sleep_async(0.4)  # in use while it passes its duration
    assert await held.aread() == b"3"
    await held.aclose()
    assert await fetch(aging, server.port) == b"4"  # closed when its request ended


@pytest.mark.anyio
async def test_a_connection_the_server_closed_is_not_reused(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def one_then_close(conn: socket.socket, index: int, server: RawServer) -> None:
        read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" + str(index).encode())

    server = raw_server(one_then_close)
    pool = pools()
    assert await fetch(pool, server.port) == b"0"
    assert server.ended[0].wait(5)
    assert await fetch(pool, server.port) == b"1"  # the readable idle socket was dropped
    assert pool.connection_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "Server disconnected without sending a response."),
        (b"NONSENSE\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "peer closed connection"),
    ],
)
async def test_a_misbehaving_server_is_a_remote_protocol_error(
    raw_server: Callable[[Handler], RawServer],
    pools: Callable[..., AsyncHTTP11Pool],
    answer: bytes,
    message: str,
) -> None:
    def misbehave(conn: socket.socket, index: int, server: RawServer) -> None:
        read_request(conn, bytearray())
        conn.sendall(answer)

    server = raw_server(misbehave)
    pool = pools()
    with pytest.raises(httpcore.RemoteProtocolError, match=message):
        await fetch(pool, server.port)
    assert (pool.connection_count, pool.idle_count) == (0, 0)
    assert pool.is_idle()


@pytest.mark.anyio
async def test_a_body_closed_early_closes_its_connection(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def slow_body(conn: socket.socket, index: int, server: RawServer) -> None:
        buf = bytearray()
        while read_request(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            if index == 0:
                server.release.wait(10)
            conn.sendall(b"0\r\n\r\n")

    server = raw_server(slow_body)
    pool = pools()
    response = await pool.handle_async_request(request(server.port))
    async for chunk in response.stream:  # type: ignore[union-attr]
        assert chunk == b"hello"
        break
    await response.aclose()
    assert (pool.connection_count, pool.is_idle()) == (0, True)
    assert await fetch(pool, server.port) == b"hello"
    assert server.accepted == 2


@pytest.mark.anyio
async def test_an_early_answer_to_an_upload_is_read(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def refuse_upload(conn: socket.socket, index: int, server: RawServer) -> None:
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):  # drain what the client still sends, as servers linger
            pass

    server = raw_server(refuse_upload)
    pool = pools()
    response = await pool.handle_async_request(
        request(server.port, "POST", content=b"x" * 4_000_000)
    )
    await response.aread()
    await response.aclose()
    assert response.status == 413
    assert pool.connection_count == 0  # "Connection: close" is honoured


@pytest.mark.anyio
async def test_informational_responses_are_skipped(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def continue_then_ok(conn: socket.socket, index: int, server: RawServer) -> None:
        buf = bytearray()
        while read_request(conn, buf) is not None:
            conn.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            )

    server = raw_server(continue_then_ok)
    pool = pools()
    assert await fetch(pool, server.port) == b"ok"
    assert await fetch(pool, server.port) == b"ok"
    assert server.accepted == 1


@pytest.mark.anyio
async def test_an_upgraded_connection_hands_over_its_stream(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def upgrade(conn: socket.socket, index: int, server: RawServer) -> None:
        read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n\r\nhello")
        while data := conn.recv(65536):
            conn.sendall(data)

    server = raw_server(upgrade)
    pool = pools()
    response = await pool.handle_async_request(request(server.port, upgrade=b"echo"))
    assert response.status == 101
    stream = response.extensions["network_stream"]
    assert await stream.read(65536) == b"hello"  # read by h11 past the head, handed over
    await stream.write(b"ping")
    assert await stream.read(65536) == b"ping"
    await response.aclose()
    assert pool.connection_count == 0  # an upgraded connection never returns to the pool


@pytest.mark.anyio
async def test_max_connections_queues_then_times_out(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def hold_first(conn: socket.socket, index: int, server: RawServer) -> None:
        buf = bytearray()
        count = 0
        while read_request(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            if count == 0:
                server.release.wait(10)
            count += 1
            conn.sendall(b"2\r\nok\r\n0\r\n\r\n")

    server = raw_server(hold_first)
    pool = pools(max_connections=1)
    held = await pool.handle_async_request(request(server.port))
    with pytest.raises(httpcore.PoolTimeout):
        await fetch(pool, server.port, pool=0.2)

    async def waits() -> bytes:
        return await fetch(pool, server.port, pool=10)

    async def finishes_the_first() -> bytes:
        await sleep_async(0.2)
        server.release.set()
        body = await held.aread()
        await held.aclose()
        return body

    assert await AsyncWorkers.run([waits, finishes_the_first]) == [b"ok", b"ok"]
    assert server.accepted == 1


@pytest.mark.anyio
async def test_a_waiter_that_gives_up_passes_its_turn_on(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    server = raw_server(answer_index)
    pool = pools(max_connections=1)
    held = await pool.handle_async_request(request(server.port))
    # Cancelled on an event loop; a pool timeout in threads.
    with AsyncAttemptScope(0.1), contextlib.suppress(httpcore.PoolTimeout):
        await fetch(pool, server.port, pool=0.3)

    async def waits() -> bytes:
        return await fetch(pool, server.port, pool=10)

    async def finishes_the_first() -> bytes:
        await sleep_async(0.1)
        body = await held.aread()
        await held.aclose()
        return body

    assert await AsyncWorkers.run([waits, finishes_the_first]) == [b"0", b"0"]
    assert server.accepted == 1


@pytest.mark.anyio
async def test_max_connections_makes_room_from_another_origin(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    one, two = raw_server(answer_index), raw_server(answer_index)
    pool = pools(max_connections=1)
    assert await fetch(pool, one.port, pool=1) == b"0"
    assert await fetch(pool, two.port, pool=1) == b"0"  # one's idle connection made room
    assert one.ended[0].wait(5)
    assert pool.connection_count == 1


@pytest.mark.anyio
async def test_concurrent_requests_share_a_bounded_pool(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    server = raw_server(answer_index)
    pool = pools(max_connections=4, max_keepalive_connections=2)

    async def twenty() -> int:
        most = 0
        for _ in range(20):
            assert (await fetch(pool, server.port, pool=10)).isdigit()
            most = max(most, pool.connection_count)
        return most

    assert max(await AsyncWorkers.run([twenty] * 8)) <= 4
    assert pool.connection_count == pool.idle_count <= 2  # the idle beyond 2 were closed
    assert pool.is_idle()


@pytest.mark.anyio
async def test_a_timed_out_or_cancelled_request_closes_its_connection(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def never_answer(conn: socket.socket, index: int, server: RawServer) -> None:
        read_request(conn, bytearray())
        conn.recv(1)  # until the client closes

    server = raw_server(never_answer)
    pool = pools()
    timed_out = False
    with AsyncAttemptScope(0.1) as scope:  # cancels on an event loop; a no-op in threads
        try:
            await fetch(pool, server.port, read=0.5)
        except httpcore.ReadTimeout:
            timed_out = True
    assert timed_out or scope.expired
    assert (pool.connection_count, pool.is_idle()) == (0, True)
    assert server.ended[0].wait(5)


@pytest.mark.anyio
async def test_close_wakes_a_request_blocked_on_its_connection(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    def half_a_body(conn: socket.socket, index: int, server: RawServer) -> None:
        read_request(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        conn.recv(1)  # until the client goes

    server = raw_server(half_a_body)
    pool = pools()
    response = await pool.handle_async_request(request(server.port, read=10))

    async def reads() -> str:
        try:
            await response.aread()
        except (httpcore.ReadError, httpcore.RemoteProtocolError) as exc:
            return type(exc).__name__
        return "body"

    async def closes() -> str:
        await sleep_async(0.2)
        await pool.aclose()
        return "closed"

    start = time.monotonic()
    results = await AsyncWorkers.run([reads, closes])
    assert results[0] != "body" and results[1] == "closed"
    assert time.monotonic() - start < 5  # woken, not left until its 10 s read timeout
    await response.aclose()
    assert pool.connection_count == 0
    assert server.ended[0].wait(5)


@pytest.mark.anyio
async def test_close_ends_idle_and_active_connections(
    raw_server: Callable[[Handler], RawServer], pools: Callable[..., AsyncHTTP11Pool]
) -> None:
    server = raw_server(answer_index)
    pool = pools()
    assert await fetch(pool, server.port) == b"0"
    active = await pool.handle_async_request(request(server.port))
    assert await fetch(pool, server.port) == b"1"
    await pool.aclose()
    assert server.ended[0].wait(5) and server.ended[1].wait(5)
    await active.aclose()
    assert pool.connection_count == 0
    with pytest.raises(ConnectorClosedError):
        await fetch(pool, server.port)
