"""DestinationRule (``networking.istio.io``): what happens to traffic for a host after routing.

Mirrors istio/api ``networking/v1alpha3/destination_rule.proto``: the traffic
policy (load balancing, connection pool, outlier detection, client TLS,
port-level overrides, tunnel, PROXY protocol, retry budget), the named
subsets, ``exportTo`` and the client ``workloadSelector``.
``backendUtilization`` is not in that file yet; it is modelled from the CRD
schema istio/istio generates (``manifests/charts/base/files/crd-all.gen.yaml``).

Data only; Istio's checks are in ``inmesh.config.validation.destination_rule``.
Unset optional values are ``None``. Enums default to their proto zero value,
as Istio reads them (``tls.mode`` is ``DISABLE`` when not written), except
``simple``, which is one branch of a oneof. ``istio_default`` records what
Istio / Envoy use when a field is left out.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from .._schema import Support, spec_field
from ._common import Duration, MatchLabelsSelector, PortSelector

__all__ = [
    "BackendUtilizationLB",
    "ClientTLSSettings",
    "ConnectionKeepalive",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "DestinationRuleSpec",
    "H2UpgradePolicy",
    "HTTPCookie",
    "HTTPCookieAttribute",
    "HTTPSettings",
    "LoadBalancerSettings",
    "LocalityDistribute",
    "LocalityFailover",
    "LocalityLoadBalancerSetting",
    "MagLev",
    "OutlierDetection",
    "PortTrafficPolicy",
    "ProxyProtocol",
    "ProxyProtocolVersion",
    "RetryBudget",
    "RingHash",
    "SimpleLB",
    "Subset",
    "TCPSettings",
    "TLSMode",
    "TcpKeepalive",
    "TrafficPolicy",
    "TunnelSettings",
    "WarmupConfiguration",
    "ZoneAwareFailover",
    "ZoneAwareLoadBalancerSetting",
]

_HTTP2_ONLY = "inmesh speaks HTTP/1.1 to upstreams"


# ---------------------------------------------------------------------------
# Enums


class SimpleLB(str, enum.Enum):
    """``LoadBalancerSettings.SimpleLB``. ``UNSPECIFIED`` means Istio's default, LEAST_REQUEST."""

    UNSPECIFIED = "UNSPECIFIED"
    LEAST_CONN = "LEAST_CONN"  # deprecated: means LEAST_REQUEST
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    __numbers__: ClassVar[dict[int, str]]


SimpleLB.__numbers__ = {
    0: "UNSPECIFIED",
    1: "LEAST_CONN",
    2: "RANDOM",
    3: "PASSTHROUGH",
    4: "ROUND_ROBIN",
    5: "LEAST_REQUEST",
}


class H2UpgradePolicy(str, enum.Enum):
    """``ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy``."""

    DEFAULT = "DEFAULT"
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"
    __numbers__: ClassVar[dict[int, str]]


H2UpgradePolicy.__numbers__ = {0: "DEFAULT", 1: "DO_NOT_UPGRADE", 2: "UPGRADE"}


class TLSMode(str, enum.Enum):
    """``ClientTLSSettings.TLSmode``: how connections to the upstream are secured."""

    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"
    __numbers__: ClassVar[dict[int, str]]


TLSMode.__numbers__ = {0: "DISABLE", 1: "SIMPLE", 2: "MUTUAL", 3: "ISTIO_MUTUAL"}


class ProxyProtocolVersion(str, enum.Enum):
    """``TrafficPolicy.ProxyProtocol.VERSION``: V1 (text) or V2 (binary)."""

    V1 = "V1"
    V2 = "V2"
    __numbers__: ClassVar[dict[int, str]]


ProxyProtocolVersion.__numbers__ = {0: "V1", 1: "V2"}


# ---------------------------------------------------------------------------
# Connection pool


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    """``TCPSettings.TcpKeepalive``: SO_KEEPALIVE probes on upstream sockets."""

    __istio_name__: ClassVar[str] = "TcpKeepalive"
    probes: int | None = spec_field(note="uint32; unset: the OS default (Linux: 9)")
    time: Duration | None = spec_field(
        note="idle time before probing; unset: the OS default (Linux: 7200s)"
    )
    interval: Duration | None = spec_field(
        note="between probes; unset: the OS default (Linux: 75s)"
    )


