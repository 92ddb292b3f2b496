"""TLS costs of the outbound connector: handshakes, session resumption, keep-alive.

    python benchmarks/tls.py [--rounds 10] [--handshakes 500] [--new 30] [--keepalive 500]

Everything runs on 127.0.0.1 with real sockets and EC P-256 certificates from
a LocalCA. Three measurements, each interleaved in rounds so that drift on a
shared machine hits every variant alike (medians over all samples):

1. raw handshakes per second (Python ``ssl`` sockets, a server thread, client
   and server on the same machine): full mTLS and resumed (TLS 1.3 PSK);
2. new-connection request latency through ``AsyncVerifyingBackend`` /
   ``VerifyingBackend`` pools (one ``Connection: close`` request per
   connection) against uvicorn with mTLS in a subprocess: no resumption;
   resumption with inmesh's design (plain ``SSLContext`` + ``sslobject_class``
   hook); resumption with an ``SSLContext`` subclass overriding
   ``wrap_bio``/``wrap_socket`` (which anyio runs in a worker thread); and the
   full ``AsyncConnector`` / ``Connector``;
3. keep-alive request cost through the connector, mTLS vs plain text,
   against the same uvicorn process (two listeners: TLS with client
   certificates required, and plain), and plain text through a bare httpcore
   pool (the connector's own overhead).

The uvicorn server runs in a child process (``--serve``) so that the client's
timings do not share a GIL with it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


# -- the server process -------------------------------------------------------------


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def serve(directory: Path) -> None:
    """Run two uvicorn servers in one process (mTLS and plain); print their ports."""
    import uvicorn

    socks = []
    for _ in range(2):
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (else Nagle
        # and the client's delayed ACK add 40 ms to every response).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        socks.append(sock)
    common: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "off"}
    tls = uvicorn.Config(
        _app,
        ssl_certfile=str(directory / "cert-chain.pem"),
        ssl_keyfile=str(directory / "key.pem"),
        ssl_ca_certs=str(directory / "root-cert.pem"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        **common,
    )
    plain = uvicorn.Config(_app, **common)
    servers = [uvicorn.Server(tls), uvicorn.Server(plain)]

    async def main() -> None:
        tasks = [
            asyncio.ensure_future(s.serve(sockets=[sock]))
            for s, sock in zip(servers, socks, strict=True)
        ]
        while not all(s.started for s in servers):
            await asyncio.sleep(0.01)
        print(
            json.dumps({"tls": socks[0].getsockname()[1], "plain": socks[1].getsockname()[1]}),
            flush=True,
        )
        await asyncio.get_running_loop().run_in_executor(
            None, sys.stdin.read
        )  # until the parent closes it
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks)

    asyncio.run(main())


# -- 1. raw handshakes --------------------------------------------------------------


def raw_handshakes(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, n: int, resume: bool
) -> list[float]:
    """Seconds per handshake (connect, handshake, 1-byte echo, close), ``n`` times."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def server() -> None:
        for _ in range(n):
            raw, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(conn.recv(1))
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=server)
    thread.start()
    times, session = [], None
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                client_ctx.wrap_socket(
                    raw, server_hostname="bench", session=session if resume else None
                ) as conn,
            ):
                conn.sendall(b"x")
                conn.recv(1)
                if resume:
                    session = conn.session
            times.append(time.perf_counter() - t0)
    finally:
        thread.join()
        listener.close()
    return times


# -- 2. and 3. through the connector ------------------------------------------------


class SubclassContext(ssl.SSLContext):
    """The alternative design: resume by overriding wrap_bio/wrap_socket (anyio hops to a thread)."""

    sessions: dict[str, ssl.SSLSession]

    def wrap_bio(
        self,
        incoming: Any,
        outgoing: Any,
        server_side: bool = False,
        server_hostname: Any = None,
        session: Any = None,
    ) -> ssl.SSLObject:
        key = server_hostname.decode() if isinstance(server_hostname, bytes) else server_hostname
        return super().wrap_bio(
            incoming, outgoing, server_side, server_hostname, session or self.sessions.get(key)
        )

    def wrap_socket(  # type: ignore[override]
        self, sock: Any, server_side: bool = False, server_hostname: Any = None, session: Any = None
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session or self.sessions.get(server_hostname),
        )


