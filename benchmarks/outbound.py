"""Outbound cost: the decision path alone, and keep-alive round trips with and without the mesh.

    python benchmarks/outbound.py [--decisions 20000] [--rounds 5] [--requests 1000]
                                  [--trip-rounds 15] [--skip-decisions] [--skip-transport]
                                  [--skip-round-trips]

Part 1, decision path (no network): for 1 / 100 / 1,000 VirtualServices and
10 / 1,000 / 10,000 endpoints behind the routed service, the microseconds one
request spends in what the transport decides per request: building the
request attributes, :meth:`OutboundPlanner.route` (registry lookup,
VirtualService match, weighted destination, cluster), the balancer pick
(LEAST_REQUEST), the upstream headers, and the feedback (``Host.end``).
Median of ``--rounds`` rounds of ``--decisions`` requests each.

Part 2, the transport alone: ``httpx.HTTPTransport`` and the mesh's
transport over an in-memory connection that answers every request with the
same canned response (no network, no server), CPU time per request: what
the mesh adds, measured without the noise of real round trips.

Part 3, round trips: the same uvicorn server (plain HTTP/1.1 on 127.0.0.1,
ASGI app answering ``ok``) called sequentially over one keep-alive
connection by bare ``httpx.Client`` and by ``httpx.Client(transport=
mesh.transport())`` (a ServiceEntry routes ``echo:8080`` to it), alternated
in ``--trip-rounds`` rounds of ``--requests`` each within one run (which
client goes first alternates too), so both see the same machine. Reports the
median requests per second of each, their ratio (mesh / bare) and the
microseconds the mesh adds per request; then the same with
``httpx.AsyncClient`` and ``mesh.async_transport()`` on asyncio. On a shared
machine the ratio moves by a few points between runs: compare several runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpcore
import httpx

from inmesh import Mesh, Workload
from inmesh.config.snapshot import build_snapshot
from inmesh.discovery.registry import Registry
from inmesh.outbound.plan import (
    ClusterManager,
    OutboundOptions,
    OutboundPlanner,
    Routed,
    upstream_headers,
)
from inmesh.routing.match import RequestAttrs

WORKLOAD = Workload("frontend", service_account="frontend-sa", labels={"app": "frontend"})


def config_text(services: int, endpoints: int) -> str:
    docs = []
    for i in range(services):
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [svc{i}]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: svc{i}, subset: v2}}}}]
  - match: [{{uri: {{prefix: /api/}}}}]
    route:
    - {{destination: {{host: svc{i}, subset: v1}}, weight: 90}}
    - {{destination: {{host: svc{i}, subset: v2}}, weight: 10}}
"""
        )
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{i}, namespace: default}}
spec:
  host: svc{i}
  trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""
        )
        n = endpoints if i == services - 1 else 2
        if n <= 4096:
            eps = "\n".join(
                f"  - {{address: {_ip(j)}, labels: {{version: v{1 + (j % 2)}}}}}" for j in range(n)
            )
            body = f"  endpoints:\n{eps}\n"
        else:  # Istio allows 4096 inline endpoints: select WorkloadEntries instead
            body = f"  workloadSelector: {{labels: {{app: svc{i}}}}}\n"
            docs.extend(
                f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: svc{i}-{j}, namespace: default}}
spec: {{address: {_ip(j)}, labels: {{app: svc{i}, version: v{1 + (j % 2)}}}}}
"""
                for j in range(n)
            )
        docs.append(
            f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [svc{i}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
{body}"""
        )
    return "---\n".join(docs)


def _ip(j: int) -> str:
    return f"10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}"


def decision_cost(services: int, endpoints: int, n: int, rounds: int) -> float:
    snapshot = build_snapshot(config_text(services, endpoints))
    registry = Registry.from_snapshot(snapshot)
    rng = random.Random(1)
    manager = ClusterManager(clock=_Clock(), rng=rng, workload=WORKLOAD)
    planner = OutboundPlanner(snapshot, registry, WORKLOAD, manager, OutboundOptions())
    host = f"svc{services - 1}:8080"
    raw_headers = [(b"host", host.encode()), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    str_headers = [(k.decode(), v.decode()) for k, v in raw_headers]

    def one() -> None:
        attrs = RequestAttrs.build(
            method="GET",
            scheme="http",
            authority=host,
            target="/api/items?x=1",
            headers=str_headers,
        )
        routed = planner.route(attrs, rng)
        assert isinstance(routed, Routed)
        picked, _ = routed.cluster.pick(attrs, rng)
        assert picked is not None
        picked.begin()
        upstream_headers(raw_headers, routed, attempt=1, scheme="http")
        picked.end()

    for _ in range(200):
        one()  # build clusters, warm caches
    results = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            one()
        results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)


