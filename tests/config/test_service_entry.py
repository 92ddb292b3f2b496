"""ServiceEntry and WorkloadEntry: what Istio accepts, refuses and warns about.

Rules come from istio/istio ``pkg/config/validation/validation.go``
(``ValidateServiceEntry``, ``validateWorkloadEntry``, ``validateExportTo``),
``pkg/config/validation/agent/validation.go`` and the CRD schema generated
from the istio/api protos ("(CRD)" below: the Kubernetes API server refuses
these before Istio's webhook sees them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inmesh.config.resources.service_entry import (
    Location,
    Protocol,
    Resolution,
    ServiceEntrySpec,
    WorkloadEntrySpec,
)
from inmesh.errors import Severity

from .helpers import assert_invalid, assert_valid, load_spec

SE = "ServiceEntry"
WE = "WorkloadEntry"
HTTP = "ports: [{number: 80, name: http, protocol: HTTP}]"
TCP = "ports: [{number: 5432, name: tcp, protocol: TCP}]"


def _many(item: str, count: int) -> str:
    return "[" + ", ".join(item.format(i=i, a=i // 250, b=i % 250 + 1) for i in range(count)) + "]"


# ---------------------------------------------------------------------------
# Refused: (kind, spec, field path of an error)

INVALID: list[Any] = [
    # -- hosts
    pytest.param(SE, "ports: [{number: 80, name: http, protocol: HTTP}]", "spec.hosts",
                 id="se-hosts-missing"),
    pytest.param(SE, "hosts: []\nports: [{number: 80, name: http}]", "spec.hosts",
                 id="se-hosts-empty"),
    # "*" alone is refused (validation.go and CRD rule "hostname cannot be wildcard")
    pytest.param(SE, "hosts: ['*']\n" + HTTP,
                 "spec.hosts[0]", id="se-host-bare-wildcard"),
    pytest.param(SE, "hosts: [bad_host.example.com]\n" + HTTP,
                 "spec.hosts[0]", id="se-host-underscore"),
    pytest.param(SE, "hosts: [api.*.example.com]\n" + HTTP,
                 "spec.hosts[0]", id="se-host-wildcard-in-middle"),
    # ValidateDNS1123Labels: the last label may not be all digits, so an IP is not a host
    pytest.param(SE, "hosts: [10.0.0.1]\n" + HTTP,
                 "spec.hosts[0]", id="se-host-is-an-ip"),
    pytest.param(SE, f"hosts: [{'a' * 64}.example.com]\n{HTTP}",
                 "spec.hosts[0]", id="se-host-label-too-long"),
    pytest.param(SE, "hosts: [api..example.com]\n" + HTTP,
                 "spec.hosts[0]", id="se-host-empty-label"),
    pytest.param(SE, f"hosts: {_many('h{i}.example.com', 257)}\n{HTTP}\nresolution: NONE",
                 "spec.hosts", id="se-hosts-over-256-crd"),
    # -- addresses (agent.ValidateIPSubnet, netip semantics)
    pytest.param(SE, "hosts: [db.example.com]\naddresses: [db.internal]\n" + TCP,
                 "spec.addresses[0]", id="se-address-hostname"),
    pytest.param(SE, "hosts: [db.example.com]\naddresses: [10.0.0.0/33]\n" + TCP,
                 "spec.addresses[0]", id="se-address-prefix-too-long"),
    pytest.param(SE, "hosts: [db.example.com]\naddresses: [010.0.0.1]\n" + TCP,
                 "spec.addresses[0]", id="se-address-ipv4-leading-zero"),
    pytest.param(SE, "hosts: [db.example.com]\naddresses: [10.0.0.0/08]\n" + TCP,
                 "spec.addresses[0]", id="se-address-prefix-leading-zero"),
    pytest.param(SE, "hosts: [db.example.com]\naddresses: [10.0.0.0/8/8]\n" + TCP,
                 "spec.addresses[0]", id="se-address-two-slashes"),
    # CIDR addresses only with NONE/STATIC (validation.go and a CRD CEL rule)
    pytest.param(SE, """
        hosts: [db.example.com]
        addresses: [10.0.0.0/24]
        resolution: DNS
        ports: [{number: 5432, name: tcp, protocol: TCP}]
        """, "spec.addresses[0]", id="se-cidr-with-dns"),
    # -- ports
    pytest.param(SE, "hosts: [a.io]\nports: [{number: 80, name: a}, {number: 80, name: b}]",
                 "spec.ports[1].number", id="se-port-number-duplicate"),
    pytest.param(SE, "hosts: [a.io]\nports: [{number: 80, name: a}, {number: 81, name: a}]",
                 "spec.ports[1].name", id="se-port-name-duplicate"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: http_web}]",
                 "spec.ports[0].name", id="se-port-name-underscore"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: '', protocol: HTTP}]",
                 "spec.ports[0].name", id="se-port-name-empty"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, protocol: HTTP}]",
                 "spec.ports[0].name", id="se-port-name-missing"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{name: http, protocol: HTTP}]",
                 "spec.ports[0].number", id="se-port-number-missing"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 0, name: http, protocol: HTTP}]",
                 "spec.ports[0].number", id="se-port-number-zero"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 70000, name: http, protocol: HTTP}]",
                 "spec.ports[0].number", id="se-port-number-too-big"),
    # validation.go skips targetPort 0 as "unset"; the CRD rule 0 < self <= 65535 refuses it
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP, targetPort: 0}]",
                 "spec.ports[0].targetPort", id="se-target-port-zero-crd"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP, targetPort: 65536}]",
                 "spec.ports[0].targetPort", id="se-target-port-too-big"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP3}]",
                 "spec.ports[0].protocol", id="se-protocol-unknown"),
    # protocol.Parse has no HBONE: it is internal to Istio
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: h, protocol: HBONE}]",
                 "spec.ports[0].protocol", id="se-protocol-hbone"),
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 80, name: http, targetport: 8080}]",
                 "spec.ports[0].targetport", id="se-port-field-typo"),
    # -- enums
    pytest.param(SE, "hosts: [a.example.com]\nlocation: INTERNAL\n" + HTTP,
                 "spec.location", id="se-location-unknown"),
    pytest.param(SE, "hosts: [a.example.com]\nresolution: DNS_RR\n" + HTTP,
                 "spec.resolution", id="se-resolution-unknown"),
    # -- endpoints and workloadSelector
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 10.0.0.1}]
        workloadSelector: {labels: {app: a}}
        """, "spec.workloadSelector", id="se-endpoints-and-selector"),
    pytest.param(SE, """
        hosts: [a.example.com]
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 10.0.0.1}]
        """, "spec.endpoints", id="se-none-with-endpoints"),
    pytest.param(SE, f"""
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{{number: 80, name: http, protocol: HTTP}}]
        endpoints: {_many('{{address: 10.0.{a}.{b}}}', 4097)}
        """, "spec.endpoints", id="se-endpoints-over-4096-crd"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        workloadSelector: {labels: {app: '*'}}
        """, "spec.workloadSelector.labels.app", id="se-selector-wildcard"),
    # -- STATIC endpoints (validateWorkloadEntry without FQDNs)
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: a-1.example.com}]
        """, "spec.endpoints[0].address", id="se-static-endpoint-hostname"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints:
        - address: 10.0.0.1
        - address: 10.0.0.2
          ports: {grpc: 9090}
        """, "spec.endpoints[1].ports.grpc", id="se-endpoint-port-not-declared"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 10.0.0.1, ports: {http: 0}}]
        """, "spec.endpoints[0].ports.http", id="se-endpoint-port-zero"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 'unix://var/run/a.sock'}]
        """, "spec.endpoints[0].address", id="se-unix-relative"),
    # CRD: "UDS may not include ports"; validation.go: "unix endpoint must not include ports"
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 'unix:///var/run/a.sock', ports: {http: 8080}}]
        """, "spec.endpoints[0].ports", id="se-unix-with-ports"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: admin, protocol: HTTP}]
        endpoints: [{address: 'unix:///var/run/a.sock'}]
        """, "spec.endpoints[0].address", id="se-unix-needs-one-port"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{labels: {app: a}}]
        """, "spec.endpoints[0].address", id="se-endpoint-no-address"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 10.0.0.1, labels: {version: -v1}}]
        """, "spec.endpoints[0].labels.version", id="se-endpoint-label-value"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 10.0.0.1, weight: -1}]
        """, "spec.endpoints[0].weight", id="se-endpoint-weight-negative"),
    # CRD: endpoint port names must be shorter than 63 characters
    pytest.param(SE, f"""
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{{number: 80, name: {'p' * 63}, protocol: HTTP}}]
        endpoints: [{{address: 10.0.0.1, ports: {{{'p' * 63}: 8080}}}}]
        """, f"spec.endpoints[0].ports.{'p' * 63}", id="se-endpoint-port-name-63-crd"),
    # -- DNS and DNS_ROUND_ROBIN
    # no endpoints: the hosts themselves are resolved, so they must be FQDNs (no wildcard)
    pytest.param(SE, """
        hosts: ['*.example.com']
        resolution: DNS
        ports: [{number: 443, name: tls, protocol: TLS}]
        """, "spec.hosts[0]", id="se-dns-wildcard-host"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: DNS
        ports: [{number: 443, name: tls, protocol: TLS}]
        endpoints: [{address: bad_name.example.com}]
        """, "spec.endpoints[0].address", id="se-dns-endpoint-bad-name"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 'unix:///var/run/a.sock'}]
        """, "spec.endpoints[0].address", id="se-dns-endpoint-unix"),
    # only `network` set: fine for STATIC (a warning), but ValidateFQDN("") fails for DNS
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{network: net-2}]
        """, "spec.endpoints[0].address", id="se-dns-endpoint-network-only"),
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: DNS_ROUND_ROBIN
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: a1.example.com}, {address: a2.example.com}]
        """, "spec.endpoints", id="se-dns-round-robin-two-endpoints"),
    # -- DYNAMIC_DNS
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: DYNAMIC_DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, "spec.hosts[0]", id="se-dynamic-dns-not-wildcard"),
    pytest.param(SE, """
        hosts: ['*.example.com']
        resolution: DYNAMIC_DNS
        addresses: [10.0.0.1]
        ports: [{number: 80, name: http, protocol: HTTP}]
        """, "spec.addresses", id="se-dynamic-dns-addresses"),
    pytest.param(SE, """
        hosts: ['*.example.com']
        resolution: DYNAMIC_DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 10.0.0.1}]
        """, "spec.endpoints", id="se-dynamic-dns-endpoints"),
    pytest.param(SE, """
        hosts: ['*.example.com']
        resolution: DYNAMIC_DNS
        ports: [{number: 5432, name: pg, protocol: TCP}]
        """, "spec.ports[0].protocol", id="se-dynamic-dns-tcp"),
    # only HTTP, TLS, GRPC and HTTP2: HTTPS is not in validation.go's list
    pytest.param(SE, """
        hosts: ['*.example.com']
        resolution: DYNAMIC_DNS
        ports: [{number: 443, name: https, protocol: HTTPS}]
        """, "spec.ports[0].protocol", id="se-dynamic-dns-https"),
    # -- several hosts need HTTP (Host header) or TLS (SNI) ports unless resolution is NONE
    pytest.param(SE, """
        hosts: [a.example.com, b.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}, {number: 5432, name: pg, protocol: TCP}]
        endpoints: [{address: 10.0.0.1}]
        """, "spec.ports[1].protocol", id="se-multi-host-tcp"),
    # an unset protocol counts as "not HTTP" (protocol.Parse("") is Unsupported)
    pytest.param(SE, """
        hosts: [a.example.com, b.example.com]
        resolution: DNS
        ports: [{number: 80, name: web}]
        """, "spec.ports[0]", id="se-multi-host-unset-protocol"),
    # -- exportTo (validateExportTo with isServiceEntry=true)
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: [foo_bar]",
                 "spec.exportTo[0]", id="se-export-to-bad-name"),
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: ['*', ns1]",
                 "spec.exportTo", id="se-export-to-star-and-more"),
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: ['~', '.']",
                 "spec.exportTo", id="se-export-to-none-and-more"),
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: ['.', default]",
                 "spec.exportTo[1]", id="se-export-to-dot-and-own-namespace"),
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: [ns1, ns1]",
                 "spec.exportTo[1]", id="se-export-to-duplicate"),
    # -- WorkloadEntry (ValidateWorkloadEntry: FQDN addresses allowed, no service ports)
    pytest.param(WE, "labels: {app: a}", "spec.address", id="we-no-address-no-network"),
    pytest.param(WE, "address: 'not an address'", "spec.address", id="we-address-garbage"),
    pytest.param(WE, "address: vm.example.123", "spec.address", id="we-address-numeric-tld"),
    pytest.param(WE, "address: 'unix://run/a.sock'", "spec.address", id="we-unix-relative"),
    # CRD: "UDS may not be a dir"
    pytest.param(WE, "address: 'unix:///var/run/'", "spec.address", id="we-unix-directory"),
    pytest.param(WE, "address: 'unix:///var/run/a.sock'\nports: {http: 8080}", "spec.ports",
                 id="we-unix-with-ports"),
    pytest.param(WE, f"address: 'unix:///{'d' * 260}'", "spec.address",
                 id="we-address-too-long-crd"),
    pytest.param(WE, "address: 10.0.0.1\nports: {http_1: 8080}", "spec.ports.http_1",
                 id="we-port-name-underscore"),
    pytest.param(WE, "address: 10.0.0.1\nports: {http: 0}", "spec.ports.http", id="we-port-zero"),
    pytest.param(WE, "address: 10.0.0.1\nports: {http: 65536}", "spec.ports.http",
                 id="we-port-too-big"),
    pytest.param(WE, "address: 10.0.0.1\nports: {http: eighty}", "spec.ports.http",
                 id="we-port-not-a-number"),
    pytest.param(WE, "address: 10.0.0.1\nlabels: {'a/b/c': x}", "spec.labels['a/b/c']",
                 id="we-label-key-two-slashes"),
    pytest.param(WE, f"address: 10.0.0.1\nlabels: {{{'k' * 64}: x}}", f"spec.labels.{'k' * 64}",
                 id="we-label-key-name-too-long"),
    pytest.param(WE, "address: 10.0.0.1\nlabels: {version: 'v1 beta'}", "spec.labels.version",
                 id="we-label-value-space"),
    pytest.param(WE, "address: 10.0.0.1\nlabels: {version: 1}", "spec.labels.version",
                 id="we-label-value-not-string"),
    pytest.param(WE, f"address: 10.0.0.1\nweight: {2**32}", "spec.weight",
                 id="we-weight-over-uint32"),
    pytest.param(WE, f"address: 10.0.0.1\nserviceAccount: {'s' * 254}", "spec.serviceAccount",
                 id="we-service-account-too-long-crd"),
    pytest.param(WE, f"address: 10.0.0.1\nlocality: {'r' * 2049}", "spec.locality",
                 id="we-locality-too-long-crd"),
    pytest.param(WE, "address: 10.0.0.1\naddresses: [10.0.0.2]", "spec.addresses",
                 id="we-unknown-field"),
]


