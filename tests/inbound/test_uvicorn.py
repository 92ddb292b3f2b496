"""Real uvicorn with inmesh's protocol classes: in-process (h11, httptools) and its CLI."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import a2wsgi
import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from inmesh.identity.certificate import WorkloadCertificate
from inmesh.inbound import uvicorn as inmesh_uvicorn
from inmesh.inbound.asgi import MeshASGIMiddleware, peer_of
from inmesh.inbound.wsgi import MeshWSGIMiddleware
from inmesh.policy.peer_authn import MtlsMode

from .conftest import (
    FRONTEND,
    PYTHON,
    MutableContext,
    client_context,
    expected_xfcc,
    start_process,
    whoami,
)

PROTOCOLS = {
    "h11": inmesh_uvicorn.H11Protocol,
    "httptools": inmesh_uvicorn.HttpToolsProtocol,
}


@contextmanager
def uvicorn_server(
    app: Any, *, http: Any, cert_dir: Path | None, cert_reqs: int = ssl.CERT_REQUIRED
) -> Iterator[int]:
    """uvicorn.Server in a thread on an ephemeral port (TLS from ``cert_dir`` if given)."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls: dict[str, Any] = {}
    if cert_dir is not None:
        tls = {
            "ssl_certfile": str(cert_dir / "cert-chain.pem"),
            "ssl_keyfile": str(cert_dir / "key.pem"),
            "ssl_ca_certs": str(cert_dir / "root-cert.pem"),
            "ssl_cert_reqs": cert_reqs,
        }
    config = uvicorn.Config(app, http=http, log_config=None, lifespan="off", **tls)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def flask_asgi(apps: types.ModuleType, context: MutableContext) -> Iterator[Any]:
    """Flask through a2wsgi behind the ASGI middleware; a2wsgi's threads are joined after."""
    wsgi = a2wsgi.WSGIMiddleware(MeshWSGIMiddleware(apps.flask_app, context))
    try:
        yield MeshASGIMiddleware(wsgi, context)
    finally:
        wsgi.executor.shutdown(wait=True)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize("which", ["fastapi", "flask"])
def test_uvicorn_with_inmesh_protocol(
    apps: types.ModuleType,
    context: MutableContext,
    cert_dir: Path,
    frontend_cert: WorkloadCertificate,
    protocol: str,
    which: str,
) -> None:
    with flask_asgi(apps, context) as flask_app:
        app = MeshASGIMiddleware(apps.fastapi_app, context) if which == "fastapi" else flask_app
        with (
            uvicorn_server(app, http=PROTOCOLS[protocol], cert_dir=cert_dir) as port,
            httpx.Client(verify=client_context(frontend_cert)) as client,
        ):
            for _ in range(2):  # keep-alive: the per-connection wrapper serves both
                seen = whoami(
                    client,
                    f"https://127.0.0.1:{port}",
                    {"x-forwarded-client-cert": "By=spiffe://evil"},
                )
                assert seen["peer"] == FRONTEND
                assert seen["xfcc"] == [expected_xfcc(frontend_cert)]


def test_forwarded_proto_cannot_fake_tls(apps: types.ModuleType, context: MutableContext) -> None:
    """uvicorn trusts X-Forwarded-Proto from 127.0.0.1 by default; the socket marker wins."""
    app = MeshASGIMiddleware(apps.fastapi_app, context)
    with uvicorn_server(app, http=inmesh_uvicorn.H11Protocol, cert_dir=None) as port:
        r = httpx.get(f"http://127.0.0.1:{port}/whoami", headers={"x-forwarded-proto": "https"})
    assert r.status_code == 403
    assert r.text == "peer authentication failed: mutual TLS is required"
    assert r.headers["connection"] == "close"
    assert apps.CALLS["fastapi"] == 0


