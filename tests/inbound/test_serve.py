"""inmesh's own server: modes on one port, the negative matrix, mode changes, rotation, lifecycle."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
import time
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import MemorySource
from inmesh.inbound.serve import MeshServer, ServeError, is_asgi, serve_in_thread
from inmesh.policy.peer_authn import MtlsMode

from .conftest import (
    BACKEND,
    FRONTEND,
    MutableContext,
    client_context,
    expected_xfcc,
    no_cert_context,
    utcnow,
    whoami,
)


def https(port: int) -> str:
    return f"https://127.0.0.1:{port}"


def http(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def strict_server(apps: types.ModuleType, context: MutableContext) -> Any:
    with serve_in_thread(apps.fastapi_app, context) as server:
        yield server


# -- the positive path, ASGI and WSGI -------------------------------------------------


@pytest.mark.parametrize("which", ["fastapi_app", "flask_app"])
def test_app_sees_peer_and_xfcc(
    apps: types.ModuleType,
    context: MutableContext,
    frontend_cert: WorkloadCertificate,
    which: str,
) -> None:
    with (
        serve_in_thread(getattr(apps, which), context) as server,
        httpx.Client(verify=client_context(frontend_cert)) as client,
    ):
        for _ in range(2):  # two requests on one kept-alive connection
            seen = whoami(
                client, https(server.port), {"x-forwarded-client-cert": "By=spiffe://evil"}
            )
            assert seen["peer"] == FRONTEND
            assert seen["xfcc"] == [expected_xfcc(frontend_cert)]
            assert seen["scheme"] == "https"
            if which == "fastapi_app":
                assert seen["state_peer"] == FRONTEND


# -- the negative matrix under STRICT -------------------------------------------------


def test_strict_refuses_without_client_cert_at_handshake(
    apps: types.ModuleType, strict_server: Any, ca: LocalCA
) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{https(strict_server.port)}/whoami", verify=no_cert_context(ca))
    assert apps.CALLS["fastapi"] == 0


def test_strict_refuses_plaintext(apps: types.ModuleType, strict_server: Any) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{http(strict_server.port)}/whoami")
    assert apps.CALLS["fastapi"] == 0


def test_strict_refuses_plaintext_at_the_socket(strict_server: Any) -> None:
    """Like Envoy: the connection is closed, not a byte of HTTP is written."""
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=5) as s:
        s.sendall(b"GET /whoami HTTP/1.1\r\nHost: backend\r\n\r\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
    assert data == b""


def _cert_cases(ca: LocalCA, other_ca: LocalCA) -> dict[str, WorkloadCertificate]:
    now = utcnow()
    return {
        "other CA": other_ca.issue(FRONTEND),
        "expired": ca.issue(FRONTEND, now=now - dt.timedelta(days=2), ttl=dt.timedelta(hours=1)),
        "not yet valid": ca.issue(FRONTEND, now=now + dt.timedelta(days=1)),
        "foreign trust domain, other CA": LocalCA.create("other.domain").issue(
            "spiffe://other.domain/ns/default/sa/frontend-sa"
        ),
    }


@pytest.mark.parametrize(
    "case", ["other CA", "expired", "not yet valid", "foreign trust domain, other CA"]
)
@pytest.mark.parametrize("mode", [MtlsMode.STRICT, MtlsMode.PERMISSIVE])
def test_bad_client_certificates_fail_the_handshake(
    apps: types.ModuleType,
    context: MutableContext,
    ca: LocalCA,
    other_ca: LocalCA,
    case: str,
    mode: MtlsMode,
) -> None:
    context.mode = mode
    cert = _cert_cases(ca, other_ca)[case]
    # the client must trust the server (the mesh root) to get as far as sending its cert
    ctx = client_context(cert)
    ctx.load_verify_locations(cadata=ca.trust_bundle_pem.decode())
    with serve_in_thread(apps.fastapi_app, context) as server, pytest.raises(httpx.TransportError):
        httpx.get(f"{https(server.port)}/whoami", verify=ctx)
    assert apps.CALLS["fastapi"] == 0


def test_same_ca_other_trust_domain_refused_by_decision(
    apps: types.ModuleType, strict_server: Any, ca: LocalCA
) -> None:
    foreign = ca.issue("spiffe://other.domain/ns/default/sa/frontend-sa")
    r = httpx.get(f"{https(strict_server.port)}/whoami", verify=client_context(foreign))
    assert r.status_code == 403
    assert r.text == "peer authentication failed: client trust domain not accepted"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["connection"] == "close"
    assert apps.CALLS["fastapi"] == 0


# -- PERMISSIVE: both on one port; DISABLE ---------------------------------------------


def test_permissive_serves_plaintext_and_tls_on_one_port(
    apps: types.ModuleType, context: MutableContext, frontend_cert: WorkloadCertificate, ca: LocalCA
) -> None:
    context.mode = MtlsMode.PERMISSIVE
    with serve_in_thread(apps.fastapi_app, context) as server:
        spoof = {"x-forwarded-client-cert": f"By={BACKEND};URI={FRONTEND}"}
        with httpx.Client() as plain:
            seen = whoami(plain, http(server.port), spoof)
        assert seen == {
            "app": "fastapi",
            "peer": None,
            "state_peer": None,
            "xfcc": [],
            "scheme": "http",
        }
        with httpx.Client(verify=client_context(frontend_cert)) as tls:
            seen = whoami(tls, https(server.port), spoof)
        assert seen["peer"] == FRONTEND and seen["xfcc"] == [expected_xfcc(frontend_cert)]
        with httpx.Client(verify=no_cert_context(ca)) as anonymous:
            seen = whoami(anonymous, https(server.port), spoof)
        assert seen["peer"] is None and seen["xfcc"] == [] and seen["scheme"] == "https"


def test_disable_is_plaintext_only(
    apps: types.ModuleType, context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    context.mode = MtlsMode.DISABLE
    with serve_in_thread(apps.fastapi_app, context) as server:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{https(server.port)}/whoami", verify=client_context(frontend_cert))
        with httpx.Client() as plain:
            assert whoami(plain, http(server.port))["peer"] is None


def test_trusted_proxy_xfcc_appends_on_mtls(
    apps: types.ModuleType, context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    context.trusted_proxy_xfcc = True
    with (
        serve_in_thread(apps.fastapi_app, context) as server,
        httpx.Client(verify=client_context(frontend_cert)) as client,
    ):
        seen = whoami(client, https(server.port), {"x-forwarded-client-cert": "By=spiffe://gw"})
    assert seen["xfcc"] == ["By=spiffe://gw," + expected_xfcc(frontend_cert)]
    assert seen["peer"] == FRONTEND


# -- configuration changes, rotation ----------------------------------------------------


def test_mode_change_applies_to_new_connections(
    apps: types.ModuleType, context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    context.mode = MtlsMode.PERMISSIVE
    with serve_in_thread(apps.fastapi_app, context) as server:
        with httpx.Client() as plain:
            assert whoami(plain, http(server.port))["peer"] is None
            context.mode = MtlsMode.STRICT
            # the established plaintext connection is now refused per request...
            r = plain.get(f"{http(server.port)}/whoami")
            assert r.status_code == 403
        # ...and new plaintext connections at the socket
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{http(server.port)}/whoami")
        with httpx.Client(verify=client_context(frontend_cert)) as tls:
            assert whoami(tls, https(server.port))["peer"] == FRONTEND
        context.mode = MtlsMode.PERMISSIVE
        with httpx.Client() as plain:
            assert whoami(plain, http(server.port))["peer"] is None


def _server_serial(response: httpx.Response) -> int:
    from cryptography import x509

    sslobj = response.extensions["network_stream"].get_extra_info("ssl_object")
    return x509.load_der_x509_certificate(sslobj.getpeercert(True)).serial_number


def test_rotation_reaches_new_connections_and_keeps_old_ones(
    apps: types.ModuleType,
    backend_source: MemorySource,
    context: MutableContext,
    frontend_cert: WorkloadCertificate,
    ca: LocalCA,
) -> None:
    with (
        serve_in_thread(apps.fastapi_app, context) as server,
        httpx.Client(verify=client_context(frontend_cert)) as old,
    ):
        r = old.get(f"{https(server.port)}/whoami")
        first = _server_serial(r)
        renewed = ca.issue(BACKEND)
        backend_source.update(renewed)
        r = old.get(f"{https(server.port)}/whoami")  # established connection continues
        assert r.status_code == 200 and _server_serial(r) == first
        with httpx.Client(verify=client_context(frontend_cert)) as new:
            r = new.get(f"{https(server.port)}/whoami")
            assert r.status_code == 200
            assert _server_serial(r) == renewed.serial_number != first


# -- robustness and lifecycle -----------------------------------------------------------


def test_silent_clients_are_closed(apps: types.ModuleType, context: MutableContext) -> None:
    context.mode = MtlsMode.PERMISSIVE
    with serve_in_thread(apps.fastapi_app, context, sniff_timeout=0.2) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
            t0 = time.monotonic()
            assert s.recv(10) == b""
            assert time.monotonic() - t0 < 2
        # the server still works
        with httpx.Client() as plain:
            assert whoami(plain, http(server.port))["peer"] is None


def test_slow_handshakes_do_not_block_others(
    apps: types.ModuleType, context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    with (
        serve_in_thread(apps.fastapi_app, context, handshake_timeout=0.3) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=3) as stuck,
    ):
        stuck.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            assert whoami(client, https(server.port))["peer"] == FRONTEND
        assert stuck.recv(10) == b""  # dropped after the handshake timeout


def test_strict_without_certificates_refuses_everything(
    apps: types.ModuleType, frontend_cert: WorkloadCertificate, caplog: pytest.LogCaptureFixture
) -> None:
    context = MutableContext(None)
    with (
        caplog.at_level(logging.WARNING, logger="inmesh.inbound"),
        serve_in_thread(apps.fastapi_app, context) as server,
        pytest.raises(httpx.TransportError),
    ):
        httpx.get(f"{https(server.port)}/whoami", verify=client_context(frontend_cert))
    assert any("no certificate" in r.getMessage() for r in caplog.records)


def test_graceful_stop_finishes_in_flight_requests(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.3)
        return {"done": "yes"}

    server = serve_in_thread(app, context)
    result: dict[str, Any] = {}

    def request() -> None:
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            result["r"] = client.get(f"{https(server.port)}/slow")

    import threading

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.15)
    server.stop()
    t.join(5)
    assert result["r"].status_code == 200 and result["r"].json() == {"done": "yes"}


def test_port_in_use_is_a_serve_error(apps: types.ModuleType, context: MutableContext) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match="cannot listen"):
            serve_in_thread(apps.fastapi_app, context, port=port)


def test_lifespan_startup_failure_is_a_serve_error(context: MutableContext) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "boom"})

    with pytest.raises(ServeError, match="lifespan"):
        serve_in_thread(app, context)


def test_serve_async_with_programmatic_stop(
    apps: types.ModuleType, context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    async def main() -> dict[str, Any]:
        server = MeshServer(apps.fastapi_app, context, port=0)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(verify=client_context(frontend_cert)) as client:
            r = await client.get(f"{https(server.port)}/whoami")
        server.stop()
        await asyncio.wait_for(task, 5)
        data: dict[str, Any] = r.json()
        return data

    assert asyncio.run(main())["peer"] == FRONTEND


def test_interface_detection(apps: types.ModuleType) -> None:
    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        return None

    assert is_asgi(apps.fastapi_app) and is_asgi(asgi)
    assert not is_asgi(apps.flask_app) and not is_asgi(wsgi)
    with pytest.raises(ValueError, match="interface"):
        MeshServer(wsgi, MutableContext(None), interface="cgi")  # type: ignore[arg-type]


def test_explicit_wsgi_interface(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    class App:  # a WSGI app the guess would take for ASGI (3 positional parameters)
        def __call__(self, environ: Any, start_response: Any, extra: Any = None) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(environ["inmesh.peer"]).encode()]

    with (
        serve_in_thread(App(), context, interface="wsgi") as server,
        httpx.Client(verify=client_context(frontend_cert)) as client,
    ):
        assert client.get(f"{https(server.port)}/").text == FRONTEND


def test_tls_extension_reaches_the_app(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["extensions"]["tls"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with (
        serve_in_thread(app, context) as server,
        httpx.Client(verify=client_context(frontend_cert)) as client,
    ):
        assert client.get(https(server.port)).status_code == 204
    tls = seen[0]
    assert tls["client_cert_chain"] == [ssl.DER_cert_to_PEM_cert(frontend_cert.der)]
    assert tls["inmesh.peer_der"] == frontend_cert.der
    assert tls["tls_version"] in (0x0303, 0x0304) and isinstance(tls["cipher_suite"], int)
    assert tls["client_cert_name"] == "" and tls["server_cert"] is None


def test_with_a_real_mesh(
    tmp_path: Path,
    apps: types.ModuleType,
    backend_cert: WorkloadCertificate,
    frontend_cert: WorkloadCertificate,
) -> None:
    """inmesh.Mesh is an InboundContext: its PeerAuthentication and identity drive the server."""
    import inmesh

    (tmp_path / "pa.yaml").write_text(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        "metadata: {name: default, namespace: default}\nspec: {mtls: {mode: PERMISSIVE}}\n"
    )
    workload = inmesh.Workload("backend", service_account="backend-sa")
    with (
        inmesh.Mesh(tmp_path, workload=workload, identity=MemorySource(backend_cert)) as mesh,
        serve_in_thread(mesh.asgi(apps.fastapi_app), mesh) as server,
    ):
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            seen = whoami(client, https(server.port))
        assert seen["peer"] == FRONTEND and seen["xfcc"] == [expected_xfcc(frontend_cert)]
        with httpx.Client() as plain:
            assert whoami(plain, http(server.port))["peer"] is None
