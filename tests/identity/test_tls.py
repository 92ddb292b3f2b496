"""Real TLS handshakes between Python ssl sockets over 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from inmesh.errors import CertificateError, IdentityError
from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import DirectorySource, MemorySource
from inmesh.identity.spiffe import SpiffeId
from inmesh.identity.tls import (
    ClientTLS,
    PeerIdentityError,
    ServerTLS,
    _peer_id_cached,
    build_client_context,
    build_server_context,
    load_certificate,
    peer_spiffe_id,
    peer_spiffe_id_of_connection,
    verified_peer_der,
    verify_peer_identity,
)

from . import BACKEND, FRONTEND, TLSServer, echo, tls_connect


@pytest.fixture(scope="module")
def ica() -> LocalCA:
    return LocalCA.create(intermediate=True)


@pytest.fixture
def backend(ica: LocalCA) -> WorkloadCertificate:
    return ica.issue(BACKEND)


@pytest.fixture
def frontend(ica: LocalCA) -> WorkloadCertificate:
    return ica.issue(FRONTEND)


def _client_failed(ctx: ssl.SSLContext, address: tuple[str, int]) -> bool:
    """True if the connection fails at the handshake or at the first exchange.

    With TLS 1.3 a client whose certificate the server refuses finishes its own
    handshake and only learns from the server's alert on the next read.
    """
    try:
        conn = tls_connect(ctx, address)
    except (ssl.SSLError, OSError):
        return True
    with conn:
        try:
            return echo(conn) != b"ping"
        except (ssl.SSLError, OSError):
            return True


def test_mutual_tls_and_identities(
    frontend: WorkloadCertificate, backend: WorkloadCertificate
) -> None:
    server_ctx = build_server_context(backend)
    assert server_ctx.verify_mode == ssl.CERT_REQUIRED
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    client_ctx = build_client_context(frontend)
    assert client_ctx.check_hostname is False and client_ctx.verify_mode == ssl.CERT_REQUIRED
    with TLSServer(server_ctx) as server, tls_connect(client_ctx, server.address) as conn:
        assert echo(conn) == b"ping"
        # client side: the server's identity
        assert peer_spiffe_id_of_connection(conn) == SpiffeId.parse(BACKEND)
        info = conn.getpeercert()
        assert info is not None and info["subjectAltName"] == (("URI", BACKEND),)
        assert verify_peer_identity(
            conn.getpeercert(binary_form=True), {BACKEND}
        ) == SpiffeId.parse(BACKEND)
        # server side: the client's identity, from the verified certificate
        rec = server.wait(1)
        assert rec.error is None
        assert rec.peer == SpiffeId.parse(FRONTEND)


def test_leaf_signed_by_root_directly(frontend: WorkloadCertificate) -> None:
    root_ca = LocalCA.create()
    server_cert = root_ca.issue(BACKEND)
    client_cert = root_ca.issue(FRONTEND)
    with TLSServer(build_server_context(server_cert)) as server:
        with tls_connect(build_client_context(client_cert), server.address) as conn:
            assert echo(conn) == b"ping"
            assert peer_spiffe_id_of_connection(conn) == SpiffeId.parse(BACKEND)
        assert server.wait(1).peer == SpiffeId.parse(FRONTEND)


def test_server_refuses_client_from_another_ca(backend: WorkloadCertificate) -> None:
    stranger = LocalCA.create(intermediate=True).issue(FRONTEND)
    # the stranger trusts our root so that only the server's check can fail
    client = WorkloadCertificate.create(stranger.chain, stranger.private_key, backend.trust_bundle)
    with TLSServer(build_server_context(backend)) as server:
        assert _client_failed(build_client_context(client), server.address)
        rec = server.wait(1)
        assert isinstance(rec.error, ssl.SSLError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(rec.error) or "certificate verify failed" in str(
            rec.error
        )
        assert rec.peer is None


def test_client_refuses_server_from_another_ca(frontend: WorkloadCertificate) -> None:
    stranger = LocalCA.create(intermediate=True).issue(BACKEND)
    server_cert = WorkloadCertificate.create(
        stranger.chain, stranger.private_key, frontend.trust_bundle
    )
    with (
        TLSServer(build_server_context(server_cert)) as server,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        tls_connect(build_client_context(frontend), server.address)


def test_server_refuses_client_without_certificate(backend: WorkloadCertificate) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=backend.trust_bundle_pem.decode())
    with TLSServer(build_server_context(backend)) as server:
        assert _client_failed(anonymous, server.address)
        assert server.wait(1).error is not None


def test_permissive_accepts_client_without_certificate(
    backend: WorkloadCertificate, frontend: WorkloadCertificate
) -> None:
    server_ctx = build_server_context(backend, require_client_cert=False)
    assert server_ctx.verify_mode == ssl.CERT_OPTIONAL
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=backend.trust_bundle_pem.decode())
    with TLSServer(server_ctx) as server:
        with tls_connect(anonymous, server.address) as conn:
            assert echo(conn) == b"ping"
        assert server.wait(1).peer is None
        with tls_connect(build_client_context(frontend), server.address) as conn:
            assert echo(conn) == b"ping"
        assert server.wait(2).peer == SpiffeId.parse(FRONTEND)
        # a certificate that is sent is still verified
        stranger = LocalCA.create().issue(FRONTEND)
        bad = WorkloadCertificate.create(stranger.chain, stranger.private_key, backend.trust_bundle)
        assert _client_failed(build_client_context(bad), server.address)
        assert server.wait(3).error is not None


def test_tls12_only_client(frontend: WorkloadCertificate, backend: WorkloadCertificate) -> None:
    client_ctx = build_client_context(frontend)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        TLSServer(build_server_context(backend)) as server,
        tls_connect(client_ctx, server.address) as conn,
    ):
        assert conn.version() == "TLSv1.2"
        assert echo(conn) == b"ping"
        assert server.wait(1).peer == SpiffeId.parse(FRONTEND)


def test_no_key_left_on_disk(
    frontend: WorkloadCertificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_certificate removes its private directory."""
    import tempfile

    seen: list[str] = []
    real = tempfile.mkdtemp

    def spy(*args: object, **kwargs: object) -> str:
        path = real(*args, **kwargs)  # type: ignore[call-overload]
        seen.append(path)
        assert os.stat(path).st_mode & 0o777 == 0o700
        return str(path)

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_certificate(ctx, frontend)
    assert len(seen) == 1 and not os.path.exists(seen[0])