@pytest.mark.parametrize(("kind", "spec", "path"), INVALID)
def test_refused(kind: str, spec: str, path: str) -> None:
    errors = assert_invalid(kind, spec, path)
    for e in errors:
        assert e.message, e


def test_dynamic_dns_mesh_internal_with_waypoint_is_refused() -> None:
    # validation.go: MESH_INTERNAL + DYNAMIC_DNS is not supported when istio.io/use-waypoint is set
    assert_invalid(
        SE,
        """
        hosts: ['*.example.com']
        location: MESH_INTERNAL
        resolution: DYNAMIC_DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        """,
        "spec.location",
        metadata_extra="labels: {istio.io/use-waypoint: waypoint}",
    )


def test_enough_cases() -> None:
    assert len(INVALID) >= 35
    assert len(VALID) >= 14


# ---------------------------------------------------------------------------
# Accepted: (kind, spec, check of the typed result)

Check = Callable[[Any], None]


def _se_external_api(s: ServiceEntrySpec) -> None:
    assert s.hosts == ("api.example.com",)
    assert s.location is Location.MESH_EXTERNAL
    assert s.resolution is Resolution.DNS
    (port,) = s.ports
    assert port.number == 443 and isinstance(port.number, int)
    assert port.parsed_protocol is Protocol.TLS


