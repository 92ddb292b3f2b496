"""The outbound decision path without I/O: routing, clusters, local replies, headers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from inmesh.config.snapshot import build_snapshot
from inmesh.discovery.registry import Registry
from inmesh.model import Workload
from inmesh.outbound import replies
from inmesh.outbound.plan import (
    PASSTHROUGH,
    ClusterManager,
    OutboundOptions,
    OutboundPlanner,
    Routed,
    shadow_authority,
    upstream_headers,
)
from inmesh.outbound.replies import LocalReply
from inmesh.policy.peer_authn import policies_from_snapshot
from inmesh.routing.match import RequestAttrs

FRONTEND = Workload("frontend", service_account="frontend-sa", labels={"app": "frontend"})

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: admin, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}, serviceAccount: backend-sa}
  - {address: 10.0.0.2, labels: {version: v2}, serviceAccount: backend-sa}
  - {address: 10.0.0.3, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: single, namespace: default}
spec:
  hosts: [single.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""


def planner(extra: str = "", **options: object) -> OutboundPlanner:
    text = SERVICES + ("---\n" + extra if extra else "")
    snapshot = build_snapshot(text)
    return OutboundPlanner(
        snapshot,
        Registry.from_snapshot(snapshot),
        FRONTEND,
        ClusterManager(clock=_Clock(), rng=random.Random(0), workload=FRONTEND),
        OutboundOptions(**options),  # type: ignore[arg-type]
        peer_authentication=policies_from_snapshot(snapshot.of_kind("PeerAuthentication")),
    )


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


def attrs(authority: str = "backend:8080", target: str = "/", **headers: str) -> RequestAttrs:
    return RequestAttrs.build(
        method="GET", scheme="http", authority=authority, target=target, headers=headers
    )


def route(p: OutboundPlanner, a: RequestAttrs, seed: int = 1) -> Routed | LocalReply | object:
    return p.route(a, random.Random(seed))


def test_default_route_without_virtual_service() -> None:
    r = route(planner(), attrs())
    assert isinstance(r, Routed)
    assert r.info.route_name == "default"
    assert r.cluster.name == "outbound|8080||backend.default.svc.cluster.local"
    assert len(r.cluster.hosts) == 3
    assert r.authority == "backend:8080"
    assert r.path == "/"


def test_second_port_is_its_own_cluster() -> None:
    r = route(planner(), attrs("backend.default.svc.cluster.local:9090"))
    assert isinstance(r, Routed)
    assert r.cluster.name == "outbound|9090||backend.default.svc.cluster.local"


def test_outside_registry_passthrough_and_registry_only() -> None:
    assert route(planner(), attrs("example.org")) is PASSTHROUGH
    r = route(planner(outbound_traffic_policy="REGISTRY_ONLY"), attrs("example.org"))
    assert isinstance(r, LocalReply)
    assert (r.status, r.body, r.flags) == (502, b"", ())
    with pytest.raises(ValueError, match="REGISTRY_ONLY"):
        OutboundOptions(outbound_traffic_policy="DENY")


VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: canary
    match: [{uri: {prefix: /c}}]
    route:
    - {destination: {host: backend, subset: v1}, weight: 90}
    - {destination: {host: backend, subset: v2}, weight: 10}
  - name: missing-subset
    match: [{uri: {prefix: /ms}}]
    route: [{destination: {host: backend, subset: v9}}]
  - name: missing-host
    match: [{uri: {prefix: /mh}}]
    route: [{destination: {host: nowhere.example.com}}]
  - name: empty-subset
    match: [{uri: {prefix: /es}}]
    route: [{destination: {host: backend, subset: v3}}]
  - name: other-service
    match: [{uri: {prefix: /single}}]
    route: [{destination: {host: single}}]
  - name: rewrite
    match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new}
    route: [{destination: {host: backend}}]
    mirror: {host: single}
    mirrorPercentage: {value: 50}
"""


def test_no_route_is_404_nr() -> None:
    r = route(planner(VS), attrs(target="/zzz"))
    assert r == replies.route_not_found()
    assert isinstance(r, LocalReply)
    assert (r.status, r.body, r.flags, r.details) == (404, b"", ("NR",), "route_not_found")


@pytest.mark.parametrize("path", ["/ms", "/mh"])
def test_missing_cluster_is_503_nc(path: str) -> None:
    r = route(planner(VS), attrs(target=path))
    assert isinstance(r, LocalReply)
    assert (r.status, r.body, r.flags) == (503, b"", ("NC",))