@dataclass(frozen=True, slots=True)
class TCPSettings:
    """``ConnectionPoolSettings.TCPSettings``: limits common to TCP and HTTP upstreams."""

    __istio_name__: ClassVar[str] = "TCPSettings"
    max_connections: int | None = spec_field(
        note="int32; connections to the destination; unset or 0: 2^32-1"
    )
    connect_timeout: Duration | None = spec_field(
        note="at least 1ms; unset: the mesh connectTimeout (10s)",
        istio_default=Duration.of(10),
    )
    tcp_keepalive: TcpKeepalive | None = spec_field(
        note="SO_KEEPALIVE on upstream sockets, with the settings given (whole seconds)",
    )
    max_connection_duration: Duration | None = spec_field(
        note="at least 1ms; a connection this old is not reused: it is closed when its "
        "request ends, or when found idle",
    )
    idle_timeout: Duration | None = spec_field(
        note="0s disables it; used when http.idleTimeout is unset",
        istio_default=Duration.of(3600),
    )


@dataclass(frozen=True, slots=True)
class ConnectionKeepalive:
    """``HTTPSettings.ConnectionKeepalive``: HTTP/2 PING settings (both fields required)."""

    __istio_name__: ClassVar[str] = "ConnectionKeepalive"
    interval: Duration | None = spec_field()
    timeout: Duration | None = spec_field()


@dataclass(frozen=True, slots=True)
class HTTPSettings:
    """``ConnectionPoolSettings.HTTPSettings``: HTTP/1.1 and HTTP/2 pool limits."""

    __istio_name__: ClassVar[str] = "HTTPSettings"
    http1_max_pending_requests: int | None = spec_field(
        note="int32; requests queued for a connection; unset or 0: 2^32-1"
    )
    http2_max_requests: int | None = spec_field(
        note="int32; outstanding requests to the destination; unset or 0: 2^32-1"
    )
    max_requests_per_connection: int | None = spec_field(
        note="int32; a connection is closed after this many requests (1 disables "
        "keep-alive); unset or 0: unlimited",
        istio_default=0,
    )
    max_retries: int | None = spec_field(
        note="int32; concurrent retries to the destination; unset or 0: 2^32-1"
    )
    idle_timeout: Duration | None = spec_field(note="at least 1ms; unset: tcp.idleTimeout, else 1h")
    h2_upgrade_policy: H2UpgradePolicy = spec_field(
        default=H2UpgradePolicy.DEFAULT,
        support=Support.NOT_YET,
        note=_HTTP2_ONLY,
        istio_default=H2UpgradePolicy.DEFAULT,
    )
    use_client_protocol: bool = spec_field(
        default=False, support=Support.NOT_YET, note=_HTTP2_ONLY, istio_default=False
    )
    max_concurrent_streams: int | None = spec_field(
        support=Support.NOT_YET,
        note="HTTP/2 only; " + _HTTP2_ONLY,
        istio_default=2**31 - 1,
    )
    http2_keep_alive: ConnectionKeepalive | None = spec_field(
        support=Support.NOT_YET, note="HTTP/2 only; " + _HTTP2_ONLY
    )


@dataclass(frozen=True, slots=True)
class ConnectionPoolSettings:
    """``ConnectionPoolSettings``: circuit-breaker limits; needs ``tcp`` or ``http``."""

    __istio_name__: ClassVar[str] = "ConnectionPoolSettings"
    tcp: TCPSettings | None = spec_field()
    http: HTTPSettings | None = spec_field()