def _se_selector(s: ServiceEntrySpec) -> None:
    assert s.location is Location.MESH_INTERNAL
    assert s.resolution is Resolution.STATIC
    assert s.workload_selector is not None
    assert dict(s.workload_selector.labels) == {"app": "backend"}
    assert s.ports[0].target_port == 9080


def _se_static(s: ServiceEntrySpec) -> None:
    first, second = s.endpoints
    assert first.address == "10.0.0.1"
    assert dict(first.ports) == {"http": 18080}
    assert first.weight == 3 and first.locality == "us-east1/us-east1-b"
    assert first.service_account == "backend-sa"
    assert second.network == "net-1" and second.weight == 0


def _se_dns_endpoints(s: ServiceEntrySpec) -> None:
    assert [e.address for e in s.endpoints] == ["db-1.example.com", "10.1.2.3"]
    assert s.ports[0].parsed_protocol is Protocol.TCP


def _se_dynamic(s: ServiceEntrySpec) -> None:
    assert s.resolution is Resolution.DYNAMIC_DNS
    assert [p.parsed_protocol for p in s.ports] == [
        Protocol.HTTP, Protocol.TLS, Protocol.GRPC, Protocol.HTTP2,
    ]


def _se_unix(s: ServiceEntrySpec) -> None:
    assert s.endpoints[0].is_unix
    assert not s.endpoints[0].ports