def test_load_refused_by_openssl(frontend: WorkloadCertificate) -> None:
    bogus = WorkloadCertificate(
        spiffe_id=frontend.spiffe_id,
        certificate=frontend.certificate,
        private_key=frontend.private_key,
        chain=frontend.chain,
        trust_bundle=frontend.trust_bundle,
        cert_chain_pem=b"not a pem",
        key_pem=frontend.key_pem,
        trust_bundle_pem=frontend.trust_bundle_pem,
    )
    with pytest.raises(CertificateError, match="OpenSSL refused"):
        build_server_context(bogus)


# -- hot reload ---------------------------------------------------------------


def _serial(conn: ssl.SSLSocket) -> int:
    from cryptography import x509

    der = conn.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der).serial_number


def test_hot_reload_keeps_established_connections(
    ica: LocalCA, frontend: WorkloadCertificate, backend: WorkloadCertificate
) -> None:
    source = MemorySource(backend)
    client_ctx = build_client_context(frontend)
    with source, ServerTLS(source) as tls, TLSServer(tls.context) as server:
        assert tls.version == 1
        old = tls_connect(client_ctx, server.address)
        assert echo(old, b"before") == b"before"
        assert _serial(old) == backend.serial_number

        rotated = ica.issue(BACKEND)
        source.update(rotated)
        assert tls.version == 2 and tls.certificate.serial_number == rotated.serial_number

        # the established connection still works, on the old certificate
        assert echo(old, b"after") == b"after"
        assert _serial(old) == backend.serial_number
        # a new connection sees the new certificate
        with tls_connect(client_ctx, server.address) as new:
            assert _serial(new) == rotated.serial_number
            assert echo(new) == b"ping"
        assert server.wait(2).peer == SpiffeId.parse(FRONTEND)
        old.close()


