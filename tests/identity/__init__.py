"""Tests of inmesh.identity, and small real helpers they share (no mocks).

* :class:`FakeClock`: wall-clock seconds that only move when told;
* :class:`TLSServer`: a threaded TLS echo server on 127.0.0.1 that records, per
  connection, the client's SPIFFE ID or the handshake error;
* :func:`tls_connect`: a client connection returning the socket.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from inmesh.identity.spiffe import SpiffeId
from inmesh.identity.tls import peer_spiffe_id_of_connection

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend-sa"
BACKEND = "spiffe://cluster.local/ns/default/sa/backend-sa"


class FakeClock:
    """Epoch seconds, moved by :meth:`advance` only."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Accepted:
    """What the server saw on one connection."""

    peer: SpiffeId | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class TLSServer:
    """Accepts TLS connections with ``ctx`` and echoes what it reads."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.accepted: list[Accepted] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            rec = Accepted()
            self.accepted.append(rec)
            t = threading.Thread(target=self._serve, args=(raw, rec), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket, rec: Accepted) -> None:
        raw.settimeout(5)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            rec.error = exc
            rec.done.set()
            raw.close()
            return
        rec.peer = peer_spiffe_id_of_connection(conn)
        rec.done.set()
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    return
                conn.sendall(data)

    def wait(self, n: int, timeout: float = 5.0) -> Accepted:
        """The n-th (1-based) connection's record, once its handshake finished."""
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"no connection #{n}")
            time.sleep(0.01)
        rec = self.accepted[n - 1]
        assert rec.done.wait(max(deadline - time.monotonic(), 0.1)), "handshake did not finish"
        return rec

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> TLSServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_connect(ctx: ssl.SSLContext, address: tuple[str, int]) -> ssl.SSLSocket:
    """Connect and finish the client handshake."""
    raw = socket.create_connection(address, timeout=5)
    try:
        return ctx.wrap_socket(raw, server_hostname=None)
    except BaseException:
        raw.close()
        raise


def echo(conn: ssl.SSLSocket, payload: bytes = b"ping") -> bytes:
    """Send ``payload`` and read it back."""
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = conn.recv(4096)
        if not chunk:
            break
        got += chunk
    return got
