"""The outbound decision path, sans I/O: what a client sidecar decides before it connects.

One :class:`OutboundPlanner` is compiled per configuration snapshot (off the
request path, when the snapshot is built). Per request the transports call:

1. :meth:`OutboundPlanner.route` with the request's :class:`RequestAttrs`:
   the registry lookup of the authority (istio-semantics.md §1.1), the
   VirtualService route (§1.2; 404 ``NR`` when none matches), redirects and
   direct responses, CORS, the fault decision (§1.8), the weighted
   destination (§1.3), its cluster (service, port, subset; 503 ``NC`` when it
   does not exist) and the mirrors that fire (§1.9). The result is a
   :class:`Routed`, a :class:`~inmesh.outbound.replies.LocalReply` or
   :data:`PASSTHROUGH` (a host outside the registry under ``ALLOW_ANY``).
2. :meth:`Cluster.pick` for the endpoint (503 ``UH`` when there is none);
   the balancer counts the request in flight until :meth:`Host.end`.
3. :func:`upstream_headers` for the headers sent upstream.

Everything random goes through the injected :class:`~inmesh._clock.Random`
and everything timed through the injected :class:`~inmesh._clock.Clock`.

Clusters are built on first use and kept per snapshot; a
:class:`ClusterManager`, which lives as long as the mesh, hands the same
:class:`~inmesh.balancing.Host` objects to the rebuilt clusters of a new
snapshot, so in-flight counts, slow-start ages and (later) outlier state
survive reloads.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from inmesh._clock import Clock, Random
from inmesh.balancing import Balancer, HashPolicy, Host, build_balancer, reconcile_hosts
from inmesh.config.snapshot import ConfigSnapshot
from inmesh.discovery.registry import Endpoint, Port, Registry, Service
from inmesh.model import Workload
from inmesh.policy.peer_authn import (
    MtlsMode,
    PeerAuthnPolicy,
    effective_peer_authentication,
)
from inmesh.resilience.admission import Admission, PoolSettings
from inmesh.resilience.budget import RetryAdmission
from inmesh.resilience.outcome import Outcome
from inmesh.resilience.outlier import OutlierConfig, OutlierDetector
from inmesh.resilience.retry import RetryPolicy
from inmesh.routing.match import RequestAttrs
from inmesh.routing.router import (
    ORIGINAL_PATH_HEADER,
    HeaderMutation,
    NoRoute,
    RouteDecision,
    RouteKind,
    RouteTable,
    WeightedDestination,
    expand_host,
    split_host_port,
)
from inmesh.upstream.policy import DestinationRuleIndex, EffectivePolicy
from inmesh.upstream.tls import UpstreamTLS, destination_identities, upstream_tls_for

from . import replies
from .replies import LocalReply, RequestInfo

if TYPE_CHECKING:
    from inmesh.routing.cors import CompiledCors, CorsResult
    from inmesh.routing.fault import CompiledFault, FaultDecision

__all__ = [
    "PASSTHROUGH",
    "Cluster",
    "ClusterManager",
    "ClusterRuntime",
    "Faulted",
    "OutboundOptions",
    "OutboundPlanner",
    "Passthrough",
    "Routed",
    "ShadowTarget",
    "shadow_authority",
    "upstream_headers",
]

ALLOW_ANY: Final = "ALLOW_ANY"
REGISTRY_ONLY: Final = "REGISTRY_ONLY"
PASSTHROUGH_CLUSTER: Final = "PassthroughCluster"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class OutboundOptions:
    """Mesh-wide outbound settings (MeshConfig's, in Istio).

    * ``outbound_traffic_policy``: ``ALLOW_ANY`` (Istio's default) passes
      requests for hosts outside the registry through unchanged;
      ``REGISTRY_ONLY`` answers them with Istio's ``block_all`` reply, 502.
    * ``auto_mtls``: MeshConfig ``enableAutoMtls`` (default on).
    * ``root_namespace``, ``domain_suffix``: as for the configuration.
    """

    outbound_traffic_policy: str = ALLOW_ANY
    auto_mtls: bool = True
    root_namespace: str = "istio-system"
    domain_suffix: str = "cluster.local"

    def __post_init__(self) -> None:
        if self.outbound_traffic_policy not in (ALLOW_ANY, REGISTRY_ONLY):
            raise ValueError(
                f"outbound_traffic_policy {self.outbound_traffic_policy!r} is not "
                f"{ALLOW_ANY!r} or {REGISTRY_ONLY!r}"
            )


class Passthrough:
    """A host outside the registry under ``ALLOW_ANY``: send the request as it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PASSTHROUGH"


PASSTHROUGH: Final = Passthrough()


# ---------------------------------------------------------------------------
# Clusters


class Cluster:
    """One Envoy cluster: a service port, maybe a subset, its policy, hosts and balancer."""

    __slots__ = (
        "_lock",
        "_tls",
        "balancer",
        "hash_policy",
        "hosts",
        "identities",
        "name",
        "peer_mode",
        "policy",
        "port",
        "runtime",
        "service",
        "subset",
    )

    def __init__(
        self,
        service: Service,
        port: Port,
        subset: str,
        policy: EffectivePolicy | None,
        hosts: tuple[Host, ...],
        balancer: Balancer,
        *,
        identities: frozenset[str],
        peer_mode: MtlsMode | None,
        runtime: ClusterRuntime | None = None,
    ) -> None:
        self.runtime = runtime if runtime is not None else ClusterRuntime()
        self.service = service
        self.port = port
        self.subset = subset
        self.policy = policy
        self.hosts = hosts
        self.balancer = balancer
        self.name = service.cluster_name(port.number, subset)
        lb = policy.load_balancer if policy is not None else None
        ch = lb.consistent_hash if lb is not None else None
        self.hash_policy = HashPolicy.from_settings(ch) if ch is not None else None
        self.identities = identities
        self.peer_mode = peer_mode
        self._tls: dict[tuple[str, str], UpstreamTLS] = {}
        self._lock = threading.Lock()

    def pick(
        self, attrs: RequestAttrs, rng: Random, *, source_ip: str | None = None, avoid: Any = ()
    ) -> tuple[Host | None, str | None]:
        """An endpoint for the request, and a ``Set-Cookie`` value when a hash cookie was made."""
        key: int | None = None
        cookie: str | None = None
        outlier = self.runtime.outlier
        if outlier is not None:
            outlier.maybe_sweep()
        if self.hash_policy is not None:
            hk = self.hash_policy.key(attrs, source_ip, rng)
            key, cookie = hk.value, hk.set_cookie
        return self.balancer.pick(key, avoid), cookie

    def tls_for(self, host: Host, authority: str) -> UpstreamTLS:
        """The TLS of a connection to ``host`` (memoized per endpoint TLS mode and authority)."""
        ep = host.endpoint
        k = (ep.tls_mode, authority)
        tls = self._tls.get(k)
        if tls is None:
            tls = upstream_tls_for(
                self.policy.tls if self.policy is not None else None,
                self.service,
                self.port.number,
                ep,
                identities=self.identities,
                subset=self.subset,
                authority=authority,
                peer_mode=self.peer_mode,
            )
            with self._lock:
                if len(self._tls) > 256:
                    self._tls.clear()
                self._tls[k] = tls
        return tls

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, {len(self.hosts)} hosts)"


class ClusterRuntime:
    """A cluster's process-wide resilience state: circuit breakers, retry
    admission, outlier detection. Kept across reloads while the cluster exists."""

    __slots__ = (
        "_ejections_before",
        "admission",
        "counted",
        "outlier",
        "retries",
        "retries_sent",
        "retry_overflows",
    )

    def __init__(self) -> None:
        self.admission = Admission()
        self.retries = RetryAdmission.from_policy(None, None)
        self.outlier: OutlierDetector[Host] | None = None
        self.counted = False
        """Whether requests need circuit-breaker tickets (limits, or a retry budget
        that reads the active count); otherwise the transports skip admission."""
        self.retries_sent = 0
        """Retries sent (Envoy's ``upstream_rq_retry``); counted by the transports."""
        self.retry_overflows = 0
        """Retries refused by the retry budget or ``maxRetries`` (``upstream_rq_retry_overflow``)."""
        self._ejections_before = 0

    def retries_total(self) -> int:
        return self.retries_sent

    def ejections_total(self) -> int:
        """Outlier ejections since the cluster appeared (across detector rebuilds)."""
        outlier = self.outlier
        now = outlier.stats().ejections_total if outlier is not None else 0
        return self._ejections_before + now

    def _retire_detector(self) -> None:
        if self.outlier is not None:
            self._ejections_before += self.outlier.stats().ejections_total

    def configure(
        self, policy: EffectivePolicy | None, hosts: Sequence[Host], clock: Clock
    ) -> None:
        pool = policy.connection_pool if policy is not None else None
        self.admission.update(PoolSettings.from_settings(pool))
        http = pool.http if pool is not None else None
        budget = policy.retry_budget if policy is not None else None
        self.retries = RetryAdmission.from_policy(
            http.max_retries if http is not None else None, budget
        )
        self.counted = not self.admission.unlimited or self.retries.uses_budget
        od = policy.outlier_detection if policy is not None else None
        if od is None:
            if self.outlier is not None:
                for host in self.outlier.ejected():
                    host.healthy = True
            self._retire_detector()
            self.outlier = None
            return
        config = OutlierConfig.from_settings(od)
        if self.outlier is None or self.outlier.config != config:
            previous = self.outlier
            self._retire_detector()
            self.outlier = OutlierDetector(config, clock=clock, hosts=hosts)
            if previous is not None:
                for host in previous.ejected():
                    host.healthy = True
        else:
            self.outlier.set_hosts(hosts)

    def report(self, host: Host, outcome: Outcome) -> None:
        outlier = self.outlier
        if outlier is not None:
            outlier.report(host, outcome)

    def admit_retry(self) -> bool:
        """Ask the retry circuit breaker / budget for one more retry (release it when done)."""
        return self.retries.try_acquire(self.admission.active)


class ClusterManager:
    """Host objects and resilience state per cluster, kept across snapshots
    (one per mesh, shared by its transports)."""

    def __init__(self, *, clock: Clock, rng: Random, workload: Workload) -> None:
        self.clock = clock
        self.rng = rng
        self.workload = workload
        self._lock = threading.Lock()
        self._hosts: dict[str, tuple[Host, ...]] = {}
        self._runtime: dict[str, ClusterRuntime] = {}

    def runtime_for(
        self, name: str, policy: EffectivePolicy | None, hosts: Sequence[Host]
    ) -> ClusterRuntime:
        with self._lock:
            runtime = self._runtime.get(name)
            if runtime is None:
                runtime = self._runtime[name] = ClusterRuntime()
            runtime.configure(policy, hosts, self.clock)
            return runtime

    def snapshot(self) -> list[tuple[str, tuple[Host, ...], ClusterRuntime]]:
        """``(cluster name, hosts, runtime)`` of every cluster used so far (for stats)."""
        with self._lock:
            return [
                (name, self._hosts.get(name, ()), runtime)
                for name, runtime in sorted(self._runtime.items())
            ]

    def hosts_for(self, name: str, endpoints: Sequence[Endpoint]) -> tuple[Host, ...]:
        with self._lock:
            previous = self._hosts.get(name, ())
            hosts = reconcile_hosts(previous, endpoints, self.clock.now())
            self._hosts[name] = hosts
            return hosts

    def retain(self, registry: Registry) -> list[str]:
        """Forget the clusters whose service or port left ``registry`` (after a reload).

        Their hosts and resilience state (outlier ejections, breakers) go;
        requests still running on them finish with the objects they hold.
        Clusters of services that remain keep their state, subsets included.
        Returns the names forgotten.
        """
        with self._lock:
            names = set(self._runtime) | set(self._hosts)
            gone = [n for n in names if not _cluster_in(n, registry)]
            for name in gone:
                self._runtime.pop(name, None)
                self._hosts.pop(name, None)
        return sorted(gone)



def _cluster_in(name: str, registry: Registry) -> bool:
    """Whether ``outbound|<port>|<subset>|<host>`` still names a service port of ``registry``."""
    parts = name.split("|", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return True  # not a service cluster: keep
    port = int(parts[1])
    svc = registry.service(parts[3])
    return svc is not None and any(p.number == port for p in svc.ports)


# ---------------------------------------------------------------------------
# Routing results


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    """Where a mirrored copy goes: a cluster and the ``-shadow`` authority."""

    cluster: Cluster
    authority: str


@dataclass(slots=True)
class Routed:
    """A request that goes upstream: its route, destination, cluster and what changes."""

    info: RequestInfo
    decision: RouteDecision
    destination: WeightedDestination
    cluster: Cluster
    authority: str
    """The ``Host`` sent upstream (the request's, or the route's rewrite)."""
    path: str
    """The upstream target: path (rewritten) plus ``?query``."""
    original_path: str | None
    """The original path when rewritten (sent as ``x-envoy-original-path``)."""
    fault: FaultDecision | None = None
    cors: CorsResult | None = None
    mirrors: tuple[ShadowTarget, ...] = ()

    @property
    def request_headers(self) -> HeaderMutation:
        return self.destination.request_headers

    @property
    def response_headers(self) -> HeaderMutation:
        return self.destination.response_headers


@dataclass(frozen=True, slots=True)
class Faulted:
    """A reply the CORS filter makes after the fault filter fired: delay (and
    maybe abort) first, then ``reply`` if not aborted."""

    fault: FaultDecision
    reply: LocalReply
    info: RequestInfo


def shadow_authority(authority: str) -> str:
    """``backend:8080`` -> ``backend-shadow:8080`` (Envoy ``shadow_writer_impl.cc``)."""
    if authority.startswith("["):
        return authority  # an IP literal has no host name to suffix
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and host:
        return f"{host}-shadow:{port}"
    return f"{authority}-shadow"


# ---------------------------------------------------------------------------
# The planner


class OutboundPlanner:
    """Everything derived from one snapshot for outbound requests; immutable apart from caches."""

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        registry: Registry,
        workload: Workload,
        manager: ClusterManager,
        options: OutboundOptions,
        *,
        peer_authentication: Sequence[PeerAuthnPolicy] = (),
    ) -> None:
        self.snapshot = snapshot
        self.registry = registry
        self.workload = workload
        self.manager = manager
        self.options = options
        self.namespace = workload.namespace
        self.routes = RouteTable.compile(snapshot, workload, domain_suffix=options.domain_suffix)
        self.rules = DestinationRuleIndex.compile(
            snapshot,
            workload,
            root_namespace=options.root_namespace,
            domain_suffix=options.domain_suffix,
        )
        self._pa = tuple(peer_authentication)
        self._lock = threading.Lock()
        self._clusters: dict[tuple[str, str, int, str], Cluster | None] = {}
        self._cors: dict[int, CompiledCors | None] = {}
        self._faults: dict[int, CompiledFault | None] = {}
        self._retries: dict[tuple[int, bool], RetryPolicy | None] = {}
        self._peer_modes: dict[str, MtlsMode] = {}
        self._dest_clusters: dict[tuple[int, int], tuple[WeightedDestination, Cluster | None]] = {}

    # -- route ---------------------------------------------------------------

    def route(
        self, attrs: RequestAttrs, rng: Random
    ) -> Routed | LocalReply | Faulted | Passthrough:
        """Decide where a request goes (see the module docstring)."""
        default_port = _DEFAULT_PORTS.get(attrs.scheme)
        hm = self.registry.lookup(
            attrs.authority, caller_namespace=self.namespace, default_port=default_port
        )
        if hm is None:
            return self._outside_registry(attrs, rng, default_port)
        service, port = hm
        if attrs.port != port.number:
            attrs = _with_port(attrs, port.number)
        decision = self.routes.route(attrs, service.hostname)
        return self._follow(attrs, decision, rng, port.number)

    def _outside_registry(
        self, attrs: RequestAttrs, rng: Random, default_port: int | None
    ) -> Routed | LocalReply | Faulted | Passthrough:
        host, port = split_host_port(attrs.authority)
        fqdn = expand_host(host, self.namespace, self.options.domain_suffix) if host else ""
        if fqdn and self.routes.has_virtual_service(fqdn):
            # A VirtualService for a name that is not a service (Istio builds a
            # virtual host for it on the port the client used).
            p = port if port is not None else (default_port or 80)
            if attrs.port != p:
                attrs = _with_port(attrs, p)
            return self._follow(attrs, self.routes.route(attrs, fqdn), rng, p)
        if self.options.outbound_traffic_policy == REGISTRY_ONLY:
            return replies.block_all()
        return PASSTHROUGH

    def _follow(
        self, attrs: RequestAttrs, decision: RouteDecision | NoRoute, rng: Random, port: int
    ) -> Routed | LocalReply | Faulted:
        if isinstance(decision, NoRoute):
            return replies.route_not_found()
        if decision.kind is RouteKind.REDIRECT:
            return LocalReply(
                decision.redirect_code,
                b"",
                (),
                "direct_response",
                (("location", decision.redirect_location(attrs)),),
                is_error=False,
            )
        if decision.kind is RouteKind.DIRECT_RESPONSE:
            dr = decision.direct_response
            body = dr.body.content if dr is not None and dr.body is not None else b""
            status = (dr.status if dr is not None else None) or 200
            return LocalReply(status, body, (), "direct_response", is_error=False)
        info = RequestInfo(route_name=decision.name)
        route = decision.route
        # Envoy's filter order on a sidecar: fault, then CORS, then the router.
        fault: FaultDecision | None = None
        if route is not None and route.fault is not None:
            compiled_fault = self._compiled_fault(decision)
            if compiled_fault is not None:
                fault = compiled_fault.decide(rng)
        cors: CorsResult | None = None
        if route is not None and route.cors_policy is not None:
            compiled_cors = self._compiled_cors(decision)
            if compiled_cors is not None:
                cors = compiled_cors.evaluate(attrs.method, attrs.headers)
                if cors is not None and cors.preflight_response is not None:
                    status, headers = cors.preflight_response
                    reply = LocalReply(status, b"", (), "cors_response", headers, is_error=False)
                    return reply if fault is None else Faulted(fault, reply, info)
        dest = decision.pick(rng)
        cluster = self._destination_cluster(dest, port)
        if cluster is None:
            info.flag("NC")
            return replies.cluster_not_found()
        info.cluster = cluster.name
        info.destination_service = cluster.service.hostname
        info.destination_namespace = cluster.service.namespace
        info.destination_subset = cluster.subset
        authority = dest.authority if dest.authority is not None else attrs.authority
        new_path = decision.rewrite_path(attrs.path) if decision.rewrites_path else None
        target = new_path if new_path is not None else attrs.path
        if attrs.query:
            target = f"{target}?{attrs.query}"
        mirrors: tuple[ShadowTarget, ...] = ()
        if decision.mirror_targets:
            mirrors = self._mirrors(decision, rng, port, authority)
        return Routed(
            info=info,
            decision=decision,
            destination=dest,
            cluster=cluster,
            authority=authority,
            path=target,
            original_path=attrs.path if new_path is not None else None,
            fault=fault,
            cors=cors,
            mirrors=mirrors,
        )

    def _mirrors(
        self, decision: RouteDecision, rng: Random, port: int, authority: str
    ) -> tuple[ShadowTarget, ...]:
        out: list[ShadowTarget] = []
        for dest, share in decision.mirror_targets:
            if share < 1.0 and rng.random() >= share:
                continue
            cluster = self._destination_cluster(dest, port)
            if cluster is not None:
                out.append(ShadowTarget(cluster, shadow_authority(authority)))
        return tuple(out)

    def _compiled_cors(self, decision: RouteDecision) -> CompiledCors | None:
        key = id(decision)
        if key not in self._cors:
            from inmesh.routing.cors import CompiledCors

            policy = decision.route.cors_policy if decision.route is not None else None
            self._cors[key] = CompiledCors.compile(policy) if policy is not None else None
        return self._cors[key]

    def _compiled_fault(self, decision: RouteDecision) -> CompiledFault | None:
        key = id(decision)
        if key not in self._faults:
            from inmesh.routing.fault import CompiledFault

            fault = decision.route.fault if decision.route is not None else None
            self._faults[key] = CompiledFault.compile(fault) if fault is not None else None
        return self._faults[key]

    def retry_policy(self, routed: Routed) -> RetryPolicy | None:
        """The route's retry policy (Istio's default when it sets none)."""
        hashing = routed.cluster.balancer.uses_hash
        key = (id(routed.decision), hashing)
        try:
            return self._retries[key]
        except KeyError:
            route = routed.decision.route
            policy = RetryPolicy.from_route(
                route.retries if route is not None else None, consistent_hash=hashing
            )
            self._retries[key] = policy
            return policy

    # -- clusters --------------------------------------------------------------

    def _destination_cluster(self, dest: WeightedDestination, port: int) -> Cluster | None:
        # Memoized per destination object (kept in the entry, so its id is not reused).
        key = (id(dest), port)
        hit = self._dest_clusters.get(key)
        if hit is not None and hit[0] is dest:
            return hit[1]
        cluster = self._find_destination_cluster(dest, port)
        if len(self._dest_clusters) >= 4096:
            self._dest_clusters.clear()
        self._dest_clusters[key] = (dest, cluster)
        return cluster

    def _find_destination_cluster(self, dest: WeightedDestination, port: int) -> Cluster | None:
        service = self.registry.service(dest.host, namespace=None)
        if service is None:
            hm = self.registry.lookup(dest.host, caller_namespace=self.namespace)
            if hm is None:
                return None
            service = hm.service
        if not service.visible_to(self.namespace):
            return None
        if dest.port is not None:
            number = dest.port
        elif len(service.ports) == 1:
            number = service.ports[0].number
        else:
            number = port
        return self.cluster(service, number, dest.subset or "")

    def cluster(self, service: Service, port: int, subset: str = "") -> Cluster | None:
        """The cluster for ``service`` port ``port`` and ``subset``; ``None`` if it does not exist."""
        key = (service.namespace, service.hostname, port, subset)
        try:
            return self._clusters[key]
        except KeyError:
            pass
        cluster = self._build_cluster(service, port, subset)
        with self._lock:
            return self._clusters.setdefault(key, cluster)

    def _build_cluster(self, service: Service, number: int, subset: str) -> Cluster | None:
        port = service.port(number)
        if port is None:
            return None
        policy = self.rules.policy(service, number, subset or None)
        if policy is None:
            return None  # a subset no rule defines: Istio makes no cluster for it
        endpoints = self.registry.endpoints(service, port)
        if subset:
            labels = policy.subset.labels if policy.subset is not None else {}
            endpoints = DestinationRuleIndex.select_endpoints(endpoints, labels)
        name = service.cluster_name(number, subset)
        hosts = self.manager.hosts_for(name, endpoints)
        balancer = build_balancer(
            policy.load_balancer,
            hosts,
            local_locality=self.workload.locality,
            outlier_detection=policy.outlier_detection is not None,
            panic_threshold=(
                float(policy.outlier_detection.min_health_percent or 0)
                if policy.outlier_detection is not None
                else None
            ),
            clock=self.manager.clock,
            rng=self.manager.rng,
        )
        identities = destination_identities(service, self.registry.endpoints(service, port))
        runtime = self.manager.runtime_for(name, policy, hosts)
        return Cluster(
            service,
            port,
            subset,
            policy,
            hosts,
            balancer,
            identities=identities,
            peer_mode=self._peer_mode(service),
            runtime=runtime,
        )

    def _peer_mode(self, service: Service) -> MtlsMode:
        """Istio's ``BestEffortInferServiceMTLSMode``: the namespace-level mode of the service's namespace."""
        mode = self._peer_modes.get(service.namespace)
        if mode is None:
            mode = effective_peer_authentication(
                self._pa,
                namespace=service.namespace,
                labels={},
                root_namespace=self.options.root_namespace,
            ).mode
            self._peer_modes[service.namespace] = mode
        return mode


# ---------------------------------------------------------------------------
# Headers


_ids = random.Random()  # seeded from os.urandom; request IDs need uniqueness, not secrecy
os.register_at_fork(after_in_child=_ids.seed)  # forked workers must not repeat IDs


_UUID4_CLEAR = ~(0xF000 << 64) & ~(0xC << 60)
_UUID4_SET = (0x4000 << 64) | (0x8 << 60)  # version 4, RFC 4122 variant


def new_request_id() -> str:
    """A random (version 4) UUID, as Envoy generates for ``x-request-id``.

    From :class:`random.Random` rather than :func:`uuid.uuid4`: a request ID
    must be unique, not unpredictable, and this is four times cheaper.
    """
    return _new_request_id().decode()


def _new_request_id() -> bytes:
    """:func:`new_request_id` as the header value (bytes)."""
    h = b"%032x" % (_ids.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)
    return b"%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


_HOP = frozenset({b"host", b"x-envoy-attempt-count", b"x-envoy-original-path"})
_ATTEMPT_COUNTS = tuple(str(n).encode() for n in range(16))
_ORIGINAL_PATH = ORIGINAL_PATH_HEADER.encode()


def upstream_headers(
    headers: Iterable[tuple[bytes, bytes]],
    routed: Routed,
    *,
    attempt: int,
    scheme: str,
    authority: str | None = None,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """The headers sent upstream for one attempt (sans I/O).

    ``Host`` first (the routed authority, or ``authority``, e.g. a shadow's);
    the app's headers; ``extra`` (the mesh's own: peer metadata, trace context;
    lower case, taken as they are; an ``x-request-id`` among them comes
    first); ``x-request-id`` kept or generated;
    ``x-forwarded-proto`` when absent; ``x-envoy-attempt-count``;
    ``x-envoy-original-path`` when the path was rewritten; then the route's and
    destination's header operations.
    """
    out: list[tuple[bytes, bytes]] = [(b"host", (authority or routed.authority).encode("latin-1"))]
    has_id = has_proto = False
    for k, v in headers:
        lk = k.lower()
        if lk in _HOP:
            continue
        if lk == b"x-request-id":
            has_id = True
        elif lk == b"x-forwarded-proto":
            has_proto = True
        out.append((lk, v))
    if extra:
        out.extend(extra)
        has_id = has_id or extra[0][0] == b"x-request-id"
    if not has_id:
        out.append((b"x-request-id", _new_request_id()))
    if not has_proto:
        out.append((b"x-forwarded-proto", scheme.encode()))
    count = _ATTEMPT_COUNTS[attempt] if 0 <= attempt < 16 else str(attempt).encode()
    out.append((b"x-envoy-attempt-count", count))
    if routed.original_path is not None:
        out.append((_ORIGINAL_PATH, routed.original_path.encode("latin-1")))
    mutation = routed.destination.request_headers
    if not mutation.is_empty:
        out = _apply_mutation(out, mutation)
    return out


def _apply_mutation(
    headers: list[tuple[bytes, bytes]], mutation: HeaderMutation
) -> list[tuple[bytes, bytes]]:
    drop = {n.encode() for n in mutation.remove} | {k.encode() for k, _ in mutation.set}
    out = [(k, v) for k, v in headers if k not in drop]
    out.extend((k.encode(), v.encode("latin-1")) for k, v in mutation.set)
    out.extend((k.encode(), v.encode("latin-1")) for k, v in mutation.add)
    return out


def response_headers(
    headers: Iterable[tuple[bytes, bytes]],
    mutation: HeaderMutation,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """The upstream response's headers after the route's response operations."""
    out = list(headers)
    out.extend(extra)
    if not mutation.is_empty:
        out = _apply_mutation(out, mutation)
    return out


# ---------------------------------------------------------------------------
# Helpers


def _with_port(attrs: RequestAttrs, port: int) -> RequestAttrs:
    return RequestAttrs(
        method=attrs.method,
        scheme=attrs.scheme,
        authority=attrs.authority,
        path=attrs.path,
        query=attrs.query,
        params=attrs.params,
        headers=attrs.headers,
        port=port,
    )
