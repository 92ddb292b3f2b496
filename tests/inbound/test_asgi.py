"""The ASGI middleware on hand-built scopes (no network): facts, XFCC, refusals, pass-through."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import MutableMapping
from typing import Any

import pytest

from inmesh.identity.certificate import WorkloadCertificate
from inmesh.inbound.asgi import MeshASGIMiddleware, connection_facts, decision_of, peer_of
from inmesh.inbound.decide import InboundDecision
from inmesh.policy.peer_authn import MtlsMode

from .conftest import FRONTEND, MutableContext, expected_xfcc

XFCC = b"x-forwarded-client-cert"


class Recorder:
    """An ASGI app that records the scope and answers 200."""

    def __init__(self) -> None:
        self.scopes: list[MutableMapping[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def http_scope(
    *,
    tls: dict[str, Any] | None = None,
    transport: str | None = None,
    scheme: str = "http",
    headers: list[tuple[bytes, bytes]] | None = None,
    kind: str = "http",
) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    if tls is not None:
        ext["tls"] = tls
    if transport is not None:
        ext["inmesh.transport"] = transport
    scope: dict[str, Any] = {
        "type": kind,
        "scheme": scheme,
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": headers or [(b"host", b"backend")],
        "path": "/",
        "state": {},
    }
    if ext:
        scope["extensions"] = ext
    return scope


def tls_ext(cert: WorkloadCertificate | None, *, with_der: bool = True) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(cert.der)] if cert else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": 0x1302,
    }
    if with_der:
        ext["inmesh.peer_der"] = cert.der if cert else None
    return ext


def call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_mtls_request_gets_identity_and_xfcc(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    inner = Recorder()
    app = MeshASGIMiddleware(inner, context)
    scope = http_scope(
        tls=tls_ext(frontend_cert),
        transport="tls",
        scheme="https",
        headers=[
            (b"host", b"backend"),
            (XFCC, b"By=spiffe://evil;URI=spiffe://evil"),
            (XFCC, b"x"),
        ],
    )
    sent = call(app, scope)
    assert sent[0]["status"] == 200
    seen = inner.scopes[0]
    assert [v for k, v in seen["headers"] if k == XFCC] == [expected_xfcc(frontend_cert).encode()]
    assert str(peer_of(seen)) == FRONTEND
    decision = decision_of(seen)
    assert isinstance(decision, InboundDecision) and decision.mode is MtlsMode.STRICT
    assert str(seen["state"]["inmesh_peer"]) == FRONTEND
    # the server's scope was not mutated
    assert (XFCC, b"x") in scope["headers"] and "inmesh" not in scope["extensions"]


def test_pem_only_tls_extension(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    """A server implementing the ASGI TLS extension (no inmesh keys) is understood."""
    facts = connection_facts(http_scope(tls=tls_ext(frontend_cert, with_der=False), scheme="https"))
    assert facts.tls and facts.peer_der == frontend_cert.der and facts.peer_visible
    inner = Recorder()
    call(MeshASGIMiddleware(inner, context), http_scope(tls=tls_ext(frontend_cert, with_der=False)))
    assert str(peer_of(inner.scopes[0])) == FRONTEND


def test_transport_marker_beats_the_scheme() -> None:
    """X-Forwarded-Proto may make the scheme https; the socket says plaintext."""
    facts = connection_facts(http_scope(transport="plaintext", scheme="https"))
    assert not facts.tls


def test_scheme_only_https_is_invisible_tls() -> None:
    facts = connection_facts(http_scope(scheme="https"))
    assert facts.tls and not facts.peer_visible
    assert not connection_facts(http_scope(scheme="http")).tls
    assert connection_facts({"type": "http", "scheme": "http", "headers": []}).local_port is None


def test_plaintext_under_strict_is_refused(context: MutableContext) -> None:
    inner = Recorder()
    sent = call(
        MeshASGIMiddleware(inner, context), http_scope(transport="plaintext", scheme="https")
    )
    assert not inner.scopes
    start, body = sent
    assert start["status"] == 403
    assert dict(start["headers"]) == {
        b"content-type": b"text/plain",
        b"content-length": str(len(body["body"])).encode(),
        b"connection": b"close",
    }
    assert body["body"] == b"peer authentication failed: mutual TLS is required"


def test_tls_without_client_cert_under_strict_is_refused(context: MutableContext) -> None:
    sent = call(
        MeshASGIMiddleware(Recorder(), context), http_scope(tls=tls_ext(None), transport="tls")
    )
    assert sent[0]["status"] == 403
    assert sent[1]["body"] == b"peer authentication failed: client certificate required"


def test_permissive_plaintext_strips_xfcc(context: MutableContext) -> None:
    context.mode = MtlsMode.PERMISSIVE
    inner = Recorder()
    call(
        MeshASGIMiddleware(inner, context),
        http_scope(transport="plaintext", headers=[(XFCC, b"By=spiffe://evil")]),
    )
    seen = inner.scopes[0]
    assert not [v for k, v in seen["headers"] if k == XFCC]
    assert peer_of(seen) is None and seen["state"]["inmesh_peer"] is None


def test_websocket_refusal_closes_with_1008(context: MutableContext) -> None:
    sent = call(
        MeshASGIMiddleware(Recorder(), context),
        http_scope(kind="websocket", transport="plaintext", scheme="ws"),
    )
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_websocket_allowed_gets_identity(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    inner = Recorder()
    call(
        MeshASGIMiddleware(inner, context),
        http_scope(kind="websocket", tls=tls_ext(frontend_cert), transport="tls", scheme="wss"),
    )
    assert str(peer_of(inner.scopes[0])) == FRONTEND


def test_lifespan_and_decided_scopes_pass_through(context: MutableContext) -> None:
    inner = Recorder()
    app = MeshASGIMiddleware(inner, context)
    lifespan = {"type": "lifespan"}
    call(app, lifespan)
    assert inner.scopes[0] is lifespan
    # double wrapping decides once
    outer = MeshASGIMiddleware(app, context)
    context.mode = MtlsMode.PERMISSIVE
    call(outer, http_scope(transport="plaintext"))
    assert len(inner.scopes) == 2 and decision_of(inner.scopes[1]) is not None


def test_no_state_key_is_fine(context: MutableContext) -> None:
    context.mode = MtlsMode.PERMISSIVE
    inner = Recorder()
    scope = http_scope(transport="plaintext")
    del scope["state"]
    call(MeshASGIMiddleware(inner, context), scope)
    assert "state" not in inner.scopes[0]


@pytest.mark.parametrize("with_xfcc", [False, True])
def test_middleware_cost(
    context: MutableContext, frontend_cert: WorkloadCertificate, with_xfcc: bool
) -> None:
    """Per-request overhead of the middleware on an mTLS connection (reported)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    mw = MeshASGIMiddleware(app, context)
    headers = [(b"host", b"backend"), (b"accept", b"*/*"), (b"user-agent", b"httpx")]
    if with_xfcc:
        headers.append((XFCC, b"By=spiffe://evil"))
    scope = http_scope(tls=tls_ext(frontend_cert), transport="tls", headers=headers)

    async def bench(n: int) -> float:
        async def receive() -> Any:
            return None

        async def send(m: Any) -> None:
            return None

        t0 = time.perf_counter()
        for _ in range(n):
            await mw(scope, receive, send)
        t1 = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
        t2 = time.perf_counter()
        return ((t1 - t0) - (t2 - t1)) / n

    best = min(asyncio.run(bench(20000)) for _ in range(3))
    print(f"\nASGI middleware overhead per request (xfcc in: {with_xfcc}): {best * 1e6:.2f} µs")
    assert best < 100e-6