class _Clock:
    def now(self) -> float:
        return time.monotonic()


async def _ok_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def _ok_server() -> Iterator[tuple[int, str]]:
    """The uvicorn server answering ``ok``, and a config directory routing ``echo:8080`` to it."""
    import threading

    import uvicorn

    # uvicorn binds the socket itself: asyncio then sets TCP_NODELAY on accepted
    # connections (it does not for a socket passed in with proto 0, and Nagle's
    # algorithm with delayed ACKs would add ~40 ms to every response).
    config = uvicorn.Config(
        _ok_app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "se.yaml").write_text(
                f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP, targetPort: {port}}}]
  endpoints: [{{address: 127.0.0.1}}]
"""
            )
            yield port, tmp
    finally:
        server.should_exit = True
        thread.join(10)


def round_trips(requests: int, rounds: int) -> tuple[float, float]:
    """Median requests/s of bare ``httpx.Client`` and of the mesh's sync transport."""
    with (
        _ok_server() as (port, config),
        Mesh(config, workload=WORKLOAD, watch=False) as mesh,
        httpx.Client() as bare,
        httpx.Client(transport=mesh.transport()) as meshed,
    ):
        bare_url = f"http://127.0.0.1:{port}/"
        mesh_url = "http://echo:8080/"
        for _ in range(200):
            bare.get(bare_url)
            meshed.get(mesh_url)
        bare_rps: list[float] = []
        mesh_rps: list[float] = []
        for i in range(rounds):
            pair = [(bare, bare_url, bare_rps), (meshed, mesh_url, mesh_rps)]
            for client, url, out in pair if i % 2 == 0 else pair[::-1]:
                gc.collect()
                start = time.perf_counter()
                for _ in range(requests):
                    client.get(url)
                out.append(requests / (time.perf_counter() - start))
    return statistics.median(bare_rps), statistics.median(mesh_rps)


def async_round_trips(requests: int, rounds: int) -> tuple[float, float]:
    """:func:`round_trips` with ``httpx.AsyncClient`` and the async transport (asyncio)."""
    import asyncio

    async def run(port: int, mesh: Mesh) -> tuple[float, float]:
        async with (
            httpx.AsyncClient() as bare,
            httpx.AsyncClient(transport=mesh.async_transport()) as meshed,
        ):
            bare_url = f"http://127.0.0.1:{port}/"
            mesh_url = "http://echo:8080/"
            for _ in range(200):
                await bare.get(bare_url)
                await meshed.get(mesh_url)
            bare_rps: list[float] = []
            mesh_rps: list[float] = []
            for i in range(rounds):
                pair = [(bare, bare_url, bare_rps), (meshed, mesh_url, mesh_rps)]
                for client, url, out in pair if i % 2 == 0 else pair[::-1]:
                    gc.collect()
                    start = time.perf_counter()
                    for _ in range(requests):
                        await client.get(url)
                    out.append(requests / (time.perf_counter() - start))
        return statistics.median(bare_rps), statistics.median(mesh_rps)

    with _ok_server() as (port, config), Mesh(config, workload=WORKLOAD, watch=False) as mesh:
        return asyncio.run(run(port, mesh))


_CANNED = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: x\r\nserver: uvicorn\r\n\r\nok"


class _CannedStream(httpcore.NetworkStream):
    """An in-memory connection answering every request with the same response."""

    def __init__(self) -> None:
        self._answer = False

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        answer, self._answer = self._answer, False
        return _CANNED if answer else b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer.endswith(b"\r\n\r\n"):  # the end of a body-less request
            self._answer = True

    def close(self) -> None:
        pass

    def get_extra_info(self, info: str) -> object:
        return False if info == "is_readable" else None