def subclass_context(cert: Any) -> SubclassContext:
    from inmesh.identity.tls import load_certificate
    from inmesh.upstream.tls import MESH_ALPN

    ctx = SubclassContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(list(MESH_ALPN))
    load_certificate(ctx, cert)
    ctx.sessions = {}
    return ctx


class Bench:
    """The client side: certificates, TLS settings, variants."""

    def __init__(self, directory: Path, ports: dict[str, int]) -> None:
        from inmesh.config.resources.destination_rule import ClientTLSSettings, TLSMode
        from inmesh.identity.ca import LocalCA
        from inmesh.identity.sources import MemorySource
        from inmesh.upstream.tls import PLAINTEXT, resolve_upstream_tls

        self.ca = LocalCA.load(directory / "ca")
        self.source = MemorySource(self.ca.issue("spiffe://cluster.local/ns/default/sa/frontend"))
        self.source.start()
        self.ports = ports
        self.mesh = resolve_upstream_tls(
            ClientTLSSettings(mode=TLSMode.ISTIO_MUTUAL),
            host="backend.default.svc.cluster.local",
            port=8080,
            subject_alt_names=["spiffe://cluster.local/ns/default/sa/backend"],
        )
        self.plain = PLAINTEXT

    def request(self, tls: Any, close: bool) -> Any:
        import httpcore

        headers = [(b"Host", b"backend:8080")] + ([(b"Connection", b"close")] if close else [])
        port = self.ports["tls" if tls.secure else "plain"]
        url = httpcore.URL(scheme=tls.scheme.encode(), host=b"127.0.0.1", port=port, target=b"/")
        return httpcore.Request("GET", url, headers=headers)

    def mesh_context(self, hooks: bool) -> ssl.SSLContext:
        from inmesh.identity.tls import build_client_context
        from inmesh.outbound._common import install_session_hooks

        ctx = build_client_context(self.source.current(), alpn_protocols=self.mesh.alpn)
        return install_session_hooks(ctx) if hooks else ctx


def _stats(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1e6, s[int(len(s) * 0.9)] * 1e6


async def async_new_connections(
    bench: Bench, rounds: int, per_round: int
) -> dict[str, tuple[list[float], int]]:
    import httpcore

    from inmesh.outbound import AsyncConnector, AsyncVerifyingBackend
    from inmesh.outbound._common import SessionCache

    subclass = subclass_context(bench.source.current())
    variants: dict[str, Callable[[], Any]] = {
        "no resumption": lambda: AsyncVerifyingBackend(bench.mesh, bench.mesh_context(False)),
        "resumption, sslobject_class hook (inmesh)": lambda: AsyncVerifyingBackend(
            bench.mesh, bench.mesh_context(True), sessions=SessionCache()
        ),
        "resumption, SSLContext subclass": lambda: AsyncVerifyingBackend(bench.mesh, subclass),
    }
    pools = {
        name: httpcore.AsyncConnectionPool(
            ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), network_backend=make(), retries=0
        )
        for name, make in variants.items()
    }
    connector = AsyncConnector(bench.source)
    results: dict[str, tuple[list[float], int]] = {
        name: ([], 0) for name in [*variants, "AsyncConnector (resumption on)"]
    }

    async def one(name: str) -> None:
        t0 = time.perf_counter()
        if name.startswith("AsyncConnector"):
            response = await connector.handle_async_request(
                "bench", bench.mesh, bench.request(bench.mesh, close=True)
            )
        else:
            response = await pools[name].handle_async_request(bench.request(bench.mesh, close=True))
        await response.aread()
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        reused = ssl_object.session_reused
        if name == "resumption, SSLContext subclass":
            subclass.sessions[bench.mesh.sni or ""] = ssl_object.session
        await response.aclose()
        elapsed = time.perf_counter() - t0
        samples, count = results[name]
        samples.append(elapsed)
        results[name] = (samples, count + int(reused))

    for name in results:  # warm-up
        for _ in range(3):
            await one(name)
    for key in results:
        results[key] = ([], 0)
    for _ in range(rounds):
        for name in results:
            for _ in range(per_round):
                await one(name)
    for pool in pools.values():
        await pool.aclose()
    await connector.aclose()
    return results