def test_empty_subset_has_no_hosts() -> None:
    p = planner(VS)
    r = route(p, attrs(target="/es"))
    assert isinstance(r, Routed)
    host, _ = r.cluster.pick(attrs(), random.Random(0))
    assert host is None


def test_weighted_split_is_per_request() -> None:
    p = planner(VS)
    rng = random.Random(7)
    seen = Counter()
    for _ in range(10_000):
        r = p.route(attrs(target="/c"), rng)
        assert isinstance(r, Routed)
        seen[r.cluster.subset] += 1
    assert 900 <= seen["v2"] <= 1100


def test_single_port_destination_uses_its_port() -> None:
    r = route(planner(VS), attrs(target="/single"))
    assert isinstance(r, Routed)
    assert r.cluster.name == "outbound|7000||single.default.svc.cluster.local"


def test_subset_endpoints_selected_by_labels() -> None:
    p = planner(VS)
    r = route(p, attrs(target="/c"), seed=3)
    assert isinstance(r, Routed)
    addresses = {h.endpoint.address for h in r.cluster.hosts}
    assert addresses == ({"10.0.0.1"} if r.cluster.subset == "v1" else {"10.0.0.2", "10.0.0.3"})


def test_rewrite_keeps_query_and_original_path() -> None:
    r = route(planner(VS), attrs(target="/old/x?q=1"))
    assert isinstance(r, Routed)
    assert r.path == "/new/x?q=1"
    assert r.original_path == "/old/x"
    headers = dict(upstream_headers([(b"Host", b"backend:8080")], r, attempt=1, scheme="http"))
    assert headers[b"x-envoy-original-path"] == b"/old/x"


def test_mirror_percentage_is_drawn_per_request() -> None:
    p = planner(VS)
    rng = random.Random(11)
    mirrored = 0
    for _ in range(2000):
        r = p.route(attrs(target="/old"), rng)
        assert isinstance(r, Routed)
        if r.mirrors:
            assert r.mirrors[0].authority == "backend-shadow:8080"
            assert r.mirrors[0].cluster.name == "outbound|7000||single.default.svc.cluster.local"
            mirrored += 1
    assert 850 <= mirrored <= 1150


@pytest.mark.parametrize(
    ("authority", "shadow"),
    [
        ("backend:8080", "backend-shadow:8080"),
        ("backend", "backend-shadow"),
        ("httpbin.org:80", "httpbin.org-shadow:80"),
        ("[::1]:80", "[::1]:80"),
    ],
)
def test_shadow_authority(authority: str, shadow: str) -> None:
    assert shadow_authority(authority) == shadow


def test_upstream_headers() -> None:
    r = route(planner(), attrs())
    assert isinstance(r, Routed)
    out = upstream_headers(
        [
            (b"Host", b"backend:8080"),
            (b"X-Request-Id", b"abc"),
            (b"x-envoy-attempt-count", b"7"),
            (b"Accept", b"*/*"),
        ],
        r,
        attempt=2,
        scheme="http",
    )
    assert out[0] == (b"host", b"backend:8080")
    d = dict(out)
    assert d[b"x-request-id"] == b"abc"
    assert d[b"x-envoy-attempt-count"] == b"2"
    assert d[b"x-forwarded-proto"] == b"http"
    assert d[b"accept"] == b"*/*"
    assert [k for k, _ in out].count(b"x-envoy-attempt-count") == 1
    generated = dict(upstream_headers([], r, attempt=1, scheme="https"))
    assert len(generated[b"x-request-id"]) == 36


def test_auto_mtls_per_endpoint() -> None:
    r = route(planner(), attrs())
    assert isinstance(r, Routed)
    by_address = {h.endpoint.address: r.cluster.tls_for(h, r.authority) for h in r.cluster.hosts}
    assert by_address["10.0.0.1"].mutual and by_address["10.0.0.2"].mutual
    assert not by_address["10.0.0.3"].secure  # no service account: plain text


def test_auto_mtls_off_when_namespace_disables() -> None:
    pa = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
