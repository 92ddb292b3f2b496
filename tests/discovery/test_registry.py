"""The ServiceEntry/WorkloadEntry registry: services, endpoints and Istio's host lookup."""

from __future__ import annotations

import time
from types import MappingProxyType

import pytest

from inmesh.config.resources._common import Metadata, Resource
from inmesh.config.resources.service_entry import (
    Location,
    Protocol,
    Resolution,
    ServiceEntrySpec,
    ServicePort,
    WorkloadEntrySpec,
)
from inmesh.config.snapshot import build_snapshot
from inmesh.discovery import (
    TLS_MODE_DISABLED,
    TLS_MODE_ISTIO,
    AddressKind,
    Endpoint,
    Port,
    Registry,
    Service,
)

from .conftest import build_registry

# -- services and endpoints -------------------------------------------------------

INLINE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop, labels: {team: pay}}
spec:
  hosts: [payments.shop.svc.cluster.local, pay.example.internal]
  addresses: [10.9.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  subjectAltNames: [spiffe://cluster.local/ns/shop/sa/payments]
  ports:
  - {number: 8080, name: http, protocol: HTTP, targetPort: 9080}
  - {number: 9090, name: grpc, protocol: GRPC}
  endpoints:
  - address: 10.0.0.1
    ports: {http: 18080}
    labels: {version: v1}
    serviceAccount: payments
    locality: us-east1/us-east1-b/rack1
    network: net-a
    weight: 3
  - address: 10.0.0.2
    labels: {version: v2, security.istio.io/tlsMode: disabled}
    serviceAccount: payments
"""


def test_one_service_per_host_with_the_entrys_fields() -> None:
    reg = build_registry(INLINE)
    assert [s.hostname for s in reg.services] == [
        "payments.shop.svc.cluster.local",
        "pay.example.internal",
    ]
    svc = reg.services[0]
    assert svc.namespace == "shop"
    assert svc.key == ("shop", "payments.shop.svc.cluster.local")
    assert svc.ports == (
        Port(8080, "http", Protocol.HTTP, 9080),
        Port(9090, "grpc", Protocol.GRPC, None),
    )
    assert svc.ports[0].is_http and svc.port(9090) == svc.ports[1] and svc.port(1) is None
    assert svc.location is Location.MESH_INTERNAL and svc.mesh_internal
    assert svc.resolution is Resolution.STATIC and not svc.uses_dns
    assert svc.subject_alt_names == ("spiffe://cluster.local/ns/shop/sa/payments",)
    assert svc.addresses == ("10.9.0.1",)
    assert dict(svc.labels) == {"team": "pay"}
    assert svc.export_to == ()
    assert svc.source is not None and svc.source.name == "payments"
    assert svc.cluster_name(8080, "v1") == "outbound|8080|v1|payments.shop.svc.cluster.local"
    # values: equal and hashable, whatever resource they came from
    assert hash(svc) == hash(reg.services[0])
    assert len({svc, reg.services[1]}) == 2


def test_inline_endpoint_ports_follow_istio_precedence() -> None:
    reg = build_registry(INLINE)
    svc = reg.services[0]
    http = reg.endpoints(svc, 8080)
    grpc = reg.endpoints(svc, svc.ports[1])
    # WorkloadEntry ports[name] > ServicePort targetPort > ServicePort number
    assert [(e.address, e.port, e.kind) for e in http] == [
        ("10.0.0.1", 18080, AddressKind.IP),
        ("10.0.0.2", 9080, AddressKind.IP),
    ]
    assert [(e.address, e.port) for e in grpc] == [("10.0.0.1", 9090), ("10.0.0.2", 9090)]
    # every host of the entry has the same endpoints
    assert reg.endpoints(reg.services[1], 8080) == http
    assert reg.endpoints(svc, 1234) == ()


def test_endpoint_attributes() -> None:
    reg = build_registry(INLINE, trust_domain="example.org")
    first, second = reg.endpoints(reg.services[0], 8080)
    assert first == Endpoint(
        address="10.0.0.1",
        port=18080,
        kind=AddressKind.IP,
        labels={
            "version": "v1",
            "topology.kubernetes.io/region": "us-east1",
            "topology.kubernetes.io/zone": "us-east1-b",
            "topology.istio.io/subzone": "rack1",
            "topology.istio.io/network": "net-a",
        },
        service_account="payments",
        spiffe_id="spiffe://example.org/ns/shop/sa/payments",
        weight=3,
        locality="us-east1/us-east1-b/rack1",
        network="net-a",
        workload_name="payments-0",
        namespace="shop",
        tls_mode=TLS_MODE_ISTIO,
    )
    assert first.mtls and not first.needs_dns
    # the tlsMode label wins over the service account
    assert second.tls_mode == TLS_MODE_DISABLED and not second.mtls
    assert second.weight == 1 and second.locality == "" and second.network == ""
    assert second.workload_name == "payments-1"


def test_unix_socket_endpoints_have_port_zero() -> None:
    reg = build_registry(
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: local, namespace: default}
        spec:
          hosts: [local.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
          endpoints: [{address: "unix:///var/run/app.sock"}]
        """
    )
    (sock,) = reg.endpoints(reg.services[0], 80)
    assert (sock.address, sock.port, sock.kind) == ("/var/run/app.sock", 0, AddressKind.UNIX)
    assert sock.service_account == "" and sock.spiffe_id == "" and sock.tls_mode == "disabled"
    assert dict(sock.labels) == {} and not sock.needs_dns
    assert reg.dns_hostnames == frozenset()


WORKLOADS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP, targetPort: 9080}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2, namespace: default}
spec:
  address: 10.0.0.12
  labels: {app: backend, version: v2, istio-locality: eu-west1.eu-west1-c}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1, namespace: default, labels: {service.istio.io/workload-name: backend}}
