"""The connector over real TLS on 127.0.0.1, certificates from LocalCA (generated from the _async twin by scripts/unasync.py: do not edit).

Async tests run on asyncio and trio; ``scripts/unasync.py`` generates the
sync twin in ``tests/outbound/_sync``.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from inmesh.config.resources.destination_rule import ClientTLSSettings, TLSMode
from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import MemorySource
from inmesh.identity.tls import build_server_context
from inmesh.outbound import (
    PEER_ID,
    ClientCertificateRejectedError,
    ConnectorClosedError,
    PoolLimits,
    UpstreamCertificateError,
    UpstreamConnectError,
    UpstreamIdentityError,
    UpstreamTLSError,
    _common,
    verify_server,
)
from inmesh.outbound._sync.connect import Connector, VerifyingBackend
from inmesh.upstream.tls import PLAINTEXT, UpstreamTLS, UpstreamTLSMode, resolve_upstream_tls
from tests import outbound as support
from tests.outbound import (
    BACKEND,
    BACKEND_HOST,
    EVIL,
    FRONTEND,
    HTTPServer,
    Serve,
    issue_dns_certificate,
    tls_server_context,
)

DEST = f"outbound|8080||{BACKEND_HOST}"


@pytest.fixture
def connector(source: MemorySource) -> Iterator[Connector]:
    """A connector with the frontend's identity."""
    with Connector(source) as conn:
        yield conn


@pytest.fixture
def anonymous() -> Iterator[Connector]:
    """A connector without a workload identity (plain text and TLS origination only)."""
    with Connector() as conn:
        yield conn


def mesh_tls(*expected: str) -> UpstreamTLS:
    """ISTIO_MUTUAL towards the backend service, accepting ``expected``."""
    return resolve_upstream_tls(
        ClientTLSSettings(mode=TLSMode.ISTIO_MUTUAL),
        host=BACKEND_HOST,
        port=8080,
        subject_alt_names=expected or (BACKEND,),
    )


def request(
    server: HTTPServer,
    tls: UpstreamTLS,
    path: str = "/",
    close: bool = False,
) -> httpcore.Request:
    headers = [(b"Host", b"backend:8080")]
    if close:
        headers.append((b"Connection", b"close"))
    url = httpcore.URL(
        scheme=tls.scheme.encode(), host=b"127.0.0.1", port=server.port, target=path.encode()
    )
    return httpcore.Request("GET", url, headers=headers)


def fetch(
    connector: Connector,
    server: HTTPServer,
    tls: UpstreamTLS,
    path: str = "/",
    close: bool = False,
) -> tuple[httpcore.Response, bytes]:
    response = connector.handle_request(DEST, tls, request(server, tls, path, close))
    try:
        body = response.read()
    finally:
        response.close()
    return response, body


def fetch_resumed(
    connector: Connector,
    server: HTTPServer,
    tls: UpstreamTLS,
) -> tuple[bool, str]:
    """One request on a new connection closed after it: (was the session resumed, server ID)."""
    response = connector.handle_request(DEST, tls, request(server, tls, close=True))
    try:
        stream = response.extensions["network_stream"]
        resumed = bool(stream.get_extra_info("ssl_object").session_reused)
        peer = str(stream.get_extra_info(PEER_ID))
        response.read()
    finally:
        response.close()
    return resumed, peer


# -- mesh mTLS ------------------------------------------------------------------


def test_istio_mutual_to_the_expected_identity(
    connector: Connector,
    mesh_server: HTTPServer,
) -> None:
    response, body = fetch(connector, mesh_server, mesh_tls())
    assert (response.status, body) == (200, b"ok")
    # the server saw the client's SPIFFE ID, the mesh SNI and the istio ALPN
    assert dict(response.headers)[b"x-peer"] == FRONTEND.encode()
    conn = mesh_server.connections[0]
    assert conn.peer_id == FRONTEND
    assert conn.sni == f"outbound_.8080_._.{BACKEND_HOST}"
    assert conn.alpn == "istio-http/1.1"
    # the client knows whom it talks to
    stream = response.extensions["network_stream"]
    assert str(stream.get_extra_info(PEER_ID)) == BACKEND
    # keep-alive: a second request reuses the connection
    fetch(connector, mesh_server, mesh_tls())
    assert len(mesh_server.connections) == 1
    assert connector.stats().pools == 1


