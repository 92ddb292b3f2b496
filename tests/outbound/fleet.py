"""Real backends for the transport tests: uvicorn servers with mTLS on 127.0.0.1.

:class:`Fleet` starts named backends (ASGI echo apps served by
:func:`inmesh.inbound.serve.serve_in_thread`, STRICT mutual TLS with the
backend's SPIFFE ID) on ephemeral ports, and writes mesh configurations that
point ServiceEntries and WorkloadEntries at them. Each backend records what
it received. The echo app answers JSON ``{"server", "method", "path",
"query", "headers"}`` and obeys two query parameters: ``status=<code>`` and
``sleep=<seconds>``; a backend started with ``hang=True`` never answers.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio

from inmesh.identity.ca import LocalCA
from inmesh.identity.sources import MemorySource
from inmesh.inbound.context import StaticInboundContext
from inmesh.inbound.serve import BackgroundServer, serve_in_thread
from inmesh.model import Workload
from inmesh.policy.peer_authn import MtlsMode

FRONTEND_SA = "frontend-sa"


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    client: tuple[str, int] | None = None
    """The caller's address and port (one per connection)."""


@dataclass
class Backend:
    name: str
    labels: dict[str, str]
    service_account: str
    server: BackgroundServer
    received: list[Received] = field(default_factory=list)
    hang: bool = False
    delay: float = 0.0
    statuses: list[int] = field(default_factory=list)
    """Answer these statuses in turn (cycling); empty: 200 (or ``?status=``)."""

    @property
    def port(self) -> int:
        return int(self.server.port)


def echo_app(backend: Backend) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope["query_string"].decode()
        backend.received.append(
            Received(
                scope["method"],
                scope["path"],
                query,
                headers,
                body,
                time.monotonic(),
                tuple(scope["client"]) if scope.get("client") else None,
            )
        )
        while backend.hang:  # until the test (or Fleet.close) lets go
            await anyio.sleep(0.05)
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if backend.delay:
            await anyio.sleep(backend.delay)
        if "sleep" in params:
            await anyio.sleep(float(params["sleep"]))
        status = int(params.get("status", "200"))
        if backend.statuses:
            status = backend.statuses[(len(backend.received) - 1) % len(backend.statuses)]
        payload = json.dumps(
            {
                "server": backend.name,
                "method": scope["method"],
                "path": scope["path"],
                "query": query,
                "headers": headers,
                "body": body.decode("latin-1"),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-server", backend.name.encode()),
                ],
            }
        )
        drip = int(params.get("drip", "0"))
        for _ in range(drip):  # a slow body: one byte every 100 ms first
            await send({"type": "http.response.body", "body": b" ", "more_body": True})
            await anyio.sleep(0.1)
        await send({"type": "http.response.body", "body": payload})

    return app


class Fleet:
    """Backends by name, and configuration files pointing at them."""

    def __init__(self, ca: LocalCA) -> None:
        self.ca = ca
        self.backends: dict[str, Backend] = {}
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()

    def start(
        self,
        name: str,
        labels: Mapping[str, str],
        *,
        service_account: str = "backend-sa",
        mtls: bool = True,
        hang: bool = False,
        delay: float = 0.0,
    ) -> Backend:
        source = self._stack.enter_context(
            MemorySource(self.ca.issue(f"spiffe://cluster.local/ns/default/sa/{service_account}"))
        )
        context = StaticInboundContext(
            workload=Workload(name, service_account=service_account, labels=dict(labels)),
            certificates=source if mtls else None,
            mode=MtlsMode.STRICT if mtls else MtlsMode.DISABLE,
        )
        holder: dict[str, Backend] = {}

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await holder["app"](scope, receive, send)  # type: ignore[operator]

        server = self._stack.enter_context(serve_in_thread(app, context))
        backend = Backend(name, dict(labels), service_account, server, hang=hang, delay=delay)
        holder["app"] = echo_app(backend)  # type: ignore[assignment]
        self.backends[name] = backend
        return backend

    def workload_entries(self, *names: str, service: str = "backend") -> str:
        docs = []
        for name in names:
            b = self.backends[name]
            labels = {"app": service, **b.labels}
            docs.append(
                f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {b.port}}}
  labels: {json.dumps(labels)}
  serviceAccount: {b.service_account}
"""
            )
        return "---\n".join(docs)

    @staticmethod
    def service_entry(host: str = "backend", port: int = 8080, app: str | None = None) -> str:
        return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: {port}, name: http, protocol: HTTP}}
  workloadSelector:
    labels: {{app: {app or host}}}
"""

    def clear(self) -> None:
        for b in self.backends.values():
            b.received.clear()
            b.hang = False
            b.delay = 0.0
            b.statuses = []

    def close(self) -> None:
        for b in self.backends.values():
            b.hang = False
        self._stack.close()


def write_config(directory: Path, *docs: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "mesh.yaml"
    path.write_text("---\n".join(d.strip() + "\n" for d in docs if d.strip()))
    return directory


@contextlib.contextmanager
def frontend_mesh(config_dir: Path, ca: LocalCA, **options: Any) -> Iterator[Any]:
    import inmesh

    workload = options.pop(
        "workload",
        inmesh.Workload(
            "frontend", service_account=FRONTEND_SA, labels={"app": "frontend", "version": "v1"}
        ),
    )
    source = MemorySource(
        ca.issue(f"spiffe://cluster.local/ns/default/sa/{workload.service_account}")
    )
    with inmesh.Mesh(
        config_dir, workload=workload, identity=source, watch=False, **options
    ) as mesh:
        yield mesh
