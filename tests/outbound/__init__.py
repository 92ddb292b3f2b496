"""Tests of inmesh.outbound over real sockets on 127.0.0.1, and their helpers (no mocks).

* :class:`HTTPServer`: a threaded HTTP/1.1 server, plain or TLS, that records
  per connection every application byte received, the client's certificate
  (SPIFFE ID, serial), the SNI, the ALPN selected and whether the session was
  resumed;
* :func:`issue_dns_certificate`: a server certificate with DNS SANs signed by
  a :class:`~inmesh.identity.ca.LocalCA` (its leaves carry only SPIFFE IDs);
* :class:`AsyncWorkers` / :class:`Workers`: run calls concurrently (tasks /
  threads), the twin names ``scripts/unasync.py`` maps onto each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from inmesh.identity.ca import LocalCA
from inmesh.identity.tls import peer_spiffe_id_of_connection

T = TypeVar("T")
Serve = Callable[[ssl.SSLContext | None], "HTTPServer"]
"""The ``serve`` fixture: start a server with a context (``None``: plain text)."""

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend-sa"
BACKEND = "spiffe://cluster.local/ns/default/sa/backend-sa"
EVIL = "spiffe://cluster.local/ns/default/sa/evil-sa"
BACKEND_HOST = "backend.default.svc.cluster.local"


@dataclass
class Connection:
    """What the server saw on one connection."""

    received: bytearray = field(default_factory=bytearray)
    handshake_done: bool = False
    error: BaseException | None = None
    peer_id: str | None = None
    peer_serial: int | None = None
    sni: str | None = None
    alpn: str | None = None
    resumed: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


class HTTPServer:
    """HTTP/1.1 on 127.0.0.1, over TLS with ``ctx`` (``None``: plain text).

    ``GET /``: ``200`` with body ``ok`` and ``x-peer: <client SPIFFE ID or ->``.
    ``GET /stream``: ``200``, chunked: one chunk, then waits for
    :attr:`release` before the last chunk. ``Connection: close`` closes after
    the response. Close with :meth:`close` (joins every thread).
    """

    def __init__(self, ctx: ssl.SSLContext | None = None) -> None:
        self.ctx = ctx
        self._snis: dict[int, str | None] = {}
        if ctx is not None:
            ctx.sni_callback = self._sni
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.connections: list[Connection] = []
        self.release = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, name="test-http-accept")
        self._thread.start()

    def _sni(
        self, conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext
    ) -> None:
        self._snis[id(conn)] = name

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            rec = Connection()
            t = threading.Thread(target=self._serve, args=(raw, rec), name="test-http-conn")
            with self._lock:
                self.connections.append(rec)
                self._threads.append(t)
                self._socks.append(raw)
            t.start()

    def _serve(self, raw: socket.socket, rec: Connection) -> None:
        raw.settimeout(10)
        conn: socket.socket = raw
        try:
            if self.ctx is not None:
                tls = self.ctx.wrap_socket(raw, server_side=True)
                conn = tls
                rec.sni = self._snis.pop(id(tls), None)
                rec.alpn = tls.selected_alpn_protocol()
                rec.resumed = tls.session_reused
                sid = peer_spiffe_id_of_connection(tls)
                rec.peer_id = sid.uri if sid is not None else None
                der = tls.getpeercert(binary_form=True)
                if der:
                    rec.peer_serial = x509.load_der_x509_certificate(der).serial_number
                with self._lock:
                    self._socks.append(tls)
            rec.handshake_done = True
            self._http(conn, rec)
        except (OSError, ValueError) as exc:
            rec.error = exc
        finally:
            conn.close()
            rec.closed.set()

    def _http(self, conn: socket.socket, rec: Connection) -> None:
        buf = b""
        while not self._stop.is_set():
            data = conn.recv(65536)
            if not data:
                return
            rec.received += data
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                close = any(line.lower() == "connection: close" for line in lines[1:])
                self._respond(conn, rec, path, close)
                if close:
                    return

    def _respond(self, conn: socket.socket, rec: Connection, path: str, close: bool) -> None:
        extra = b"Connection: close\r\n" if close else b""
        if path == "/stream":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n5\r\nhello\r\n"
            )
            self.release.wait(10)
            conn.sendall(b"6\r\n world\r\n0\r\n\r\n")
            return
        peer = (rec.peer_id or "-").encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-peer: " + peer + b"\r\n" + extra + b"\r\nok"
        )

    def wait_closed(self, index: int, timeout: float = 5.0) -> bool:
        """Wait until connection ``index`` was accepted and has ended on the server side."""
        deadline = time.monotonic() + timeout
        while len(self.connections) <= index:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return self.connections[index].closed.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self.release.set()
        self.sock.close()
        self._thread.join()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(10)


def issue_dns_certificate(
    ca: LocalCA,
    directory: Path,
    dns_names: Sequence[str],
    *,
    name: str = "server",
) -> tuple[Path, Path]:
    """Write ``<name>.pem`` (leaf + intermediates) and ``<name>-key.pem`` for a
    certificate with ``dns_names`` as DNS SANs; return both paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=True
        )
        .sign(ca.signing_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = b"".join(c.public_bytes(pem) for c in (cert, *ca.intermediates))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(chain)
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def tls_server_context(
    cert_path: Path,
    key_path: Path,
    *,
    client_ca: Path | None = None,
) -> ssl.SSLContext:
    """A server context serving a certificate from files; ``client_ca``: require client certs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca)
    return ctx


class AsyncWorkers:
    """Run coroutine functions concurrently in an anyio task group."""

    @staticmethod
    async def run(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        results: dict[int, T] = {}

        async def one(index: int, call: Callable[[], Awaitable[T]]) -> None:
            results[index] = await call()

        async with anyio.create_task_group() as tg:
            for index, call in enumerate(calls):
                tg.start_soon(one, index, call)
        return [results[i] for i in range(len(calls))]


class Workers:
    """Run functions concurrently on up to :attr:`MAX_THREADS` threads.

    The cap keeps the suite's thread count modest on small CI machines. The
    rare TLS read failure once seen above ~12 threads was a closed mesh's
    pool closing a socket a shadow thread still read (see
    docs/traffic-management.md, "Known issues"); with it fixed, 30 runs at
    24 threads beside a CPU hog passed.
    """

    MAX_THREADS = 8

    @staticmethod
    def run(calls: Sequence[Callable[[], T]]) -> list[T]:
        with ThreadPoolExecutor(max_workers=min(len(calls), Workers.MAX_THREADS)) as pool:
            return list(pool.map(lambda call: call(), calls))