def test_unexpected_spiffe_id_is_refused_before_any_byte(
    connector: Connector,
    evil_server: HTTPServer,
) -> None:
    with pytest.raises(UpstreamIdentityError) as info:
        fetch(connector, evil_server, mesh_tls())
    err = info.value
    assert isinstance(err, httpx.ConnectError) and isinstance(err, UpstreamCertificateError)
    assert err.peer == EVIL and err.expected == (BACKEND,)
    assert err.endpoint == ("127.0.0.1", evil_server.port) and err.destination == DEST
    assert EVIL in str(err) and BACKEND in str(err)
    assert evil_server.wait_closed(0)
    conn = evil_server.connections[0]
    assert conn.handshake_done and conn.peer_id == FRONTEND
    assert bytes(conn.received) == b""
    assert len(evil_server.connections) == 1  # and nothing retried


def test_empty_expected_set_accepts_any_mesh_identity(
    connector: Connector,
    evil_server: HTTPServer,
) -> None:
    tls = UpstreamTLS(mode=mesh_tls().mode, sni="x", alpn=mesh_tls().alpn)
    response, _ = fetch(connector, evil_server, tls)
    assert str(response.extensions["network_stream"].get_extra_info(PEER_ID)) == EVIL


def test_server_of_another_ca_is_refused(
    connector: Connector,
    foreign_server: HTTPServer,
) -> None:
    with pytest.raises(UpstreamCertificateError) as info:
        fetch(connector, foreign_server, mesh_tls())
    assert not isinstance(info.value, UpstreamIdentityError)
    # 19: self-signed certificate in chain (OpenSSL sends the foreign root), 20: unknown issuer
    assert info.value.verify_code in (19, 20), info.value.verify_message
    assert foreign_server.wait_closed(0)
    assert bytes(foreign_server.connections[0].received) == b""


def test_expired_server_certificate_is_refused(
    connector: Connector,
    expired_server: HTTPServer,
) -> None:
    with pytest.raises(UpstreamCertificateError) as info:
        fetch(connector, expired_server, mesh_tls())
    assert "expired" in info.value.verify_message
    assert expired_server.wait_closed(0)
    assert bytes(expired_server.connections[0].received) == b""


def test_server_refusing_our_certificate(
    connector: Connector,
    serve: Serve,
    backend_cert: WorkloadCertificate,
    other_ca: LocalCA,
) -> None:
    # The server trusts another CA for its clients. With TLS 1.3 its alert
    # arrives after our request was written (and never processed); when the
    # server's close resets the connection first, the alert is lost and only a
    # reset or a disconnect is seen (python-tech.md §2.2).
    picky = WorkloadCertificate.create(
        backend_cert.chain, backend_cert.private_key, other_ca.trust_bundle
    )
    server = serve(build_server_context(picky))
    with pytest.raises(
        (ClientCertificateRejectedError, httpx.ReadError, httpx.RemoteProtocolError)
    ) as info:
        fetch(connector, server, mesh_tls())
    if isinstance(info.value, ClientCertificateRejectedError):
        assert info.value.alert == "TLSV1_ALERT_UNKNOWN_CA"
        assert isinstance(info.value, httpx.ConnectError)
        assert info.value.endpoint == ("127.0.0.1", server.port)
    assert server.wait_closed(0)
    assert not server.connections[0].handshake_done
    assert isinstance(server.connections[0].error, ssl.SSLError)


