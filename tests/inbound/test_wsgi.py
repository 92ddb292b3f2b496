"""The WSGI middleware: hand-built environs, and a real werkzeug TLS server (werkzeug.socket)."""

from __future__ import annotations

import io
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.tls import build_server_context
from inmesh.inbound.asgi import MeshASGIMiddleware
from inmesh.inbound.wsgi import MeshWSGIMiddleware, connection_facts, decision_of, peer_of
from inmesh.policy.peer_authn import MtlsMode

from .conftest import FRONTEND, MutableContext, client_context, expected_xfcc, no_cert_context


class Recorder:
    def __init__(self) -> None:
        self.environs: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.environs.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(environ.get("inmesh.peer")).encode()]


def environ(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "backend",
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
    }
    env.update(extra)
    return env


def call(app: Any, env: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, headers
        return lambda b: None

    body = b"".join(app(env, start_response))
    return got["status"], got["headers"], body


def test_plaintext_strict_refused(context: MutableContext) -> None:
    inner = Recorder()
    status, headers, body = call(MeshWSGIMiddleware(inner, context), environ())
    assert status == "403 Forbidden" and not inner.environs
    assert dict(headers) == {"Content-Type": "text/plain", "Content-Length": str(len(body))}
    assert body == b"peer authentication failed: mutual TLS is required"


def test_ssl_client_cert_only_when_trusted(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    pem = frontend_cert.cert_pem.decode()
    env = environ(**{"wsgi.url_scheme": "https", "SSL_CLIENT_CERT": pem})
    # not trusted: TLS whose certificate inmesh cannot see
    facts = connection_facts(env)
    assert facts.tls and not facts.peer_visible
    inner = Recorder()
    status, _, _ = call(MeshWSGIMiddleware(inner, context), dict(env))
    assert status == "200 OK" and inner.environs[0]["inmesh.peer"] is None
    # trusted front server: the certificate counts
    inner = Recorder()
    env["HTTP_X_FORWARDED_CLIENT_CERT"] = "By=spiffe://evil"
    status, _, _ = call(MeshWSGIMiddleware(inner, context, trust_front_server=True), env)
    seen = inner.environs[0]
    assert status == "200 OK"
    assert str(seen["inmesh.peer"]) == FRONTEND
    assert seen["HTTP_X_FORWARDED_CLIENT_CERT"] == expected_xfcc(frontend_cert)
    assert str(peer_of(seen)) == FRONTEND and decision_of(seen) is not None


def test_trusted_front_server_without_cert(context: MutableContext) -> None:
    env = environ(**{"wsgi.url_scheme": "https", "SSL_CLIENT_CERT": "garbage"})
    status, _, body = call(MeshWSGIMiddleware(Recorder(), context, trust_front_server=True), env)
    assert status == "403 Forbidden"
    assert body == b"peer authentication failed: client certificate required"


def test_permissive_plaintext_strips_xfcc(context: MutableContext) -> None:
    context.mode = MtlsMode.PERMISSIVE
    inner = Recorder()
    call(MeshWSGIMiddleware(inner, context), environ(HTTP_X_FORWARDED_CLIENT_CERT="By=x"))
    assert "HTTP_X_FORWARDED_CLIENT_CERT" not in inner.environs[0]
    assert inner.environs[0]["inmesh.peer"] is None


def test_plain_socket_is_plaintext_whatever_the_scheme(context: MutableContext) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        facts = connection_facts(environ(**{"gunicorn.socket": s, "wsgi.url_scheme": "https"}))
        assert not facts.tls and facts.local_port == s.getsockname()[1]


def test_a2wsgi_scope_and_outer_decision(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    """Under a2wsgi the ASGI scope is read; an outer inmesh decision is reused as is."""
    scope = {
        "type": "http",
        "scheme": "https",
        "server": ("127.0.0.1", 8080),
        "headers": [],
        "extensions": {
            "inmesh.transport": "tls",
            "tls": {"client_cert_chain": [], "inmesh.peer_der": frontend_cert.der},
        },
    }
    facts = connection_facts(environ(**{"asgi.scope": scope}))
    assert facts.tls and facts.peer_der == frontend_cert.der
    inner = Recorder()
    call(MeshWSGIMiddleware(inner, context), environ(**{"asgi.scope": scope}))
    assert str(inner.environs[0]["inmesh.peer"]) == FRONTEND

    # outer decision: the WSGI middleware must not decide again (nor touch XFCC)
    captured: list[dict[str, Any]] = []

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        captured.append(scope)

    import asyncio

    asyncio.run(MeshASGIMiddleware(asgi_app, context)(scope, None, None))  # type: ignore[arg-type]
    decided = captured[0]
    env = environ(**{"asgi.scope": decided, "HTTP_X_FORWARDED_CLIENT_CERT": "kept"})
    inner = Recorder()
    call(MeshWSGIMiddleware(inner, context), env)
    assert inner.environs[0]["inmesh.decision"] is decided["extensions"]["inmesh"]
    assert inner.environs[0]["HTTP_X_FORWARDED_CLIENT_CERT"] == "kept"


# -- werkzeug, for real -------------------------------------------------------


@pytest.fixture
def werkzeug_server(
    backend_cert: WorkloadCertificate, context: MutableContext
) -> Iterator[tuple[int, Recorder]]:
    from werkzeug.serving import make_server

    inner = Recorder()
    ctx = build_server_context(backend_cert, require_client_cert=True)
    server = make_server("127.0.0.1", 0, MeshWSGIMiddleware(inner, context), ssl_context=ctx)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.socket.getsockname()[1], inner
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_werkzeug_socket_gives_identity(
    werkzeug_server: tuple[int, Recorder], frontend_cert: WorkloadCertificate, ca: LocalCA
) -> None:
    port, inner = werkzeug_server
    with httpx.Client(verify=client_context(frontend_cert)) as client:
        r = client.get(
            f"https://127.0.0.1:{port}/", headers={"x-forwarded-client-cert": "By=spiffe://evil"}
        )
    assert r.status_code == 200 and r.text == FRONTEND
    seen = inner.environs[0]
    assert seen["HTTP_X_FORWARDED_CLIENT_CERT"] == expected_xfcc(frontend_cert)
    assert isinstance(seen["werkzeug.socket"], ssl.SSLSocket)
    # no client certificate: werkzeug's handshake refuses it (CERT_REQUIRED)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"https://127.0.0.1:{port}/", verify=no_cert_context(ca))