spec:
  address: 10.0.0.11
  ports: {http: 18080}
  labels: {app: backend, version: v1}
  serviceAccount: backend-sa
  weight: 5
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-elsewhere, namespace: other}
spec:
  address: 10.0.0.13
  labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend, namespace: default}
spec:
  address: 10.0.0.14
  labels: {app: frontend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-by-name, namespace: default}
spec:
  address: backend-vm.example.internal
  labels: {app: backend}
"""


def test_workload_selector_picks_workload_entries_of_the_namespace() -> None:
    reg = build_registry(WORKLOADS)
    (svc,) = reg.services
    eps = reg.endpoints(svc, 8080)
    # same namespace, labels a superset of the selector, sorted by name; the hostname
    # workload only backs DNS entries (Istio's DNSServiceEntryOnly)
    assert [(e.address, e.port) for e in eps] == [("10.0.0.11", 18080), ("10.0.0.12", 9080)]
    v1, v2 = eps
    assert v1.workload_name == "backend"  # service.istio.io/workload-name label
    assert v2.workload_name == "backend-v2"  # else the WorkloadEntry's name
    assert v1.namespace == v2.namespace == "default"
    assert v1.weight == 5 and v1.service_account == "backend-sa" and v1.tls_mode == "istio"
    assert v1.spiffe_id == "spiffe://cluster.local/ns/default/sa/backend-sa"
    assert v2.tls_mode == "disabled"
    assert v2.locality == "eu-west1/eu-west1-c"  # legacy label, '.' means '/'
    assert v2.labels["topology.kubernetes.io/zone"] == "eu-west1-c"
    assert v2.labels["version"] == "v2"
    assert reg.dns_hostnames == frozenset()


def test_dns_entries_select_hostname_workloads_and_fall_back_to_their_hosts() -> None:
    reg = build_registry(
        WORKLOADS.replace("resolution: STATIC", "resolution: DNS")
        + """
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com, Www.Example.com]
  resolution: DNS_ROUND_ROBIN
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
"""
    )
    backend = reg.service("backend.default.svc.cluster.local")
    assert backend is not None
    assert [e.address for e in reg.endpoints(backend, 8080)] == [
        "backend-vm.example.internal",
        "10.0.0.11",
        "10.0.0.12",
    ]
    api = reg.service("api.example.com")
    www = reg.service("WWW.example.com")
    assert api is not None and www is not None and www.hostname == "www.example.com"
    (ep,) = reg.endpoints(api, 443)
    assert (ep.address, ep.port, ep.kind, ep.needs_dns) == (
        "api.example.com",
        443,
        AddressKind.HOSTNAME,
        True,
    )
    assert (ep.workload_name, ep.namespace, ep.tls_mode) == ("external", "default", "disabled")
    assert reg.endpoints(api, 80)[0].port == 8080  # targetPort
    assert reg.endpoints(www, 443)[0].address == "www.example.com"
    assert reg.dns_hostnames == {
        "backend-vm.example.internal",
        "api.example.com",
        "www.example.com",
    }


def test_passthrough_entries_have_no_endpoints() -> None:
    reg = build_registry(
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: any, namespace: default}
        spec:
          hosts: ["*.googleapis.com"]
          resolution: NONE
          ports: [{number: 443, name: tls, protocol: TLS}]
        """
    )
    (svc,) = reg.services
    assert svc.is_wildcard and reg.endpoints(svc, 443) == ()