# ---------------------------------------------------------------------------
# Outlier detection


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """``OutlierDetection``: ejects endpoints that keep failing (Envoy outlier detection)."""

    __istio_name__: ClassVar[str] = "OutlierDetection"
    consecutive_errors: int | None = spec_field(
        support=Support.IGNORED,
        note="Istio no longer applies this field",
        deprecated="use consecutive5xxErrors or consecutiveGatewayErrors instead; "
        "Istio ignores consecutiveErrors",
    )
    split_external_local_origin_errors: bool = spec_field(default=False, istio_default=False)
    consecutive_local_origin_failures: int | None = spec_field(
        note="uint32; only with splitExternalLocalOriginErrors: true; unset: 5"
    )
    consecutive_gateway_errors: int | None = spec_field(
        note="uint32; 502, 503, 504 and connection failures; unset or 0: disabled",
        istio_default=0,
    )
    consecutive_5xx_errors: int | None = spec_field(note="uint32; 0 disables it", istio_default=5)
    interval: Duration | None = spec_field(
        note="at least 1ms; time between ejection sweeps", istio_default=Duration.of(10)
    )
    base_ejection_time: Duration | None = spec_field(
        note="at least 1ms; multiplied by the number of ejections, capped at 300s",
        istio_default=Duration.of(30),
    )
    max_ejection_percent: int | None = spec_field(note="0-100", istio_default=10)
    min_health_percent: int | None = spec_field(
        note="0-100; the panic threshold; 0 disables panic mode", istio_default=0
    )
    outlier_detection_http_error_codes: tuple[int, ...] = spec_field(
        default=(), note="100-599; unset: only 5xx responses count as errors"
    )


# ---------------------------------------------------------------------------
# Load balancing


@dataclass(frozen=True, slots=True)
class RingHash:
    """``ConsistentHashLB.RingHash``: Envoy's ketama ring."""

    __istio_name__: ClassVar[str] = "RingHash"
    minimum_ring_size: int | None = spec_field(
        note="uint64; Envoy allows at most 8388608", istio_default=1024
    )


@dataclass(frozen=True, slots=True)
class MagLev:
    """``ConsistentHashLB.MagLev``: Maglev table (``tableSize`` prime, < 5000011)."""

    __istio_name__: ClassVar[str] = "MagLev"
    table_size: int | None = spec_field(
        note="uint64; a prime below 5000011, e.g. 65537; Istio requires it (the API "
        "reference's default of 65537 never applies)"
    )


@dataclass(frozen=True, slots=True)
class HTTPCookieAttribute:
    """``HTTPCookie.Attribute``: an attribute added to a generated cookie."""

    __istio_name__: ClassVar[str] = "Attribute"
    name: str | None = spec_field(required=True)
    value: str | None = spec_field()


@dataclass(frozen=True, slots=True)
class HTTPCookie:
    """``ConsistentHashLB.HTTPCookie``: hash on a cookie, generated when missing if ``ttl`` is set."""

    __istio_name__: ClassVar[str] = "HTTPCookie"
    name: str | None = spec_field(required=True)
    path: str | None = spec_field()
    ttl: Duration | None = spec_field(
        note="set: a cookie with this lifetime is generated when missing; 0s: a session cookie"
    )
    attributes: tuple[HTTPCookieAttribute, ...] = spec_field(default=())


@dataclass(frozen=True, slots=True)
class ConsistentHashLB:
    """``LoadBalancerSettings.ConsistentHashLB``: soft session affinity.

    One hash key (``httpHeaderName``, ``httpCookie``, ``useSourceIp``,
    ``httpQueryParameterName``) and at most one of ``ringHash`` / ``maglev``
    (ring hash when neither is set).
    """

    __istio_name__: ClassVar[str] = "ConsistentHashLB"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name"),
        ("ring_hash", "maglev"),
    )
    http_header_name: str | None = spec_field()
    http_cookie: HTTPCookie | None = spec_field()
    use_source_ip: bool | None = spec_field(
        note="the address this process connects from, so one process sticks to one endpoint"
    )
    http_query_parameter_name: str | None = spec_field()
    ring_hash: RingHash | None = spec_field()
    maglev: MagLev | None = spec_field()
    minimum_ring_size: int | None = spec_field(
        deprecated="use ringHash: {minimumRingSize: ...} instead",
        note="uint64; unset: 1024",
    )

    @property
    def has_hash_key(self) -> bool:
        """Whether one of the hash keys is set."""
        return any(
            getattr(self, a) is not None
            for a in (
                "http_header_name",
                "http_cookie",
                "use_source_ip",
                "http_query_parameter_name",
            )
        )


