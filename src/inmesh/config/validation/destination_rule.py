"""DestinationRule checks, after Istio's own.

Two gates decide whether Istio takes a DestinationRule, and both are
reproduced here as errors:

- the validating webhook / ``istioctl validate``: istio/istio
  ``pkg/config/validation/validation.go`` (``ValidateDestinationRule``,
  ``validateTrafficPolicy``, ``validateOutlierDetection``,
  ``validateConnectionPool``, ``validateLoadBalancer``, ``validateSubset``,
  ``validatePortTrafficPolicies``, ``validateTunnelSettings``,
  ``validateProxyProtocol``, ``validateExportTo``, ``validateWorkloadSelector``)
  with ``pkg/config/validation/agent/validation.go`` (``ValidateDuration``,
  ``ValidateTLS``, ``ValidateLocalityLbSetting``, ``ValidateZoneAwareLbSetting``,
  ``ValidateWildcardDomain``, ``ValidateFQDN``) and ``pkg/config/labels``;
- the CRD schema the Kubernetes API server applies first (integer ranges,
  required fields, ``duration >= 1ms`` CEL rules, list sizes), generated from
  istio/api ``networking/v1alpha3/destination_rule.proto``. Comments say
  "(CRD)" where a rule exists only there.

Istio's warnings stay warnings. Hints that Istio does not give (settings that
Istio accepts but that have no effect, or that Envoy refuses after Istio took
them) are warnings too, and their comments say "inmesh hint".
"""

from __future__ import annotations

import math
from typing import Any

from .._schema import Reporter
from .._yaml import Path
from ..resources._common import Duration
from ..resources.destination_rule import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    DestinationRuleSpec,
    H2UpgradePolicy,
    LoadBalancerSettings,
    LocalityLoadBalancerSetting,
    OutlierDetection,
    PortTrafficPolicy,
    RetryBudget,
    SimpleLB,
    TLSMode,
    TrafficPolicy,
    TunnelSettings,
    WarmupConfiguration,
    ZoneAwareLoadBalancerSetting,
)
from ._common import (
    check_duration,
    check_export_to,
    check_labels,
    check_selector_label,
    check_selector_size,
    fqdn_problem,
    is_dns1123_label,
    is_ip,
    wildcard_domain_problem,
)

__all__ = ["validate_destination_rule"]

_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_MAGLEV_TABLE_LIMIT = 5000011  # Istio: tableSize must be below it (and prime)
_ENVOY_RING_SIZE_MAX = 8388608  # Envoy RingHashLbConfig.minimum_ring_size: lte 8M
_MAX_PORT_LEVEL_SETTINGS = 4096  # (CRD) maxItems
_MAX_SELECTOR_LABELS = 4096  # (CRD) maxProperties

# Topology labels (istio/istio pilot/pkg/serviceregistry/util/label).
_REGION = "topology.kubernetes.io/region"
_ZONE = "topology.kubernetes.io/zone"
_SUBZONE = "topology.istio.io/subzone"
_TOPOLOGY = (_REGION, _ZONE, _SUBZONE)

_CONFIGMAP_PREFIX = "configmap://"


class _Context:
    """What the checks of a traffic policy need to know about the rule around it."""

    __slots__ = ("has_selector", "namespace")

    def __init__(self, namespace: str, has_selector: bool) -> None:
        self.namespace = namespace
        self.has_selector = has_selector


# ---------------------------------------------------------------------------
# The rule