def test_hot_reload_replaces_the_trust_bundle(
    frontend: WorkloadCertificate, backend: WorkloadCertificate
) -> None:
    """After rotating to a new CA, clients of the old CA are refused: the bundle is replaced, not added to."""
    new_ca = LocalCA.create(intermediate=True)
    source = MemorySource(backend)
    with source, ServerTLS(source) as tls, TLSServer(tls.context) as server:
        with tls_connect(build_client_context(frontend), server.address) as conn:
            assert echo(conn) == b"ping"
        source.update(new_ca.issue(BACKEND))
        assert tls.active_context is not tls.context
        # an old-CA client that trusts both roots: the server now refuses its certificate
        both = frontend.trust_bundle + new_ca.trust_bundle
        old_client = WorkloadCertificate.create(frontend.chain, frontend.private_key, both)
        assert _client_failed(build_client_context(old_client), server.address)
        assert server.wait(2).error is not None
        # a new-CA client is accepted
        with tls_connect(build_client_context(new_ca.issue(FRONTEND)), server.address) as conn:
            assert echo(conn) == b"ping"
        assert server.wait(3).peer == SpiffeId.parse(FRONTEND)


def test_hot_reload_from_directory(
    tmp_path: Path, ica: LocalCA, frontend: WorkloadCertificate
) -> None:
    first = ica.issue(BACKEND)
    first.write(tmp_path)
    rotated = threading.Event()
    with DirectorySource(tmp_path, poll_interval=0.05) as source, ServerTLS(source) as tls:
        source.subscribe(lambda _c: rotated.set())
        with TLSServer(tls.context) as server:
            client_ctx = build_client_context(frontend)
            with tls_connect(client_ctx, server.address) as conn:
                assert _serial(conn) == first.serial_number
            second = ica.issue(BACKEND)
            second.write(tmp_path)
            assert rotated.wait(2)
            deadline = time.monotonic() + 2
            while tls.version < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            with tls_connect(client_ctx, server.address) as conn:
                assert _serial(conn) == second.serial_number


def test_server_tls_keeps_context_when_rebuild_fails(
    ica: LocalCA, backend: WorkloadCertificate
) -> None:
    source = MemorySource(backend)
    with source, ServerTLS(source) as tls:
        good = ica.issue(BACKEND)
        bogus = WorkloadCertificate(
            spiffe_id=good.spiffe_id,
            certificate=good.certificate,
            private_key=good.private_key,
            chain=good.chain,
            trust_bundle=good.trust_bundle,
            cert_chain_pem=b"broken",
            key_pem=good.key_pem,
            trust_bundle_pem=good.trust_bundle_pem,
        )
        source.update(bogus)  # passes the source's checks (objects) but OpenSSL refuses the PEM
        assert tls.version == 1 and tls.reload_errors == 1
        source.update(ica.issue(BACKEND))
        assert tls.version == 3


def test_close_unsubscribes(ica: LocalCA, backend: WorkloadCertificate) -> None:
    source = MemorySource(backend)
    with source:
        tls = ServerTLS(source)
        client = ClientTLS(source)
        tls.close()
        client.close()
        source.update(ica.issue(BACKEND))
        assert tls.version == 1 and client.version == 1
        assert tls.refresh() and client.refresh()
        assert tls.version == 2 and client.version == 2
        assert not tls.refresh()