@dataclass(frozen=True, slots=True)
class BackendUtilizationLB:
    """``backendUtilization``: weights endpoints by the load they report (ORCA metrics).

    Not in the istio/api proto inmesh was written against; the fields follow the
    CRD schema that istio/istio generates from its newer API version.
    """

    __istio_name__: ClassVar[str] = "BackendUtilization"
    error_utilization_penalty_percent: int | None = spec_field(note="uint32")
    metric_names_for_computing_utilization: tuple[str, ...] = spec_field(default=())
    weight_expiration_period: Duration | None = spec_field()
    weight_stabilization_period: Duration | None = spec_field()
    weight_update_period: Duration | None = spec_field()


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """``LocalityLoadBalancerSetting.Distribute``: weights from one locality to others."""

    __istio_name__: ClassVar[str] = "Distribute"
    from_: str | None = spec_field(note="region/zone/subzone; a trailing '*' is a wildcard")
    to: Mapping[str, int] = spec_field(
        default_factory=dict, note="locality -> weight 1-100; the weights add up to 100"
    )


@dataclass(frozen=True, slots=True)
class LocalityFailover:
    """``LocalityLoadBalancerSetting.Failover``: region to fail over to."""

    __istio_name__: ClassVar[str] = "Failover"
    from_: str | None = spec_field(note="a region")
    to: str | None = spec_field(note="another region")


@dataclass(frozen=True, slots=True)
class LocalityLoadBalancerSetting:
    """``LocalityLoadBalancerSetting``: locality-weighted or failover load balancing."""

    __istio_name__: ClassVar[str] = "LocalityLoadBalancerSetting"
    distribute: tuple[LocalityDistribute, ...] = spec_field(default=())
    failover: tuple[LocalityFailover, ...] = spec_field(
        default=(), note="needs outlierDetection to have an effect"
    )
    failover_priority: tuple[str, ...] = spec_field(
        default=(), note="label keys, or key=value; needs outlierDetection to have an effect"
    )
    enabled: bool | None = spec_field(note="overrides the mesh-wide setting (on by default)")


@dataclass(frozen=True, slots=True)
class ZoneAwareFailover:
    """``ZoneAwareLoadBalancerSetting.Failover``: region to fail over to."""

    __istio_name__: ClassVar[str] = "Failover"
    from_: str | None = spec_field()
    to: str | None = spec_field()


@dataclass(frozen=True, slots=True)
class ZoneAwareLoadBalancerSetting:
    """``ZoneAwareLoadBalancerSetting``: Envoy zone-aware routing within the local region."""

    __istio_name__: ClassVar[str] = "ZoneAwareLoadBalancerSetting"
    enabled: bool | None = spec_field()
    failover: tuple[ZoneAwareFailover, ...] = spec_field(default=())
    failover_priority: tuple[str, ...] = spec_field(default=())
    min_cluster_size: int | None = spec_field(note="at least 1", istio_default=6)


@dataclass(frozen=True, slots=True)
class WarmupConfiguration:
    """``WarmupConfiguration``: slow start for new endpoints (ROUND_ROBIN, LEAST_REQUEST)."""

    __istio_name__: ClassVar[str] = "WarmupConfiguration"
    duration: Duration | None = spec_field(required=True, note="at least 1ms")
    minimum_percent: float | None = spec_field(note="0-100", istio_default=10.0)
    aggression: float | None = spec_field(
        note="greater than 0; 1.0 ramps up linearly", istio_default=1.0
    )