def test_workload_entry_without_address_is_skipped_with_a_warning() -> None:
    reg = build_registry(
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db, namespace: default}
        spec:
          hosts: [db.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{number: 5432, name: tcp, protocol: TCP}]
          workloadSelector: {labels: {app: db}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: db-remote, namespace: default}
        spec:
          network: vpc-2
          labels: {app: db}
        """
    )
    assert reg.endpoints(reg.services[0], 5432) == ()
    (warning,) = reg.warnings
    assert warning.kind == "WorkloadEntry" and warning.name == "db-remote"
    assert "without an address" in warning.message


def test_same_host_in_one_namespace_merges_like_istio() -> None:
    reg = build_registry(
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: a-first, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
        spec:
          hosts: [db.example.com]
          resolution: STATIC
          ports: [{number: 5432, name: pg, protocol: TCP}]
          endpoints: [{address: 10.0.0.1}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: b-second, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
        spec:
          hosts: [db.example.com]
          resolution: STATIC
          ports:
          - {number: 5432, name: pg, protocol: TCP}
          - {number: 6432, name: bouncer, protocol: TCP}
          endpoints: [{address: 10.0.0.2}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: c-other, namespace: default, creationTimestamp: "2024-03-01T00:00:00Z"}
        spec:
          hosts: [db.example.com]
          resolution: DNS
          ports: [{number: 7000, name: other, protocol: TCP}]
          endpoints: [{address: 10.0.0.3}]
        """
    )
    (svc,) = reg.services
    assert svc.source is not None and svc.source.name == "a-first"
    assert [p.number for p in svc.ports] == [5432, 6432]  # c-other cannot merge
    assert [e.address for e in reg.endpoints(svc, 5432)] == ["10.0.0.1", "10.0.0.2"]
    assert [e.address for e in reg.endpoints(svc, 6432)] == ["10.0.0.2"]
    (warning,) = reg.warnings
    assert warning.name == "c-other" and "already defined" in warning.message


def test_service_and_endpoint_reads() -> None:
    reg = build_registry(INLINE)
    assert reg.service("PAYMENTS.shop.svc.cluster.local.") is reg.services[0]
    assert reg.service("payments.shop.svc.cluster.local", namespace="shop") is reg.services[0]
    assert reg.service("payments.shop.svc.cluster.local", namespace="other") is None
    assert reg.service("payments") is None  # a read, not a host match
    assert reg.service("10.9.0.1") is None
    assert len(reg) == 2 and "2 services, 8 endpoints" in repr(reg)
    assert Registry.empty().lookup("anything", caller_namespace="default") is None


def test_from_snapshot_uses_the_snapshot_options() -> None:
    from inmesh.config.snapshot import ConfigOptions

    text = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: team}
spec:
  hosts: [svc.team.svc.corp.internal]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.1.1, serviceAccount: svc}]
"""
    options = ConfigOptions(domain_suffix="corp.internal", trust_domain="corp")
    snapshot = build_snapshot(text, options=options)
    reg = Registry.from_snapshot(snapshot)
    found = reg.lookup("svc", caller_namespace="team", default_port=80)
    assert found is not None and found.service.hostname == "svc.team.svc.corp.internal"
    assert reg.endpoints(*found)[0].spiffe_id == "spiffe://corp/ns/team/sa/svc"
    assert reg.domain_suffix == "corp.internal" and reg.trust_domain == "corp"


# -- host lookup ----------------------------------------------------------------------

MESH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 9090, name: grpc, protocol: GRPC}
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: bookinfo}
spec:
  hosts: [hidden.bookinfo.svc.cluster.local]
  exportTo: ["~"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partners, namespace: bookinfo}
spec:
  hosts: [partners.bookinfo.svc.cluster.local]
  exportTo: [".", "shop"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.4}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 80, name: http, protocol: HTTP}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example-wildcard, namespace: default}
spec:
  hosts: ["*.example.com"]
  resolution: NONE
  ports:
  - {number: 443, name: tls, protocol: TLS}
  - {number: 80, name: http, protocol: HTTP}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: eu-wildcard, namespace: default}
spec:
  hosts: ["*.eu.example.com"]
  resolution: NONE
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.corp.net]
  addresses: [10.1.2.3/32, "2001:db8::7"]
  resolution: STATIC
  ports: [{number: 5432, name: pg, protocol: TCP}]
  endpoints: [{address: 10.0.0.5}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: team-a, creationTimestamp: "2024-05-01T00:00:00Z"}
spec:
  hosts: [shared.example.org]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: team-b, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [shared.example.org]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.2.1}]
"""

