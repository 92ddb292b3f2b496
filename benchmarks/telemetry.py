"""Telemetry cost per request, per side, in microseconds.

Each side runs the same requests with telemetry off and on, in the same run,
and reports the difference per request:

* **inbound** (``reporter="destination"``): the ASGI middleware in front of a
  trivial app, driven in-process (no sockets), ``GET`` with a peer's
  ``x-envoy-peer-metadata`` and a ``traceparent``;
* **outbound** (``reporter="source"``): the async transport with an
  in-memory connector (no sockets) answering 200 with the peer's metadata.

Modes: ``off`` (baseline: the middleware/transport without telemetry),
``metrics`` (Istio's four metrics), ``metrics+tracing, no SDK`` (the
OpenTelemetry API alone: trace headers forwarded, no spans), ``with SDK``
(an SDK ``TracerProvider`` with a batch processor and a no-op exporter,
always sampling; installed last since it cannot be uninstalled).

    python benchmarks/telemetry.py [--number 20000] [--runs 5]

Modes run interleaved, round after round; each reports its best round (the
least disturbed by other load), and its cost over ``off`` of the same run.
Target (issue 7): metrics plus tracing without SDK at most 5 µs per side.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpcore
import httpx
from prometheus_client import CollectorRegistry

import inmesh
from inmesh.outbound._async.transport import AsyncMeshTransport
from inmesh.telemetry.peer import local_metadata

FRONTEND = inmesh.Workload("frontend", labels={"app": "frontend", "version": "v1"})
BACKEND = inmesh.Workload("backend", labels={"app": "backend", "version": "v1"})
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]
"""


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _mesh(workload: inmesh.Workload, mode: str, config: list[str]) -> inmesh.Mesh:
    return inmesh.Mesh(
        config,
        workload=workload,
        watch=False,
        metrics_registry=None if mode == "off" else CollectorRegistry(),
        tracing=mode != "metrics",
    )


def _inbound_case(
    mode: str, peer_header: bytes
) -> tuple[inmesh.Mesh, Callable[[], Coroutine[Any, Any, None]]]:
    mesh = _mesh(BACKEND, mode, [])
    mw = mesh.asgi(_app)
    if mode == "off":
        mw.telemetry = None
    headers = [
        (b"host", b"backend:8080"),
        (b"user-agent", b"bench"),
        (b"x-request-id", b"5a8d4d5e-6e37-4b7e-9c1b-1f2e3d4c5b6a"),
        (
            b"x-envoy-peer-metadata-id",
            b"sidecar~127.0.0.1~frontend-x.default~default.svc.cluster.local",
        ),
        (b"x-envoy-peer-metadata", peer_header),
        (b"traceparent", TRACEPARENT),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api",
        "raw_path": b"/api",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def one() -> None:
        await mw(scope, receive, send)

    return mesh, one


class _Connector:
    """An in-memory upstream answering 200 with the backend's peer metadata."""

    def __init__(self, peer_header: bytes) -> None:
        self._headers = [
            (b"content-length", b"2"),
            (
                b"x-envoy-peer-metadata-id",
                b"sidecar~127.0.0.1~backend-x.default~default.svc.cluster.local",
            ),
            (b"x-envoy-peer-metadata", peer_header),
        ]

    async def exchange(
        self, destination: Any, tls: Any, request: httpcore.Request, limits: Any = None
    ) -> httpcore.Response:
        return httpcore.Response(200, headers=self._headers, content=b"ok")

    async def aclose(self) -> None:
        return None


def _outbound_case(
    mode: str, peer_header: bytes, config: list[str]
) -> tuple[inmesh.Mesh, Callable[[], Coroutine[Any, Any, None]]]:
    mesh = _mesh(FRONTEND, mode, config)
    transport = AsyncMeshTransport(mesh, _Connector(peer_header))  # type: ignore[arg-type]
    if mode == "off":
        transport._telemetry = None
    request = httpx.Request("GET", "http://backend:8080/api", headers={"user-agent": "bench"})

    async def one() -> None:
        response = await transport.handle_async_request(request)
        await response.aread()
        await response.aclose()

    return mesh, one


async def _time(one: Callable[[], Coroutine[Any, Any, None]], number: int) -> float:
    for _ in range(200):
        await one()
    gc.collect()
    start = time.perf_counter()
    for _ in range(number):
        await one()
    return (time.perf_counter() - start) / number * 1e6


def _install_sdk() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Null(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Null()))
    trace.set_tracer_provider(provider)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp())
    (tmp / "services.yaml").write_text(SERVICES)
    config = [str(tmp)]
    peer_in = local_metadata(FRONTEND, "Kubernetes").header_value()
    peer_out = local_metadata(BACKEND, "Kubernetes").header_value()
    modes = ("off", "metrics", "metrics+tracing, no SDK", "with SDK")
    results: dict[str, dict[str, float]] = {"inbound": {}, "outbound": {}}
    for sdk in (False, True):
        if sdk:
            _install_sdk()
        names = [m for m in modes if (m == "with SDK") == sdk] + (["off"] if sdk else [])
        for side in ("inbound", "outbound"):
            cases = {
                mode: (
                    _inbound_case(mode, peer_in)
                    if side == "inbound"
                    else _outbound_case(mode, peer_out, config)
                )
                for mode in names
            }
            samples: dict[str, list[float]] = {mode: [] for mode in names}
            for _ in range(args.runs):  # interleaved, so drift hits every mode alike
                for mode, (_, one) in cases.items():
                    samples[mode].append(asyncio.run(_time(one, args.number)))
            for mode, (mesh, _) in cases.items():
                mesh.close()
                key = "off (SDK run)" if sdk and mode == "off" else mode
                results[side][key] = min(samples[mode])
    print(f"telemetry cost per request ({args.number} requests x {args.runs} runs, median)")
    for side, by_mode in results.items():
        base = by_mode["off"]
        print(f"\n{side}: off {base:.1f} µs/request")
        for mode in modes[1:]:
            ref = by_mode["off (SDK run)"] if mode == "with SDK" else base
            print(f"  {mode:26s} {by_mode[mode]:7.1f} µs   cost {by_mode[mode] - ref:+6.1f} µs")


if __name__ == "__main__":
    main()