@dataclass(frozen=True, slots=True)
class LoadBalancerSettings:
    """``LoadBalancerSettings``: one of ``simple``, ``consistentHash``, ``backendUtilization``.

    With none set Istio uses LEAST_REQUEST.
    """

    __istio_name__: ClassVar[str] = "LoadBalancerSettings"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("simple", "consistent_hash", "backend_utilization"),
    )
    simple: SimpleLB | None = spec_field(
        note="unset or UNSPECIFIED: LEAST_REQUEST; LEAST_CONN is a deprecated name for it"
    )
    consistent_hash: ConsistentHashLB | None = spec_field(
        note="placement on the ring differs from Envoy's; affinity and balance are the same"
    )
    backend_utilization: BackendUtilizationLB | None = spec_field(
        support=Support.NOT_YET,
        note="inmesh does not read the load reports (ORCA) that endpoints send",
    )
    locality_lb_setting: LocalityLoadBalancerSetting | None = spec_field(
        support=Support.PARTIAL,
        note="uses the locality of each endpoint (WorkloadEntry locality) and of this process; "
        "Envoy's overprovisioning factor is not modelled",
    )
    zone_aware_lb_setting: ZoneAwareLoadBalancerSetting | None = spec_field(
        support=Support.NOT_YET, note="Envoy's zone-aware routing is not reproduced yet"
    )
    warmup_duration_secs: Duration | None = spec_field(
        note="slow start for ROUND_ROBIN and LEAST_REQUEST",
        deprecated="use warmup: {duration: ...} instead",
    )
    warmup: WarmupConfiguration | None = spec_field(
        note="slow start for ROUND_ROBIN and LEAST_REQUEST; wins over warmupDurationSecs"
    )

    @property
    def effective_simple(self) -> SimpleLB | None:
        """The simple algorithm in effect (LEAST_REQUEST by default), or None for a hash/ORCA LB."""
        if self.consistent_hash is not None or self.backend_utilization is not None:
            return None
        if self.simple in (None, SimpleLB.UNSPECIFIED, SimpleLB.LEAST_CONN):
            return SimpleLB.LEAST_REQUEST
        return self.simple


# ---------------------------------------------------------------------------
# TLS


@dataclass(frozen=True, slots=True)
class ClientTLSSettings:
    """``ClientTLSSettings``: TLS towards the upstream (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)."""

    __istio_name__: ClassVar[str] = "ClientTLSSettings"
    mode: TLSMode = spec_field(default=TLSMode.DISABLE, istio_default=TLSMode.DISABLE)
    client_certificate: str | None = spec_field(note="PEM file; required for MUTUAL")
    private_key: str | None = spec_field(note="PEM file; required for MUTUAL")
    ca_certificates: str | None = spec_field(
        note="PEM file; unset: the system's trusted CA certificates"
    )
    credential_name: str | None = spec_field(
        support=Support.NOT_YET,
        note="needs Kubernetes secrets; use clientCertificate, privateKey and caCertificates",
    )
    subject_alt_names: tuple[str, ...] = spec_field(
        default=(), note="unset: the ServiceEntry's subjectAltNames, else the request host"
    )
    sni: str | None = spec_field(
        note="unset: the request host (ISTIO_MUTUAL: Istio's cluster name)"
    )
    insecure_skip_verify: bool | None = spec_field(istio_default=False)
    ca_crl: str | None = spec_field(note="PEM file of revoked certificates")


# ---------------------------------------------------------------------------
# Traffic policy


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    """``TrafficPolicy.PortTrafficPolicy``: replaces the four policy blocks for one port."""

    __istio_name__: ClassVar[str] = "PortTrafficPolicy"
    port: PortSelector | None = spec_field(note="required: {number: <port>}")
    load_balancer: LoadBalancerSettings | None = spec_field()
    connection_pool: ConnectionPoolSettings | None = spec_field()
    outlier_detection: OutlierDetection | None = spec_field()
    tls: ClientTLSSettings | None = spec_field()


@dataclass(frozen=True, slots=True)
class TunnelSettings:
    """``TrafficPolicy.TunnelSettings``: tunnel TCP through HTTP CONNECT or POST."""

    __istio_name__: ClassVar[str] = "TunnelSettings"
    protocol: str | None = spec_field(note="CONNECT or POST", istio_default="CONNECT")
    target_host: str | None = spec_field(required=True, note="an FQDN or IP address")
    target_port: int | None = spec_field(required=True, note="1-65535")


