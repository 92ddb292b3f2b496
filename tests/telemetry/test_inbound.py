"""The destination side, through the real middleware: metrics, metadata exchange,
request IDs, byte counts, access logs and traces, for ASGI and WSGI apps in process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from prometheus_client import CollectorRegistry

import inmesh
from inmesh.model import Workload
from inmesh.telemetry import ACCESS_LOGGER, current_inbound
from inmesh.telemetry.peer import PeerMetadataCache, decode_struct, local_metadata, node_id

from .conftest import Otel, istio_requests, samples

BACKEND = Workload("backend", labels={"app": "backend", "version": "v1"})
HOST = "backend.default.svc.cluster.local:8080"
BASE = f"http://{HOST}"

FRONTEND = local_metadata(
    Workload("frontend", namespace="shop", labels={"app": "frontend", "version": "v2"}),
    "east",
    "frontend-7d4b9c-xk2p",
)
PEER_HEADERS = {
    "x-envoy-peer-metadata-id": node_id(FRONTEND).decode(),
    "x-envoy-peer-metadata": FRONTEND.header_value().decode(),
}

DESTINATION = {
    "reporter": "destination",
    "destination_workload": "backend",
    "destination_workload_namespace": "default",
    "destination_principal": "unknown",
    "destination_app": "backend",
    "destination_version": "v1",
    "destination_service": "backend.default.svc.cluster.local",
    "destination_canonical_service": "backend",
    "destination_canonical_revision": "v1",
    "destination_service_name": "backend",
    "destination_service_namespace": "default",
    "destination_cluster": "Kubernetes",
    "request_protocol": "http",
    "response_code": "200",
    "grpc_response_status": "",
    "response_flags": "-",
    "connection_security_policy": "none",
}
UNKNOWN_SOURCE = {
    "source_workload": "unknown",
    "source_canonical_service": "unknown",
    "source_canonical_revision": "unknown",
    "source_workload_namespace": "unknown",
    "source_principal": "unknown",
    "source_app": "unknown",
    "source_version": "unknown",
    "source_cluster": "unknown",
}
FRONTEND_SOURCE = {
    "source_workload": "frontend",
    "source_canonical_service": "frontend",
    "source_canonical_revision": "v2",
    "source_workload_namespace": "shop",
    "source_principal": "unknown",
    "source_app": "frontend",
    "source_version": "v2",
    "source_cluster": "east",
}

DENY_ADMIN = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: [/admin, /admin/*], ports: ["8080"]}
"""
DENIED_DETAILS = "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]"


# -- apps ---------------------------------------------------------------------------------