def test_connection_refused(anonymous: Connector) -> None:
    server = HTTPServer(None)
    server.close()  # nothing listens on its port any more
    with pytest.raises(UpstreamConnectError) as info:
        fetch(anonymous, server, PLAINTEXT)
    assert not isinstance(info.value, UpstreamTLSError)
    assert info.value.endpoint == ("127.0.0.1", server.port)


def test_mesh_mtls_needs_an_identity(
    anonymous: Connector,
    mesh_server: HTTPServer,
) -> None:
    with pytest.raises(UpstreamTLSError, match="workload identity"):
        fetch(anonymous, mesh_server, mesh_tls())
    assert mesh_server.connections == []


# -- DISABLE, SIMPLE, MUTUAL ----------------------------------------------------


def test_plaintext(anonymous: Connector, serve: Serve) -> None:
    server = serve(None)
    tls = resolve_upstream_tls(ClientTLSSettings(mode=TLSMode.DISABLE), host="b", port=80)
    response, body = fetch(anonymous, server, tls)
    assert (response.status, body) == (200, b"ok")
    assert bytes(server.connections[0].received).startswith(b"GET / HTTP/1.1\r\n")


def test_simple_tls_checks_the_host_name(
    anonymous: Connector,
    serve: Serve,
    ca: LocalCA,
    tmp_path: Path,
) -> None:
    cert, key = issue_dns_certificate(ca, tmp_path, ["api.example.test"])
    (tmp_path / "ca.pem").write_bytes(ca.trust_bundle_pem)
    server = serve(tls_server_context(cert, key))
    settings = ClientTLSSettings(mode=TLSMode.SIMPLE, ca_certificates=str(tmp_path / "ca.pem"))
    good = resolve_upstream_tls(settings, host="api.example.test", port=443)
    bad = resolve_upstream_tls(settings, host="api.example.test", port=443, authority="evil.test")
    response, body = fetch(anonymous, server, good)
    assert (response.status, body) == (200, b"ok")
    assert server.connections[0].sni == "api.example.test"
    assert server.connections[0].peer_id is None  # no client certificate
    with pytest.raises(UpstreamIdentityError) as info:
        fetch(anonymous, server, bad)
    assert info.value.peer_names == ("DNS:api.example.test",)
    assert server.wait_closed(1) and bytes(server.connections[1].received) == b""


def test_simple_tls_wildcard_san_and_system_roots(
    anonymous: Connector,
    serve: Serve,
    ca: LocalCA,
    tmp_path: Path,
) -> None:
    cert, key = issue_dns_certificate(ca, tmp_path, ["*.example.test"])
    server = serve(tls_server_context(cert, key))
    (tmp_path / "ca.pem").write_bytes(ca.trust_bundle_pem)
    wildcard = ClientTLSSettings(
        mode=TLSMode.SIMPLE,
        ca_certificates=str(tmp_path / "ca.pem"),
        subject_alt_names=("api.example.test",),
    )
    response, _ = fetch(anonymous, server, resolve_upstream_tls(wildcard, host="x", port=1))
    assert response.status == 200
    system_roots = resolve_upstream_tls(ClientTLSSettings(mode=TLSMode.SIMPLE), host="x", port=1)
    with pytest.raises(UpstreamCertificateError):  # the test CA is not a system root
        fetch(anonymous, server, system_roots)


def test_mutual_tls_origination(
    anonymous: Connector,
    serve: Serve,
    ca: LocalCA,
    source: MemorySource,
    tmp_path: Path,
) -> None:
    cert, key = issue_dns_certificate(ca, tmp_path, ["db.example.test"])
    (tmp_path / "ca.pem").write_bytes(ca.trust_bundle_pem)
    client = source.current()
    (tmp_path / "client.pem").write_bytes(client.cert_chain_pem)
    (tmp_path / "client-key.pem").write_bytes(client.key_pem)
    server = serve(tls_server_context(cert, key, client_ca=tmp_path / "ca.pem"))
    settings = ClientTLSSettings(
        mode=TLSMode.MUTUAL,
        ca_certificates=str(tmp_path / "ca.pem"),
        client_certificate=str(tmp_path / "client.pem"),
        private_key=str(tmp_path / "client-key.pem"),
    )
    tls = resolve_upstream_tls(settings, host="db.example.test", port=5432)
    response, _ = fetch(anonymous, server, tls)
    assert response.status == 200
    assert server.connections[0].peer_id == FRONTEND