@dataclass(frozen=True, slots=True)
class ProxyProtocol:
    """``TrafficPolicy.ProxyProtocol``: send a PROXY protocol header upstream."""

    __istio_name__: ClassVar[str] = "ProxyProtocol"
    version: ProxyProtocolVersion = spec_field(
        default=ProxyProtocolVersion.V1, istio_default=ProxyProtocolVersion.V1
    )


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """``TrafficPolicy.RetryBudget``: concurrent retries as a share of active requests."""

    __istio_name__: ClassVar[str] = "RetryBudget"
    percent: float | None = spec_field(note="0-100", istio_default=20.0)
    min_retry_concurrency: int | None = spec_field(note="uint32; unset or 0: 3", istio_default=3)
    budget_interval: Duration | None = spec_field(
        note="0: only active and pending requests count", istio_default=Duration.of(0)
    )


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """``TrafficPolicy``: the policies for a host (or a subset); at least one field."""

    __istio_name__: ClassVar[str] = "TrafficPolicy"
    load_balancer: LoadBalancerSettings | None = spec_field(
        note="unset: LEAST_REQUEST, and the mesh's locality settings"
    )
    connection_pool: ConnectionPoolSettings | None = spec_field(
        note="circuit breakers per cluster and process: over the limits, 503 UO"
    )
    outlier_detection: OutlierDetection | None = spec_field(
        note="unset: no endpoint is ever ejected; set: Envoy's consecutive-error ejection, "
        "locality priorities on and the panic threshold at minHealthPercent, as in Istio",
    )
    tls: ClientTLSSettings | None = spec_field(
        note="unset: mutual TLS when the destination is in the mesh, else plain text"
    )
    port_level_settings: tuple[PortTrafficPolicy, ...] = spec_field(
        default=(),
        note="an entry for the destination port replaces loadBalancer, connectionPool, "
        "outlierDetection and tls; the first entry for a port wins",
    )
    tunnel: TunnelSettings | None = spec_field(
        support=Support.NOT_YET, note="inmesh does not tunnel TCP over HTTP CONNECT or POST yet"
    )
    proxy_protocol: ProxyProtocol | None = spec_field(
        support=Support.NOT_YET, note="inmesh does not send PROXY protocol headers to upstreams yet"
    )
    retry_budget: RetryBudget | None = spec_field(
        note="replaces connectionPool.http.maxRetries as the limit on concurrent retries"
    )

    @property
    def is_empty(self) -> bool:
        """No field set: Istio refuses such a policy."""
        return all(not getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True, slots=True)
class Subset:
    """``Subset``: a named group of the host's endpoints, chosen by labels."""

    __istio_name__: ClassVar[str] = "Subset"
    name: str | None = spec_field(required=True, note="a DNS-1123 label, unique in the rule")
    labels: Mapping[str, str] = spec_field(
        default_factory=dict, note="endpoints whose labels include all of these; none: all"
    )
    traffic_policy: TrafficPolicy | None = spec_field(
        note="each block set here replaces the same block of the rule's trafficPolicy"
    )


@dataclass(frozen=True, slots=True)
class DestinationRuleSpec:
    """A DestinationRule: policies for traffic to ``host`` after routing."""

    __istio_name__: ClassVar[str] = "DestinationRule"
    host: str | None = spec_field(
        required=True,
        note="a service in the registry; short names are read in the rule's namespace",
    )
    traffic_policy: TrafficPolicy | None = spec_field(
        note="applies to every cluster of the host unless a port entry or subset replaces a block"
    )
    subsets: tuple[Subset, ...] = spec_field(
        default=(),
        note="a route naming a subset no rule defines gets 503 NC, as in Istio",
    )
    export_to: tuple[str, ...] = spec_field(default=(), note="unset: all namespaces")
    workload_selector: MatchLabelsSelector | None = spec_field(
        note="applies the rule only to matching workloads in its namespace"
    )

    def subset(self, name: str) -> Subset | None:
        """The subset called ``name``, if any."""
        return next((s for s in self.subsets if s.name == name), None)