def test_stock_uvicorn_is_served_without_identity_and_warned_once(
    apps: types.ModuleType,
    context: MutableContext,
    cert_dir: Path,
    frontend_cert: WorkloadCertificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that never sets the TLS extension: enforce what can be, say so once."""
    app = MeshASGIMiddleware(apps.fastapi_app, context)
    with (
        caplog.at_level(logging.WARNING, logger="inmesh.inbound"),
        uvicorn_server(app, http="h11", cert_dir=cert_dir) as port,
        httpx.Client(verify=client_context(frontend_cert)) as client,
    ):
        for _ in range(3):
            seen = whoami(client, f"https://127.0.0.1:{port}", {"x-forwarded-client-cert": "By=x"})
            assert seen["peer"] is None and seen["xfcc"] == []
    warnings = [r for r in caplog.records if r.name == "inmesh.inbound"]
    assert len(warnings) == 1 and "WITHOUT peer identity" in warnings[0].getMessage()


def test_stock_uvicorn_fail_closed(
    apps: types.ModuleType,
    context: MutableContext,
    cert_dir: Path,
    frontend_cert: WorkloadCertificate,
) -> None:
    app = MeshASGIMiddleware(apps.fastapi_app, context, fail_closed=True)
    with uvicorn_server(app, http="h11", cert_dir=cert_dir) as port:
        r = httpx.get(f"https://127.0.0.1:{port}/whoami", verify=client_context(frontend_cert))
    assert r.status_code == 403
    assert r.text == "peer authentication failed: client certificate not visible to the mesh"


def test_permissive_plaintext_through_inmesh_protocol(
    apps: types.ModuleType, context: MutableContext
) -> None:
    context.mode = MtlsMode.PERMISSIVE
    app = MeshASGIMiddleware(apps.fastapi_app, context)
    with (
        uvicorn_server(app, http=inmesh_uvicorn.HttpToolsProtocol, cert_dir=None) as port,
        httpx.Client() as client,
    ):
        seen = whoami(client, f"http://127.0.0.1:{port}", {"x-forwarded-client-cert": "By=x"})
    assert seen["peer"] is None and seen["xfcc"] == []


def test_websocket_protocol_gets_the_extensions(frontend_cert: WorkloadCertificate) -> None:
    """uvicorn has no WebSocket library here: check the upgrade path with a stand-in class."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)

    class FakeWS:
        def __init__(self, config: Any, server_state: Any, app_state: Any) -> None:
            self.app = config.loaded_app

    class FakeSSLObject:
        def getpeercert(self, binary_form: bool = False) -> bytes:
            return frontend_cert.der

        def cipher(self) -> tuple[str, str, int]:
            return ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256)

        def version(self) -> str:
            return "TLSv1.3"

    class FakeTransport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"ssl_object": FakeSSLObject(), "sslcontext": object()}.get(name, default)

        def is_closing(self) -> bool:
            return False

    config = uvicorn.Config(app, ws=FakeWS, lifespan="off")
    config.load()

    async def main() -> None:
        proto = inmesh_uvicorn.H11Protocol(config, ServerState(), {})
        proto.connection_made(FakeTransport())  # type: ignore[arg-type]
        ws = proto.ws_protocol_class(config=config, server_state=ServerState(), app_state={})
        await ws.app({"type": "websocket", "headers": []}, None, None)

    asyncio.run(main())
    ext = scopes[0]["extensions"]
    assert ext["inmesh.transport"] == "tls"
    assert ext["tls"]["inmesh.peer_der"] == frontend_cert.der
    assert ext["tls"]["tls_version"] == 0x0304 and ext["tls"]["cipher_suite"] == 0x1302


@pytest.mark.e2e
@pytest.mark.parametrize("attr", ["asgi_app", "flask_asgi_app"])
def test_uvicorn_cli_with_http_option(
    apps_dir: Path, cert_dir: Path, frontend_cert: WorkloadCertificate, attr: str
) -> None:
    proc = start_process(
        [
            PYTHON,
            "-m",
            "uvicorn",
            f"inbound_test_apps:{attr}",
            "--http",
            "inmesh.inbound.uvicorn:HttpToolsProtocol",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ssl-certfile",
            str(cert_dir / "cert-chain.pem"),
            "--ssl-keyfile",
            str(cert_dir / "key.pem"),
            "--ssl-ca-certs",
            str(cert_dir / "root-cert.pem"),
            "--ssl-cert-reqs",
            "2",
        ],
        r"Uvicorn running on https://127\.0\.0\.1:(?P<port>\d+)",
        cwd=apps_dir,
        env={"INBOUND_TEST_CERT_DIR": str(cert_dir)},
    )
    try:
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            seen = whoami(
                client, f"https://127.0.0.1:{proc.port}", {"x-forwarded-client-cert": "By=x"}
            )
        assert seen["peer"] == FRONTEND
        assert seen["xfcc"] == [expected_xfcc(frontend_cert)]
        with pytest.raises(httpx.TransportError):  # no client certificate
            httpx.get(f"https://127.0.0.1:{proc.port}/whoami", verify=False)
    finally:
        proc.stop()


def test_peer_of_outside_inmesh() -> None:
    assert peer_of({"type": "http"}) is None
