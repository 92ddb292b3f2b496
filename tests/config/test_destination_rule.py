"""DestinationRule: what Istio accepts, refuses and warns about.

Rules come from istio/istio ``pkg/config/validation/validation.go``
(``ValidateDestinationRule``, ``validateTrafficPolicy``,
``validateConnectionPool``, ``validateLoadBalancer``,
``validateOutlierDetection``, ``validatePortTrafficPolicies``,
``validateTunnelSettings``, ``validateExportTo``, ``validateWorkloadSelector``),
``pkg/config/validation/agent/validation.go`` (``ValidateDuration``,
``ValidateTLS``, ``ValidateLocalityLbSetting``, ``ValidateZoneAwareLbSetting``,
``ValidateWildcardDomain``) and the CRD schema generated from istio/api
``networking/v1alpha3/destination_rule.proto`` ("(CRD)" below: the Kubernetes
API server refuses these before Istio's webhook sees them).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from inmesh.config.dump import resource_to_data
from inmesh.config.load import load_paths, load_text
from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import (
    DestinationRuleSpec,
    H2UpgradePolicy,
    ProxyProtocolVersion,
    SimpleLB,
    TLSMode,
)
from inmesh.errors import Severity

from .helpers import assert_invalid, assert_valid, load_spec

DR = "DestinationRule"
TP = "spec.trafficPolicy"
LB = "spec.trafficPolicy.loadBalancer"
CP = "spec.trafficPolicy.connectionPool"
OD = "spec.trafficPolicy.outlierDetection"
TLS = "spec.trafficPolicy.tls"
LOC = "spec.trafficPolicy.loadBalancer.localityLbSetting"
OUTLIER = "outlierDetection: {consecutive5xxErrors: 5}"


def _tp(*bodies: str, host: str = "reviews") -> str:
    """A spec with ``host`` and the YAML ``bodies`` (each dedented) under trafficPolicy."""
    text = "\n".join(textwrap.dedent(b).strip("\n") for b in bodies)
    return f"host: {host}\ntrafficPolicy:\n{textwrap.indent(text, '  ')}\n"


# ---------------------------------------------------------------------------
# Refused: (spec, field path of an error)

INVALID: list[Any] = [
    # -- host (CRD required; agent.ValidateWildcardDomain)
    pytest.param("subsets: [{name: v1}]", "spec.host", id="host-missing"),
    pytest.param("host: ''", "spec.host", id="host-empty"),
    pytest.param("host: 'reviews.*.svc'", "spec.host", id="host-wildcard-in-middle"),
    # ValidateDNS1123Labels: the last label may not be all digits, so an IP is not a host
    pytest.param("host: 10.0.0.1", "spec.host", id="host-is-an-ip"),
    pytest.param("host: bad_name.example.com", "spec.host", id="host-underscore"),
    pytest.param(f"host: {'a' * 64}.example.com", "spec.host", id="host-label-too-long"),
    # -- traffic policy: "traffic policy must have at least one field"
    pytest.param("host: reviews\ntrafficPolicy: {}", TP, id="traffic-policy-empty"),
    pytest.param("host: reviews\ntrafficPolicy: {loadBalancer: null}", TP,
                 id="traffic-policy-only-null"),
    pytest.param("host: reviews\nsubsets: [{name: v1, trafficPolicy: {}}]",
                 "spec.subsets[0].trafficPolicy", id="subset-traffic-policy-empty"),
    # "tunnel and proxyProtocol must not be set together"
    pytest.param(_tp("""
        tunnel: {targetHost: proxy.example.com, targetPort: 3128}
        proxyProtocol: {version: V2}
        """), f"{TP}.proxyProtocol", id="tunnel-with-proxy-protocol"),
    pytest.param("host: reviews\ntrafficPolicies: {}", "spec.trafficPolicies", id="unknown-field"),
    # -- connection pool: "connection pool must have at least one field"
    pytest.param(_tp("connectionPool: {}"), CP, id="connection-pool-empty"),
    pytest.param(_tp("connectionPool: {tcp: {maxConnections: -1}}"),
                 f"{CP}.tcp.maxConnections", id="max-connections-negative"),
    # (CRD) format int32
    pytest.param(_tp("connectionPool: {tcp: {maxConnections: 3000000000}}"),
                 f"{CP}.tcp.maxConnections", id="max-connections-over-int32"),
    pytest.param(_tp("connectionPool: {http: {http1MaxPendingRequests: -1}}"),
                 f"{CP}.http.http1MaxPendingRequests", id="pending-requests-negative"),
    pytest.param(_tp("connectionPool: {http: {http2MaxRequests: -5}}"),
                 f"{CP}.http.http2MaxRequests", id="max-requests-negative"),
    pytest.param(_tp("connectionPool: {http: {maxRequestsPerConnection: -1}}"),
                 f"{CP}.http.maxRequestsPerConnection", id="requests-per-connection-negative"),
    pytest.param(_tp("connectionPool: {http: {maxRetries: -1}}"),
                 f"{CP}.http.maxRetries", id="max-retries-negative"),
    pytest.param(_tp("connectionPool: {http: {maxConcurrentStreams: -1}}"),
                 f"{CP}.http.maxConcurrentStreams", id="concurrent-streams-negative"),
    # ValidateDuration: at least 1ms, whole milliseconds
    pytest.param(_tp("connectionPool: {tcp: {connectTimeout: 0s}}"),
                 f"{CP}.tcp.connectTimeout", id="connect-timeout-zero"),
    pytest.param(_tp("connectionPool: {tcp: {connectTimeout: 1500us}}"),
                 f"{CP}.tcp.connectTimeout", id="connect-timeout-sub-ms-precision"),
    pytest.param(_tp("connectionPool: {tcp: {connectTimeout: '10'}}"),
                 f"{CP}.tcp.connectTimeout", id="connect-timeout-no-unit"),
    pytest.param(_tp("connectionPool: {tcp: {maxConnectionDuration: 500us}}"),
                 f"{CP}.tcp.maxConnectionDuration", id="max-connection-duration-too-short"),
    # tcp.idleTimeout: 0s disables it, anything else must be a valid duration
    pytest.param(_tp("connectionPool: {tcp: {idleTimeout: -1s}}"),
                 f"{CP}.tcp.idleTimeout", id="tcp-idle-timeout-negative"),
    pytest.param(_tp("connectionPool: {http: {idleTimeout: 0s}}"),
                 f"{CP}.http.idleTimeout", id="http-idle-timeout-zero"),
    pytest.param(_tp("connectionPool: {tcp: {tcpKeepalive: {time: 0s}}}"),
                 f"{CP}.tcp.tcpKeepalive.time", id="keepalive-time-zero"),
    pytest.param(_tp("connectionPool: {tcp: {tcpKeepalive: {probes: -1}}}"),
                 f"{CP}.tcp.tcpKeepalive.probes", id="keepalive-probes-negative"),
    pytest.param(_tp("connectionPool: {http: {http2KeepAlive: {interval: 30s}}}"),
                 f"{CP}.http.http2KeepAlive.timeout", id="h2-keepalive-without-timeout"),
    pytest.param(_tp("connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}"),
                 f"{CP}.http.useClientProtocol", id="upgrade-with-client-protocol"),
    pytest.param(_tp("connectionPool: {http: {h2UpgradePolicy: ALWAYS}}"),
                 f"{CP}.http.h2UpgradePolicy", id="h2-upgrade-policy-unknown"),
    # -- outlier detection (ValidatePercent, ValidateDuration)
    pytest.param(_tp("outlierDetection: {maxEjectionPercent: 101}"),
                 f"{OD}.maxEjectionPercent", id="max-ejection-percent-over-100"),
    pytest.param(_tp("outlierDetection: {minHealthPercent: -1}"),
                 f"{OD}.minHealthPercent", id="min-health-percent-negative"),
    pytest.param(_tp("outlierDetection: {consecutiveLocalOriginFailures: 3}"),
                 f"{OD}.consecutiveLocalOriginFailures", id="local-origin-without-split"),
    pytest.param(_tp("outlierDetection: {interval: 0s}"), f"{OD}.interval", id="interval-zero"),
    pytest.param(_tp("outlierDetection: {baseEjectionTime: 100us}"),
                 f"{OD}.baseEjectionTime", id="base-ejection-time-too-short"),
    # (CRD) UInt32Value: minimum 0
    pytest.param(_tp("outlierDetection: {consecutive5xxErrors: -1}"),
                 f"{OD}.consecutive5xxErrors", id="consecutive-5xx-negative"),
    # (CRD) list items 100..599
    pytest.param(_tp("outlierDetection: {outlierDetectionHttpErrorCodes: [503, 600]}"),
                 f"{OD}.outlierDetectionHttpErrorCodes[1]", id="error-code-out-of-range"),
    # -- load balancer: oneofs (CRD oneOf)
    pytest.param(_tp("loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}"),
                 LB, id="lb-simple-and-consistent-hash"),
    pytest.param(_tp("loadBalancer: {simple: FASTEST}"), f"{LB}.simple", id="lb-simple-unknown"),
    pytest.param(_tp("loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}"),
                 f"{LB}.consistentHash", id="hash-two-keys"),
    pytest.param(_tp("""
        loadBalancer:
          consistentHash: {httpHeaderName: x-user, ringHash: {}, maglev: {tableSize: 65537}}
        """), f"{LB}.consistentHash", id="hash-ring-and-maglev"),
    # CRD required / "name required for HttpCookie"
    pytest.param(_tp("loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}"),
                 f"{LB}.consistentHash.httpCookie.name", id="cookie-name-missing"),
    pytest.param(_tp("loadBalancer: {consistentHash: {httpCookie: {name: ''}}}"),
                 f"{LB}.consistentHash.httpCookie.name", id="cookie-name-empty"),
    pytest.param(_tp("""
        loadBalancer:
          consistentHash:
            httpCookie:
              name: user
              attributes: [{name: SameSite, value: Lax}, {name: SameSite, value: Strict}]
        """), f"{LB}.consistentHash.httpCookie.attributes[1].name",
        id="cookie-attribute-duplicate"),
    # "tableSize must be set for maglev", "... less than 5000011", "... a prime number"
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {}}}"),
                 f"{LB}.consistentHash.maglev.tableSize", id="maglev-table-size-missing"),
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}"),
                 f"{LB}.consistentHash.maglev.tableSize", id="maglev-table-size-not-prime"),
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}"),
                 f"{LB}.consistentHash.maglev.tableSize", id="maglev-table-size-too-large"),
    # "only one of MinimumRingSize or Maglev/Ringhash can be specified"
    pytest.param(_tp("""
        loadBalancer:
          consistentHash: {useSourceIp: true, minimumRingSize: 2048, ringHash: {minimumRingSize: 2048}}
        """), f"{LB}.consistentHash.minimumRingSize", id="deprecated-ring-size-with-ring-hash"),
    # -- locality load balancing (agent.ValidateLocalityLbSetting)
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: us-west/*, to: {us-west/*: 100}}]
            failover: [{from: us-west, to: us-east}]
        """, OUTLIER), f"{LOC}.failover", id="locality-distribute-and-failover"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 10}}]
        """), f"{LOC}.distribute[0].to", id="locality-weights-not-100"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: us-west/zone1/*, to: {us-west/zone1/*: 100, us-west/zone2/*: 0}}]
        """), f"{LOC}.distribute[0].to", id="locality-weight-zero"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{to: {us-west/*: 100}}]
        """), f"{LOC}.distribute[0].from", id="locality-from-missing"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: 'us-west/*/rack1', to: {us-west/*: 100}}]
        """), f"{LOC}.distribute[0].from", id="locality-wildcard-not-at-end"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: us-west//rack1, to: {us-west/*: 100}}]
        """), f"{LOC}.distribute[0].from", id="locality-empty-zone"),
    # the weights of `to` are a Go map: Istio refuses overlapping keys (in some order)
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: us-west/*, to: {us-west/zone1: 50, us-west/*: 50}}]
        """), f"{LOC}.distribute[0].to", id="locality-to-overlap"),
    # `from` is checked in order: a narrower locality after a broader one is refused
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute:
            - {from: us-west, to: {us-west/*: 100}}
            - {from: us-west/zone1, to: {us-west/*: 100}}
        """), f"{LOC}.distribute[1].from", id="locality-from-overlap"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            failover: [{from: us-east, to: us-east}]
        """, OUTLIER), f"{LOC}.failover[0].to", id="failover-same-region"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            failover: [{from: us-east/zone1, to: us-west}]
        """, OUTLIER), f"{LOC}.failover[0].from", id="failover-zone-not-region"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            failover: [{from: us-east, to: '*'}]
        """, OUTLIER), f"{LOC}.failover[0].to", id="failover-wildcard"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            failover: [{from: us-east, to: us-west}]
            failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region]
        """, OUTLIER), f"{LOC}.failoverPriority[1]", id="failover-with-region-priority"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting: {enabled: true}
          zoneAwareLbSetting: {enabled: true}
        """), f"{LB}.zoneAwareLbSetting", id="locality-and-zone-aware"),
    pytest.param(_tp("""
        loadBalancer:
          zoneAwareLbSetting: {enabled: true, failoverPriority: [topology.kubernetes.io/zone]}
        """, OUTLIER), f"{LB}.zoneAwareLbSetting.failoverPriority[0]",
        id="zone-aware-zone-priority"),
    # (CRD) minimum 1
    pytest.param(_tp("loadBalancer: {zoneAwareLbSetting: {minClusterSize: 0}}"),
                 f"{LB}.zoneAwareLbSetting.minClusterSize", id="zone-aware-min-cluster-size-zero"),
    # -- warmup (CRD required/minimum/maximum; "aggression should be greater than 0")
    pytest.param(_tp("loadBalancer: {warmup: {minimumPercent: 5}}"),
                 f"{LB}.warmup.duration", id="warmup-duration-missing"),
    pytest.param(_tp("loadBalancer: {warmup: {duration: 300s, minimumPercent: 150}}"),
                 f"{LB}.warmup.minimumPercent", id="warmup-minimum-percent-over-100"),
    pytest.param(_tp("loadBalancer: {warmup: {duration: 300s, aggression: 0}}"),
                 f"{LB}.warmup.aggression", id="warmup-aggression-zero"),
    pytest.param(_tp("loadBalancer: {warmup: {duration: 0s}}"),
                 f"{LB}.warmup.duration", id="warmup-duration-zero"),
    # (CRD) duration(self) >= duration('1ms')
    pytest.param(_tp("loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 0s}"),
                 f"{LB}.warmupDurationSecs", id="warmup-duration-secs-zero"),
    # -- TLS (agent.ValidateTLS)
    pytest.param(_tp("tls: {mode: MUTUAL, privateKey: /etc/certs/key.pem}"),
                 f"{TLS}.clientCertificate", id="mutual-without-certificate"),
    pytest.param(_tp("tls: {mode: MUTUAL, clientCertificate: /etc/certs/cert.pem}"),
                 f"{TLS}.privateKey", id="mutual-without-key"),
    pytest.param(_tp("tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /etc/ca.pem}"),
                 f"{TLS}.insecureSkipVerify", id="skip-verify-with-ca"),
    pytest.param(_tp("tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a.example.com]}"),
                 f"{TLS}.insecureSkipVerify", id="skip-verify-with-sans"),
    pytest.param(_tp("""
        tls:
          mode: MUTUAL
          insecureSkipVerify: true
          clientCertificate: /etc/cert.pem
          privateKey: /etc/key.pem
          caCertificates: /etc/ca.pem
        """), f"{TLS}.insecureSkipVerify", id="mutual-skip-verify-with-ca"),
    pytest.param(_tp("tls: {mode: SIMPLE, credentialName: client-cred, clientCertificate: /etc/cert.pem}"),
                 f"{TLS}.clientCertificate", id="credential-name-with-certificate"),
    pytest.param(_tp("tls: {mode: MUTUAL, credentialName: client-cred, caCrl: /etc/crl.pem}"),
                 f"{TLS}.caCrl", id="credential-name-with-crl"),
    pytest.param(_tp("tls: {mode: SIMPLE, credentialName: 'configmap://other/ca'}"),
                 f"{TLS}.credentialName", id="configmap-credential-other-namespace"),
    pytest.param(_tp("tls: {mode: STRICT}"), f"{TLS}.mode", id="tls-mode-unknown"),
    # -- port-level settings (validatePortTrafficPolicies)
    pytest.param(_tp("portLevelSettings: [{loadBalancer: {simple: RANDOM}}]"),
                 f"{TP}.portLevelSettings[0].port", id="port-level-without-port"),
    pytest.param(_tp("portLevelSettings: [{port: {number: 80}}]"),
                 f"{TP}.portLevelSettings[0]", id="port-level-empty"),
    pytest.param(_tp("portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 150}}]"),
                 f"{TP}.portLevelSettings[0].outlierDetection.maxEjectionPercent",
                 id="port-level-bad-outlier"),
    pytest.param(_tp("portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL}}]"),
                 f"{TP}.portLevelSettings[0].tls.clientCertificate", id="port-level-bad-tls"),
    # PortTrafficPolicy has only port and the four blocks
    pytest.param(_tp("portLevelSettings: [{port: {number: 80}, retryBudget: {percent: 20}}]"),
                 f"{TP}.portLevelSettings[0].retryBudget", id="port-level-retry-budget"),
    # -- tunnel (validateTunnelSettings; CRD required targetHost, targetPort)
    pytest.param(_tp("tunnel: {protocol: connect, targetHost: proxy.example.com, targetPort: 3128}"),
                 f"{TP}.tunnel.protocol", id="tunnel-protocol-lower-case"),
    pytest.param(_tp("tunnel: {targetPort: 3128}"), f"{TP}.tunnel.targetHost",
                 id="tunnel-target-host-missing"),
    pytest.param(_tp("tunnel: {targetHost: bad_host, targetPort: 3128}"),
                 f"{TP}.tunnel.targetHost", id="tunnel-target-host-invalid"),
    pytest.param(_tp("tunnel: {targetHost: 10.0.0.1, targetPort: 0}"),
                 f"{TP}.tunnel.targetPort", id="tunnel-target-port-zero"),
    # -- PROXY protocol (validateProxyProtocol)
    pytest.param(_tp("proxyProtocol: {version: V3}"), f"{TP}.proxyProtocol.version",
                 id="proxy-protocol-version"),
    # -- retry budget (CRD percent 0..100, uint32)
    pytest.param(_tp("retryBudget: {percent: 120}"), f"{TP}.retryBudget.percent",
                 id="retry-budget-percent-over-100"),
    pytest.param(_tp("retryBudget: {minRetryConcurrency: -1}"),
                 f"{TP}.retryBudget.minRetryConcurrency", id="retry-budget-concurrency-negative"),
    # -- subsets (validateSubsetName, duplicate names, labels.Instance.Validate)
    pytest.param("host: reviews\nsubsets: [{labels: {version: v1}}]",
                 "spec.subsets[0].name", id="subset-name-missing"),
    pytest.param("host: reviews\nsubsets: [{name: '', labels: {version: v1}}]",
                 "spec.subsets[0].name", id="subset-name-empty"),
    pytest.param("host: reviews\nsubsets: [{name: v1.0, labels: {version: v1}}]",
                 "spec.subsets[0].name", id="subset-name-not-a-label"),
    pytest.param("host: reviews\nsubsets: [{name: v1}, {name: v1, labels: {version: v2}}]",
                 "spec.subsets[1].name", id="subset-name-duplicate"),
    pytest.param("host: reviews\nsubsets: [{name: v1, labels: {version: -v1-}}]",
                 "spec.subsets[0].labels.version", id="subset-label-value"),
    pytest.param("host: reviews\nsubsets: [{name: v1, labels: {'a/b/c': v1}}]",
                 "spec.subsets[0].labels", id="subset-label-key"),
    pytest.param("""
        host: reviews
        subsets:
        - name: v1
          trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}
        """, "spec.subsets[0].trafficPolicy.connectionPool.tcp.maxConnections",
        id="subset-policy-invalid"),
    # -- exportTo (validateExportTo)
    pytest.param("host: reviews\nexportTo: ['~']", "spec.exportTo[0]", id="export-to-none"),
    pytest.param("host: reviews\nexportTo: [bad_ns]", "spec.exportTo[0]", id="export-to-bad-name"),
    pytest.param("host: reviews\nexportTo: [prod, prod]", "spec.exportTo[1]",
                 id="export-to-duplicate"),
    pytest.param("host: reviews\nexportTo: ['.', default]", "spec.exportTo[1]",
                 id="export-to-dot-and-own-namespace"),
    pytest.param("host: reviews\nexportTo: ['*', prod]", "spec.exportTo", id="export-to-star-and-more"),
    pytest.param("""
        host: reviews
        workloadSelector: {matchLabels: {app: ratings}}
        exportTo: ['*']
        """, "spec.exportTo", id="selector-exported-beyond-namespace"),
    pytest.param("""
        host: reviews
        workloadSelector: {matchLabels: {app: ratings}}
        exportTo: ['.', prod]
        """, "spec.exportTo", id="selector-exported-to-two"),
    # -- workloadSelector (validateWorkloadSelector; CRD rules on matchLabels)
    pytest.param("host: reviews\nworkloadSelector: {matchLabels: {app: 'web*'}}",
                 "spec.workloadSelector.matchLabels.app", id="selector-wildcard"),
    pytest.param(f"host: reviews\nworkloadSelector: {{matchLabels: {{app: {'a' * 64}}}}}",
                 "spec.workloadSelector.matchLabels.app", id="selector-value-too-long"),
    # the DestinationRule's selector is istio.type.v1beta1.WorkloadSelector: matchLabels
    pytest.param("host: reviews\nworkloadSelector: {labels: {app: ratings}}",
                 "spec.workloadSelector.labels", id="selector-labels-not-match-labels"),
]


@pytest.mark.parametrize(("spec", "path"), INVALID)
def test_refused(spec: str, path: str) -> None:
    errors = assert_invalid(DR, spec, path)
    for e in errors:
        assert e.message, e
        assert e.kind == DR


def test_enough_cases() -> None:
    assert len(INVALID) >= 45
    assert len(VALID) >= 18


# ---------------------------------------------------------------------------
# Accepted: (spec, check of the typed result)

Check = Callable[[DestinationRuleSpec], None]


def _circuit_breaking(s: DestinationRuleSpec) -> None:
    tp = s.traffic_policy
    assert tp is not None and tp.connection_pool is not None and tp.outlier_detection is not None
    assert tp.connection_pool.tcp is not None and tp.connection_pool.tcp.max_connections == 100
    od = tp.outlier_detection
    assert od.base_ejection_time == Duration(30.0)
    assert isinstance(od.interval, Duration) and od.interval.seconds == 10.0
    assert od.consecutive_5xx_errors == 5 and isinstance(od.consecutive_5xx_errors, int)
    assert od.max_ejection_percent == 50


def _least_request(s: DestinationRuleSpec) -> None:
    assert s.traffic_policy is not None and s.traffic_policy.load_balancer is not None
    assert s.traffic_policy.load_balancer.simple is SimpleLB.LEAST_REQUEST


def _subsets(s: DestinationRuleSpec) -> None:
    assert [sub.name for sub in s.subsets] == ["v1", "v2"]
    v2 = s.subset("v2")
    assert v2 is not None and dict(v2.labels) == {"version": "v2"}
    assert s.subset("v3") is None


def _cookie(s: DestinationRuleSpec) -> None:
    assert s.traffic_policy is not None and s.traffic_policy.load_balancer is not None
    ch = s.traffic_policy.load_balancer.consistent_hash
    assert ch is not None and ch.http_cookie is not None
    assert ch.http_cookie.name == "user" and ch.http_cookie.ttl == Duration(0.0)
    assert [(a.name, a.value) for a in ch.http_cookie.attributes] == [("SameSite", "Lax")]
    assert ch.has_hash_key and ch.ring_hash is not None and ch.ring_hash.minimum_ring_size == 2048
    assert s.traffic_policy.load_balancer.effective_simple is None


def _tls_mutual(s: DestinationRuleSpec) -> None:
    assert s.traffic_policy is not None and s.traffic_policy.tls is not None
    tls = s.traffic_policy.tls
    assert tls.mode is TLSMode.MUTUAL
    assert tls.subject_alt_names == ("db.example.com",)
    assert tls.insecure_skip_verify is None


def _numeric_enums(s: DestinationRuleSpec) -> None:
    tp = s.traffic_policy
    assert tp is not None and tp.load_balancer is not None and tp.tls is not None
    assert tp.load_balancer.simple is SimpleLB.LEAST_REQUEST
    assert tp.tls.mode is TLSMode.ISTIO_MUTUAL


def _defaults(s: DestinationRuleSpec) -> None:
    tp = s.traffic_policy
    assert tp is not None and tp.connection_pool is not None and tp.tls is not None
    http = tp.connection_pool.http
    assert http is not None
    assert http.h2_upgrade_policy is H2UpgradePolicy.DEFAULT and http.use_client_protocol is False
    assert tp.tls.mode is TLSMode.DISABLE  # proto3 zero value
    assert tp.load_balancer is None


def _port_level(s: DestinationRuleSpec) -> None:
    assert s.traffic_policy is not None
    ports = [p.port.number for p in s.traffic_policy.port_level_settings if p.port]
    assert ports == [80, 9080]


def _locality(s: DestinationRuleSpec) -> None:
    assert s.traffic_policy is not None and s.traffic_policy.load_balancer is not None
    loc = s.traffic_policy.load_balancer.locality_lb_setting
    assert loc is not None
    assert loc.distribute[0].from_ == "us-west/zone1/*"
    assert dict(loc.distribute[0].to) == {"us-west/zone1/*": 80, "us-west/zone2/*": 20}


def _l4(s: DestinationRuleSpec) -> None:
    assert s.traffic_policy is not None
    assert s.traffic_policy.proxy_protocol is not None
    assert s.traffic_policy.proxy_protocol.version is ProxyProtocolVersion.V2
    budget = s.traffic_policy.retry_budget
    assert budget is not None and budget.percent == 25.0 and budget.budget_interval == Duration(1.0)


def _selector(s: DestinationRuleSpec) -> None:
    assert s.workload_selector is not None
    assert dict(s.workload_selector.match_labels) == {"app": "ratings"}
    assert s.export_to == (".",)


VALID: list[Any] = [
    pytest.param("host: reviews", None, id="host-only"),
    pytest.param("host: reviews.prod.svc.cluster.local\ntrafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}",
                 _least_request, id="least-request"),
    pytest.param("""
        host: backend
        trafficPolicy:
          connectionPool:
            tcp: {maxConnections: 100}
            http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 10}
          outlierDetection:
            consecutive5xxErrors: 5
            interval: 10s
            baseEjectionTime: 30s
            maxEjectionPercent: 50
        """, _circuit_breaking, id="circuit-breaking"),
    pytest.param("""
        host: backend
        subsets:
        - {name: v1, labels: {version: v1}}
        - {name: v2, labels: {version: v2}}
        """, _subsets, id="subsets"),
    # IsWildcardDNS1123Label accepts a lone '*' (unlike a ServiceEntry host)
    pytest.param("host: '*'\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL}}", None, id="host-star"),
    pytest.param("host: '*.example.com'\ntrafficPolicy: {tls: {mode: SIMPLE}}", None,
                 id="host-wildcard"),
    # labels.IsDNS1123Label accepts upper case
    pytest.param("host: reviews\nsubsets: [{name: V1, labels: {version: V1}}]", None,
                 id="subset-name-upper-case"),
    pytest.param(_tp("""
        loadBalancer:
          consistentHash:
            httpCookie: {name: user, path: /, ttl: 0s, attributes: [{name: SameSite, value: Lax}]}
            ringHash: {minimumRingSize: 2048}
        """), _cookie, id="hash-cookie"),
    pytest.param(_tp("loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}"),
                 None, id="hash-maglev"),
    pytest.param(_tp("loadBalancer: {consistentHash: {httpQueryParameterName: user}}"), None,
                 id="hash-query-parameter"),
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true}}"), None,
                 id="hash-source-ip"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            enabled: true
            distribute:
            - {from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 20}}
            - {from: us-west/zone2/*, to: {us-west/zone1/*: 20, us-west/zone2/*: 80}}
        """), _locality, id="locality-distribute"),
    # validateLocalities runs over `from` in order: narrow, then broad, is fine
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            distribute:
            - {from: us-west/zone1, to: {us-west/zone1: 100}}
            - {from: us-west/*, to: {us-west/zone2: 50, us-east: 50}}
        """), None, id="locality-from-narrow-then-broad"),
    pytest.param(_tp("""
        loadBalancer:
          localityLbSetting:
            failover: [{from: us-east, to: eu-west}, {from: us-west, to: us-east}]
            failoverPriority: [topology.istio.io/network, version=v1]
        """, OUTLIER), None, id="locality-failover"),
    pytest.param(_tp("""
        loadBalancer:
          simple: ROUND_ROBIN
          zoneAwareLbSetting:
            enabled: true
            failover: [{from: us-east, to: eu-west}]
            minClusterSize: 3
        """, OUTLIER), None, id="zone-aware"),
    pytest.param(_tp("loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 300s, minimumPercent: 5, aggression: 2.5}}"),
                 None, id="warmup"),
    pytest.param(_tp("""
        tls:
          mode: MUTUAL
          clientCertificate: /etc/certs/client.pem
          privateKey: /etc/certs/client-key.pem
          caCertificates: /etc/certs/ca.pem
          caCrl: /etc/certs/crl.pem
          subjectAltNames: [db.example.com]
          sni: db.example.com
        """, host="db.example.com"), _tls_mutual, id="tls-mutual"),
    pytest.param(_tp("tls: {mode: SIMPLE, insecureSkipVerify: true, sni: api.example.com}",
                     host="api.example.com"), None, id="tls-simple-skip-verify"),
    # ValidateTLS: MUTUAL + insecureSkipVerify is fine without caCertificates/subjectAltNames
    pytest.param(_tp("""
        tls: {mode: MUTUAL, insecureSkipVerify: true, clientCertificate: /c.pem, privateKey: /k.pem}
        """), None, id="tls-mutual-skip-verify"),
    # credentialName replaces the certificate files (needs a selector at sidecars)
    pytest.param("""
        host: api.example.com
        workloadSelector: {matchLabels: {app: ratings}}
        exportTo: ['.']
        trafficPolicy:
          tls: {mode: MUTUAL, credentialName: client-credential}
        """, _selector, id="tls-credential-name-with-selector"),
    pytest.param(_tp("tls: {mode: SIMPLE, credentialName: 'configmap://default/ca-bundle'}"),
                 None, id="tls-configmap-credential"),
    # ISTIO_MUTUAL uses sni and subjectAltNames when given (cluster_tls.go)
    pytest.param(_tp("tls: {mode: ISTIO_MUTUAL, sni: outbound_.80_._.reviews, subjectAltNames: [spiffe://cluster.local/ns/default/sa/reviews]}"),
                 None, id="tls-istio-mutual-sni"),
    pytest.param(_tp("""
        portLevelSettings:
        - port: {number: 80}
          loadBalancer: {simple: LEAST_REQUEST}
        - port: {number: 9080}
          loadBalancer: {simple: ROUND_ROBIN}
          tls: {mode: ISTIO_MUTUAL}
        """), _port_level, id="port-level-settings"),
    pytest.param(_tp("tunnel: {protocol: POST, targetHost: proxy.example.com, targetPort: 3128}"),
                 None, id="tunnel"),
    pytest.param(_tp("""
        proxyProtocol: {version: V2}
        retryBudget: {percent: 25, minRetryConcurrency: 5, budgetInterval: 1s}
        """), _l4, id="proxy-protocol-and-retry-budget"),
    pytest.param(_tp("""
        connectionPool:
          tcp:
            maxConnections: 2147483647
            connectTimeout: 250ms
            maxConnectionDuration: 1h
            idleTimeout: 0s
            tcpKeepalive: {probes: 3, time: 60s, interval: 10s}
          http:
            http2MaxRequests: 1000
            maxRetries: 0
            idleTimeout: 30s
            maxConcurrentStreams: 100
            http2KeepAlive: {interval: 15s, timeout: 5s}
        """), None, id="connection-pool-full"),
    pytest.param(_tp("""
        connectionPool: {http: {http1MaxPendingRequests: 1}}
        tls: {}
        """), _defaults, id="proto3-defaults"),
    pytest.param(_tp("""
        outlierDetection:
          splitExternalLocalOriginErrors: true
          consecutiveLocalOriginFailures: 3
          consecutiveGatewayErrors: 2
          consecutive5xxErrors: 0
          minHealthPercent: 50
          outlierDetectionHttpErrorCodes: [500, 503]
        """), None, id="outlier-detection-full"),
    # enums are also read as their proto numbers (protojson)
    pytest.param(_tp("loadBalancer: {simple: 5}\ntls: {mode: 3}"), _numeric_enums,
                 id="numeric-enums"),
    pytest.param("host: reviews\nexportTo: ['.', prod, Staging]", None, id="export-to-namespaces"),
    pytest.param(_tp("loadBalancer: {backendUtilization: {errorUtilizationPenaltyPercent: 10, weightUpdatePeriod: 1s}}"),
                 None, id="backend-utilization"),
]


@pytest.mark.parametrize(("spec", "check"), VALID)
def test_accepted(spec: str, check: Check | None) -> None:
    result = assert_valid(DR, spec)
    if check is not None:
        check(result.resources[0].spec)


# ---------------------------------------------------------------------------
# Warnings: accepted, with a hint at a path

WARNINGS: list[Any] = [
    # Istio warns: "outlier detection consecutive errors is deprecated"
    pytest.param(_tp("outlierDetection: {consecutiveErrors: 5}"),
                 f"{OD}.consecutiveErrors", "deprecated", id="consecutive-errors-deprecated"),
    # Istio warns: "consistent hash MinimumRingSize is deprecated"
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 2048}}"),
                 f"{LB}.consistentHash.minimumRingSize", "deprecated", id="ring-size-deprecated"),
    # Istio warns: "outlier detection policy must be provided for failover"
    pytest.param(_tp("loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-west}]}}"),
                 f"{LOC}.failover", "outlier", id="failover-without-outlier-detection"),
    pytest.param(_tp("loadBalancer: {localityLbSetting: {failoverPriority: [topology.istio.io/network]}}"),
                 f"{LOC}.failoverPriority", "outlier", id="failover-priority-without-outlier"),
    # Istio warns: "workload selector specified without labels"
    pytest.param("host: reviews\nworkloadSelector: {}", "spec.workloadSelector", "no labels",
                 id="selector-without-labels"),
    # inmesh hints: accepted by Istio, but without effect (or refused later by Envoy)
    pytest.param(_tp("loadBalancer: {simple: LEAST_CONN}"), f"{LB}.simple", "LEAST_REQUEST",
                 id="least-conn"),
    pytest.param(_tp("loadBalancer: {consistentHash: {ringHash: {minimumRingSize: 1024}}}"),
                 f"{LB}.consistentHash", "no hash key", id="hash-without-key"),
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 10000000}}}"),
                 f"{LB}.consistentHash.ringHash.minimumRingSize", "Envoy", id="ring-too-large-for-envoy"),
    pytest.param(_tp("loadBalancer: {simple: RANDOM, warmup: {duration: 60s}}"),
                 f"{LB}.warmup", "no effect", id="warmup-with-random"),
    pytest.param(_tp("loadBalancer: {consistentHash: {useSourceIp: true}, warmupDurationSecs: 60s}"),
                 f"{LB}.warmupDurationSecs", "no effect", id="warmup-secs-with-hash"),
    pytest.param(_tp("loadBalancer: {warmupDurationSecs: 60s, warmup: {duration: 60s}}"),
                 f"{LB}.warmupDurationSecs", "ignored", id="warmup-both"),
    pytest.param(_tp("tls: {mode: ISTIO_MUTUAL, clientCertificate: /etc/cert.pem}"),
                 f"{TLS}.clientCertificate", "ignored", id="istio-mutual-with-certificate"),
    pytest.param(_tp("tls: {sni: api.example.com}"), f"{TLS}.sni", "DISABLE",
                 id="tls-settings-with-mode-disable"),
    pytest.param(_tp("tls: {mode: SIMPLE, credentialName: client-cred}"),
                 f"{TLS}.credentialName", "workloadSelector", id="credential-name-without-selector"),
    pytest.param(_tp("portLevelSettings: [{port: {number: 0}, loadBalancer: {simple: RANDOM}}]"),
                 f"{TP}.portLevelSettings[0].port.number", "never matches", id="port-zero"),
    pytest.param(_tp("""
        portLevelSettings:
        - {port: {number: 80}, loadBalancer: {simple: RANDOM}}
        - {port: {number: 80}, loadBalancer: {simple: ROUND_ROBIN}}
        """), f"{TP}.portLevelSettings[1].port.number", "already has an entry",
        id="port-duplicate"),
    pytest.param(_tp("outlierDetection: {consecutiveGatewayErrors: 5}"),
                 f"{OD}.consecutiveGatewayErrors", "no effect", id="gateway-errors-not-below-5xx"),
]


@pytest.mark.parametrize("pool", [
    "{http: {maxRequestsPerConnection: 1}}",
    "{http: {maxRequestsPerConnection: 5}}",
    "{tcp: {maxConnectionDuration: 30s}}",
])
def test_connection_lifetime_limits_are_enforced(pool: str) -> None:
    assert not assert_valid(DR, _tp(f"connectionPool: {pool}")).warnings


def test_routing_policy_is_enforced_without_warnings() -> None:
    result = assert_valid(DR, _tp("loadBalancer: {simple: RANDOM}"))
    assert not result.warnings
    result = assert_valid(DR, "host: reviews\nsubsets: [{name: v1}]")
    assert not result.warnings


@pytest.mark.parametrize(("spec", "path", "text"), WARNINGS)
def test_warned(spec: str, path: str, text: str) -> None:
    result = assert_valid(DR, spec)
    hits = [w for w in result.warnings if w.path == path and text in w.message + w.fix]
    assert hits, "; ".join(str(w) for w in result.warnings) or "no warnings"
    assert all(w.fix and w.line > 0 for w in hits)


def test_nested_support_warnings_are_not_repeated() -> None:
    # h2UpgradePolicy is NOT_YET too, but its connectionPool already says so
    result = assert_valid(DR, _tp("""
        tunnel: {targetHost: proxy.example.com, targetPort: 3128}
        connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
        """))
    assert sorted(w.path for w in result.warnings) == [
        f"{TP}.connectionPool.http.h2UpgradePolicy",
        f"{TP}.tunnel",
    ]


def test_clean_rule_has_no_support_warning() -> None:
    result = assert_valid(DR, _tp("""
        loadBalancer: {simple: ROUND_ROBIN}
        outlierDetection: {consecutive5xxErrors: 3, interval: 5s, maxEjectionPercent: 100}
        tls: {mode: ISTIO_MUTUAL}
        """))
    assert not result.warnings


# ---------------------------------------------------------------------------
# Messages, typed values and the seed files


def test_error_names_the_field_and_the_fix() -> None:
    result = load_spec(DR, """
        host: backend
        trafficPolicy:
          outlierDetection:
            consecutive5xxErrors: 5
            maxEjectionPercent: 150
        """)
    (err,) = result.errors
    assert err.severity is Severity.ERROR
    assert err.path == "spec.trafficPolicy.outlierDetection.maxEjectionPercent"
    assert "150" in err.message and "0 and 100" in err.fix
    assert err.line == 11  # the line of `maxEjectionPercent: 150` in the full document


def test_locality_weights_message_gives_the_sum() -> None:
    result = load_spec(DR, _tp("""
        loadBalancer:
          localityLbSetting:
            distribute: [{from: a/b, to: {a/b: 30, a/c: 30}}]
        """))
    (err,) = result.errors
    assert "60" in err.message and "100" in err.fix


def test_maglev_fix_suggests_a_prime() -> None:
    result = load_spec(DR, _tp("loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}"))
    (err,) = result.errors
    assert "65537" in err.fix


def test_selector_labels_message_points_at_match_labels() -> None:
    result = load_spec(DR, "host: reviews\nworkloadSelector: {labels: {app: ratings}}")
    (err,) = result.errors
    assert "matchLabels" in err.fix


SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "configs"
CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.mark.parametrize(
    "name",
    [
        "04-destinationrule-least-request.yaml",
        "05-destinationrule-circuit-breaking.yaml",
        "06-canary-90-10.yaml",
        "12-rich-destinationrule.yaml",
    ],
)
def test_seed_destination_rules_load(name: str) -> None:
    path = SEEDS / name if (SEEDS / name).is_file() else CORPUS / name
    if not path.is_file():
        pytest.skip(f"{name} not present")
    result = load_paths([path])
    drs = [r for r in result.resources if r.kind == DR]
    assert len(drs) == 1
    errors = [e for e in result.errors if e.kind == DR]
    assert not errors, "\n".join(str(e) for e in errors)


def test_seed_values_are_typed() -> None:
    path = SEEDS / "05-destinationrule-circuit-breaking.yaml"
    if not path.is_file():
        path = CORPUS / path.name
    (dr,) = [r for r in load_paths([path]).resources if r.kind == DR]
    _circuit_breaking(dr.spec)
    od = dr.spec.traffic_policy.outlier_detection
    assert od.base_ejection_time == Duration.of(30) and str(od.base_ejection_time) == "30s"


def test_dump_with_defaults_loads_again() -> None:
    text = (CORPUS / "12-rich-destinationrule.yaml").read_text() if (
        CORPUS / "12-rich-destinationrule.yaml"
    ).is_file() else None
    extra = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: full, namespace: default}
spec:
  host: full
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 5}, http: {maxRetries: 2}}
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s}}
    tls: {mode: SIMPLE}
    retryBudget: {}
"""
    docs = "\n---\n".join(t for t in (text, extra) if t)
    first = load_text(docs)
    assert not first.errors
    dumped = "\n---\n".join(
        yaml.safe_dump(resource_to_data(r, fill_defaults=True)) for r in first.resources
    )
    again = load_text(dumped)
    assert not again.errors, "\n".join(str(e) for e in again.errors)
    full = next(r for r in again.resources if r.name == "full").spec
    od = full.traffic_policy.outlier_detection
    assert od.interval == Duration.of(10) and od.base_ejection_time == Duration.of(30)
    assert od.max_ejection_percent == 10
    assert full.traffic_policy.connection_pool.tcp.connect_timeout == Duration.of(10)
    assert full.traffic_policy.retry_budget.percent == 20.0
    assert full.traffic_policy.load_balancer.warmup.minimum_percent == 10.0
