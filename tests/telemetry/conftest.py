"""Shared fixtures for the telemetry tests.

* ``otel``: the OpenTelemetry SDK, installed once per process (a tracer
  provider cannot be replaced once set), with an in-memory exporter that is
  cleared for each test that uses it;
* ``upstream``: a plain HTTP server on 127.0.0.1 (a real upstream for the
  mesh's transport, so its clusters exist);
* :func:`samples` / :func:`istio_requests`: a registry's exposition, parsed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Otel:
    provider: Any
    exporter: Any

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture(scope="session")
def _otel_sdk() -> Iterator[Otel]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:  # pragma: no cover - set elsewhere first
        pytest.skip("another OpenTelemetry tracer provider is installed in this process")
    yield Otel(provider, exporter)
    provider.shutdown()


@pytest.fixture
def otel(_otel_sdk: Otel) -> Otel:
    _otel_sdk.exporter.clear()
    return _otel_sdk


def samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    """``(labels, value)`` of every sample called ``name`` in the registry's exposition."""
    text = generate_latest(registry).decode()
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def istio_requests(registry: CollectorRegistry) -> list[tuple[dict[str, str], float]]:
    return samples(registry, "istio_requests_total")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Upstream:
    port: int

    def service_entry(self, host: str = "api.example.com") -> str:
        return (
            "apiVersion: networking.istio.io/v1\n"
            "kind: ServiceEntry\n"
            f"metadata: {{name: {host.split('.', maxsplit=1)[0]}, namespace: default}}\n"
            "spec:\n"
            f"  hosts: [{host}]\n"
            "  location: MESH_EXTERNAL\n"
            "  resolution: STATIC\n"
            f"  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {self.port}}}]\n"
            "  endpoints: [{address: 127.0.0.1}]\n"
        )

    def config_dir(self, tmp_path: Path, host: str = "api.example.com") -> Path:
        config = tmp_path / "mesh"
        config.mkdir(exist_ok=True)
        (config / "service-entry.yaml").write_text(self.service_entry(host))
        return config


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="telemetry-test-upstream")
    thread.start()
    try:
        yield Upstream(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
