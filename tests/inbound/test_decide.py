"""The sans-I/O decision: identity, PeerAuthentication matrix, XFCC, caching, cost."""

from __future__ import annotations

import logging
import time

import pytest

from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import MemorySource
from inmesh.inbound.context import StaticInboundContext
from inmesh.inbound.decide import (
    ConnectionFacts,
    InboundDecider,
    RefusalReason,
    parse_peer_certificate,
)
from inmesh.policy.peer_authn import MtlsMode

from .conftest import BACKEND_WORKLOAD, FRONTEND, MutableContext, expected_xfcc

STRICT, PERMISSIVE, DISABLE = MtlsMode.STRICT, MtlsMode.PERMISSIVE, MtlsMode.DISABLE


def mtls(der: bytes, port: int = 8080) -> ConnectionFacts:
    return ConnectionFacts(tls=True, peer_der=der, local_port=port)


PLAIN = ConnectionFacts(tls=False, local_port=8080)
TLS_NO_CERT = ConnectionFacts(tls=True, local_port=8080)
TLS_INVISIBLE = ConnectionFacts(tls=True, peer_visible=False, local_port=8080)


@pytest.mark.parametrize(
    ("mode", "facts", "allowed", "reason"),
    [
        (STRICT, PLAIN, False, RefusalReason.PLAINTEXT),
        (STRICT, TLS_NO_CERT, False, RefusalReason.NO_CLIENT_CERTIFICATE),
        (STRICT, TLS_INVISIBLE, True, None),
        (PERMISSIVE, PLAIN, True, None),
        (PERMISSIVE, TLS_NO_CERT, True, None),
        (PERMISSIVE, TLS_INVISIBLE, True, None),
        (DISABLE, PLAIN, True, None),
        (DISABLE, TLS_NO_CERT, True, None),
    ],
)
def test_matrix_without_identity(
    context: MutableContext,
    mode: MtlsMode,
    facts: ConnectionFacts,
    allowed: bool,
    reason: RefusalReason | None,
) -> None:
    context.mode = mode
    d = InboundDecider(context).decide(facts, xfcc="By=spoofed")
    assert d.allowed is allowed
    assert d.reason is reason
    assert d.mode is mode
    assert d.peer is None and d.peer_id is None and d.principal == ""
    assert d.xfcc is None  # incoming XFCC removed without mTLS
    if reason is not None:
        assert reason.status == 403
        assert reason.body.startswith(b"peer authentication failed: ")


@pytest.mark.parametrize("mode", [STRICT, PERMISSIVE])
def test_mtls_identity_and_xfcc(
    context: MutableContext, frontend_cert: WorkloadCertificate, mode: MtlsMode
) -> None:
    context.mode = mode
    d = InboundDecider(context).decide(mtls(frontend_cert.der))
    assert d.allowed and d.mtls and d.tls
    assert str(d.peer_id) == FRONTEND
    assert d.principal == "cluster.local/ns/default/sa/frontend-sa"
    assert d.xfcc == expected_xfcc(frontend_cert)


