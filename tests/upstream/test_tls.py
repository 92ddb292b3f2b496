"""resolve_upstream_tls: DestinationRule ``tls`` modes and auto mTLS, as a table (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from inmesh.config.resources.destination_rule import ClientTLSSettings, TLSMode
from inmesh.config.resources.service_entry import Location
from inmesh.discovery.registry import TLS_MODE_DISABLED, TLS_MODE_ISTIO, Endpoint, Service
from inmesh.policy.peer_authn import MtlsMode
from inmesh.upstream.tls import (
    MESH_ALPN,
    PLAINTEXT,
    TLSOrigin,
    UpstreamTLS,
    UpstreamTLSMode,
    destination_identities,
    endpoint_tls_mode,
    istio_sni,
    resolve_upstream_tls,
    upstream_tls_for,
)

HOST = "backend.default.svc.cluster.local"
SA_BACKEND = "spiffe://cluster.local/ns/default/sa/backend"
SA_OTHER = "spiffe://cluster.local/ns/default/sa/other"
IDS = frozenset({SA_BACKEND, SA_OTHER})
MESH_SNI = f"outbound_.8080_._.{HOST}"
INTERNAL = Location.MESH_INTERNAL
EXTERNAL = Location.MESH_EXTERNAL
ISTIO = {"security.istio.io/tlsMode": "istio"}
DISABLED = {"security.istio.io/tlsMode": "disabled"}

S = UpstreamTLSMode
MESH = UpstreamTLS(
    mode=S.ISTIO_MUTUAL,
    sni=MESH_SNI,
    subject_alt_names=IDS,
    alpn=MESH_ALPN,
    origin=TLSOrigin.AUTO_MTLS,
)


@dataclass(frozen=True)
class Case:
    """One row: the inputs beyond ``host``/``port`` and the expected settings."""

    name: str
    settings: ClientTLSSettings | None
    expected: UpstreamTLS
    origin: TLSOrigin = TLSOrigin.DESTINATION_RULE
    kw: dict[str, Any] = field(default_factory=dict)


def dr(mode: TLSMode, **fields: Any) -> ClientTLSSettings:
    return ClientTLSSettings(mode=mode, **fields)


def tls(mode: UpstreamTLSMode, **fields: Any) -> UpstreamTLS:
    return UpstreamTLS(mode=mode, **fields)


# in the mesh, server mode known, endpoint with a sidecar: auto mTLS's happy path
AUTO = {"location": INTERNAL, "peer_mode": MtlsMode.STRICT, "endpoint_service_account": "backend"}

CASES = [
    # -- auto mTLS (no tls block) ------------------------------------------------
    Case("auto: in mesh, STRICT, endpoint with SA -> mTLS", None, MESH, TLSOrigin.AUTO_MTLS, AUTO),
    Case(
        "auto: PERMISSIVE -> mTLS",
        None,
        MESH,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "peer_mode": MtlsMode.PERMISSIVE},
    ),
    Case(
        "auto: DISABLE -> plaintext",
        None,
        PLAINTEXT,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "peer_mode": MtlsMode.DISABLE},
    ),
    Case(
        "auto: server mode unknown -> plaintext",
        None,
        PLAINTEXT,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "peer_mode": None},
    ),
    Case(
        "auto: MESH_EXTERNAL -> plaintext",
        None,
        PLAINTEXT,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "location": EXTERNAL},
    ),
    Case(
        "auto: enableAutoMtls off -> plaintext",
        None,
        PLAINTEXT,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "auto_mtls": False},
    ),
    Case(
        "auto: endpoint without SA or label -> plaintext",
        None,
        PLAINTEXT,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "endpoint_service_account": ""},
    ),
    Case(
        "auto: label tlsMode=istio without SA -> mTLS",
        None,
        MESH,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "endpoint_service_account": "", "endpoint_labels": ISTIO},
    ),
    Case(
        "auto: SA but label tlsMode=disabled -> plaintext",
        None,
        PLAINTEXT,
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "endpoint_labels": DISABLED},
    ),
    Case(
        "auto: subset in the SNI",
        None,
        tls(
            S.ISTIO_MUTUAL, sni=f"outbound_.8080_.v1_.{HOST}", subject_alt_names=IDS, alpn=MESH_ALPN
        ),
        TLSOrigin.AUTO_MTLS,
        {**AUTO, "subset": "v1"},
    ),
    # -- DISABLE ------------------------------------------------------------------
    Case("DISABLE wins over auto mTLS", dr(TLSMode.DISABLE), PLAINTEXT, kw=AUTO),
    # -- ISTIO_MUTUAL ---------------------------------------------------------------
    Case("ISTIO_MUTUAL: defaults from the destination", dr(TLSMode.ISTIO_MUTUAL), MESH, kw=AUTO),
    Case(
        "ISTIO_MUTUAL applies to every endpoint, even external ones",
        dr(TLSMode.ISTIO_MUTUAL),
        MESH,
        kw={"location": EXTERNAL},
    ),
    Case(
        "ISTIO_MUTUAL: sni and subjectAltNames as written",
        dr(TLSMode.ISTIO_MUTUAL, sni="gw.example", subject_alt_names=(SA_OTHER,)),
        tls(
            S.ISTIO_MUTUAL,
            sni="gw.example",
            subject_alt_names=frozenset({SA_OTHER}),
            alpn=MESH_ALPN,
        ),
    ),
    Case(
        "ISTIO_MUTUAL ignores file settings",
        dr(
            TLSMode.ISTIO_MUTUAL,
            ca_certificates="/ca.pem",
            client_certificate="/c.pem",
            private_key="/k.pem",
        ),
        MESH,
    ),
    # -- SIMPLE ----------------------------------------------------------------------
    Case(
        "SIMPLE: auto SNI and auto SAN from the request host",
        dr(TLSMode.SIMPLE),
        tls(S.TLS, sni="api.example.com", subject_alt_names=frozenset({"api.example.com"})),
        kw={"authority": "api.example.com"},
    ),
    Case(
        "SIMPLE: the service host when no authority",
        dr(TLSMode.SIMPLE, ca_certificates="/ca.pem"),
        tls(S.TLS, sni=HOST, subject_alt_names=frozenset({HOST}), ca_certificates="/ca.pem"),
    ),
    Case(
        "SIMPLE: sni set, no SANs: the ServiceEntry's SANs",
        dr(TLSMode.SIMPLE, sni="sni.example"),
        tls(S.TLS, sni="sni.example", subject_alt_names=IDS),
    ),
    Case(
        "SIMPLE: sni set, no SANs anywhere: chain only",
        dr(TLSMode.SIMPLE, sni="sni.example"),
        tls(S.TLS, sni="sni.example"),
        kw={"subject_alt_names": ()},
    ),
    Case(
        "SIMPLE: SANs set, SNI from the host",
        dr(TLSMode.SIMPLE, subject_alt_names=("a.example", "b.example")),
        tls(S.TLS, sni="api.example.com", subject_alt_names=frozenset({"a.example", "b.example"})),
        kw={"authority": "api.example.com"},
    ),
    Case(
        "SIMPLE: insecureSkipVerify checks nothing",
        dr(TLSMode.SIMPLE, insecure_skip_verify=True, ca_crl="/crl.pem"),
        tls(S.TLS, sni=HOST, insecure_skip_verify=True),
    ),
    Case(
        "SIMPLE: CRL kept",
        dr(TLSMode.SIMPLE, ca_certificates="/ca.pem", ca_crl="/crl.pem"),
        tls(
            S.TLS,
            sni=HOST,
            subject_alt_names=frozenset({HOST}),
            ca_certificates="/ca.pem",
            ca_crl="/crl.pem",
        ),
    ),
    Case(
        "SIMPLE presents no client certificate",
        dr(TLSMode.SIMPLE, client_certificate="/c.pem", private_key="/k.pem"),
        tls(S.TLS, sni=HOST, subject_alt_names=frozenset({HOST})),
    ),
    # -- MUTUAL ----------------------------------------------------------------------
    Case(
        "MUTUAL: the client certificate files",
        dr(
            TLSMode.MUTUAL,
            client_certificate="/c.pem",
            private_key="/k.pem",
            ca_certificates="/ca.pem",
        ),
        tls(
            S.TLS,
            sni=HOST,
            subject_alt_names=frozenset({HOST}),
            client_certificate="/c.pem",
            private_key="/k.pem",
            ca_certificates="/ca.pem",
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_resolve_upstream_tls(case: Case) -> None:
    kw: dict[str, Any] = {"host": HOST, "port": 8080, "subject_alt_names": IDS, **case.kw}
    got = resolve_upstream_tls(case.settings, **kw)
    assert got == case.expected
    assert got.origin is case.origin


def test_mutual_without_files_fails_closed() -> None:
    with pytest.raises(ValueError, match="clientCertificate and privateKey"):
        resolve_upstream_tls(dr(TLSMode.MUTUAL, credential_name="secret"), host=HOST, port=443)
    with pytest.raises(ValueError):
        resolve_upstream_tls(dr(TLSMode.MUTUAL, client_certificate="/c.pem"), host=HOST, port=443)


def test_value_properties() -> None:
    assert not PLAINTEXT.secure and PLAINTEXT.scheme == "http" and not PLAINTEXT.mutual
    assert MESH.secure and MESH.mutual and MESH.scheme == "https"
    simple = tls(S.TLS, sni="a")
    assert simple.secure and not simple.mutual
    assert tls(S.TLS, client_certificate="/c", private_key="/k").mutual
    # origin is informative only: equal values share pools
    assert (
        UpstreamTLS(
            mode=S.ISTIO_MUTUAL,
            sni=MESH_SNI,
            subject_alt_names=IDS,
            alpn=MESH_ALPN,
            origin=TLSOrigin.DESTINATION_RULE,
        )
        == MESH
    )
    assert (
        len(
            {
                MESH,
                resolve_upstream_tls(
                    dr(TLSMode.ISTIO_MUTUAL), host=HOST, port=8080, subject_alt_names=IDS
                ),
            }
        )
        == 1
    )
    # a plain set becomes a frozenset, so the value stays hashable
    assert hash(UpstreamTLS(mode=S.TLS, subject_alt_names={"a"}))  # type: ignore[arg-type]
    assert PLAINTEXT.describe() == "plaintext"
    assert MESH.describe() == f"ISTIO_MUTUAL sni={MESH_SNI} sans=[{SA_BACKEND}, {SA_OTHER}]"
    assert (
        tls(S.TLS, sni="a", insecure_skip_verify=True).describe()
        == "SIMPLE sni=a insecure_skip_verify"
    )
    assert tls(S.TLS, client_certificate="/c", private_key="/k").describe() == "MUTUAL"


def test_inconsistent_values_are_refused() -> None:
    with pytest.raises(ValueError, match="both or neither"):
        UpstreamTLS(mode=S.TLS, client_certificate="/c.pem")
    with pytest.raises(ValueError, match="only used in TLS mode"):
        UpstreamTLS(mode=S.ISTIO_MUTUAL, ca_certificates="/ca.pem")


def test_helpers() -> None:
    assert istio_sni(HOST, 9080, "v2") == f"outbound_.9080_.v2_.{HOST}"
    assert endpoint_tls_mode({}, "sa") == TLS_MODE_ISTIO
    assert endpoint_tls_mode({}) == TLS_MODE_DISABLED
    assert endpoint_tls_mode(DISABLED, "sa") == TLS_MODE_DISABLED
    assert endpoint_tls_mode({"security.istio.io/tlsMode": "custom"}) == "custom"


def test_from_registry_values() -> None:
    service = Service(HOST, "default", location=INTERNAL, subject_alt_names=(SA_OTHER,))
    with_sidecar = Endpoint(
        "10.0.0.1", 8080, service_account="backend", spiffe_id=SA_BACKEND, tls_mode=TLS_MODE_ISTIO
    )
    legacy = Endpoint("10.0.0.2", 8080)
    ids = destination_identities(service, [with_sidecar, legacy])
    assert ids == IDS
    got = upstream_tls_for(
        None, service, 8080, with_sidecar, identities=ids, peer_mode=MtlsMode.PERMISSIVE
    )
    assert got == MESH
    assert (
        upstream_tls_for(None, service, 8080, legacy, identities=ids, peer_mode=MtlsMode.PERMISSIVE)
        == PLAINTEXT
    )
    simple = upstream_tls_for(
        dr(TLSMode.SIMPLE), service, 443, legacy, identities=ids, authority="api.example.com"
    )
    assert simple.sni == "api.example.com" and simple.subject_alt_names == {"api.example.com"}