def sync_new_connections(
    bench: Bench, rounds: int, per_round: int
) -> dict[str, tuple[list[float], int]]:
    import httpcore

    from inmesh.outbound import Connector, VerifyingBackend
    from inmesh.outbound._common import SessionCache

    subclass = subclass_context(bench.source.current())
    variants: dict[str, Callable[[], Any]] = {
        "no resumption": lambda: VerifyingBackend(bench.mesh, bench.mesh_context(False)),
        "resumption, sslobject_class hook (inmesh)": lambda: VerifyingBackend(
            bench.mesh, bench.mesh_context(True), sessions=SessionCache()
        ),
        "resumption, SSLContext subclass": lambda: VerifyingBackend(bench.mesh, subclass),
    }
    pools = {
        name: httpcore.ConnectionPool(
            ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), network_backend=make(), retries=0
        )
        for name, make in variants.items()
    }
    connector = Connector(bench.source)
    results: dict[str, tuple[list[float], int]] = {
        name: ([], 0) for name in [*variants, "Connector (resumption on)"]
    }

    def one(name: str) -> None:
        t0 = time.perf_counter()
        if name.startswith("Connector"):
            response = connector.handle_request(
                "bench", bench.mesh, bench.request(bench.mesh, close=True)
            )
        else:
            response = pools[name].handle_request(bench.request(bench.mesh, close=True))
        response.read()
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        reused = ssl_object.session_reused
        if name == "resumption, SSLContext subclass":
            subclass.sessions[bench.mesh.sni or ""] = ssl_object.session
        response.close()
        elapsed = time.perf_counter() - t0
        samples, count = results[name]
        samples.append(elapsed)
        results[name] = (samples, count + int(reused))

    for name in results:
        for _ in range(3):
            one(name)
    for key in results:
        results[key] = ([], 0)
    for _ in range(rounds):
        for name in results:
            for _ in range(per_round):
                one(name)
    for pool in pools.values():
        pool.close()
    connector.close()
    return results


async def async_keepalive(bench: Bench, rounds: int, per_round: int) -> dict[str, list[float]]:
    import httpcore

    from inmesh.outbound import AsyncConnector

    out: dict[str, list[float]] = {"mTLS": [], "plain": [], "bare": []}
    bare = httpcore.AsyncConnectionPool()
    async with AsyncConnector(bench.source) as connector:

        async def one(name: str) -> float:
            tls = bench.mesh if name == "mTLS" else bench.plain
            t0 = time.perf_counter()
            if name == "bare":
                response = await bare.handle_async_request(bench.request(tls, close=False))
            else:
                response = await connector.handle_async_request(
                    "bench", tls, bench.request(tls, close=False)
                )
            await response.aread()
            await response.aclose()
            return time.perf_counter() - t0

        for name in out:
            for _ in range(50):
                await one(name)
        for _ in range(rounds):
            for name, samples in out.items():
                for _ in range(per_round):
                    samples.append(await one(name))
    await bare.aclose()
    return out


def sync_keepalive(bench: Bench, rounds: int, per_round: int) -> dict[str, list[float]]:
    import httpcore

    from inmesh.outbound import Connector

    out: dict[str, list[float]] = {"mTLS": [], "plain": [], "bare": []}
    bare = httpcore.ConnectionPool()
    with Connector(bench.source) as connector:

        def one(name: str) -> float:
            tls = bench.mesh if name == "mTLS" else bench.plain
            t0 = time.perf_counter()
            if name == "bare":
                response = bare.handle_request(bench.request(tls, close=False))
            else:
                response = connector.handle_request("bench", tls, bench.request(tls, close=False))
            response.read()
            response.close()
            return time.perf_counter() - t0

        for name in out:
            for _ in range(50):
                one(name)
        for _ in range(rounds):
            for name, samples in out.items():
                for _ in range(per_round):
                    samples.append(one(name))
    bare.close()
    return out