def test_client_tls_follows_rotation(
    ica: LocalCA, frontend: WorkloadCertificate, backend: WorkloadCertificate
) -> None:
    source = MemorySource(frontend)
    with source, ClientTLS(source) as client, TLSServer(build_server_context(backend)) as server:
        first_ctx = client.context
        with tls_connect(first_ctx, server.address) as conn:
            assert echo(conn) == b"ping"
        assert server.wait(1).peer == SpiffeId.parse(FRONTEND)
        renewed = ica.issue(FRONTEND)
        source.update(renewed)
        assert client.version == 2 and client.context is not first_ctx
        assert client.certificate.serial_number == renewed.serial_number
        with tls_connect(client.context, server.address) as conn:
            assert echo(conn) == b"ping"
        assert server.wait(2).peer == SpiffeId.parse(FRONTEND)


def test_server_tls_requires_started_source(backend: WorkloadCertificate) -> None:
    with pytest.raises(IdentityError, match="not started"):
        ServerTLS(MemorySource(backend))


# -- peer identity -------------------------------------------------------------


def test_peer_spiffe_id_cache(frontend: WorkloadCertificate, ica: LocalCA) -> None:
    _peer_id_cached.cache_clear()
    assert peer_spiffe_id(frontend.der) == SpiffeId.parse(FRONTEND)
    assert peer_spiffe_id(bytearray(frontend.der)) == SpiffeId.parse(FRONTEND)
    info = _peer_id_cached.cache_info()
    assert info.hits == 1 and info.misses == 1 and info.maxsize == 4096
    root_der = ica.root_cert.public_bytes(serialization.Encoding.DER)
    assert peer_spiffe_id(root_der) is None  # a CA certificate has no SPIFFE ID
    with pytest.raises(CertificateError, match="not valid DER"):
        peer_spiffe_id(b"\x30\x03junk")


def test_verify_peer_identity(frontend: WorkloadCertificate) -> None:
    allowed: frozenset[SpiffeId | str] = frozenset({SpiffeId.parse(FRONTEND), BACKEND})
    assert verify_peer_identity(SpiffeId.parse(FRONTEND), allowed) == SpiffeId.parse(FRONTEND)
    assert verify_peer_identity(SpiffeId.parse(BACKEND), allowed) == SpiffeId.parse(BACKEND)
    assert verify_peer_identity(frontend.der, allowed) == SpiffeId.parse(FRONTEND)
    evil = SpiffeId.for_workload("default", "evil-sa")
    with pytest.raises(PeerIdentityError) as info:
        verify_peer_identity(evil, allowed)
    assert info.value.peer == evil
    assert str(info.value) == (
        "peer SPIFFE ID spiffe://cluster.local/ns/default/sa/evil-sa is not allowed; expected one of "
        "[spiffe://cluster.local/ns/default/sa/backend-sa, spiffe://cluster.local/ns/default/sa/frontend-sa]"
    )
    with pytest.raises(PeerIdentityError, match="presented no SPIFFE ID"):
        verify_peer_identity(None, allowed)
    assert isinstance(info.value, IdentityError)


def test_peer_spiffe_id_speed(frontend: WorkloadCertificate) -> None:
    """A cached lookup is far cheaper than a parse (~12 us)."""
    der = frontend.der
    peer_spiffe_id(der)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        peer_spiffe_id(der)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 5e-6, per_call