def validate_destination_rule(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidateDestinationRule`` plus the CRD rules, on a parsed DestinationRule."""
    spec: DestinationRuleSpec = resource.spec
    namespace: str = resource.metadata.namespace
    ctx = _Context(namespace, spec.workload_selector is not None)

    _check_host(spec.host, rep)
    if spec.traffic_policy is not None:
        _check_traffic_policy(spec.traffic_policy, ("spec", "trafficPolicy"), ctx, rep)
    _check_subsets(spec, ctx, rep)
    check_export_to(
        spec.export_to,
        namespace,
        rep,
        kind="DestinationRule",
        with_selector=spec.workload_selector is not None,
    )
    _check_workload_selector(spec, rep)


def _check_host(host: str | None, rep: Reporter) -> None:
    """``agent.ValidateWildcardDomain``: an FQDN or short name, '*' allowed as the first label."""
    path: Path = ("spec", "host")
    if host is None:
        return  # reported by the parser as required
    problem = wildcard_domain_problem(host)
    if problem is not None:
        rep.error(
            path,
            f"host {host!r} is not a valid domain name: {problem}" if host else "host is empty",
            "write the service's name: a short name (reviews), an FQDN "
            "(reviews.prod.svc.cluster.local) or a wildcard (*.example.com)",
        )


def _check_subsets(spec: DestinationRuleSpec, ctx: _Context, rep: Reporter) -> None:
    seen: dict[str, int] = {}
    for i, subset in enumerate(spec.subsets):
        path: Path = ("spec", "subsets", i)
        name = subset.name
        if name is not None:
            # validateSubsetName
            if not name:
                rep.error((*path, "name"), "subset name is empty", "name the subset, e.g. v1")
            elif not is_dns1123_label(name):
                rep.error(
                    (*path, "name"),
                    f"subset name {name!r} is not a valid DNS-1123 label",
                    "use at most 63 letters, digits and '-', starting and ending with a "
                    "letter or digit (e.g. v1, canary)",
                )
            if name in seen:
                rep.error(
                    (*path, "name"),
                    f"subset name {name!r} is also used by subsets[{seen[name]}]",
                    "give every subset a different name",
                )
            else:
                seen[name] = i
        check_labels(subset.labels, (*path, "labels"), rep)
        if subset.traffic_policy is not None:
            _check_traffic_policy(subset.traffic_policy, (*path, "trafficPolicy"), ctx, rep)


def _check_workload_selector(spec: DestinationRuleSpec, rep: Reporter) -> None:
    """``validateWorkloadSelector`` plus the CRD limits on ``matchLabels``."""
    selector = spec.workload_selector
    if selector is None:
        return
    path: Path = ("spec", "workloadSelector", "matchLabels")
    labels = selector.match_labels
    if not labels:
        rep.warn(
            ("spec", "workloadSelector"),
            "workloadSelector has no labels, so it selects every workload in the namespace",
            "add matchLabels naming the client workloads, or remove workloadSelector",
        )
    check_selector_size(labels, path, rep, _MAX_SELECTOR_LABELS)
    for key, value in labels.items():
        check_selector_label(key, value, (*path, key), rep)


# ---------------------------------------------------------------------------
# Traffic policy


def _check_traffic_policy(tp: TrafficPolicy, path: Path, ctx: _Context, rep: Reporter) -> None:
    """``validateTrafficPolicy``."""
    if tp.is_empty:
        rep.error(
            path,
            "trafficPolicy is empty",
            "set at least one of loadBalancer, connectionPool, outlierDetection, tls, "
            "portLevelSettings, tunnel, proxyProtocol, retryBudget; or remove it",
        )
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        rep.error(
            (*path, "proxyProtocol"),
            "tunnel and proxyProtocol cannot be set together",
            "keep one of them",
        )
    _check_policy_blocks(
        tp.load_balancer, tp.connection_pool, tp.outlier_detection, tp.tls, path, ctx, rep
    )
    _check_port_level_settings(tp.port_level_settings, (*path, "portLevelSettings"), ctx, rep)
    if tp.tunnel is not None:
        _check_tunnel(tp.tunnel, (*path, "tunnel"), rep)
    if tp.retry_budget is not None:
        _check_retry_budget(tp.retry_budget, (*path, "retryBudget"), rep)


def _check_policy_blocks(
    lb: LoadBalancerSettings | None,
    pool: ConnectionPoolSettings | None,
    outlier: OutlierDetection | None,
    tls: ClientTLSSettings | None,
    path: Path,
    ctx: _Context,
    rep: Reporter,
) -> None:
    """The four blocks a traffic policy and a port-level entry share."""
    if outlier is not None:
        _check_outlier_detection(outlier, (*path, "outlierDetection"), rep)
    if pool is not None:
        _check_connection_pool(pool, (*path, "connectionPool"), rep)
    if lb is not None:
        _check_load_balancer(lb, (*path, "loadBalancer"), outlier is not None, rep)
    if tls is not None:
        _check_tls(tls, (*path, "tls"), ctx, rep)


def _check_port_level_settings(
    entries: tuple[PortTrafficPolicy, ...], path: Path, ctx: _Context, rep: Reporter
) -> None:
    """``validatePortTrafficPolicies`` (port required, at least one block)."""
    if len(entries) > _MAX_PORT_LEVEL_SETTINGS:  # (CRD) maxItems
        rep.error(
            path,
            f"{len(entries)} port-level settings is more than the {_MAX_PORT_LEVEL_SETTINGS} "
            "Istio allows",
            "keep one entry per port",
        )
    first: dict[int, int] = {}
    for i, entry in enumerate(entries):
        epath: Path = (*path, i)
        if entry.port is None:
            rep.error(
                (*epath, "port"),
                "a port-level setting needs a port",
                "add port: {number: <the destination port>}",
            )
        else:
            number = entry.port.number or 0
            ppath: Path = (*epath, "port", "number")
            if not 0 <= number <= _UINT32_MAX:  # (CRD) uint32
                _in_range(number, 0, _UINT32_MAX, ppath, rep, "port number")
            elif not 1 <= number <= 65535:
                # inmesh hint: Istio takes it, but no destination port matches it.
                rep.warn(
                    ppath,
                    f"port {number} never matches a destination port, so this entry has no effect",
                    "use the port number of the destination service (1-65535)",
                )
            elif number in first:
                # inmesh hint: Istio takes the first entry for a port and ignores the rest.
                rep.warn(
                    ppath,
                    f"port {number} already has an entry (portLevelSettings[{first[number]}]), "
                    "which wins; this one has no effect",
                    "merge the two entries into one",
                )
            else:
                first[number] = i
        if (
            entry.load_balancer is None
            and entry.connection_pool is None
            and entry.outlier_detection is None
            and entry.tls is None
        ):
            rep.error(
                epath,
                "a port-level setting needs at least one of loadBalancer, connectionPool, "
                "outlierDetection and tls",
                "add the settings for this port, or remove the entry",
            )
            continue
        _check_policy_blocks(
            entry.load_balancer,
            entry.connection_pool,
            entry.outlier_detection,
            entry.tls,
            epath,
            ctx,
            rep,
        )


def _check_tunnel(tunnel: TunnelSettings, path: Path, rep: Reporter) -> None:
    """``validateTunnelSettings``."""
    if tunnel.protocol and tunnel.protocol not in ("CONNECT", "POST"):
        rep.error(
            (*path, "protocol"),
            f"tunnel protocol {tunnel.protocol!r} is not supported",
            "use CONNECT or POST (in upper case), or leave it unset for CONNECT",
        )
    host = tunnel.target_host
    if host is not None and not is_ip(host) and fqdn_problem(host) is not None:
        rep.error(
            (*path, "targetHost"),
            f"tunnel targetHost {host!r} is neither an FQDN nor an IP address: "
            f"{fqdn_problem(host)}",
            "write the host to tunnel to, e.g. proxy.example.com or 10.0.0.1",
        )
    port = tunnel.target_port
    if port is not None and not 1 <= port <= 65535:
        rep.error(
            (*path, "targetPort"),
            f"tunnel targetPort {port} is out of range",
            "use a port from 1 to 65535",
        )


def _check_retry_budget(budget: RetryBudget, path: Path, rep: Reporter) -> None:
    if budget.percent is not None and not 0 <= budget.percent <= 100:  # (CRD) 0..100
        rep.error(
            (*path, "percent"),
            f"percent {budget.percent:g} is not between 0 and 100",
            "give the share of active requests that may be retries, e.g. 20",
        )
    if budget.min_retry_concurrency is not None:
        _in_range(budget.min_retry_concurrency, 0, _UINT32_MAX, (*path, "minRetryConcurrency"), rep)
    interval = budget.budget_interval
    if interval is not None and interval.seconds < 0:
        # inmesh hint: Istio passes it to Envoy, which refuses negative durations.
        rep.warn(
            (*path, "budgetInterval"),
            f"budgetInterval {interval} is negative",
            "use 0s (count active requests only) or a positive duration",
        )


# ---------------------------------------------------------------------------
# Outlier detection


def _check_outlier_detection(od: OutlierDetection, path: Path, rep: Reporter) -> None:
    """``validateOutlierDetection`` plus the CRD integer ranges."""
    if od.base_ejection_time is not None:
        check_duration(
            od.base_ejection_time, (*path, "baseEjectionTime"), rep, what="baseEjectionTime"
        )
    if od.interval is not None:
        check_duration(od.interval, (*path, "interval"), rep, what="interval")
    # consecutiveErrors: the parser warns that it is deprecated (Istio does too).
    if od.consecutive_errors is not None:
        _in_range(od.consecutive_errors, -(2**31), _INT32_MAX, (*path, "consecutiveErrors"), rep)
    for attr, yaml_name in (
        ("consecutive_local_origin_failures", "consecutiveLocalOriginFailures"),
        ("consecutive_gateway_errors", "consecutiveGatewayErrors"),
        ("consecutive_5xx_errors", "consecutive5xxErrors"),
    ):
        value = getattr(od, attr)
        if value is not None:
            _in_range(value, 0, _UINT32_MAX, (*path, yaml_name), rep)
    local = od.consecutive_local_origin_failures
    if local is not None and local > 0 and not od.split_external_local_origin_errors:
        rep.error(
            (*path, "consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures is set, but splitExternalLocalOriginErrors is "
            "false, so local-origin failures are not counted apart",
            "set splitExternalLocalOriginErrors: true, or remove consecutiveLocalOriginFailures",
        )
    for attr, yaml_name in (
        ("max_ejection_percent", "maxEjectionPercent"),
        ("min_health_percent", "minHealthPercent"),
    ):
        value = getattr(od, attr)
        if value is not None and not 0 <= value <= 100:  # ValidatePercent
            rep.error(
                (*path, yaml_name),
                f"{yaml_name} {value} is not a percentage from 0 to 100",
                f"set {yaml_name} between 0 and 100",
            )
    for i, code in enumerate(od.outlier_detection_http_error_codes):
        if not 100 <= code <= 599:  # (CRD) list item minimum/maximum
            rep.error(
                (*path, "outlierDetectionHttpErrorCodes", i),
                f"{code} is not an HTTP status code",
                "use status codes from 100 to 599",
            )
    gateway = od.consecutive_gateway_errors
    five_xx = 5 if od.consecutive_5xx_errors is None else od.consecutive_5xx_errors
    if gateway is not None and 0 < five_xx <= gateway:
        # inmesh hint, from the field's documentation: gateway errors are 5xx errors too.
        rep.warn(
            (*path, "consecutiveGatewayErrors"),
            f"consecutiveGatewayErrors ({gateway}) is not below consecutive5xxErrors "
            f"({five_xx}), so it never ejects a host first and has no effect",
            "set consecutiveGatewayErrors below consecutive5xxErrors, or set "
            "consecutive5xxErrors: 0 to eject on gateway errors only",
        )


# ---------------------------------------------------------------------------
# Connection pool


def _check_connection_pool(pool: ConnectionPoolSettings, path: Path, rep: Reporter) -> None:
    """``validateConnectionPool`` plus the CRD ranges and duration rules."""
    if pool.tcp is None and pool.http is None:
        rep.error(
            path,
            "connectionPool needs tcp or http settings",
            "add tcp: {maxConnections: ...} and/or http: {http1MaxPendingRequests: ...}, "
            "or remove connectionPool",
        )
        return
    http = pool.http
    if http is not None:
        hpath: Path = (*path, "http")
        for attr, yaml_name in (
            ("http1_max_pending_requests", "http1MaxPendingRequests"),
            ("http2_max_requests", "http2MaxRequests"),
            ("max_requests_per_connection", "maxRequestsPerConnection"),
            ("max_retries", "maxRetries"),
            ("max_concurrent_streams", "maxConcurrentStreams"),
        ):
            _check_int32_limit(getattr(http, attr), (*hpath, yaml_name), rep)
        if http.idle_timeout is not None:
            check_duration(http.idle_timeout, (*hpath, "idleTimeout"), rep, what="idleTimeout")
        if http.h2_upgrade_policy is H2UpgradePolicy.UPGRADE and http.use_client_protocol:
            rep.error(
                (*hpath, "useClientProtocol"),
                "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE",
                "keep the client's protocol (useClientProtocol) or upgrade to HTTP/2, not both",
            )
        keepalive = http.http2_keep_alive
        if keepalive is not None:
            kpath: Path = (*hpath, "http2KeepAlive")
            for value, yaml_name in (
                (keepalive.interval, "interval"),
                (keepalive.timeout, "timeout"),
            ):
                if value is None:
                    rep.error(
                        (*kpath, yaml_name),
                        f"http2KeepAlive needs {yaml_name}",
                        "set both interval and timeout, e.g. {interval: 30s, timeout: 5s}",
                    )
                else:
                    check_duration(value, (*kpath, yaml_name), rep, what=yaml_name)
    tcp = pool.tcp
    if tcp is not None:
        tpath: Path = (*path, "tcp")
        _check_int32_limit(tcp.max_connections, (*tpath, "maxConnections"), rep)
        if tcp.connect_timeout is not None:
            check_duration(
                tcp.connect_timeout, (*tpath, "connectTimeout"), rep, what="connectTimeout"
            )
        if tcp.max_connection_duration is not None:
            check_duration(
                tcp.max_connection_duration,
                (*tpath, "maxConnectionDuration"),
                rep,
                what="maxConnectionDuration",
            )
        idle = tcp.idle_timeout
        # 0s disables the timeout; Istio skips anything that truncates to 0 whole ms.
        if idle is not None and math.trunc(idle.seconds * 1000) != 0:
            check_duration(idle, (*tpath, "idleTimeout"), rep, what="idleTimeout")
        keepalive_tcp = tcp.tcp_keepalive
        if keepalive_tcp is not None:
            kpath = (*tpath, "tcpKeepalive")
            if keepalive_tcp.probes is not None:
                _in_range(keepalive_tcp.probes, 0, _UINT32_MAX, (*kpath, "probes"), rep)
            if keepalive_tcp.time is not None:
                check_duration(keepalive_tcp.time, (*kpath, "time"), rep, what="time")
            if keepalive_tcp.interval is not None:
                check_duration(keepalive_tcp.interval, (*kpath, "interval"), rep, what="interval")


def _check_int32_limit(value: int | None, path: Path, rep: Reporter) -> None:
    """A connection-pool limit: an int32 (CRD) that Istio wants non-negative."""
    if value is None:
        return
    name = str(path[-1])
    if value < 0:
        rep.error(
            path,
            f"{name} {value} is negative",
            f"use 0 or leave {name} unset for no limit, or a positive limit",
        )
    elif value > _INT32_MAX:
        rep.error(
            path,
            f"{name} {value} does not fit in 32 bits",
            f"use at most {_INT32_MAX}, or leave {name} unset for no limit",
        )


# ---------------------------------------------------------------------------
# Load balancer


def _check_load_balancer(
    lb: LoadBalancerSettings, path: Path, has_outlier: bool, rep: Reporter
) -> None:
    """``validateLoadBalancer`` (consistent hash, locality, warmup)."""
    if lb.simple is SimpleLB.LEAST_CONN:
        # inmesh hint: the enum value is deprecated in the proto; Istio maps it to LEAST_REQUEST.
        rep.warn(
            (*path, "simple"),
            "LEAST_CONN is deprecated; Istio treats it as LEAST_REQUEST",
            "write simple: LEAST_REQUEST",
        )
    if lb.consistent_hash is not None:
        _check_consistent_hash(lb.consistent_hash, (*path, "consistentHash"), rep)
    if lb.locality_lb_setting is not None and lb.zone_aware_lb_setting is not None:
        rep.error(
            (*path, "zoneAwareLbSetting"),
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
            "keep one of them",
        )
    if lb.locality_lb_setting is not None:
        _check_locality(lb.locality_lb_setting, (*path, "localityLbSetting"), has_outlier, rep)
    if lb.zone_aware_lb_setting is not None:
        _check_zone_aware(lb.zone_aware_lb_setting, (*path, "zoneAwareLbSetting"), has_outlier, rep)
    if lb.backend_utilization is not None:
        bu = lb.backend_utilization
        if bu.error_utilization_penalty_percent is not None:
            _in_range(
                bu.error_utilization_penalty_percent,
                0,
                _UINT32_MAX,
                (*path, "backendUtilization", "errorUtilizationPenaltyPercent"),
                rep,
            )
    if lb.warmup_duration_secs is not None:
        _check_cel_duration(lb.warmup_duration_secs, (*path, "warmupDurationSecs"), rep)
    if lb.warmup is not None:
        _check_warmup(lb.warmup, (*path, "warmup"), rep)
        if lb.warmup_duration_secs is not None:
            # inmesh hint: the proto says only one may be set; Istio uses warmup.
            rep.warn(
                (*path, "warmupDurationSecs"),
                "warmupDurationSecs is ignored because warmup is set",
                "remove warmupDurationSecs",
            )
    if (lb.warmup is not None or lb.warmup_duration_secs is not None) and (
        lb.effective_simple not in (SimpleLB.ROUND_ROBIN, SimpleLB.LEAST_REQUEST)
    ):
        # inmesh hint: Istio only configures slow start for these two algorithms.
        if lb.consistent_hash is not None:
            used = "consistentHash"
        elif lb.backend_utilization is not None:
            used = "backendUtilization"
        else:
            used = f"simple: {lb.effective_simple.value if lb.effective_simple else '?'}"
        rep.warn(
            (*path, "warmup" if lb.warmup is not None else "warmupDurationSecs"),
            f"warmup only applies to ROUND_ROBIN and LEAST_REQUEST, so it has no effect "
            f"with {used}",
            "use simple: ROUND_ROBIN or LEAST_REQUEST, or remove the warmup",
        )


def _check_consistent_hash(ch: ConsistentHashLB, path: Path, rep: Reporter) -> None:
    cookie = ch.http_cookie
    if cookie is not None:
        cpath: Path = (*path, "httpCookie")
        if cookie.name is not None and not cookie.name:
            rep.error(
                (*cpath, "name"),
                "the cookie name is empty",
                "name the cookie to hash on, e.g. name: session",
            )
        names: dict[str, int] = {}
        for i, attr in enumerate(cookie.attributes):
            apath: Path = (*cpath, "attributes", i, "name")
            if attr.name is None:
                continue  # reported by the parser as required
            if not attr.name:
                rep.error(
                    apath, "cookie attribute name is empty", "name the attribute, e.g. SameSite"
                )
            elif attr.name in names:
                rep.error(
                    apath,
                    f"cookie attribute {attr.name!r} is also set by attributes[{names[attr.name]}]",
                    "set each attribute once",
                )
            else:
                names[attr.name] = i
        if cookie.ttl is not None and cookie.ttl.seconds < 0:
            # inmesh hint: Istio passes the ttl to Envoy, which refuses negative durations.
            rep.warn(
                (*cpath, "ttl"),
                f"ttl {cookie.ttl} is negative",
                "use 0s for a session cookie, or a positive lifetime",
            )
    if not ch.has_hash_key:
        # inmesh hint: Istio takes it, but without a key there is no affinity.
        rep.warn(
            path,
            "consistentHash has no hash key, so requests are spread at random with no affinity",
            "set one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        )
    for value, yaml_name in (
        (ch.http_header_name, "httpHeaderName"),
        (ch.http_query_parameter_name, "httpQueryParameterName"),
    ):
        if value is not None and not value:
            # inmesh hint: Envoy refuses an empty header / query parameter name.
            rep.warn(
                (*path, yaml_name),
                f"{yaml_name} is empty; Envoy refuses the route it is used on",
                f"name the {'header' if yaml_name == 'httpHeaderName' else 'query parameter'} "
                "to hash on",
            )
    if ch.use_source_ip is False:
        # inmesh hint: the key is set, but hashing on the source IP is turned off.
        rep.warn(
            (*path, "useSourceIp"),
            "useSourceIp: false hashes on nothing, so requests are spread at random",
            "write useSourceIp: true, or choose another hash key",
        )
    deprecated_size = ch.minimum_ring_size
    if deprecated_size is not None:
        _in_range(deprecated_size, 0, _UINT64_MAX, (*path, "minimumRingSize"), rep)
        # the parser already warns that minimumRingSize is deprecated
        if deprecated_size != 0 and (ch.ring_hash is not None or ch.maglev is not None):
            rep.error(
                (*path, "minimumRingSize"),
                "only one of minimumRingSize and ringHash/maglev can be set",
                "move the size into ringHash: {minimumRingSize: ...}",
            )
        _check_ring_size(deprecated_size, (*path, "minimumRingSize"), rep)
    if ch.ring_hash is not None and ch.ring_hash.minimum_ring_size is not None:
        rpath: Path = (*path, "ringHash", "minimumRingSize")
        if _in_range(ch.ring_hash.minimum_ring_size, 0, _UINT64_MAX, rpath, rep):
            _check_ring_size(ch.ring_hash.minimum_ring_size, rpath, rep)
    if ch.maglev is not None:
        mpath: Path = (*path, "maglev", "tableSize")
        size = ch.maglev.table_size or 0
        if size == 0:
            rep.error(mpath, "maglev needs a tableSize", "use a prime such as 65537")
        elif size < 0:
            rep.error(mpath, f"tableSize {size} is negative", "use a prime such as 65537")
        elif size >= _MAGLEV_TABLE_LIMIT:
            rep.error(
                mpath,
                f"tableSize {size} is not below {_MAGLEV_TABLE_LIMIT}",
                "use a smaller prime, such as 65537 or 131071",
            )
        elif not _is_prime(size):
            rep.error(
                mpath,
                f"tableSize {size} is not a prime number",
                f"use a prime, e.g. {_next_prime(size)}",
            )


def _check_ring_size(size: int, path: Path, rep: Reporter) -> None:
    if size > _ENVOY_RING_SIZE_MAX:
        # inmesh hint: Istio takes it, but Envoy refuses the cluster (lte 8388608).
        rep.warn(
            path,
            f"a ring of {size} entries is larger than the {_ENVOY_RING_SIZE_MAX} Envoy "
            "accepts; sidecars would reject this configuration",
            f"use at most {_ENVOY_RING_SIZE_MAX} (1024 is the default)",
        )


def _check_warmup(warm: WarmupConfiguration, path: Path, rep: Reporter) -> None:
    if warm.duration is not None:
        check_duration(warm.duration, (*path, "duration"), rep, what="duration")
    if warm.minimum_percent is not None and not 0 <= warm.minimum_percent <= 100:
        rep.error(
            (*path, "minimumPercent"),
            f"minimumPercent {warm.minimum_percent:g} is not between 0 and 100",
            "set the share of its weight a new endpoint starts with, e.g. 10",
        )
    if warm.aggression is not None and warm.aggression <= 0:
        rep.error(
            (*path, "aggression"),
            f"aggression {warm.aggression:g} must be greater than 0",
            "use 1.0 for a linear ramp-up, more for a faster one",
        )


# -- locality ------------------------------------------------------------------


def _check_locality(
    lb: LocalityLoadBalancerSetting, path: Path, has_outlier: bool, rep: Reporter
) -> None:
    """``agent.ValidateLocalityLbSetting``."""
    if lb.distribute and lb.failover:
        rep.error(
            (*path, "failover"),
            "distribute and failover cannot be set together",
            "use distribute to split traffic by locality, or failover to choose where "
            "traffic goes when a region fails, not both",
        )
        return
    if lb.failover and lb.failover_priority:
        for i, label in enumerate(lb.failover_priority):
            if label in _TOPOLOGY:
                rep.error(
                    (*path, "failoverPriority", i),
                    f"failoverPriority cannot use {label!r} together with failover",
                    "remove the region/zone/subzone labels from failoverPriority, or drop failover",
                )
                return
    if lb.distribute and lb.failover_priority:
        # inmesh hint: the proto allows only one of distribute, failover, failoverPriority.
        rep.warn(
            (*path, "failoverPriority"),
            "failoverPriority is set together with distribute; Istio's API allows only one "
            "of distribute, failover and failoverPriority",
            "keep distribute or failoverPriority",
        )
    for i, entry in enumerate(lb.distribute):
        dpath: Path = (*path, "distribute", i)
        total = 0
        ok = True
        for locality, weight in entry.to.items():
            if not 1 <= weight <= 100:
                rep.error(
                    (*dpath, "to", locality),
                    f"weight {weight} for {locality!r} is not from 1 to 100",
                    "give each locality a weight from 1 to 100, or leave it out",
                )
                ok = False
            total += weight
        if ok and total != 100:
            rep.error(
                (*dpath, "to"),
                f"the weights add up to {total}, not 100",
                "make the weights of to add up to exactly 100",
            )
        _check_locality_names(list(entry.to), (*dpath, "to"), rep, ordered=False)
    if lb.distribute:
        sources = [entry.from_ or "" for entry in lb.distribute]
        _check_locality_names(sources, (*path, "distribute"), rep, ordered=True)
    if (lb.failover or lb.failover_priority) and not has_outlier:
        rep.warn(
            (*path, "failover" if lb.failover else "failoverPriority"),
            "failover needs outlier detection to notice unhealthy endpoints; without "
            "outlierDetection it has no effect",
            "add outlierDetection next to loadBalancer",
        )
    _check_failover(lb.failover, (*path, "failover"), rep)


def _check_zone_aware(
    lb: ZoneAwareLoadBalancerSetting, path: Path, has_outlier: bool, rep: Reporter
) -> None:
    """``agent.ValidateZoneAwareLbSetting``."""
    for i, label in enumerate(lb.failover_priority):
        if label in _TOPOLOGY:
            rep.error(
                (*path, "failoverPriority", i),
                f"failoverPriority of zone-aware load balancing cannot use {label!r}: region "
                "and zone routing are automatic",
                "remove the region/zone/subzone labels; use failover to order regions",
            )
    if (lb.failover or lb.failover_priority) and not has_outlier:
        rep.warn(
            (*path, "failover" if lb.failover else "failoverPriority"),
            "failover needs outlier detection to notice unhealthy endpoints; without "
            "outlierDetection it has no effect",
            "add outlierDetection next to loadBalancer",
        )
    _check_failover(lb.failover, (*path, "failover"), rep)
    if lb.min_cluster_size is not None and not 1 <= lb.min_cluster_size <= _UINT32_MAX:
        rep.error(  # (CRD) minimum 1
            (*path, "minClusterSize"),
            f"minClusterSize {lb.min_cluster_size} is out of range",
            "use at least 1 (default 6)",
        )


def _check_failover(failovers: tuple[Any, ...], path: Path, rep: Reporter) -> None:
    for i, failover in enumerate(failovers):
        fpath: Path = (*path, i)
        src = failover.from_ or ""
        dst = failover.to or ""
        if src == dst:
            rep.error(
                (*fpath, "to"),
                f"failover goes from region {src!r} to the same region"
                if src
                else "failover needs from and to regions",
                "fail over to a different region, e.g. {from: us-east, to: us-west}",
            )
        for value, yaml_name in ((src, "from"), (dst, "to")):
            if "/" in value:
                rep.error(
                    (*fpath, yaml_name),
                    f"failover {yaml_name} {value!r} is not a region (it has a '/')",
                    "failover names regions only; zones fail over automatically",
                )
            if "*" in value:
                rep.error(
                    (*fpath, yaml_name),
                    f"failover {yaml_name} {value!r} has a '*' wildcard",
                    "name the region exactly",
                )
        if src and not dst:
            # inmesh hint: Istio takes it, but there is nowhere to fail over to.
            rep.warn(
                (*fpath, "to"),
                f"failover from {src!r} has no to region",
                "name the region traffic should go to",
            )


def _locality_parts(locality: str) -> list[str] | None:
    """``getLocalityParam``: region[/zone[/subzone]], no part empty."""
    parts = locality.split("/", 2)
    return None if any(not p for p in parts) else parts


def _overlaps(earlier: list[str], later: list[str]) -> bool:
    """Whether Istio's ``validateLocalities`` refuses ``later`` after ``earlier``.

    Istio records each locality in a region -> zone -> subzone map and refuses
    one that lands on what an earlier entry recorded: a bare region claims the
    whole region, ``region/*`` all its zones, ``region/zone`` (or
    ``region/zone/*``) the whole zone.
    """
    if earlier == ["*"]:
        return True
    if earlier[0] != later[0]:
        return False
    if len(later) == 1 or len(earlier) == 1 or earlier[1] == "*":
        return True
    if earlier[1] != later[1]:
        return False
    if len(later) == 2 or len(earlier) == 2 or earlier[2] == "*":
        return True
    return earlier[2] == later[2]


def _check_locality_names(
    localities: list[str], path: Path, rep: Reporter, *, ordered: bool
) -> None:
    """``validateLocalities``: wildcard only at the end, no empty part, no overlap.

    For the ``from`` list Istio checks in list order, so a broad entry after a
    narrower one is fine (the first match wins) and the reverse is refused.
    The weights of ``to`` are a Go map, read in random order: Istio refuses
    an overlap there sooner or later, and inmesh always does.
    """
    seen: list[tuple[list[str], str]] = []
    for index, locality in enumerate(localities):
        lpath: Path = (*path, index, "from") if ordered else (*path, locality)
        stars = locality.count("*")
        if stars and (stars > 1 or not locality.endswith("*")):
            rep.error(
                lpath,
                f"locality {locality!r} may only have one '*', at the end",
                "write region, region/zone or region/zone/subzone, ending in '*' for a "
                "wildcard (us-west/*)",
            )
            return
        parts = _locality_parts(locality)
        if parts is None:
            rep.error(
                lpath,
                f"locality {locality!r} has an empty region, zone or subzone"
                if locality
                else "locality is empty",
                "write region, region/zone or region/zone/subzone",
            )
            return
        for earlier, text in seen:
            if _overlaps(earlier, parts) or (not ordered and _overlaps(parts, earlier)):
                rep.error(
                    lpath,
                    f"locality {locality!r} overlaps {text!r}",
                    "put narrower localities before broader ones"
                    if ordered
                    else "list each locality once, without one including another",
                )
                return
        seen.append((parts, locality))


# -- TLS -----------------------------------------------------------------------


def _check_tls(tls: ClientTLSSettings, path: Path, ctx: _Context, rep: Reporter) -> None:
    """``agent.ValidateTLS``, plus hints about settings a mode ignores."""
    mode = tls.mode
    cred = tls.credential_name or ""
    if cred.startswith(_CONFIGMAP_PREFIX):
        rest = cred[len(_CONFIGMAP_PREFIX) :]
        ns, sep, name = rest.partition("/")
        name = name.split("/", 1)[0]
        if not sep or not ns or not name:
            rep.error(
                (*path, "credentialName"),
                f"credentialName {cred!r} is not configmap://<namespace>/<name>",
                f"write configmap://{ctx.namespace}/<configmap name>",
            )
        elif ns != ctx.namespace:
            rep.error(
                (*path, "credentialName"),
                f"credentialName {cred!r} names namespace {ns!r}, but a configmap:// "
                f"credential must be in the rule's namespace {ctx.namespace!r}",
                f"write configmap://{ctx.namespace}/{name}",
            )
    if tls.insecure_skip_verify:
        if mode is TLSMode.SIMPLE and (tls.ca_certificates or cred or tls.subject_alt_names):
            rep.error(
                (*path, "insecureSkipVerify"),
                "insecureSkipVerify: true cannot be combined with caCertificates, "
                "credentialName or subjectAltNames",
                "verify the server (remove insecureSkipVerify) or skip verification "
                "(remove the CA and the names)",
            )
        if mode is TLSMode.MUTUAL and (tls.ca_certificates or tls.subject_alt_names):
            rep.error(
                (*path, "insecureSkipVerify"),
                "insecureSkipVerify: true cannot be combined with caCertificates or "
                "subjectAltNames",
                "verify the server (remove insecureSkipVerify) or skip verification "
                "(remove caCertificates and subjectAltNames)",
            )
    if mode in (TLSMode.SIMPLE, TLSMode.MUTUAL) and cred:
        clash = [
            name
            for name, value in (
                ("clientCertificate", tls.client_certificate),
                ("privateKey", tls.private_key),
                ("caCertificates", tls.ca_certificates),
                ("caCrl", tls.ca_crl),
            )
            if value
        ]
        if clash:
            rep.error(
                (*path, clash[0]),
                f"{', '.join(clash)} cannot be set together with credentialName, which "
                "supplies the certificates (and the CRL) itself",
                "use credentialName or the certificate files, not both",
            )
        if not ctx.has_selector:
            # inmesh hint, from the field's documentation (and cluster_tls.go).
            rep.warn(
                (*path, "credentialName"),
                "credentialName is used by sidecars only when the DestinationRule has a "
                "workloadSelector; otherwise only gateways use it",
                "add a workloadSelector, or use clientCertificate, privateKey and caCertificates",
            )
        return
    if mode is TLSMode.MUTUAL:
        for value, yaml_name, what in (
            (tls.client_certificate, "clientCertificate", "client certificate"),
            (tls.private_key, "privateKey", "private key"),
        ):
            if not value:
                rep.error(
                    (*path, yaml_name),
                    f"mode MUTUAL needs a {what} ({yaml_name})",
                    f"set {yaml_name} to a PEM file, or set credentialName instead",
                )
    ignored = [
        name
        for name, value in (
            ("clientCertificate", tls.client_certificate),
            ("privateKey", tls.private_key),
            ("caCertificates", tls.ca_certificates),
            ("credentialName", tls.credential_name),
            ("caCrl", tls.ca_crl),
        )
        if value
    ]
    if mode is TLSMode.ISTIO_MUTUAL and ignored:
        # inmesh hint: Istio takes these but uses the mesh certificates instead.
        rep.warn(
            (*path, ignored[0]),
            f"{', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored with mode "
            "ISTIO_MUTUAL, which uses the mesh's own certificates",
            "remove them, or use mode MUTUAL to present your own certificate",
        )
    if mode is TLSMode.DISABLE:
        extra = ignored + [
            name
            for name, value in (
                ("subjectAltNames", tls.subject_alt_names),
                ("sni", tls.sni),
                ("insecureSkipVerify", tls.insecure_skip_verify),
            )
            if value
        ]
        if extra:
            # inmesh hint: with TLS off, none of the TLS settings is used.
            rep.warn(
                (*path, extra[0]),
                f"{', '.join(extra)} {'has' if len(extra) == 1 else 'have'} no effect: mode is "
                "DISABLE (the default when mode is not set)",
                "set mode (SIMPLE, MUTUAL or ISTIO_MUTUAL), or remove the TLS settings",
            )


# ---------------------------------------------------------------------------
# Helpers


def _in_range(
    value: int, low: int, high: int, path: Path, rep: Reporter, what: str | None = None
) -> bool:
    """An integer fits its proto type (protojson / CRD refuse it otherwise)."""
    if low <= value <= high:
        return True
    name = what or str(path[-1])
    rep.error(
        path,
        f"{name} {value} is out of range",
        "use a non-negative number" if value < low else f"use at most {high}",
    )
    return False


def _check_cel_duration(d: Duration, path: Path, rep: Reporter) -> None:
    """(CRD) ``duration(self) >= duration('1ms')``, without Istio's precision rule."""
    if d.seconds < 0.001 - 1e-12:
        rep.error(path, f"{path[-1]} {d} is too short", "use at least 1ms")


def _is_prime(x: int) -> bool:
    """Envoy's ``Primes::isPrime``, as Istio copies it (1 counts as prime there)."""
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, math.isqrt(x) + 1, 2))


def _next_prime(x: int) -> int:
    n = x + 1
    while not _is_prime(n):
        n += 1
    return n