def test_unreadable_tls_files(
    anonymous: Connector,
    serve: Serve,
    tmp_path: Path,
) -> None:
    server = serve(None)
    settings = ClientTLSSettings(mode=TLSMode.SIMPLE, ca_certificates=str(tmp_path / "nope.pem"))
    with pytest.raises(UpstreamTLSError, match="cannot load the CA certificates"):
        fetch(anonymous, server, resolve_upstream_tls(settings, host="x", port=1))
    assert server.connections == []


# -- misuse -------------------------------------------------------------------------


def test_scheme_must_match_the_tls_mode(
    connector: Connector,
    mesh_server: HTTPServer,
) -> None:
    with pytest.raises(ValueError, match="needs https"):
        connector.handle_request(DEST, mesh_tls(), request(mesh_server, PLAINTEXT))


def test_backend_never_sends_in_clear_on_a_tls_destination(serve: Serve) -> None:
    server = serve(None)
    backend = VerifyingBackend(mesh_tls(), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    pool = httpcore.ConnectionPool(network_backend=backend)
    try:
        with pytest.raises(UpstreamTLSError, match="before the TLS handshake"):
            pool.handle_request(request(server, PLAINTEXT))
    finally:
        pool.close()
    assert server.wait_closed(0)
    assert bytes(server.connections[0].received) == b""


def test_closed_connector(source: MemorySource, mesh_server: HTTPServer) -> None:
    connector = Connector(source)
    fetch(connector, mesh_server, mesh_tls())
    connector.close()
    assert mesh_server.wait_closed(0)  # the idle keep-alive connection was closed
    with pytest.raises(ConnectorClosedError):
        fetch(connector, mesh_server, mesh_tls())
    assert connector.stats().pools == 0


# -- rotation and resumption -------------------------------------------------------


def test_certificate_rotation(
    connector: Connector,
    source: MemorySource,
    mesh_server: HTTPServer,
    ca: LocalCA,
) -> None:
    old_serial = source.current().serial_number
    streaming = connector.handle_request(
        DEST, mesh_tls(), request(mesh_server, mesh_tls(), "/stream")
    )
    rotated = source.update(ca.issue(FRONTEND))
    # a new request takes a new connection presenting the new certificate
    response, _ = fetch(connector, mesh_server, mesh_tls())
    assert response.status == 200
    assert [c.peer_serial for c in mesh_server.connections] == [old_serial, rotated.serial_number]
    stats = connector.stats()
    assert stats.draining == 1 and stats.identity_version == rotated.version
    # the response in flight on the old connection completes
    mesh_server.release.set()
    assert streaming.read() == b"hello world"
    streaming.close()
    # the old pool, now idle, is closed at the next request; the new connection is reused
    fetch(connector, mesh_server, mesh_tls())
    assert connector.stats().draining == 0
    assert mesh_server.wait_closed(0)
    assert len(mesh_server.connections) == 2 and not mesh_server.connections[1].closed.is_set()


def test_session_resumption(connector: Connector, mesh_server: HTTPServer) -> None:
    assert fetch_resumed(connector, mesh_server, mesh_tls()) == (False, BACKEND)
    assert connector.stats().sessions == 1
    # resumed; the identity check ran on the resumed session's certificate too
    assert fetch_resumed(connector, mesh_server, mesh_tls()) == (True, BACKEND)
    assert mesh_server.wait_closed(1)
    assert [c.resumed for c in mesh_server.connections] == [False, True]


def test_resumption_can_be_turned_off(source: MemorySource, mesh_server: HTTPServer) -> None:
    connector = Connector(source, session_resumption=False)
    try:
        for _ in range(2):
            assert fetch_resumed(connector, mesh_server, mesh_tls()) == (False, BACKEND)
        assert connector.stats().sessions == 0
    finally:
        connector.close()


def test_no_resumption_after_a_bundle_rotation(
    connector: Connector,
    source: MemorySource,
    mesh_server: HTTPServer,
    ca: LocalCA,
    other_ca: LocalCA,
) -> None:
    fetch(connector, mesh_server, mesh_tls(), close=True)
    assert fetch_resumed(connector, mesh_server, mesh_tls()) == (True, BACKEND)
    # the bundle gains a root (a CA rotation in progress): sessions are forgotten
    fresh = ca.issue(FRONTEND)
    source.update(
        WorkloadCertificate.create(
            fresh.chain, fresh.private_key, (*ca.trust_bundle, *other_ca.trust_bundle)
        )
    )
    assert connector.stats().sessions == 1  # noticed at the next mesh request
    assert fetch_resumed(connector, mesh_server, mesh_tls()) == (False, BACKEND)
    assert mesh_server.wait_closed(2)
    assert [c.resumed for c in mesh_server.connections] == [False, True, False]


def test_a_removed_root_is_not_trusted_through_an_old_session(
    connector: Connector,
    source: MemorySource,
    mesh_server: HTTPServer,
    other_ca: LocalCA,
) -> None:
    fetch(connector, mesh_server, mesh_tls(), close=True)
    assert connector.stats().sessions == 1
    # the mesh moves to another CA: the old root leaves the bundle
    source.update(other_ca.issue(FRONTEND))
    with pytest.raises(UpstreamCertificateError):
        fetch(connector, mesh_server, mesh_tls(), close=True)
    assert mesh_server.wait_closed(1)
    assert bytes(mesh_server.connections[1].received) == b""


# -- concurrency ---------------------------------------------------------------------


def test_concurrent_requests_share_one_pool(
    source: MemorySource,
    mesh_server: HTTPServer,
) -> None:
    connector = Connector(source, limits=PoolLimits(max_connections=4))
    try:
        call = functools.partial(fetch, connector, mesh_server, mesh_tls())
        results = support.Workers.run([call] * 24)
        assert all(body == b"ok" for _, body in results)
        assert connector.stats().pools == 1
    finally:
        connector.close()
    assert 1 <= len(mesh_server.connections) <= 4


def test_one_pool_per_destination_and_settings(
    connector: Connector,
    mesh_server: HTTPServer,
) -> None:
    fetch(connector, mesh_server, mesh_tls())
    again = request(mesh_server, mesh_tls())
    other = connector.handle_request("another", mesh_tls(), again)
    other.read()
    other.close()
    fetch(connector, mesh_server, mesh_tls(BACKEND, FRONTEND))
    assert connector.stats().pools == 3
    # a connection verified for one destination is never lent to another
    assert len(mesh_server.connections) == 3


def test_retiring_a_destination(
    connector: Connector,
    mesh_server: HTTPServer,
) -> None:
    fetch(connector, mesh_server, mesh_tls())
    streaming = connector.handle_request(
        "other", mesh_tls(), request(mesh_server, mesh_tls(), "/stream")
    )
    assert connector.retire(DEST) == 1  # idle: closed at once
    assert mesh_server.wait_closed(0)
    assert connector.retire("other") == 1  # busy: drains
    assert connector.stats().draining == 1
    mesh_server.release.set()
    assert streaming.read() == b"hello world"
    streaming.close()
    assert not mesh_server.connections[1].closed.is_set()  # the response finished normally
    fetch(connector, mesh_server, mesh_tls())  # a new pool; the drained one is closed
    assert connector.stats().draining == 0 and connector.stats().pools == 1
    assert mesh_server.wait_closed(1)


def test_rotation_under_concurrent_load(
    connector: Connector,
    source: MemorySource,
    mesh_server: HTTPServer,
    ca: LocalCA,
) -> None:
    call = functools.partial(fetch, connector, mesh_server, mesh_tls())
    support.Workers.run([call] * 8)
    new = source.update(ca.issue(FRONTEND))
    support.Workers.run([call] * 8)
    fetch(connector, mesh_server, mesh_tls())
    stats = connector.stats()
    assert stats.identity_version == new.version and stats.draining == 0 and stats.pools == 1
    serials = {c.peer_serial for c in mesh_server.connections}
    assert new.serial_number in serials and len(serials) == 2


# -- pure checks (no I/O) --------------------------------------------------------------


class FakeTLS:
    """What ``verify_server`` reads from an ``ssl.SSLObject``."""

    def __init__(self, der: bytes | None, sans: tuple[tuple[str, str], ...] = ()) -> None:
        self.der, self.sans = der, sans

    def getpeercert(self, binary_form: bool = False) -> Any:
        if binary_form:
            return self.der
        return {"subjectAltName": self.sans} if self.der else {}


def der_with_uris(ca: LocalCA, *uris: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=True,
        )
        .sign(ca.signing_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_verify_server_mesh(ca: LocalCA, backend_cert: WorkloadCertificate) -> None:
    tls = mesh_tls()
    assert str(verify_server(FakeTLS(backend_cert.der), tls)) == BACKEND
    for der, problem in (
        (None, "presented no certificate"),
        (der_with_uris(ca, BACKEND, EVIL), "presented no single SPIFFE ID"),
        (der_with_uris(ca, "https://backend.example"), "presented no single SPIFFE ID"),
        (der_with_uris(ca, EVIL), f"presented SPIFFE ID {EVIL}"),
    ):
        with pytest.raises(UpstreamIdentityError, match=problem):
            verify_server(FakeTLS(der), tls, endpoint=("10.0.0.1", 8080))


def test_verify_server_tls_origination() -> None:
    sans = (
        ("DNS", "*.example.test"),
        ("URI", "spiffe://x/y"),
        ("IP Address", "2001:DB8:0:0:0:0:0:1"),
    )
    peer = FakeTLS(b"der", sans)

    def check(*names: str, insecure: bool = False) -> None:
        tls = UpstreamTLS(
            mode=UpstreamTLSMode.TLS,
            subject_alt_names=frozenset(names),
            insecure_skip_verify=insecure,
        )
        verify_server(peer, tls)

    check("api.example.test")
    check("API.Example.TEST")
    check("nope.test", "spiffe://x/y")
    check("2001:db8::1")
    check()  # no names: the chain alone
    check("nope.test", insecure=True)
    for name in ("example.test", "a.b.example.test", "spiffe://x", "2001:db8::2"):
        with pytest.raises(UpstreamIdentityError):
            check(name)


def test_dns_name_matching_as_envoy() -> None:
    assert _common.dns_name_matches("api.example.test", "API.example.test")
    assert _common.dns_name_matches("*.example.test", "api.example.test")
    assert not _common.dns_name_matches("*.example.test", "example.test")
    assert not _common.dns_name_matches("*.example.test", ".example.test")
    assert not _common.dns_name_matches("*.example.test", "a.b.example.test")
    assert not _common.dns_name_matches("api.*.test", "api.example.test")
    assert _common.san_matches("10.0.0.1", (("IP Address", "10.0.0.1"),))
    assert not _common.san_matches("10.0.0.1", (("DNS", "10.0.0.2"),))
    assert _common.san_matches("ops@example.test", (("email", "ops@example.test"),))


def test_sync_twin_is_up_to_date() -> None:
    script = Path(__file__).resolve().parents[3] / "scripts" / "unasync.py"
    spec = importlib.util.spec_from_file_location("unasync_check", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run: python3 scripts/unasync.py"