def test_hot_reload_with_asyncio_server(
    ica: LocalCA, frontend: WorkloadCertificate, backend: WorkloadCertificate
) -> None:
    """The same swap works with asyncio's SSL transport (SSLObject), as uvicorn uses."""
    import asyncio

    from cryptography import x509

    async def main() -> None:
        peers: list[SpiffeId | None] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(peer_spiffe_id_of_connection(writer.get_extra_info("ssl_object")))
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
            writer.close()

        source = MemorySource(backend)
        with source, ServerTLS(source) as tls:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls.context)
            host, port = server.sockets[0].getsockname()[:2]
            client_ctx = build_client_context(frontend)

            async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
                r, w = await asyncio.open_connection(host, port, ssl=client_ctx, server_hostname="")
                der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
                return r, w, x509.load_der_x509_certificate(der).serial_number

            async def exchange(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
                w.write(b"ping")
                await w.drain()
                return await r.readexactly(4)

            r1, w1, serial1 = await connect()
            assert serial1 == backend.serial_number
            assert await exchange(r1, w1) == b"ping"
            rotated = ica.issue(BACKEND)
            source.update(rotated)
            assert await exchange(r1, w1) == b"ping"  # still alive
            r2, w2, serial2 = await connect()
            assert serial2 == rotated.serial_number
            assert await exchange(r2, w2) == b"ping"
            assert peers == [SpiffeId.parse(FRONTEND)] * 2
            for w in (w1, w2):
                w.close()
                await w.wait_closed()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _connect_with_session(
    ctx: ssl.SSLContext, address: tuple[str, int], session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    raw = socket.create_connection(address, timeout=5)
    conn = ctx.wrap_socket(raw, server_hostname=None, session=session)
    assert echo(conn) == b"ping"  # TLS 1.3 tickets arrive after the handshake
    return conn


def _resumes(version: ssl.TLSVersion, tickets: bool) -> bool:
    """Whether a ServerTLS resumes sessions within one version.

    TLS 1.2 session IDs always (Python cannot turn off OpenSSL's server session
    cache); tickets (all of TLS 1.3 resumption) only with ``session_tickets=True``.
    """
    return tickets or version == ssl.TLSVersion.TLSv1_2


VERSIONS = pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
TICKETS = pytest.mark.parametrize("tickets", [False, True])


@VERSIONS
@TICKETS
def test_session_resumption_and_rotation(
    frontend: WorkloadCertificate,
    backend: WorkloadCertificate,
    version: ssl.TLSVersion,
    tickets: bool,
) -> None:
    """Resumption stays within one certificate version: after a rotation, a full handshake.

    The connections stay open while the next ones resume: OpenSSL drops a
    cached session whose connection is freed without a TLS shutdown (which
    this test server does not do), and that race made this test flaky.
    """
    source = MemorySource(backend)
    with (
        source,
        ServerTLS(source, session_tickets=tickets) as tls,
        TLSServer(tls.context) as server,
    ):
        client_ctx = build_client_context(frontend)
        client_ctx.maximum_version = version
        with (
            _connect_with_session(client_ctx, server.address) as first,
            _connect_with_session(client_ctx, server.address, first.session) as second,
        ):
            assert first.version() == version.name.replace("v1_", "v1.")
            assert second.session_reused is _resumes(version, tickets)
            session = second.session
            # a new CA: the old client and the server no longer trust each other
            source.update(LocalCA.create().issue(BACKEND))
            try:
                third = _connect_with_session(client_ctx, server.address, session)
            except ssl.SSLCertVerificationError:
                pass  # a full handshake: the client refused the new server certificate
            else:
                der = third.getpeercert(binary_form=True) or b""
                msg = (
                    f"handshake after the CA rotation succeeded: resumed={third.session_reused}, "
                    f"version={third.version()}, old certificate={der == backend.der}"
                )
                third.close()
                pytest.fail(msg)
        assert tls.stale_sessions_refused == 0


def _old_ca_client(
    frontend: WorkloadCertificate, new_ca: LocalCA, version: ssl.TLSVersion
) -> ssl.SSLContext:
    """A client of the CA about to be removed that also trusts ``new_ca``.

    So after the rotation only the server's check of the client can fail.
    """
    both = frontend.trust_bundle + new_ca.trust_bundle
    cert = WorkloadCertificate.create(frontend.chain, frontend.private_key, both)
    ctx = build_client_context(cert)
    ctx.maximum_version = version
    return ctx


def _offer(ctx: ssl.SSLContext, address: tuple[str, int], session: ssl.SSLSession) -> bool | None:
    """Connect offering ``session``: ``session_reused``, or ``None`` if the connection failed."""
    try:
        conn = _connect_with_session(ctx, address, session)
    except (ssl.SSLError, OSError, AssertionError):
        return None  # (TLS 1.3: the refusal arrives after the client's handshake)
    with conn:
        try:
            echo(conn)
        except (ssl.SSLError, OSError):
            return None
        return conn.session_reused


@VERSIONS
@TICKETS
def test_sync_server_never_resumes_a_session_from_before_a_ca_rotation(
    ica: LocalCA,
    frontend: WorkloadCertificate,
    backend: WorkloadCertificate,
    version: ssl.TLSVersion,
    tickets: bool,
) -> None:
    """The reported attack, on the ``wrap_socket`` path (gunicorn, werkzeug, threads).

    A client of a CA that a rotation removes saves its session before the
    rotation and offers it after: the server must run a full handshake and
    refuse the client's certificate against the new bundle.
    """
    new_ca = LocalCA.create(intermediate=True)
    source = MemorySource(backend)
    with (
        source,
        ServerTLS(source, session_tickets=tickets) as tls,
        TLSServer(tls.context) as server,
    ):
        client_ctx = _old_ca_client(frontend, new_ca, version)
        with (
            _connect_with_session(client_ctx, server.address) as first,
            _connect_with_session(client_ctx, server.address, first.session) as second,
        ):
            # the precondition: before the rotation, the session is resumable
            assert second.session_reused is _resumes(version, tickets)
            session = second.session
            assert session is not None
            source.update(new_ca.issue(BACKEND))
            assert _offer(client_ctx, server.address, session) is None
            rec = server.wait(3)
            assert rec.peer is None
            # verified against the new bundle, i.e. not resumed
            assert "CERTIFICATE_VERIFY_FAILED" in str(rec.error), rec.error
        # a client of the new CA is served, and resumes within the new version
        new_client = build_client_context(new_ca.issue(FRONTEND))
        new_client.maximum_version = version
        with (
            _connect_with_session(new_client, server.address) as a,
            _connect_with_session(new_client, server.address, a.session) as b,
        ):
            assert b.session_reused is _resumes(version, tickets)
        assert server.wait(5).peer == SpiffeId.parse(FRONTEND)
        assert tls.stale_sessions_refused == 0


class _AsyncioServer:
    """An asyncio TLS echo server in a thread: the ``wrap_bio`` path of uvicorn and ``serve``.

    ``handled`` lists, per connection whose handshake succeeded, the peer ID
    and whether the server resumed the session.
    """

    def __init__(self, ctx: ssl.SSLContext) -> None:
        import asyncio

        self.handled: list[tuple[SpiffeId | None, bool]] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._ctx = ctx
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),))
        self._thread.start()
        assert self._ready.wait(5)

    async def _handle(self, reader: object, writer: object) -> None:
        import asyncio

        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        obj = writer.get_extra_info("ssl_object")
        self.handled.append((peer_spiffe_id_of_connection(obj), obj.session_reused))
        try:
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
        except (ssl.SSLError, OSError):
            pass
        writer.close()

    async def _main(self) -> None:
        import asyncio

        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._ctx)
        self.address = server.sockets[0].getsockname()[:2]
        self._ready.set()
        await self._stop.wait()
        server.close()
        await server.wait_closed()

    def __enter__(self) -> _AsyncioServer:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self.loop.close()