def test_disable_ignores_the_certificate(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    context.mode = DISABLE
    d = InboundDecider(context).decide(mtls(frontend_cert.der), xfcc="By=x")
    assert d.allowed and d.peer is None and d.xfcc is None


def test_untrusted_incoming_xfcc_is_replaced(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    d = InboundDecider(context).decide(mtls(frontend_cert.der), xfcc="By=spiffe://evil;URI=x")
    assert d.xfcc == expected_xfcc(frontend_cert)


def test_trusted_incoming_xfcc_is_appended(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    context.trusted_proxy_xfcc = True
    decider = InboundDecider(context)
    d = decider.decide(mtls(frontend_cert.der), xfcc="By=spiffe://gw;URI=spiffe://user")
    assert d.xfcc == "By=spiffe://gw;URI=spiffe://user," + expected_xfcc(frontend_cert)
    # identity still comes from the certificate, never from the header
    assert str(d.peer_id) == FRONTEND
    # a trusted proxy over plaintext: Envoy's APPEND_FORWARD removes it
    context.mode = PERMISSIVE
    assert decider.decide(PLAIN, xfcc="By=spiffe://gw").xfcc is None
    # and the appended value did not leak into the cache
    assert decider.decide(mtls(frontend_cert.der)).xfcc == expected_xfcc(frontend_cert)


def test_other_trust_domain_same_ca_is_refused(context: MutableContext, ca: LocalCA) -> None:
    foreign = ca.issue("spiffe://other.domain/ns/default/sa/frontend-sa")
    for mode in (STRICT, PERMISSIVE):
        context.mode = mode
        d = InboundDecider(context).decide(mtls(foreign.der))
        assert not d.allowed and d.reason is RefusalReason.TRUST_DOMAIN
        assert d.reason.body == b"peer authentication failed: client trust domain not accepted"


def test_certificate_without_spiffe_id_is_refused(context: MutableContext, ca: LocalCA) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = time.time()
    import datetime as dt

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "plain")]))
        .issuer_name(ca.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime.fromtimestamp(now - 60, dt.timezone.utc))
        .not_valid_after(dt.datetime.fromtimestamp(now + 3600, dt.timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("plain.example")]), False)
        .sign(ca.signing_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    d = InboundDecider(context).decide(mtls(der))
    assert d.reason is RefusalReason.NO_SPIFFE_ID
    peer = parse_peer_certificate(der)
    assert peer.subject == "CN=plain" and peer.dns == ("plain.example",) and peer.uris == ()
    assert peer.xfcc_peer.endswith(';Subject="CN=plain";URI=;DNS=plain.example')


def test_garbage_der_is_refused(context: MutableContext, caplog: pytest.LogCaptureFixture) -> None:
    d = InboundDecider(context).decide(mtls(b"not a certificate"))
    assert d.reason is RefusalReason.NO_SPIFFE_ID


def test_port_level_mode(context: MutableContext) -> None:
    context.mode = STRICT
    context.port_modes = {9090: PERMISSIVE}
    decider = InboundDecider(context)
    assert not decider.decide(PLAIN).allowed
    assert decider.decide(ConnectionFacts(tls=False, local_port=9090)).allowed


def test_mode_changes_apply_to_the_next_request(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    decider = InboundDecider(context)
    context.mode = PERMISSIVE
    assert decider.decide(PLAIN).allowed
    context.mode = STRICT
    assert decider.decide(PLAIN).reason is RefusalReason.PLAINTEXT


def test_invisible_certificate_logged_once_and_fail_closed(
    context: MutableContext, caplog: pytest.LogCaptureFixture
) -> None:
    decider = InboundDecider(context)
    with caplog.at_level(logging.WARNING, logger="inmesh.inbound"):
        for _ in range(3):
            d = decider.decide(TLS_INVISIBLE)
            assert d.allowed and not d.peer_visible and d.peer is None
    warnings = [r for r in caplog.records if r.name == "inmesh.inbound"]
    assert len(warnings) == 1
    assert "does not expose client certificates" in warnings[0].getMessage()
    closed = InboundDecider(context, fail_closed=True).decide(TLS_INVISIBLE)
    assert closed.reason is RefusalReason.UNVERIFIABLE


def test_plaintext_under_strict_logged_once(
    context: MutableContext, caplog: pytest.LogCaptureFixture
) -> None:
    decider = InboundDecider(context)
    with caplog.at_level(logging.WARNING, logger="inmesh.inbound"):
        decider.decide(PLAIN)
        decider.decide(PLAIN)
    assert len([r for r in caplog.records if "arrive over plaintext" in r.getMessage()]) == 1


def test_rotation_of_local_identity_changes_by(
    ca: LocalCA, backend_cert: WorkloadCertificate, frontend_cert: WorkloadCertificate
) -> None:
    source = MemorySource(backend_cert)
    source.start()
    try:
        ctx = StaticInboundContext(BACKEND_WORKLOAD, source, mode=STRICT)
        decider = InboundDecider(ctx)
        assert decider.decide(mtls(frontend_cert.der)).xfcc == expected_xfcc(frontend_cert)
        source.update(ca.issue("spiffe://cluster.local/ns/default/sa/backend-v2"))
        assert decider.decide(mtls(frontend_cert.der)).xfcc == expected_xfcc(
            frontend_cert, "spiffe://cluster.local/ns/default/sa/backend-v2"
        )
    finally:
        source.close()


def test_no_local_identity_means_no_by(frontend_cert: WorkloadCertificate) -> None:
    ctx = StaticInboundContext(BACKEND_WORKLOAD, None, mode=STRICT)
    d = InboundDecider(ctx).decide(mtls(frontend_cert.der))
    assert d.allowed
    assert d.xfcc is not None and d.xfcc.startswith("Hash=")


def test_decisions_are_cached_per_certificate(
    context: MutableContext, frontend_cert: WorkloadCertificate
) -> None:
    decider = InboundDecider(context)
    der = frontend_cert.der
    first = decider.decide(mtls(der))
    assert decider.decide(mtls(bytes(der))) is first
    assert decider.peer_certificate(der) is first.peer


def test_decide_cost(context: MutableContext, frontend_cert: WorkloadCertificate) -> None:
    """A request on a known mTLS connection must cost a few µs (report the number)."""
    decider = InboundDecider(context)
    facts = mtls(frontend_cert.der)
    decider.decide(facts)
    n = 20000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            decider.decide(facts)
        best = min(best, (time.perf_counter() - t0) / n)
    print(f"\ndecide() on a cached mTLS connection: {best * 1e6:.2f} µs")
    assert best < 50e-6