"""
    r = route(planner(pa), attrs())
    assert isinstance(r, Routed)
    assert not any(r.cluster.tls_for(h, r.authority).secure for h in r.cluster.hosts)


def test_hosts_survive_a_reload() -> None:
    first = planner()
    r1 = route(first, attrs())
    assert isinstance(r1, Routed)
    r1.cluster.hosts[0].begin()
    snapshot = build_snapshot(SERVICES)
    second = OutboundPlanner(
        snapshot, Registry.from_snapshot(snapshot), FRONTEND, first.manager, OutboundOptions()
    )
    r2 = route(second, attrs())
    assert isinstance(r2, Routed)
    assert r2.cluster is not r1.cluster
    assert r2.cluster.hosts[0] is r1.cluster.hosts[0]
    assert r2.cluster.hosts[0].active == 1


def test_local_reply_shapes() -> None:
    uh = replies.no_healthy_upstream()
    assert (uh.status, uh.body, uh.flags) == (503, b"no healthy upstream", ("UH",))
    assert (b"content-type", b"text/plain") in uh.header_list()
    assert (b"content-length", b"19") in uh.header_list()
    reset = replies.upstream_reset("UF", "connection failure", "delayed connect error: 111")
    assert reset.text == (
        "upstream connect error or disconnect/reset before headers. reset reason: "
        "connection failure, transport failure reason: delayed connect error: 111"
    )
    assert reset.details == (
        "upstream_reset_before_response_started{connection_failure,delayed_connect_error:_111}"
    )
    retried = replies.upstream_reset("UO", "overflow", retried=True)
    assert retried.flags == ("UO", "URX")
    assert ("x-envoy-overloaded", "true") in retried.headers
    assert retried.text.endswith("retried and the latest reset reason: overflow")
    abort = replies.fault_abort(503)
    assert (abort.status, abort.text, abort.flags) == (503, "fault filter abort", ("FI",))


def test_request_info_flags() -> None:
    info = replies.RequestInfo()
    assert info.flags == "-"
    info.flag("UF")
    info.flag("URX")
    info.flag("UF")
    assert info.flags == "UF,URX"


def test_fault_runs_before_the_cors_preflight() -> None:
    from inmesh.outbound.plan import Faulted

    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}], allowMethods: [GET]}
    route: [{destination: {host: backend}}]
"""
    preflight = RequestAttrs.build(
        method="OPTIONS",
        authority="backend:8080",
        headers={"origin": "https://a.example", "access-control-request-method": "GET"},
    )
    r = route(planner(vs), preflight)
    assert isinstance(r, Faulted)
    assert r.fault.abort_status == 503
    assert r.reply.status == 200 and r.reply.details == "cors_response"


def test_cluster_state_is_forgotten_when_its_service_leaves() -> None:
    p = planner()
    for authority in ("backend:8080", "backend:9090", "single:7000"):
        routed = route(p, attrs(authority))
        assert isinstance(routed, Routed)
        routed.cluster.pick(attrs(authority), random.Random(0))
    manager = p.manager
    before = {name for name, _, _ in manager.snapshot()}
    assert "outbound|7000||single.default.svc.cluster.local" in before
    # single is deleted and backend loses its 9090 port
    remaining = SERVICES.split("---", maxsplit=1)[0].replace(
        ", {number: 9090, name: admin, protocol: HTTP}", ""
    )
    gone = manager.retain(Registry.from_snapshot(build_snapshot(remaining)))
    assert gone == [
        "outbound|7000||single.default.svc.cluster.local",
        "outbound|9090||backend.default.svc.cluster.local",
    ]
    after = {name for name, _, _ in manager.snapshot()}
    assert after == before - set(gone)
    assert "outbound|8080||backend.default.svc.cluster.local" in after


def test_transport_failure_reason_names_tls_before_refusals() -> None:
    import errno
    import ssl

    from inmesh.outbound._async.transport import _failure_reason
    from inmesh.outbound._errors import UpstreamCertificateError, UpstreamConnectError

    refused_cert = UpstreamCertificateError(
        "TLS handshake with 10.0.0.1:8080 failed: the server certificate was refused: "
        "certificate verify failed"
    )
    assert _failure_reason(refused_cert).startswith("TLS_error:|TLS handshake with 10.0.0.1")
    assert _failure_reason(refused_cert).endswith(":TLS_error_end")
    wrapped = UpstreamConnectError("handshake failed")
    wrapped.__cause__ = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    assert _failure_reason(wrapped).startswith("TLS_error:|")
    refused = UpstreamConnectError("connect failed")
    refused.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert _failure_reason(refused) == "delayed connect error: 111"