class AsgiApp:
    """Reports what it saw; ``/stream`` answers in three chunks, ``/boom`` raises."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        call = current_inbound()
        self.seen.append(
            {
                "headers": headers,
                "raw_headers": [k for k, _ in scope["headers"]],
                "body": body,
                "trace_headers": None if call is None else call.trace_headers,
                "span": _current_span_ids(),
            }
        )
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("the app failed")
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for chunk in (b"a" * 100, b"b" * 200, b"c" * 300):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        status = 503 if path == "/unavailable" else 200
        extra = []
        if headers.get("content-type", "").startswith("application/grpc"):
            extra = [(b"content-type", b"application/grpc"), (b"grpc-status", b"14")]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": b"hello"})


def _current_span_ids() -> tuple[int, int] | None:
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.is_valid else None


def flask_app(seen: list[dict[str, Any]]) -> flask.Flask:
    app = flask.Flask("telemetry_test_backend")

    @app.route("/<path:path>", methods=["GET", "POST"])
    @app.route("/", methods=["GET", "POST"], defaults={"path": ""})
    def echo(path: str) -> Any:
        call = current_inbound()
        seen.append(
            {
                "headers": {k.lower(): v for k, v in flask.request.headers.items()},
                "environ_keys": set(flask.request.environ),
                "body": flask.request.get_data(),
                "trace_headers": None if call is None else call.trace_headers,
                "span": _current_span_ids(),
            }
        )
        if path == "boom":
            raise RuntimeError("the app failed")
        if path == "unavailable":
            return "hello", 503
        return "hello"

    return app


def plain_wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("the app failed before answering")
    start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/stream":
        return (chunk for chunk in (b"a" * 100, b"b" * 200, b"c" * 300))
    return [b"hello"]


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def make_mesh() -> Iterator[Callable[..., inmesh.Mesh]]:
    made: list[inmesh.Mesh] = []

    def make(config: Any = (), **options: Any) -> inmesh.Mesh:
        options.setdefault("workload", BACKEND)
        options.setdefault("metrics_registry", CollectorRegistry())
        mesh = inmesh.Mesh(config, **options)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.close()


def asgi_request(
    app: Any, method: str, path: str, *, raise_app_exceptions: bool = True, **kwargs: Any
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            response = await client.request(method, path, **kwargs)
            await response.aread()
            return response

    return asyncio.run(go())


def wsgi_request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(transport=httpx.WSGITransport(app), base_url=BASE) as client:
        response = client.request(method, path, **kwargs)
        response.read()
        return response


class Server:
    """One mesh-wrapped app of either kind, requested in process."""

    def __init__(self, kind: str, mesh: inmesh.Mesh) -> None:
        self.kind = kind
        self.mesh = mesh
        self.seen: list[dict[str, Any]] = []
        if kind == "asgi":
            app = AsgiApp()
            self.seen = app.seen
            self.app = mesh.asgi(app)
        else:
            self.app = mesh.wsgi(flask_app(self.seen))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.kind == "asgi":
            return asgi_request(self.app, method, path, **kwargs)
        return wsgi_request(self.app, method, path, **kwargs)

    def get(self, path: str = "/api", **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    @property
    def registry(self) -> CollectorRegistry:
        return self.mesh.metrics_registry  # type: ignore[no-any-return]


KINDS = pytest.mark.parametrize("kind", ["asgi", "wsgi"])


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]


# -- metric labels --------------------------------------------------------------------------


@KINDS
def test_labels_without_peer_metadata(kind: str, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server(kind, make_mesh())
    assert server.get().status_code == 200
    assert istio_requests(server.registry) == [({**UNKNOWN_SOURCE, **DESTINATION}, 1.0)]


@KINDS
def test_labels_from_the_peers_metadata(kind: str, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server(kind, make_mesh())
    for _ in range(3):
        assert server.get(headers=PEER_HEADERS).status_code == 200
    assert istio_requests(server.registry) == [({**FRONTEND_SOURCE, **DESTINATION}, 3.0)]


@KINDS
def test_status_and_host_label_the_series(kind: str, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server(kind, make_mesh(cluster_id="west"))
    server.get("/", headers={"host": "reviews.shop.svc.cluster.local"})
    server.get("/unavailable")
    found = {lab["destination_service"]: lab for lab, _ in istio_requests(server.registry)}
    other = found["reviews.shop.svc.cluster.local"]
    assert other["destination_service_name"] == "reviews"
    assert other["destination_service_namespace"] == "default"  # own namespace, not a guess
    assert other["destination_cluster"] == "west"
    own = found["backend.default.svc.cluster.local"]
    assert own["response_code"] == "503"


def test_unreadable_metadata_leaves_the_source_unknown(
    make_mesh: Callable[..., inmesh.Mesh],
) -> None:
    server = Server("asgi", make_mesh())
    server.get(headers={"x-envoy-peer-metadata": "!!garbage!!"})
    assert istio_requests(server.registry) == [({**UNKNOWN_SOURCE, **DESTINATION}, 1.0)]
    assert "x-envoy-peer-metadata" not in server.seen[0]["headers"]


def test_grpc_protocol_and_status(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("asgi", make_mesh())
    server.request("POST", "/pkg.Svc/Method", headers={"content-type": "application/grpc"})
    ((labels, _),) = istio_requests(server.registry)
    assert labels["request_protocol"] == "grpc"
    assert labels["grpc_response_status"] == "14"
    assert labels["response_code"] == "200"


def test_two_meshes_in_one_registry_stay_apart(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    shared = CollectorRegistry()
    a = Server("asgi", make_mesh(metrics_registry=shared))
    b = Server(
        "wsgi", make_mesh(metrics_registry=shared, workload=Workload("reviews", namespace="shop"))
    )
    a.get()
    b.get()
    b.get()
    counts = {
        (lab["destination_workload"], lab["destination_workload_namespace"]): v
        for lab, v in istio_requests(shared)
    }
    assert counts == {("backend", "default"): 1, ("reviews", "shop"): 2}


def test_metrics_off(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("asgi", make_mesh(metrics_registry=None))
    assert server.get().status_code == 200


# -- metadata exchange and request ids -------------------------------------------------------


@KINDS
def test_the_app_never_sees_peer_metadata(kind: str, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server(kind, make_mesh())
    server.get(headers=PEER_HEADERS)
    headers = server.seen[0]["headers"]
    assert "x-envoy-peer-metadata" not in headers
    assert "x-envoy-peer-metadata-id" not in headers
    if kind == "wsgi":
        keys = server.seen[0]["environ_keys"]
        assert "HTTP_X_ENVOY_PEER_METADATA" not in keys
        assert "HTTP_X_ENVOY_PEER_METADATA_ID" not in keys


@KINDS
def test_metadata_is_answered_only_to_a_peer_that_sent_its_own(
    kind: str, make_mesh: Callable[..., inmesh.Mesh]
) -> None:
    server = Server(kind, make_mesh())
    plain = server.get()
    assert "x-envoy-peer-metadata" not in plain.headers
    assert "x-envoy-peer-metadata-id" not in plain.headers

    answered = server.get(headers=PEER_HEADERS)
    struct = decode_struct(base64.b64decode(answered.headers["x-envoy-peer-metadata"]))
    assert struct["WORKLOAD_NAME"] == "backend"
    assert struct["NAMESPACE"] == "default"
    assert struct["CLUSTER_ID"] == "Kubernetes"
    assert struct["LABELS"] == {
        "app": "backend",
        "version": "v1",
        "service.istio.io/canonical-name": "backend",
        "service.istio.io/canonical-revision": "v1",
    }
    meta = PeerMetadataCache().get(answered.headers["x-envoy-peer-metadata"].encode())
    assert meta is not None
    assert meta.workload == "backend"
    node = answered.headers["x-envoy-peer-metadata-id"]
    assert re.fullmatch(
        r"sidecar~127\.0\.0\.1~backend-[^~]+\.default~default\.svc\.cluster\.local", node
    )


@KINDS
def test_request_id_is_generated_when_absent(
    kind: str, make_mesh: Callable[..., inmesh.Mesh]
) -> None:
    server = Server(kind, make_mesh())
    server.get()
    server.get()
    first, second = (s["headers"]["x-request-id"] for s in server.seen)
    assert first != second
    for rid in (first, second):
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@KINDS
def test_request_id_is_kept_when_present(kind: str, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server(kind, make_mesh())
    server.get(headers={"x-request-id": "caller-chose-this"})
    assert server.seen[0]["headers"]["x-request-id"] == "caller-chose-this"
    if kind == "asgi":
        assert server.seen[0]["raw_headers"].count(b"x-request-id") == 1


# -- bytes and statuses -----------------------------------------------------------------------


def byte_sums(registry: CollectorRegistry) -> tuple[float, float]:
    ((_, req),) = samples(registry, "istio_request_bytes_sum")
    ((_, resp),) = samples(registry, "istio_response_bytes_sum")
    return req, resp


@KINDS
def test_request_body_bytes(kind: str, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server(kind, make_mesh())
    server.request("POST", "/upload", content=b"x" * 1234)
    assert server.seen[0]["body"] == b"x" * 1234
    assert byte_sums(server.registry) == (1234, len(b"hello"))


def test_streamed_request_body_bytes(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("asgi", make_mesh())

    async def chunks() -> Any:
        for size in (10, 20, 30):
            yield b"z" * size

    server.request("POST", "/upload", content=chunks())
    assert byte_sums(server.registry) == (60, 5)


def test_streamed_response_bytes_asgi(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("asgi", make_mesh())
    response = server.get("/stream")
    assert len(response.content) == 600
    assert byte_sums(server.registry) == (0, 600)
    ((labels, count),) = istio_requests(server.registry)
    assert (labels["response_code"], count) == ("200", 1)


def test_streamed_response_bytes_wsgi(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    mesh = make_mesh()
    response = wsgi_request(mesh.wsgi(plain_wsgi_app), "GET", "/stream")
    assert len(response.content) == 600
    registry = mesh.metrics_registry
    assert byte_sums(registry) == (0, 600)
    assert [v for _, v in istio_requests(registry)] == [1]


def test_asgi_app_exception_records_500(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("asgi", make_mesh())
    response = server.get("/boom", raise_app_exceptions=False)
    assert response.status_code == 500
    ((labels, count),) = istio_requests(server.registry)
    assert (labels["response_code"], labels["response_flags"], count) == ("500", "-", 1)


def test_wsgi_app_exception_records_500(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    mesh = make_mesh()
    with pytest.raises(RuntimeError, match="before answering"):
        wsgi_request(mesh.wsgi(plain_wsgi_app), "GET", "/boom")
    ((labels, count),) = istio_requests(mesh.metrics_registry)
    assert (labels["response_code"], count) == ("500", 1)


def test_flask_error_page_records_500(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("wsgi", make_mesh())
    assert server.get("/boom").status_code == 500
    ((labels, _),) = istio_requests(server.registry)
    assert labels["response_code"] == "500"


@KINDS
def test_denied_request_is_recorded_and_logged(
    kind: str,
    tmp_path: Path,
    make_mesh: Callable[..., inmesh.Mesh],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "deny.yaml").write_text(DENY_ADMIN)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server = Server(kind, make_mesh(tmp_path, access_log="text"))
    response = server.get("/admin/users", headers={"user-agent": "test-agent/1.0"})
    assert response.status_code == 403
    assert response.text == "RBAC: access denied"
    assert server.seen == []  # the app was not called
    assert istio_requests(server.registry) == [
        ({**UNKNOWN_SOURCE, **DESTINATION, "response_code": "403"}, 1.0)
    ]
    (line,) = access_lines(caplog)
    remote = "127.0.0.1:123" if kind == "asgi" else "127.0.0.1"
    # as Envoy logs an RBAC denial: no upstream host (the app was not reached)
    expected = (
        TS
        + re.escape(f' "GET /admin/users HTTP/1.1" 403 - {DENIED_DETAILS} - "-" 0 19 ')
        + r"\d+"
        + re.escape(' - "-" "test-agent/1.0" "')
        + r"[0-9a-f-]{36}"
        + re.escape(f'" "{HOST}" "-" inbound|8080|| - {HOST} {remote} - default')
    )
    assert re.fullmatch(expected, line), line
    # allowed requests still pass
    assert server.get("/api").status_code == 200


# -- access logs ------------------------------------------------------------------------------

TS = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\]"


@KINDS
def test_text_access_log_line(
    kind: str, make_mesh: Callable[..., inmesh.Mesh], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server = Server(kind, make_mesh(access_log="text"))
    server.request(
        "POST",
        "/items?page=2",
        content=b"abc",
        headers={
            "user-agent": "test-agent/1.0",
            "x-request-id": "req-1",
            "x-forwarded-for": "203.0.113.9",
        },
    )
    (line,) = access_lines(caplog)
    remote = "127.0.0.1:123" if kind == "asgi" else "127.0.0.1"
    expected = (
        TS
        + re.escape(' "POST /items?page=2 HTTP/1.1" 200 - via_upstream - "-" 3 5 ')
        + r"\d+"
        + re.escape(
            ' - "203.0.113.9" "test-agent/1.0" "req-1" '
            f'"{HOST}" "{HOST}" inbound|8080|| - {HOST} {remote} - default'
        )
    )
    assert re.fullmatch(expected, line), line


@KINDS
def test_json_access_log_line(
    kind: str, make_mesh: Callable[..., inmesh.Mesh], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server = Server(kind, make_mesh(access_log="json"))
    server.get("/items", headers={"user-agent": "test-agent/1.0"})
    (line,) = access_lines(caplog)
    doc = json.loads(line)
    assert re.fullmatch(TS[2:-2], doc.pop("start_time"))
    assert isinstance(doc.pop("duration"), int)
    rid = doc.pop("request_id")
    assert rid == server.seen[0]["headers"]["x-request-id"]  # the generated one
    assert doc == {
        "authority": HOST,
        "bytes_received": 0,
        "bytes_sent": 5,
        "connection_termination_details": None,
        "downstream_local_address": HOST,
        "downstream_remote_address": "127.0.0.1:123" if kind == "asgi" else "127.0.0.1",
        "method": "GET",
        "path": "/items",
        "protocol": "HTTP/1.1",
        "requested_server_name": None,
        "response_code": 200,
        "response_code_details": "via_upstream",
        "response_flags": "-",
        "route_name": "default",
        "upstream_cluster": "inbound|8080||",
        "upstream_host": HOST,
        "upstream_local_address": None,
        "upstream_service_time": None,
        "upstream_transport_failure_reason": None,
        "user_agent": "test-agent/1.0",
        "x_forwarded_for": None,
    }


@KINDS
def test_no_access_log_unless_enabled(
    kind: str, make_mesh: Callable[..., inmesh.Mesh], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = Server(kind, make_mesh())
    server.get()
    assert access_lines(caplog) == []


@KINDS
def test_access_log_follows_the_logger_level(
    kind: str, make_mesh: Callable[..., inmesh.Mesh], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ACCESS_LOGGER)
    server = Server(kind, make_mesh(access_log="text"))
    server.get()
    assert access_lines(caplog) == []


@pytest.mark.parametrize("fmt", ["text", "json"])
@KINDS
def test_access_log_never_holds_credentials(
    kind: str, fmt: str, make_mesh: Callable[..., inmesh.Mesh], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    server = Server(kind, make_mesh(access_log=fmt))
    server.get(
        "/api",
        headers={
            "authorization": "Bearer s3cr3t-t0ken",
            "cookie": "session=c00kie-value",
            "proxy-authorization": "Basic cHJveHk6cGFzcw==",
        },
    )
    (line,) = access_lines(caplog)
    for secret in ("s3cr3t-t0ken", "c00kie-value", "cHJveHk6cGFzcw==", "Bearer", "session="):
        assert secret not in line


# -- traces (with the OpenTelemetry SDK) -------------------------------------------------------

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


@KINDS
def test_server_span_continues_the_incoming_trace(
    kind: str, otel: Otel, make_mesh: Callable[..., inmesh.Mesh]
) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    server = Server(kind, make_mesh())
    server.get("/items?page=2", headers={"traceparent": TRACEPARENT, "user-agent": "ua/1"})
    (span,) = otel.spans()
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET"
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None
    assert span.parent.span_id == PARENT_ID
    assert span.parent.is_remote
    attrs = dict(span.attributes)
    assert attrs["http.request.method"] == "GET"
    assert attrs["url.path"] == "/items"
    assert attrs["url.scheme"] == "http"
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "backend.default.svc.cluster.local"
    assert attrs["user_agent.original"] == "ua/1"
    assert span.status.status_code is not StatusCode.ERROR
    # the app ran inside the span
    assert server.seen[0]["span"] == (TRACE_ID, span.context.span_id)


def test_server_span_without_incoming_trace_is_a_root(
    otel: Otel, make_mesh: Callable[..., inmesh.Mesh]
) -> None:
    server = Server("asgi", make_mesh())
    server.get()
    (span,) = otel.spans()
    assert span.parent is None
    assert server.seen[0]["span"] == (span.context.trace_id, span.context.span_id)


def test_server_span_of_a_failure(otel: Otel, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    from opentelemetry.trace import StatusCode

    server = Server("asgi", make_mesh())
    server.get("/unavailable", headers={"traceparent": TRACEPARENT})
    (span,) = otel.spans()
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["error.type"] == "503"
    assert span.status.status_code is StatusCode.ERROR


def test_tracing_off_makes_no_spans(otel: Otel, make_mesh: Callable[..., inmesh.Mesh]) -> None:
    server = Server("asgi", make_mesh(tracing=False))
    server.get(headers={"traceparent": TRACEPARENT})
    assert otel.spans() == []
    assert server.seen[0]["span"] is None


# -- traces without an SDK: header forwarding -----------------------------------------------

NO_SDK_SCRIPT = textwrap.dedent(
    """
    import asyncio, json

    import httpx
    from opentelemetry import trace
    from prometheus_client import CollectorRegistry

    import inmesh
    from inmesh.telemetry import current_inbound

    seen = {}

    async def app(scope, receive, send):
        call = current_inbound()
        seen[scope["path"]] = {
            "trace_headers": [[k.decode(), v.decode()] for k, v in call.trace_headers],
            "span_valid": trace.get_current_span().get_span_context().is_valid,
            "provider": type(trace.get_tracer_provider()).__name__,
        }
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def wsgi_app(environ, start_response):
        call = current_inbound()
        seen["wsgi" + environ["PATH_INFO"]] = {
            "trace_headers": [[k.decode(), v.decode()] for k, v in call.trace_headers],
        }
        start_response("200 OK", [])
        return [b"ok"]

    async def main():
        w3c = inmesh.Mesh([], workload=inmesh.Workload("backend"), metrics_registry=CollectorRegistry())
        b3 = inmesh.Mesh(
            [], workload=inmesh.Workload("backend"), metrics_registry=CollectorRegistry(),
            trace_propagation="b3",
        )
        headers = {
            "traceparent": "%(traceparent)s",
            "tracestate": "vendor=value",
            "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
            "x-b3-spanid": "a2fb4a1d1a96d312",
            "x-b3-sampled": "1",
        }
        for mesh, path in ((w3c, "/w3c"), (b3, "/b3")):
            transport = httpx.ASGITransport(mesh.asgi(app))
            async with httpx.AsyncClient(transport=transport, base_url="http://backend:8080") as c:
                await c.get(path, headers=headers)
        with httpx.Client(transport=httpx.WSGITransport(w3c.wsgi(wsgi_app)), base_url="http://b") as c:
            c.get("/w3c", headers=headers)
        w3c.close()
        b3.close()

    asyncio.run(main())
    print(json.dumps(seen))
    """
)


def test_without_an_sdk_trace_headers_are_kept_for_forwarding() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", NO_SDK_SCRIPT % {"traceparent": TRACEPARENT}],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    w3c = seen["/w3c"]
    assert w3c["provider"] == "ProxyTracerProvider"  # the API alone
    assert w3c["span_valid"] is False  # no span was made
    assert sorted(map(tuple, w3c["trace_headers"])) == [
        ("traceparent", TRACEPARENT),
        ("tracestate", "vendor=value"),
    ]
    assert sorted(map(tuple, seen["wsgi/w3c"]["trace_headers"])) == [
        ("traceparent", TRACEPARENT),
        ("tracestate", "vendor=value"),
    ]
    assert sorted(map(tuple, seen["/b3"]["trace_headers"])) == [
        ("x-b3-sampled", "1"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
    ]


# -- mutual TLS: the peer's verified identity ---------------------------------------------


def test_labels_of_a_mutual_tls_request(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    """The ASGI TLS extension carries the client certificate (as uvicorn under inmesh does)."""
    import ssl

    from inmesh.identity.ca import LocalCA
    from inmesh.identity.sources import CASource
    from inmesh.identity.spiffe import SpiffeId

    ca = LocalCA.create()
    frontend_cert = ca.issue("spiffe://cluster.local/ns/shop/sa/frontend-sa")
    source = CASource(ca, SpiffeId.for_workload("default", "backend-sa"))
    workload = Workload("backend", service_account="backend-sa", labels=dict(BACKEND.labels))
    mesh = make_mesh(workload=workload, identity=source)
    app = AsgiApp()
    wrapped = mesh.asgi(app)
    lying = local_metadata(Workload("frontend", namespace="elsewhere"), "east", "p")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/api",
        "raw_path": b"/api",
        "query_string": b"",
        "root_path": "",
        "server": ("10.0.0.7", 8080),
        "client": ("10.0.0.5", 51234),
        "headers": [
            (b"host", HOST.encode()),
            (b"x-envoy-peer-metadata", lying.header_value()),
        ],
        "extensions": {
            "tls": {
                "server_cert": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(frontend_cert.der)],
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": 0x0304,
                "cipher_suite": 0x1302,
            }
        },
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(wrapped(scope, receive, send))
    assert sent[0]["status"] == 200
    assert istio_requests(mesh.metrics_registry) == [
        (
            {
                **UNKNOWN_SOURCE,
                **DESTINATION,
                "source_workload": "frontend",
                "source_canonical_service": "frontend",
                "source_canonical_revision": "latest",
                # the verified SPIFFE ID wins over what the metadata claims
                "source_workload_namespace": "shop",
                "source_principal": "spiffe://cluster.local/ns/shop/sa/frontend-sa",
                "source_cluster": "east",
                "destination_principal": "spiffe://cluster.local/ns/default/sa/backend-sa",
                "connection_security_policy": "mutual_tls",
            },
            1.0,
        )
    ]


# -- destination service from the authority --------------------------------------------------


@pytest.mark.parametrize(
    ("host", "service", "name"),
    [
        ("backend.default.svc.cluster.local:8080", "backend.default.svc.cluster.local", "backend"),
        ("reviews.shop.svc.cluster.local", "reviews.shop.svc.cluster.local", "reviews"),
        ("backend:8080", "backend", "backend"),
        ("10.0.0.7:8080", "10.0.0.7", "10.0.0.7"),
        ("[fd00::7]:8080", "[fd00::7]", "[fd00::7]"),
        ("[fd00::7]", "[fd00::7]", "[fd00::7]"),
    ],
)
def test_destination_service_from_the_host(
    host: str, service: str, name: str, make_mesh: Callable[..., inmesh.Mesh]
) -> None:
    server = Server("asgi", make_mesh())
    server.get(headers={"host": host})
    ((labels, _),) = istio_requests(server.registry)
    assert (labels["destination_service"], labels["destination_service_name"]) == (service, name)
    assert labels["destination_service_namespace"] == "default"


def test_destination_service_from_the_registry(
    tmp_path: Path, make_mesh: Callable[..., inmesh.Mesh]
) -> None:
    (tmp_path / "se.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: reviews, namespace: shop}\n"
        "spec:\n  hosts: [reviews.shop.svc.cluster.local]\n  location: MESH_INTERNAL\n"
        "  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n"
        "  endpoints: [{address: 10.0.0.7}]\n"
    )
    server = Server("asgi", make_mesh(tmp_path))
    server.get(headers={"host": "reviews.shop.svc.cluster.local:8080"})
    ((labels, _),) = istio_requests(server.registry)
    assert labels["destination_service"] == "reviews.shop.svc.cluster.local"
    assert labels["destination_service_namespace"] == "shop"


def test_grpc_status_from_trailers(make_mesh: Callable[..., inmesh.Mesh]) -> None:
    mesh = make_mesh()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/grpc")],
                "trailers": True,
            }
        )
        await send({"type": "http.response.body", "body": b"\0\0\0\0\0"})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"5")]})

    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/pkg.Svc/Get",
        "raw_path": b"/pkg.Svc/Get",
        "query_string": b"",
        "root_path": "",
        "server": ("10.0.0.7", 8080),
        "client": ("10.0.0.5", 51234),
        "headers": [(b"host", HOST.encode()), (b"content-type", b"application/grpc")],
        "extensions": {"http.response.trailers": {}},
    }
    sent: list[str] = []
    recorded_before_trailers: list[list[Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.trailers":
            recorded_before_trailers.append(istio_requests(mesh.metrics_registry))
        sent.append(message["type"])

    asyncio.run(mesh.asgi(app)(scope, receive, send))
    assert sent == ["http.response.start", "http.response.body", "http.response.trailers"]
    assert recorded_before_trailers == [[]]  # counted at the end of the stream
    ((labels, _),) = istio_requests(mesh.metrics_registry)
    assert (labels["request_protocol"], labels["grpc_response_status"]) == ("grpc", "5")
    assert byte_sums(mesh.metrics_registry) == (0, 5)