BACKEND = "backend.default.svc.cluster.local"


@pytest.fixture(scope="module")
def mesh() -> Registry:
    return build_registry(MESH)


@pytest.mark.parametrize(
    ("authority", "caller", "default_port", "expected"),
    [
        # Kubernetes-style host: short, medium and full names, with or without port
        ("backend", "default", None, (BACKEND, 8080)),  # no port at all: the first port
        ("backend", "default", 8080, (BACKEND, 8080)),
        ("backend:9090", "default", 80, (BACKEND, 9090)),  # the explicit port wins
        ("backend", "default", 80, None),  # Istio routes by port: no port 80 on backend
        ("backend:8081", "default", None, None),
        ("backend.default", "default", 8080, (BACKEND, 8080)),
        ("backend.default.svc", "default", 8080, (BACKEND, 8080)),
        (BACKEND, "default", 8080, (BACKEND, 8080)),
        (f"{BACKEND}:9090", "default", None, (BACKEND, 9090)),
        # case-insensitive, trailing dot only on the full name
        ("BackEnd:8080", "default", None, (BACKEND, 8080)),
        ("BACKEND.Default.SVC.Cluster.Local:8080", "other", None, (BACKEND, 8080)),
        (f"{BACKEND}.", "default", 8080, (BACKEND, 8080)),
        ("backend.", "default", 8080, None),
        # from another namespace: no short name, medium and full names work
        ("backend", "other", 8080, None),
        ("backend.default", "other", 8080, (BACKEND, 8080)),
        ("backend.default.svc:8080", "other", None, (BACKEND, 8080)),
        # the short name is relative to the caller's namespace
        ("ratings:9080", "bookinfo", None, ("ratings.bookinfo.svc.cluster.local", 9080)),
        ("ratings:9080", "default", None, None),
        # exportTo "." hides it from other namespaces, whatever the name
        ("ratings.bookinfo:9080", "default", None, None),
        ("ratings.bookinfo.svc.cluster.local:9080", "default", None, None),
        ("ratings.bookinfo:9080", "bookinfo", None, ("ratings.bookinfo.svc.cluster.local", 9080)),
        # exportTo "~": nobody, not even its own namespace
        ("hidden:9080", "bookinfo", None, None),
        # exportTo a list of namespaces
        ("partners.bookinfo:9080", "shop", None, ("partners.bookinfo.svc.cluster.local", 9080)),
        ("partners.bookinfo:9080", "bookinfo", None, ("partners.bookinfo.svc.cluster.local", 9080)),
        ("partners.bookinfo:9080", "default", None, None),
        # other hosts only match exactly; exact beats wildcard
        ("api.example.com", "default", 443, ("api.example.com", 443)),
        ("api.example.com:80", "shop", None, ("api.example.com", 80)),
        ("api", "default", 443, None),
        ("api.example", "default", 443, None),
        # wildcards: the most specific wins, among those with the port
        ("www.example.com:443", "default", None, ("*.example.com", 443)),
        ("a.b.example.com", "default", 80, ("*.example.com", 80)),
        ("x.eu.example.com:443", "default", None, ("*.eu.example.com", 443)),
        ("x.eu.example.com:80", "default", None, ("*.example.com", 80)),
        ("example.com:443", "default", None, None),
        ("api.example.com:8443", "default", None, None),
        # VIPs of the entry (a /32 is an address), IPv6 in brackets
        ("10.1.2.3:5432", "default", None, ("db.corp.net", 5432)),
        ("[2001:DB8:0::7]:5432", "default", None, ("db.corp.net", 5432)),
        ("10.1.2.4:5432", "default", None, None),
        # same host in two namespaces: the caller's own wins, else the oldest
        ("shared.example.org", "team-a", 80, ("shared.example.org", 80)),
        ("shared.example.org", "team-b", 80, ("shared.example.org", 80)),
        # unknown and malformed
        ("unknown", "default", 80, None),
        ("unknown.default.svc.cluster.local", "default", 80, None),
        ("backend:http", "default", None, None),
        ("backend:0", "default", None, None),
        ("", "default", 80, None),
        ("[::1", "default", 80, None),
        ("a..b", "default", 80, None),
    ],
)
def test_lookup(
    mesh: Registry,
    authority: str,
    caller: str,
    default_port: int | None,
    expected: tuple[str, int] | None,
) -> None:
    found = mesh.lookup(authority, caller_namespace=caller, default_port=default_port)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.service.hostname, found.port.number) == expected