@VERSIONS
@TICKETS
def test_asyncio_server_never_resumes_a_session_from_before_a_ca_rotation(
    frontend: WorkloadCertificate,
    backend: WorkloadCertificate,
    version: ssl.TLSVersion,
    tickets: bool,
) -> None:
    """The same attack on asyncio's SSL transport (``SSLContext.wrap_bio``), as uvicorn uses."""
    new_ca = LocalCA.create(intermediate=True)
    source = MemorySource(backend)
    with (
        source,
        ServerTLS(source, session_tickets=tickets) as tls,
        _AsyncioServer(tls.context) as server,
    ):
        client_ctx = _old_ca_client(frontend, new_ca, version)
        with (
            _connect_with_session(client_ctx, server.address) as first,
            _connect_with_session(client_ctx, server.address, first.session) as second,
        ):
            assert second.session_reused is _resumes(version, tickets)
            session = second.session
            assert session is not None
            assert [reused for _, reused in server.handled] == [False, _resumes(version, tickets)]
            source.update(new_ca.issue(BACKEND))
            assert _offer(client_ctx, server.address, session) is None
            assert len(server.handled) == 2  # the handshake failed: the app never saw it
            assert server.handled[1][0] == SpiffeId.parse(FRONTEND)
        assert tls.stale_sessions_refused == 0