def run_async(fn: Callable[[], Awaitable[Any]]) -> Any:
    import anyio

    return anyio.run(fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    ap.add_argument(
        "--handshakes", type=int, default=500, help="raw handshakes per variant (default 500)"
    )
    ap.add_argument(
        "--new", type=int, default=30, help="new connections per variant and round (default 30)"
    )
    ap.add_argument(
        "--keepalive",
        type=int,
        default=1000,
        help="keep-alive requests per variant and round (default 1000)",
    )
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return

    import httpcore
    import uvicorn

    from inmesh.identity.ca import LocalCA
    from inmesh.identity.tls import build_client_context, build_server_context

    started = time.perf_counter()
    print("$ python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]))
    print(
        f"Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, httpcore {httpcore.__version__}, "
        f"anyio {importlib.metadata.version('anyio')}, uvicorn {uvicorn.__version__}, "
        f"{len(__import__('os').sched_getaffinity(0))} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="inmesh-bench-") as tmp:
        directory = Path(tmp)
        ca = LocalCA.create()
        ca.save(directory / "ca")
        ca.issue("spiffe://cluster.local/ns/default/sa/backend").write(directory)

        # 1. raw handshakes
        server_cert = ca.issue("spiffe://cluster.local/ns/default/sa/backend")
        client_cert = ca.issue("spiffe://cluster.local/ns/default/sa/frontend")
        server_ctx = build_server_context(server_cert, session_tickets=True)
        client_ctx = build_client_context(client_cert)
        full: list[float] = []
        resumed: list[float] = []
        for _ in range(args.rounds):
            full += raw_handshakes(
                server_ctx, client_ctx, args.handshakes // args.rounds, resume=False
            )
            resumed += raw_handshakes(
                server_ctx, client_ctx, args.handshakes // args.rounds, resume=True
            )

        child = subprocess.Popen(
            [sys.executable, str(HERE), "--serve", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            ports = json.loads(child.stdout.readline())
            bench = Bench(directory, ports)
            a_new = run_async(lambda: async_new_connections(bench, args.rounds, args.new))
            s_new = sync_new_connections(bench, args.rounds, args.new)
            a_ka = run_async(lambda: async_keepalive(bench, args.rounds, args.keepalive))
            s_ka = sync_keepalive(bench, args.rounds, args.keepalive)
            bench.source.close()
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    print("\n1. Raw handshakes, Python ssl sockets, client and server threads on this machine")
    print(f"{'case':<40} {'handshakes/s':>12} {'median µs':>10} {'p90 µs':>9}")
    for name, samples in (
        ("full mTLS (EC P-256, TLS 1.3)", full),
        ("resumed mTLS (TLS 1.3 PSK)", resumed),
    ):
        med, p90 = _stats(samples)
        print(f"{name:<40} {len(samples) / sum(samples):>12.0f} {med:>10.0f} {p90:>9.0f}")

    print(
        "\n2. New connection + one request (Connection: close) to uvicorn, mTLS, through httpcore pools"
    )
    print(
        f"{'path':<6} {'variant':<44} {'median µs':>10} {'p90 µs':>9} {'resumed':>9} {'vs none':>8}"
    )
    for label, res in (("async", a_new), ("sync", s_new)):
        base = _stats(res["no resumption"][0])[0]
        for name, (samples, reused) in res.items():
            med, p90 = _stats(samples)
            print(
                f"{label:<6} {name:<44} {med:>10.0f} {p90:>9.0f} {reused:>4}/{len(samples):<4} {med / base:>7.2f}x"
            )

    print("\n3. Keep-alive requests to the same uvicorn process (two listeners: mTLS, plain)")
    print(
        f"{'path':<6} {'connector mTLS':>15} {'connector plain':>16} {'mTLS/plain':>11} "
        f"{'bare httpcore plain':>20} {'connector/bare':>15}   (µs/request)"
    )
    for label, res in (("async", a_ka), ("sync", s_ka)):
        tls_med, plain_med, bare_med = (
            statistics.median(res[k]) * 1e6 for k in ("mTLS", "plain", "bare")
        )
        print(
            f"{label:<6} {tls_med:>15.0f} {plain_med:>16.0f} {tls_med / plain_med:>10.2f}x "
            f"{bare_med:>20.0f} {plain_med / bare_med:>14.2f}x"
        )
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