def test_same_host_in_several_namespaces_prefers_the_callers_then_the_oldest(
    mesh: Registry,
) -> None:
    def owner(caller: str) -> str:
        found = mesh.lookup("shared.example.org:80", caller_namespace=caller)
        assert found is not None
        return found.service.namespace

    assert owner("team-a") == "team-a"
    assert owner("team-b") == "team-b"
    assert owner("elsewhere") == "team-b"  # older creationTimestamp


def test_lookup_returns_the_service_port_and_is_memoized(mesh: Registry) -> None:
    first = mesh.lookup("backend:9090", caller_namespace="default")
    assert first is not None
    service, port = first
    assert port == Port(9090, "grpc", Protocol.GRPC)
    assert mesh.lookup("backend:9090", caller_namespace="default") is first
    assert [e.address for e in mesh.endpoints(service, port)] == ["10.0.0.1"]


def test_partial_wildcards_match_as_envoy_suffixes() -> None:
    """Validation rejects them, but a registry built in code still matches them sanely."""
    http = (Port(80, "http", Protocol.HTTP),)
    reg = Registry(
        [
            Service("*-internal.corp.net", "default", http),
            Service("*.corp.net", "default", http),
            Service("*.internal.corp.net", "default", http),
        ],
        {},
    )

    def host(authority: str) -> str | None:
        found = reg.lookup(authority, caller_namespace="default", default_port=80)
        return found.service.hostname if found else None

    assert host("billing-internal.corp.net") == "*-internal.corp.net"
    assert host("a.corp.net") == "*.corp.net"
    assert host("a.internal.corp.net") == "*.internal.corp.net"
    assert host("-internal.corp.net") == "*.corp.net"  # '*' matches at least one character


def test_lookup_cache_is_bounded(mesh: Registry) -> None:
    for i in range(10_000):
        mesh.lookup(f"h{i}.example.net", caller_namespace="default")
    assert len(mesh._cache) <= 8192
    assert mesh.lookup("backend:8080", caller_namespace="default") is not None


# -- scale ----------------------------------------------------------------------------


def _service_entries(n: int, per: int) -> list[Resource[ServiceEntrySpec]]:
    out = []
    for i in range(n):
        ns = f"ns{i % 10}"
        endpoints = tuple(
            WorkloadEntrySpec(
                address=f"10.{i // 250}.{i % 250}.{j}",
                labels=MappingProxyType({"app": f"svc{i}", "version": f"v{j % 2}"}),
                service_account=f"svc{i}",
                locality="us-east1/us-east1-b",
            )
            for j in range(per)
        )
        spec = ServiceEntrySpec(
            hosts=(f"svc{i}.{ns}.svc.cluster.local",),
            ports=(ServicePort(number=8080, name="http", protocol="HTTP", target_port=9080),),
            location=Location.MESH_INTERNAL,
            resolution=Resolution.STATIC,
            endpoints=endpoints,
        )
        out.append(
            Resource("ServiceEntry", "networking.istio.io/v1", Metadata(f"svc{i}", ns), spec)
        )
    return out


def test_builds_1000_services_with_10_endpoints_each_quickly() -> None:
    entries = _service_entries(1000, 10)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        reg = Registry.build(entries)
        timings.append(time.perf_counter() - start)
    assert len(reg) == 1000
    svc = reg.lookup("svc7.ns7:8080", caller_namespace="ns0")
    assert svc is not None and len(reg.endpoints(*svc)) == 10
    assert reg.endpoints(*svc)[3].port == 9080
    assert min(timings) < 0.3, f"build took {min(timings):.3f}s"
