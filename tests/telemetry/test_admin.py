"""The admin endpoint: its own server, and the same pages mounted in ASGI and WSGI apps."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

import inmesh
from inmesh.config.dump import snapshot_to_data
from inmesh.identity.ca import LocalCA
from inmesh.identity.sources import CASource
from inmesh.identity.spiffe import SpiffeId
from inmesh.model import Workload

from .conftest import Upstream

BACKEND = Workload("backend", service_account="backend-sa", labels={"app": "backend"})
SPIFFE = "spiffe://cluster.local/ns/default/sa/backend-sa"


def admin_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("inmesh-admin-")]


@pytest.fixture
def mesh() -> Iterator[inmesh.Mesh]:
    with inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry(), admin_port=0) as m:
        yield m


@pytest.fixture
def admin(mesh: inmesh.Mesh) -> Iterator[httpx.Client]:
    address = mesh.admin_address
    assert address is not None
    host, port = address
    with httpx.Client(base_url=f"http://{host}:{port}", trust_env=False, timeout=10) as client:
        yield client


def test_off_by_default() -> None:
    with inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry()) as m:
        assert m.admin_address is None
        assert admin_threads() == []


def test_binds_loopback_on_a_free_port(mesh: inmesh.Mesh) -> None:
    address = mesh.admin_address
    assert address is not None
    host, port = address
    assert host == "127.0.0.1"
    assert port > 0
    assert f"inmesh-admin-{port}" in admin_threads()


def test_ready(admin: httpx.Client) -> None:
    r = admin.get("/ready")
    assert (r.status_code, r.text) == (200, "LIVE\n")
    assert r.headers["content-type"].startswith("text/plain")


def test_index_lists_the_pages(admin: httpx.Client) -> None:
    text = admin.get("/").text
    for page in ("/stats/prometheus", "/config_dump", "/clusters", "/certs", "/ready"):
        assert page in text


def test_prometheus(admin: httpx.Client, mesh: inmesh.Mesh) -> None:
    # one request through the mesh's middleware, to have a series
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def call() -> None:
        transport = httpx.ASGITransport(mesh.asgi(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://backend") as c:
            await c.get("/")

    asyncio.run(call())
    r = admin.get("/stats/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert 'istio_build{component="proxy"' in r.text
    assert "istio_requests_total{" in r.text
    assert 'destination_workload="backend"' in r.text
    assert "inmesh_config_reloads_total" in r.text


def test_prometheus_without_metrics_is_404() -> None:
    with inmesh.Mesh(workload=BACKEND, metrics_registry=None, admin_port=0) as m:
        host, port = m.admin_address  # type: ignore[misc]
        r = httpx.get(f"http://{host}:{port}/stats/prometheus", trust_env=False)
        assert r.status_code == 404
        assert "metrics_registry=None" in r.text


def test_config_dump(tmp_path: Path, upstream: Upstream) -> None:
    config = upstream.config_dir(tmp_path)
    with inmesh.Mesh(
        config, workload=BACKEND, metrics_registry=CollectorRegistry(), admin_port=0
    ) as m:
        host, port = m.admin_address  # type: ignore[misc]
        r = httpx.get(f"http://{host}:{port}/config_dump", trust_env=False)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        doc = r.json()
        assert doc == json.loads(json.dumps(snapshot_to_data(m.snapshot), default=str))
        assert doc["metadata"]["resourceVersion"] == m.snapshot.version
        (item,) = doc["items"]
        assert item["kind"] == "ServiceEntry"
        assert item["spec"]["hosts"] == ["api.example.com"]


def test_clusters(tmp_path: Path, upstream: Upstream) -> None:
    config = upstream.config_dir(tmp_path)
    with inmesh.Mesh(
        config, workload=BACKEND, metrics_registry=CollectorRegistry(), admin_port=0
    ) as m:
        host, port = m.admin_address  # type: ignore[misc]
        with httpx.Client(base_url=f"http://{host}:{port}", trust_env=False) as admin:
            assert admin.get("/clusters").text == ""
            assert admin.get("/clusters?format=json").json() == {"clusters": []}
            with httpx.Client(transport=m.transport()) as client:
                assert client.get("http://api.example.com/").status_code == 200
            name = "outbound|80||api.example.com"
            address = f"127.0.0.1:{upstream.port}"
            text = admin.get("/clusters")
            assert text.headers["content-type"].startswith("text/plain")
            lines = text.text.splitlines()
            for line in (
                f"{name}::rq_active::0",
                f"{name}::upstream_rq_retry::0",
                f"{name}::upstream_rq_pending_overflow::0",
                f"{name}::outlier_detection_ejections::0",
                f"{name}::{address}::weight::1",
                f"{name}::{address}::rq_active::0",
                f"{name}::{address}::health_flags::healthy",
            ):
                assert line in lines
            doc = admin.get("/clusters?format=json").json()
            (cluster,) = doc["clusters"]
            assert cluster["name"] == name
            assert cluster["rq_active"] == 0
            (h,) = cluster["hosts"]
            assert h["address"] == address
            assert h["health_flags"] == "healthy"


def test_certs_show_identity_never_the_key() -> None:
    ca = LocalCA.create()
    source = CASource(ca, SpiffeId.for_workload("default", "backend-sa"))
    with inmesh.Mesh(
        workload=BACKEND, identity=source, metrics_registry=CollectorRegistry(), admin_port=0
    ) as m:
        host, port = m.admin_address  # type: ignore[misc]
        r = httpx.get(f"http://{host}:{port}/certs", trust_env=False)
        assert r.status_code == 200
        assert "PRIVATE KEY" not in r.text
        cert = source.current()
        key_body = b"".join(cert.key_pem.splitlines()[1:-1]).decode()
        assert key_body[:40] not in r.text
        (entry,) = r.json()["certificates"]
        assert entry["spiffe_id"] == SPIFFE
        leaf, *_ = entry["cert_chain"]
        assert len(entry["cert_chain"]) == len(cert.chain)  # the leaf once, then intermediates
        assert leaf["serial_number"] == format(cert.certificate.serial_number, "x")
        not_after = cert.certificate.not_valid_after_utc
        assert dt.datetime.fromisoformat(leaf["expiration_time"]) == not_after
        assert 0 < leaf["seconds_until_expiration"] <= 24 * 3600
        assert [c["serial_number"] for c in entry["ca_cert"]] == [
            format(c.serial_number, "x") for c in cert.trust_bundle
        ]


def test_certs_without_identity(admin: httpx.Client) -> None:
    assert admin.get("/certs").json() == {"certificates": []}


def test_unknown_path_is_404(admin: httpx.Client) -> None:
    r = admin.get("/quitquitquit")
    assert r.status_code == 404
    assert admin.get("/stats/prometheus/extra").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_writes_are_405(admin: httpx.Client, method: str) -> None:
    r = admin.request(method, "/ready", content=b"x" * 10)
    assert r.status_code == 405
    assert "read-only" in r.text


def test_head_has_no_body(admin: httpx.Client) -> None:
    r = admin.head("/ready")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "5"


def test_close_stops_the_server() -> None:
    m = inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry(), admin_port=0)
    host, port = m.admin_address  # type: ignore[misc]
    assert httpx.get(f"http://{host}:{port}/ready", trust_env=False).status_code == 200
    m.close()
    assert admin_threads() == []
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=2):
        pass
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host}:{port}/ready", trust_env=False)


def test_admin_port_from_the_environment() -> None:
    m = inmesh.Mesh.from_env(
        {"INMESH_WORKLOAD": "backend", "INMESH_ADMIN_PORT": "0"},
        metrics_registry=CollectorRegistry(),
    )
    try:
        assert m.admin_address is not None
        assert m.admin_address[0] == "127.0.0.1"
    finally:
        m.close()
    assert admin_threads() == []


# -- mounted in an app -------------------------------------------------------------------


def asgi_get(app: Any, *paths: str, method: str = "GET") -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return [await client.request(method, p) for p in paths]

    return asyncio.run(go())


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_mounted_under_a_prefix(framework: str) -> None:
    with inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry()) as m:
        if framework == "starlette":
            from starlette.applications import Starlette
            from starlette.routing import Mount

            app: Any = Starlette(routes=[Mount("/mesh", app=m.admin_app())])
        else:
            from fastapi import FastAPI

            app = FastAPI()
            app.mount("/mesh", m.admin_app())
        ready, prom, clusters, missing, outside = asgi_get(
            app,
            "/mesh/ready",
            "/mesh/stats/prometheus",
            "/mesh/clusters?format=json",
            "/mesh/nope",
            "/ready",
        )
        assert (ready.status_code, ready.text) == (200, "LIVE\n")
        assert "istio_build" in prom.text
        assert clusters.json() == {"clusters": []}
        assert missing.status_code == 404
        assert "see / for the admin pages" in missing.text
        assert outside.status_code == 404
        assert "admin pages" not in outside.text  # the app's own 404
        (posted,) = asgi_get(app, "/mesh/ready", method="POST")
        assert posted.status_code == 405
        (head,) = asgi_get(app, "/mesh/ready", method="HEAD")
        assert (head.status_code, head.content) == (200, b"")
    (closed,) = asgi_get(app, "/mesh/ready")
    assert closed.status_code == 503


def test_asgi_app_with_root_path_already_stripped() -> None:
    """Servers that strip ``root_path`` from ``path`` themselves work too."""
    with inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry()) as m:
        app = m.admin_app()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/ready",
            "root_path": "/mesh",
            "query_string": b"",
            "headers": [],
        }
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 200
        assert sent[1]["body"] == b"LIVE\n"


def test_asgi_lifespan_is_answered() -> None:
    with inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry()) as m:
        app = m.admin_app()
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app({"type": "lifespan"}, receive, send))
        assert [s["type"] for s in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]


def test_wsgi_app() -> None:
    with inmesh.Mesh(workload=BACKEND, metrics_registry=CollectorRegistry()) as m:
        transport = httpx.WSGITransport(m.admin_wsgi_app())
        with httpx.Client(transport=transport, base_url="http://app") as client:
            r = client.get("/ready")
            assert (r.status_code, r.text) == (200, "LIVE\n")
            assert "istio_build" in client.get("/stats/prometheus").text
            assert client.get("/clusters?format=json").json() == {"clusters": []}
            assert client.get("/config_dump").json()["kind"] == "List"
            assert client.get("/nope").status_code == 404
            assert client.post("/ready").status_code == 405
            head = client.head("/ready")
            assert (head.status_code, head.content) == (200, b"")
        # mounted under a prefix (SCRIPT_NAME), the page is PATH_INFO
        environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/mesh", "PATH_INFO": "/ready"}
        statuses: list[str] = []
        body = b"".join(m.admin_wsgi_app()(environ, lambda s, h: statuses.append(s)))
        assert (statuses, body) == (["200 OK"], b"LIVE\n")