def _se_numeric_enums(s: ServiceEntrySpec) -> None:
    # protojson accepts enum numbers: MESH_INTERNAL = 1, DNS = 2
    assert s.location is Location.MESH_INTERNAL
    assert s.resolution is Resolution.DNS
    assert s.ports[0].number == 8080  # a quoted number reads as an integer


def _se_protocols(s: ServiceEntrySpec) -> None:
    # protocol.Parse is case-insensitive and knows more than the proto comment lists
    assert [p.parsed_protocol for p in s.ports] == [
        Protocol.GRPC_WEB, Protocol.HTTP_PROXY, Protocol.UDP, Protocol.MONGO,
        Protocol.REDIS, Protocol.MYSQL, Protocol.HTTPS,
    ]
    assert s.ports[0].protocol == "grpc-web"  # kept as written


def _se_export(s: ServiceEntrySpec) -> None:
    assert s.export_to == (".", "other-ns")


def _we_full(s: WorkloadEntrySpec) -> None:
    assert s.address == "10.0.0.7"
    assert dict(s.ports) == {"http": 8080, "grpc": 9090}
    assert all(isinstance(v, int) for v in s.ports.values())
    assert s.labels["app.kubernetes.io/name"] == "backend"
    assert s.weight == 5


VALID: list[Any] = [
    pytest.param(SE, """
        hosts: [api.example.com]
        location: MESH_EXTERNAL
        resolution: DNS
        ports: [{number: 443, name: https, protocol: TLS}]
        """, _se_external_api, id="se-external-api-dns"),
    pytest.param(SE, """
        hosts: [backend.default.svc.cluster.local]
        location: MESH_INTERNAL
        resolution: STATIC
        ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 9080}]
        workloadSelector: {labels: {app: backend}}
        """, _se_selector, id="se-internal-workload-selector"),
    pytest.param(SE, """
        hosts: [backend.default.svc.cluster.local]
        location: MESH_INTERNAL
        resolution: STATIC
        ports: [{number: 8080, name: http, protocol: HTTP}]
        endpoints:
        - address: 10.0.0.1
          ports: {http: 18080}
          labels: {app: backend, version: v1}
          weight: 3
          locality: us-east1/us-east1-b
          serviceAccount: backend-sa
        - address: 10.0.0.2
          network: net-1
          weight: 0
        subjectAltNames: [spiffe://cluster.local/ns/default/sa/backend-sa]
        """, _se_static, id="se-static-endpoints"),
    pytest.param(SE, """
        hosts: [db.example.com]
        resolution: DNS
        addresses: [192.0.2.10]
        ports: [{number: 5432, name: pg, protocol: TCP}]
        endpoints: [{address: db-1.example.com}, {address: 10.1.2.3}]
        """, _se_dns_endpoints, id="se-dns-endpoints-fqdn-and-ip"),
    pytest.param(SE, """
        hosts: [cdn.example.com]
        resolution: DNS_ROUND_ROBIN
        ports: [{number: 443, name: tls, protocol: TLS}]
        endpoints: [{address: edge.cdn.example.net}]
        """, None, id="se-dns-round-robin-one-endpoint"),
    pytest.param(SE, """
        hosts: ['*.example.com', '*.example.org']
        resolution: DYNAMIC_DNS
        ports:
        - {number: 80, name: http, protocol: HTTP}
        - {number: 443, name: tls, protocol: TLS}
        - {number: 9090, name: grpc, protocol: GRPC}
        - {number: 8443, name: h2, protocol: HTTP2}
        """, _se_dynamic, id="se-dynamic-dns-wildcards"),
    # several hosts and a TCP port are fine with NONE; so are CIDR addresses
    pytest.param(SE, """
        hosts: [a.example.com, '*.b.example.com']
        addresses: [10.0.0.0/16, 2001:db8::/32]
        ports: [{number: 5432, name: pg, protocol: TCP}]
        """, None, id="se-none-multi-host-cidr"),
    pytest.param(SE, """
        hosts: [local.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 'unix:///var/run/app.sock'}]
        """, _se_unix, id="se-static-unix-socket"),
    pytest.param(SE, """
        hosts: [local.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: 'unix://@abstract-sock'}]
        """, None, id="se-static-abstract-socket"),
    pytest.param(SE, """
        hosts: [a.example.com, b.example.com]
        resolution: DNS
        ports:
        - {number: 80, name: http, protocol: HTTP}
        - {number: 443, name: https, protocol: HTTPS}
        """, None, id="se-dns-multi-host-http-and-tls"),
    pytest.param(SE, """
        hosts: [v6.example.com]
        resolution: STATIC
        addresses: ['2001:db8::10']
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: '2001:db8::1'}, {address: 'fe80::1%eth0'}]
        """, None, id="se-ipv6"),
    # Istio's DNS-1123 checks accept upper case; protocols are case-insensitive
    pytest.param(SE, """
        hosts: [API.Example.COM, example.org.]
        resolution: DNS
        ports: [{number: 80, name: HTTP, protocol: http}]
        """, None, id="se-upper-case-and-trailing-dot"),
    pytest.param(SE, """
        hosts: [internal.example.com]
        location: 1
        resolution: 2
        ports: [{number: '8080', name: http, protocol: HTTP}]
        """, _se_numeric_enums, id="se-numeric-enums"),
    pytest.param(SE, """
        hosts: [a.example.com]
        addresses: [10.9.0.1]
        ports:
        - {number: 1, name: gw, protocol: grpc-web}
        - {number: 2, name: proxy, protocol: HTTP_PROXY}
        - {number: 3, name: dns, protocol: UDP}
        - {number: 4, name: mongo, protocol: Mongo}
        - {number: 5, name: redis, protocol: REDIS}
        - {number: 6, name: mysql, protocol: mysql}
        - {number: 65535, name: https, protocol: HTTPS, targetPort: 65535}
        """, _se_protocols, id="se-all-protocols"),
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: [., other-ns]",
                 _se_export, id="se-export-to-dot-and-namespace"),
    # '~' (visible to no one) is allowed for ServiceEntries only
    pytest.param(SE, "hosts: [a.example.com]\n" + HTTP + "\nexportTo: ['~']",
                 None, id="se-export-to-none"),
    # a single-label endpoint name passes ValidateFQDN
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints: [{address: backend, ports: {http: 8080}}]
        """, None, id="se-dns-endpoint-single-label"),
    pytest.param(WE, """
        address: 10.0.0.7
        ports: {http: 8080, grpc: 9090}
        labels: {app.kubernetes.io/name: backend, version: v1, empty: ''}
        weight: 5
        locality: us-east1/us-east1-b/rack-1
        serviceAccount: backend
        """, _we_full, id="we-full"),
    pytest.param(WE, "address: vm-1.example.com", None, id="we-hostname"),
    pytest.param(WE, "address: 'unix:///var/run/app.sock'", None, id="we-unix"),
    # only `network`: accepted with a warning ("address is unset with network")
    pytest.param(WE, "network: net-2\nlabels: {app: a}", None, id="we-network-only"),
    # label values have no length limit in Istio's labels.Instance.Validate
    pytest.param(WE, f"address: 10.0.0.8\nlabels: {{note: {'x' * 100}}}", None,
                 id="we-long-label-value"),
]


@pytest.mark.parametrize(("kind", "spec", "check"), VALID)
def test_accepted(kind: str, spec: str, check: Check | None) -> None:
    result = assert_valid(kind, spec)
    if check is not None:
        check(result.resources[0].spec)


# ---------------------------------------------------------------------------
# Warnings: accepted, with a hint at a path

WARNINGS: list[Any] = [
    # inmesh hint: short ServiceEntry hosts are not expanded like VirtualService hosts
    pytest.param(SE, "hosts: [backend]\nresolution: DNS\n" + HTTP,
                 "spec.hosts[0]", "backend.default.svc.cluster.local", id="short-host"),
    # Istio: ValidatePartialWildCard, wrapped as a warning
    pytest.param(SE, "hosts: ['*foo.example.com']\n" + HTTP,
                 "spec.hosts[0]", "partial wildcard", id="partial-wildcard"),
    # Istio: TCP/unset ports without addresses when no address is auto-allocated (NONE)
    pytest.param(SE, "hosts: [a.example.com]\nports: [{number: 5432, name: pg, protocol: TCP}]",
                 "spec.ports[0].protocol", "no addresses", id="tcp-without-addresses"),
    pytest.param(SE, """
        hosts: [a.example.com]
        ports: [{number: 80, name: http, protocol: HTTP}]
        workloadSelector: {labels: {app: a}}
        """, "spec.workloadSelector", "no effect", id="selector-with-none"),
    pytest.param(SE, """
        hosts: [a.example.com]
        location: MESH_INTERNAL
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        workloadSelector: {}
        """, "spec.workloadSelector", "every workload", id="selector-without-labels"),
    # inmesh hint: the API documents workloadSelector for MESH_INTERNAL only
    pytest.param(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        workloadSelector: {labels: {app: a}}
        """, "spec.workloadSelector", "MESH_INTERNAL", id="selector-mesh-external"),
    pytest.param(SE, """
        hosts: [a.example.com, b.example.com]
        resolution: DNS
        addresses: [192.0.2.1]
        ports: [{number: 443, name: tls, protocol: TLS}]
        """, "spec.hosts", "cannot tell the hosts apart", id="dns-addresses-multi-host-tls"),
    pytest.param(SE, "hosts: [a.example.com]\nresolution: STATIC\n" + HTTP,
                 "spec.resolution", "no endpoints", id="static-without-endpoints"),
    pytest.param(WE, "network: net-2", "spec.address", "net-2", id="we-network-only"),
    pytest.param(WE, "address: 10.0.0.1\nserviceAccount: Backend_SA", "spec.serviceAccount",
                 "service account name", id="we-service-account-not-k8s"),
]