class _CannedBackend(httpcore.NetworkBackend):
    def connect_tcp(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        return _CannedStream()


class _PoolTransport(httpx.BaseTransport):
    """What ``httpx.HTTPTransport`` does, over inmesh's HTTP/1.1 pool instead of
    httpcore's: the cost of the connection layer the mesh runs on, without the mesh."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        from inmesh.outbound._sync.http11 import HTTP11Pool

        self._pool = HTTP11Pool(backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(
            request.method,
            httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core)
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _Body(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response.iter_stream()

    def close(self) -> None:
        self._response.close()


def transport_cost(requests: int, rounds: int) -> dict[str, float]:
    """CPU microseconds per request of httpx's own transport and of the mesh's,
    both over an in-memory connection (no network, no server): what the mesh
    transport adds, without the noise of a real round trip. The mesh runs as
    made by default, and again with its telemetry hooks detached (when it has
    them): the routing, resilience and connection handling alone."""
    from inmesh.outbound import Connector
    from inmesh.outbound._sync.transport import MeshTransport

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "se.yaml").write_text(
            """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 9999}]
  endpoints: [{address: 127.0.0.1}]
"""
        )
        with Mesh(tmp, workload=WORKLOAD, watch=False) as mesh, httpx.Client() as client:
            bare = httpx.HTTPTransport()
            bare._pool = httpcore.ConnectionPool(network_backend=_CannedBackend())
            transports: dict[str, httpx.BaseTransport] = {
                "httpx's own": bare,
                "inmesh's pool, no mesh": _PoolTransport(_CannedBackend()),
            }
            for name in ("mesh", "mesh, telemetry off"):
                meshed = MeshTransport(
                    mesh, Connector(mesh.certificates, network_backend=_CannedBackend())
                )
                if name == "mesh, telemetry off":
                    if getattr(meshed, "_telemetry", None) is None:
                        continue  # no telemetry hooks to detach
                    meshed._telemetry = None
                transports[name] = meshed
            requests_for = {
                name: client.build_request(
                    "GET",
                    "http://127.0.0.1:9999/"
                    if not isinstance(t, MeshTransport)
                    else "http://echo:8080/",
                )
                for name, t in transports.items()
            }

            def run(name: str, n: int) -> float:
                transport, request = transports[name], requests_for[name]
                gc.collect()
                start = time.thread_time()
                for _ in range(n):
                    response = transport.handle_request(request)
                    response.read()
                    response.close()
                return (time.thread_time() - start) / n * 1e6

            samples: dict[str, list[float]] = {name: [] for name in transports}
            for name in transports:
                run(name, 500)
            for _ in range(rounds):
                for name in transports:
                    samples[name].append(run(name, requests))
            for transport in transports.values():
                transport.close()
    return {name: min(values) for name, values in samples.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--trip-rounds", type=int, default=15)
    parser.add_argument("--skip-round-trips", action="store_true")
    parser.add_argument("--skip-decisions", action="store_true")
    parser.add_argument("--skip-transport", action="store_true")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}")
    if not args.skip_decisions:
        print("decision path, us per request (median of rounds):")
        print(f"{'VirtualServices':>16} {'endpoints':>10} {'us':>8}")
        for services in (1, 100, 1000):
            for endpoints in (10, 1000, 10_000):
                us = decision_cost(services, endpoints, args.decisions, args.rounds)
                print(f"{services:>16} {endpoints:>10} {us:>8.2f}")
    if not args.skip_transport:
        costs = transport_cost(10_000, 15)
        base = costs["httpx's own"]
        print("transport alone, in-memory connection, CPU us per request (best of 15 rounds):")
        for name, us in costs.items():
            added = f"   (adds {us - base:.1f} us)" if name != "httpx's own" else ""
            print(f"  {name:<24} {us:8.1f}{added}")
    if not args.skip_round_trips:
        for kind, measure in (("sync", round_trips), ("async (asyncio)", async_round_trips)):
            bare, meshed = measure(args.requests, args.trip_rounds)
            print(f"keep-alive round trips, {kind} httpx, requests/s (median of rounds):")
            print(f"  bare httpx   {bare:8.0f}   ({1e6 / bare:6.1f} us per request)")
            print(f"  mesh         {meshed:8.0f}   ({1e6 / meshed:6.1f} us per request)")
            added = 1e6 / meshed - 1e6 / bare
            print(f"  ratio        {meshed / bare:8.3f}   (mesh adds {added:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