class _BioPair:
    """A client and a server ``SSLObject`` joined by memory BIOs: no sockets, no threads.

    The server object is created (as a server does at accept time) when the
    pair is, its handshake runs when :meth:`handshake` is called.
    """

    def __init__(
        self,
        client_ctx: ssl.SSLContext,
        server_ctx: ssl.SSLContext,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.c_in, self.c_out, self.s_in, self.s_out = (ssl.MemoryBIO() for _ in range(4))
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        self.client = client_ctx.wrap_bio(self.c_in, self.c_out, session=session)
        self.errors: dict[str, ssl.SSLError] = {}
        """The handshake errors, by side ("client", "server")."""

    def _pump(self) -> bool:
        moved = False
        if self.c_out.pending:
            self.s_in.write(self.c_out.read())
            moved = True
        if self.s_out.pending:
            self.c_in.write(self.s_out.read())
            moved = True
        return moved

    def handshake(self) -> None:
        """Run both handshakes; raise the server's error, else the client's."""
        done: dict[str, bool] = {"client": False, "server": False}
        errors = self.errors
        sides = {"client": self.client, "server": self.server}
        for _ in range(20):
            for name, obj in sides.items():
                if done[name] or name in errors:
                    continue
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    errors[name] = exc
            if not self._pump():
                break
        if errors:
            raise errors.get("server") or errors["client"]
        assert done == {"client": True, "server": True}
        with contextlib.suppress(ssl.SSLWantReadError):  # TLS 1.3: the client reads its tickets
            self.client.read(1)


@VERSIONS
def test_connections_are_created_from_the_active_context(
    ica: LocalCA,
    frontend: WorkloadCertificate,
    backend: WorkloadCertificate,
    version: ssl.TLSVersion,
) -> None:
    """``wrap_bio``/``wrap_socket`` delegate: each version's context has its own session cache."""
    source = MemorySource(backend)
    with source, ServerTLS(source, session_tickets=True) as tls:
        client_ctx = build_client_context(frontend)
        client_ctx.maximum_version = version
        v1 = tls.active_context
        assert v1 is not tls.context
        pair = _BioPair(client_ctx, tls.context)
        assert pair.server.context is v1
        pair.handshake()
        session = pair.client.session
        resumed = _BioPair(client_ctx, tls.context, session)
        resumed.handshake()
        assert resumed.client.session_reused and resumed.server.session_reused
        assert v1.session_stats()["hits"] == 1 and tls.context.session_stats()["hits"] == 0

        source.update(ica.issue(BACKEND))  # same CA: a full handshake would succeed
        v2 = tls.active_context
        assert v2 is not v1
        after = _BioPair(client_ctx, tls.context, session)
        assert after.server.context is v2
        after.handshake()
        assert not after.client.session_reused and not after.server.session_reused
        der = after.client.getpeercert(binary_form=True)
        assert der == tls.certificate.der  # the rotated certificate, fully verified
        assert peer_spiffe_id_of_connection(after.server) == SpiffeId.parse(FRONTEND)

        # a listening socket wrapped by the context (werkzeug) accepts through it too
        listener = tls.context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
        with listener:
            assert listener.context is tls.context
            accepted: list[ssl.SSLSocket] = []

            def accept() -> None:
                conn, _ = listener.accept()
                accepted.append(conn)

            t = threading.Thread(target=accept)
            t.start()
            with tls_connect(client_ctx, listener.getsockname()):
                t.join(5)
                assert accepted and accepted[0].context is v2
                accepted[0].close()


@VERSIONS
def test_connection_accepted_before_a_rotation_cannot_resume_after_it(
    frontend: WorkloadCertificate,
    backend: WorkloadCertificate,
    version: ssl.TLSVersion,
) -> None:
    """The ``sni_callback`` covers a connection created before a rotation, handshaking after it.

    Its session cache is the old version's: resuming from it is refused; a
    full handshake is moved onto the new context (new certificate and bundle).
    """
    new_ca = LocalCA.create(intermediate=True)
    new_client_cert = new_ca.issue(FRONTEND)
    source = MemorySource(backend)
    with source, ServerTLS(source, session_tickets=True) as tls:
        client_ctx = _old_ca_client(frontend, new_ca, version)
        pair = _BioPair(client_ctx, tls.context)
        pair.handshake()
        session = pair.client.session
        v1 = tls.active_context
        early = _BioPair(client_ctx, tls.context, session)  # accepted, no ClientHello yet
        new_client = build_client_context(new_client_cert)
        new_client.maximum_version = version
        early_new = _BioPair(new_client, tls.context)
        assert early.server.context is v1 and early_new.server.context is v1

        source.update(new_ca.issue(BACKEND))
        with pytest.raises(ssl.SSLError, match="CALLBACK_FAILED"):  # the server's error
            early.handshake()
        assert "HANDSHAKE_FAILURE" in str(early.errors["client"])  # the alert the client got
        assert tls.stale_sessions_refused == 1

        early_new.handshake()  # moved onto the new context
        assert early_new.server.context is tls.active_context
        assert early_new.client.getpeercert(binary_form=True) == tls.certificate.der
        assert peer_spiffe_id_of_connection(early_new.server) == SpiffeId.parse(FRONTEND)


def test_stale_resumed_session_yields_no_identity(
    ica: LocalCA, frontend: WorkloadCertificate, backend: WorkloadCertificate
) -> None:
    """The last line of defence: even if a stale session were resumed, no identity.

    Simulates the old design (a connection made from the previous version's
    context, its check turned off, moved onto the new context) at TLS 1.2,
    where session times are kept as established.
    """
    from inmesh.inbound.uvicorn import PEER_DER_KEY, tls_extension

    source = MemorySource(backend)
    with source, ServerTLS(source) as tls:
        client_ctx = build_client_context(frontend)
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        pair = _BioPair(client_ctx, tls.context)
        pair.handshake()
        session = pair.client.session
        assert session is not None
        assert verified_peer_der(pair.server) == frontend.der
        deadline = time.monotonic() + 3
        while int(time.time()) <= session.time and time.monotonic() < deadline:
            time.sleep(0.02)  # session times are whole seconds
        v1 = tls.active_context
        source.update(ica.issue(BACKEND))
        v1.sni_callback = None
        stale = _BioPair(client_ctx, v1, session)
        stale.handshake()
        assert stale.server.session_reused
        stale.server.context = tls.active_context
        assert verified_peer_der(stale.server) is None
        assert peer_spiffe_id_of_connection(stale.server) is None
        assert tls_extension(stale.server)[PEER_DER_KEY] is None
        assert verified_peer_der(stale.client) == backend.der  # client side: unaffected

        # a session of the new version resumes with its identity
        fresh = _BioPair(client_ctx, tls.context)
        fresh.handshake()
        again = _BioPair(client_ctx, tls.context, fresh.client.session)
        again.handshake()
        assert again.server.session_reused
        assert verified_peer_der(again.server) == frontend.der
        assert tls_extension(again.server)[PEER_DER_KEY] == frontend.der