@pytest.mark.parametrize(("kind", "spec", "path", "text"), WARNINGS)
def test_warned(kind: str, spec: str, path: str, text: str) -> None:
    result = assert_valid(kind, spec)
    hits = [w for w in result.warnings if w.path == path and text in w.message + w.fix]
    assert hits, "; ".join(str(w) for w in result.warnings) or "no warnings"
    assert all(w.fix and w.line > 0 for w in hits)


def test_clean_entries_have_no_warnings() -> None:
    # DNS + TCP without addresses: Istio auto-allocates an address, so no warning
    result = assert_valid(SE, """
        hosts: [db.example.com]
        resolution: DNS
        ports: [{number: 5432, name: pg, protocol: TCP}]
        """)
    assert not result.warnings, [str(w) for w in result.warnings]


def test_opting_out_of_auto_allocation_brings_the_tcp_warning_back() -> None:
    spec = """
        hosts: [db.example.com]
        resolution: DNS
        ports: [{number: 5432, name: pg, protocol: TCP}]
        """
    result = assert_valid(
        SE, spec, metadata_extra="labels: {networking.istio.io/enable-autoallocate-ip: 'false'}"
    )
    assert [w.path for w in result.warnings] == ["spec.ports[0].protocol"]


def test_error_names_the_field_and_the_fix() -> None:
    result = load_spec(SE, """
        hosts: [a.example.com]
        resolution: STATIC
        ports: [{number: 80, name: http, protocol: HTTP}]
        endpoints:
        - address: 10.0.0.1
        - address: 10.0.0.2
        - address: 10.0.0.3
          ports: {grpc: 9090}
        """)
    (err,) = result.errors
    assert err.severity is Severity.ERROR
    assert err.path == "spec.endpoints[2].ports.grpc"
    assert "'grpc'" in err.message and "'http'" in err.fix
    assert err.line == 14  # the line of `ports: {grpc: 9090}` in the full document


def test_partial_wildcard_is_fine_for_dynamic_dns() -> None:
    result = assert_valid(SE, """
        hosts: ['*foo.example.com']
        resolution: DYNAMIC_DNS
        ports: [{number: 80, name: http, protocol: HTTP}]
        """)
    assert not result.warnings


def test_protocol_parse() -> None:
    assert Protocol.parse("grpc-WEB") is Protocol.GRPC_WEB
    assert Protocol.parse("") is None
    assert Protocol.parse("HBONE") is None
    assert Protocol.HTTPS.is_tls and Protocol.HTTPS.is_tcp and not Protocol.HTTPS.is_http
    assert Protocol.GRPC.is_http and not Protocol.UDP.is_tcp
