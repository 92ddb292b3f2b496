"""Small ASGI services for the telemetry end-to-end test, served with ``inmesh serve``.

* ``backend``: ``GET /`` answers ``hello from backend``.
* ``frontend``: ``GET /`` calls ``http://backend:8080/`` through its own mesh's
  transport (``Mesh.from_env()``) and answers what it got; it forwards no
  headers itself. ``GET /call?host=H`` calls another host.
* ``GET /spans`` on both: the spans this process finished, as JSON, when
  ``INMESH_TEST_OTEL=1`` installed an in-memory OpenTelemetry SDK.
"""

from __future__ import annotations

import json
import os
from typing import Any

if os.environ.get("INMESH_TEST_OTEL") == "1":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    EXPORTER: Any = InMemorySpanExporter()
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(_provider)
else:
    EXPORTER = None


def _spans() -> bytes:
    out = []
    for span in EXPORTER.get_finished_spans() if EXPORTER is not None else ():
        ctx = span.get_span_context()
        out.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": f"{ctx.trace_id:032x}",
                "span_id": f"{ctx.span_id:016x}",
                "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                "attributes": dict(span.attributes or {}),
            }
        )
    return json.dumps(out).encode()


async def _reply(send: Any, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def backend(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/spans":
        await _reply(send, 200, _spans(), b"application/json")
        return
    await _reply(send, 200, b"hello from backend")


_client: Any = None


async def frontend(scope: Any, receive: Any, send: Any) -> None:
    global _client
    if scope["type"] != "http":
        return
    if scope["path"] == "/spans":
        await _reply(send, 200, _spans(), b"application/json")
        return
    import httpx

    import inmesh

    if _client is None:
        mesh = inmesh.Mesh.from_env()
        _client = httpx.AsyncClient(transport=mesh.async_transport())
    target = "http://backend:8080/"
    if scope["path"] == "/call":
        query = scope.get("query_string", b"").decode()
        host = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("host", "backend")
        target = f"http://{host}:8080/"
    response = await _client.get(target)
    body = f"{response.status_code} {response.text}".encode()
    await _reply(send, 200, body)
