"""``Mesh``: the composition root.

One ``Mesh`` is one workload's sidecar, in the process. It owns:

* the configuration store (Istio YAML, watched and reloaded),
* the compiled state derived from each snapshot (PeerAuthentication per port,
  the service registry), rebuilt off the request path on every reload,
* the workload's identity (a certificate source that rotates),

and hands out the pieces that sit in the request paths: ``asgi(app)``,
``wsgi(app)``, ``serve(app, ...)`` for inbound traffic and ``transport()`` /
``async_transport()`` (httpx transports) for outbound traffic.

Lifecycle: a ``Mesh`` is started by its constructor (configuration and
certificates are loaded and checked there, so mistakes surface at start-up)
and stopped by :meth:`close` / :meth:`aclose` or by leaving a ``with`` /
``async with`` block. Its background threads (file watching, certificate
rotation) never run on an event loop and are joined on close. Several meshes
in one process share nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .config.snapshot import ConfigOptions, ConfigSnapshot
from .config.store import ConfigStore
from .model import Workload
from .policy.peer_authn import (
    EffectivePeerAuthentication,
    MtlsMode,
    effective_peer_authentication,
    policies_from_snapshot,
)

if TYPE_CHECKING:
    from ._clock import Clock, Random
    from .discovery.dns import DnsCache
    from .discovery.registry import Registry
    from .identity.sources import CertificateSource
    from .identity.spiffe import SpiffeId
    from .outbound._async.transport import AsyncMeshTransport
    from .outbound._common import PoolLimits
    from .outbound._sync.transport import MeshTransport
    from .outbound.plan import ClusterManager, OutboundPlanner
    from .policy.authz import AuthzEvaluator, ExternalAuthorizer
    from .policy.peer_authn import PeerAuthnPolicy
    from .telemetry import Telemetry
    from .telemetry.metrics import ClusterStats, MeshStats

__all__ = ["Mesh"]

log = logging.getLogger("inmesh.mesh")

PathArg = str | os.PathLike[str]

_DEFAULT_REGISTRY: Any = object()
"""``metrics_registry`` default: prometheus-client's default registry."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    """Everything derived from one snapshot, swapped as one reference."""

    snapshot: ConfigSnapshot
    peer_authentication: EffectivePeerAuthentication
    registry: Registry
    authorizer: AuthzEvaluator | None
    peer_policies: tuple[PeerAuthnPolicy, ...]


class Mesh:
    """This workload's mesh: configuration, identity, and the request-path pieces.

    >>> mesh = inmesh.Mesh(                                   # doctest: +SKIP
    ...     config=["mesh/"],
    ...     workload=inmesh.Workload("backend", service_account="backend-sa",
    ...                              labels={"app": "backend", "version": "v1"}),
    ...     cert_dir="/var/run/secrets/workload-spiffe-credentials",
    ... )

    * ``config``: files or directories of Istio YAML (re-read when they change).
    * ``workload``: who this process is (labels select policies).
    * ``cert_dir``: a directory with Istio's ``cert-chain.pem``, ``key.pem`` and
      ``root-cert.pem``, re-read when rotated; or ``identity``: any
      :class:`~inmesh.identity.sources.CertificateSource` (for example a
      :class:`~inmesh.identity.sources.CASource` for development). The mesh
      owns the source: it starts it and closes it. Neither: no identity
      (plaintext only).
    * ``trust_domain``: the mesh's SPIFFE trust domain; this workload's own
      certificate must belong to it.
    * ``dns_resolver``: a :class:`~inmesh.discovery.dns.DnsResolver` for
      endpoints with ``resolution: DNS`` (default: the system's resolvers).
      The background DNS thread runs only while some endpoint needs it.
    * ``custom_authorizer``: the hook that answers for AuthorizationPolicies
      with ``action: CUSTOM`` (without one, requests they match are denied).
    * ``path_normalization``: Istio's ``BASE`` (default), ``MERGE_SLASHES``,
      ``DECODE_AND_MERGE_SLASHES`` or ``NONE``; policies and the app see the
      same normalized path.
    * ``trust_forwarded_client_cert``: trust ``x-forwarded-client-cert`` sent
      by the network (only behind a proxy that sets it); off by default.
    * ``outbound_traffic_policy``: MeshConfig's ``outboundTrafficPolicy.mode``:
      ``ALLOW_ANY`` (default) passes requests for hosts outside the registry
      through; ``REGISTRY_ONLY`` answers them with Istio's 502.
    * ``deadline_propagation``: while serving a request that carries a
      deadline (``x-envoy-expected-rq-timeout-ms`` or ``grpc-timeout``),
      outbound calls it makes are bounded by the time left, which travels on
      in ``x-envoy-expected-rq-timeout-ms`` (default on).
    * ``metrics_registry``: the prometheus-client registry Istio's metrics
      go to (default: prometheus-client's default registry, so an app's
      existing ``/metrics`` shows them; ``None``: no metrics). See
      docs/observability.md.
    * ``cluster_id``: this workload's cluster (``source_cluster`` /
      ``destination_cluster`` in metrics; Istio's default ``Kubernetes``).
    * ``access_log``: ``None`` (default, off), ``"text"`` or ``"json"``:
      Istio's access log formats, on the ``inmesh.access`` logger.
    * ``tracing``: spans with an OpenTelemetry SDK, trace-header forwarding
      without one (default on); ``trace_propagation``: ``"w3c"`` or ``"b3"``.
    * ``admin_port``: serve the admin endpoint (``/stats/prometheus``,
      ``/config_dump``, ``/clusters``, ``/certs``, ``/ready``) on
      ``admin_host`` (default ``127.0.0.1``) at this port (``0``: any free
      port; see :attr:`admin_address`). Off by default.
    * ``clock`` and ``rng``: the monotonic clock and random source of the
      outbound decisions that keep state (outlier ejection, slow start,
      retry budgets, load balancing); tests pass fakes (see
      :mod:`inmesh.testing`).

    Raises :class:`~inmesh.errors.ConfigError` for an invalid configuration
    and :class:`~inmesh.errors.CertificateError` for an unusable certificate.
    """

    def __init__(
        self,
        config: PathArg | Sequence[PathArg] = (),
        *,
        workload: Workload,
        cert_dir: PathArg | None = None,
        identity: CertificateSource | None = None,
        trust_domain: str = "cluster.local",
        default_namespace: str = "default",
        root_namespace: str = "istio-system",
        domain_suffix: str = "cluster.local",
        watch: bool = True,
        poll_interval: float = 0.25,
        trust_forwarded_client_cert: bool = False,
        dns_resolver: Any = None,
        custom_authorizer: ExternalAuthorizer | None = None,
        path_normalization: str = "BASE",
        outbound_traffic_policy: str = "ALLOW_ANY",
        deadline_propagation: bool = True,
        metrics_registry: Any = _DEFAULT_REGISTRY,
        cluster_id: str = "Kubernetes",
        access_log: str | None = None,
        tracing: bool = True,
        trace_propagation: str = "w3c",
        admin_port: int | None = None,
        admin_host: str = "127.0.0.1",
        clock: Clock | None = None,
        rng: Random | None = None,
    ) -> None:
        if cert_dir is not None and identity is not None:
            raise TypeError("give cert_dir or identity, not both")
        paths = [config] if isinstance(config, (str, os.PathLike)) else list(config)
        self._workload = workload
        self._trust_domain = trust_domain
        self._trust_xfcc = trust_forwarded_client_cert
        self._custom_authorizer = custom_authorizer
        if path_normalization not in ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
            raise ValueError(
                f"path_normalization {path_normalization!r} is not one of NONE, BASE, "
                "MERGE_SLASHES, DECODE_AND_MERGE_SLASHES"
            )
        self._path_normalization = path_normalization
        self.deadline_propagation = deadline_propagation
        """Carry deadlines from inbound requests to the outbound calls they make
        (``x-envoy-expected-rq-timeout-ms``); see docs/resilience.md."""
        self._options = ConfigOptions(
            default_namespace=default_namespace,
            root_namespace=root_namespace,
            domain_suffix=domain_suffix,
            trust_domain=trust_domain,
        )
        from .outbound.plan import OutboundOptions

        self._outbound_options = OutboundOptions(
            outbound_traffic_policy=outbound_traffic_policy,
            root_namespace=root_namespace,
            domain_suffix=domain_suffix,
        )
        self._lock = threading.Lock()
        self._clock = clock
        self._rng = rng
        self._telemetry = self._make_telemetry(
            metrics_registry, cluster_id, access_log, tracing, trace_propagation
        )
        self._admin: Any = None
        self._planner_lock = threading.Lock()
        self._planner: OutboundPlanner | None = None
        self._clusters: ClusterManager | None = None
        self._closed = False
        self._store = ConfigStore(
            paths, options=self._options, watch=watch, poll_interval=poll_interval
        )
        self._dns: DnsCache | None = None
        self._dns_resolver: Any = None
        self._compiled = self._compile(self._store.start())
        self._store.subscribe(self._on_snapshot)
        self._identity: CertificateSource | None = None
        try:
            self._dns_resolver = dns_resolver
            self._update_dns(self._compiled.registry.dns_hostnames)
            if cert_dir is not None:
                from .identity.sources import DirectorySource

                identity = DirectorySource(Path(cert_dir), trust_domain=trust_domain)
            if identity is not None:
                start = getattr(identity, "start", None)
                if start is not None and not getattr(identity, "started", False):
                    start()
                self._identity = identity
                self._check_identity(identity)
            if self._telemetry_registry is not None:
                from .telemetry.metrics import MeshStateCollector

                MeshStateCollector.for_registry(self._telemetry_registry).add(self)
            if admin_port is not None:
                from .admin import AdminServer

                self._admin = AdminServer(self, host=admin_host, port=admin_port)
        except BaseException:
            self._store.close()
            self._close_dns()
            if identity is not None:
                _close_quietly(identity)
            raise
        log.info(
            "mesh for %s/%s started (config %s, identity %s)",
            workload.namespace,
            workload.name,
            self._compiled.snapshot.version,
            self.spiffe_id or "none",
        )

    # -- construction from the environment --------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Mesh:
        """A mesh configured by ``INMESH_*`` environment variables.

        ======================== ==============================================
        ``INMESH_CONFIG``         config paths, separated by ``os.pathsep`` (``:``)
        ``INMESH_WORKLOAD``       workload name (required)
        ``INMESH_NAMESPACE``      namespace (default ``default``; falls back to
                                  ``POD_NAMESPACE``)
        ``INMESH_SERVICE_ACCOUNT`` service account (default ``default``)
        ``INMESH_LABELS``         ``app=backend,version=v1``
        ``INMESH_LOCALITY``       ``region/zone/subzone``
        ``INMESH_CERT_DIR``       directory with Istio's certificate files
        ``INMESH_TRUST_DOMAIN``   SPIFFE trust domain (default ``cluster.local``)
        ``INMESH_ROOT_NAMESPACE`` Istio root namespace (default ``istio-system``)
        ``INMESH_TRUST_XFCC``     ``true`` to trust an incoming XFCC header
        ``INMESH_OUTBOUND_TRAFFIC_POLICY`` ``ALLOW_ANY`` (default) or ``REGISTRY_ONLY``
        ``INMESH_CLUSTER_ID``     cluster id for metrics (default ``Kubernetes``)
        ``INMESH_ACCESS_LOG``     ``text`` or ``json`` (default off)
        ``INMESH_TRACE_PROPAGATION`` ``w3c`` (default) or ``b3``
        ``INMESH_ADMIN_PORT``     serve the admin endpoint on 127.0.0.1 at this port
        ======================== ==============================================

        Keyword arguments override what the environment says.
        """
        env = os.environ if environ is None else environ
        name = env.get("INMESH_WORKLOAD", "")
        if "workload" not in overrides and not name:
            raise ValueError("INMESH_WORKLOAD is not set: name this workload")
        kwargs: dict[str, Any] = {}
        if "workload" not in overrides:
            kwargs["workload"] = Workload(
                name,
                namespace=env.get("INMESH_NAMESPACE") or env.get("POD_NAMESPACE") or "default",
                service_account=env.get("INMESH_SERVICE_ACCOUNT") or "default",
                labels=Workload.parse_labels(env.get("INMESH_LABELS", "")),
                locality=env.get("INMESH_LOCALITY", ""),
            )
        config = env.get("INMESH_CONFIG", "")
        kwargs["config"] = [p for p in config.split(os.pathsep) if p]
        if env.get("INMESH_CERT_DIR"):
            kwargs["cert_dir"] = env["INMESH_CERT_DIR"]
        if env.get("INMESH_TRUST_DOMAIN"):
            kwargs["trust_domain"] = env["INMESH_TRUST_DOMAIN"]
        if env.get("INMESH_ROOT_NAMESPACE"):
            kwargs["root_namespace"] = env["INMESH_ROOT_NAMESPACE"]
        if env.get("INMESH_TRUST_XFCC"):
            kwargs["trust_forwarded_client_cert"] = _truthy(env["INMESH_TRUST_XFCC"])
        if env.get("INMESH_OUTBOUND_TRAFFIC_POLICY"):
            kwargs["outbound_traffic_policy"] = env["INMESH_OUTBOUND_TRAFFIC_POLICY"].upper()
        if env.get("INMESH_CLUSTER_ID"):
            kwargs["cluster_id"] = env["INMESH_CLUSTER_ID"]
        if env.get("INMESH_ACCESS_LOG"):
            mode = env["INMESH_ACCESS_LOG"].lower()
            kwargs["access_log"] = None if mode in ("off", "none", "false", "0") else mode
        if env.get("INMESH_TRACE_PROPAGATION"):
            kwargs["trace_propagation"] = env["INMESH_TRACE_PROPAGATION"].lower()
        if env.get("INMESH_ADMIN_PORT"):
            kwargs["admin_port"] = int(env["INMESH_ADMIN_PORT"])
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- state ---------------------------------------------------------------

    @property
    def workload(self) -> Workload:
        return self._workload

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The configuration in force (immutable; a reload swaps it)."""
        return self._compiled.snapshot

    @property
    def registry(self) -> Registry:
        """Services and endpoints of the configuration in force."""
        return self._compiled.registry

    def resolved_addresses(self, hostname: str) -> tuple[str, ...]:
        """The addresses DNS gave for an endpoint hostname (empty until resolved)."""
        return self._dns.addresses(hostname) if self._dns is not None else ()

    @property
    def config_store(self) -> ConfigStore:
        return self._store

    @property
    def certificates(self) -> CertificateSource | None:
        """This workload's certificate source (``None`` without identity)."""
        return self._identity

    @property
    def spiffe_id(self) -> SpiffeId | None:
        """This workload's SPIFFE ID, from its current certificate."""
        return self.local_identity()

    def local_identity(self) -> SpiffeId | None:
        source = self._identity
        return None if source is None else source.current().spiffe_id

    def mtls_mode(self, port: int | None) -> MtlsMode:
        """The effective PeerAuthentication mode for a port of this workload."""
        return self._compiled.peer_authentication.for_port(port)

    @property
    def trusted_proxy_xfcc(self) -> bool:
        return self._trust_xfcc

    def authorizer(self) -> AuthzEvaluator | None:
        """The AuthorizationPolicy evaluator for this workload (``None``: nothing applies)."""
        return self._compiled.authorizer

    @property
    def path_normalization(self) -> str:
        return self._path_normalization

    def subscribe(self, callback: Callable[[ConfigSnapshot], None]) -> Callable[[], None]:
        """Call ``callback(snapshot)`` after each configuration reload."""
        return self._store.subscribe(callback)

    # -- request-path pieces ------------------------------------------------

    def asgi(self, app: Any) -> Any:
        """Wrap an ASGI app with the mesh's inbound middleware."""
        from .inbound.asgi import MeshASGIMiddleware

        return MeshASGIMiddleware(app, self)

    def wsgi(self, app: Any, **options: Any) -> Any:
        """Wrap a WSGI app with the mesh's inbound middleware."""
        from .inbound.wsgi import MeshWSGIMiddleware

        return MeshWSGIMiddleware(app, self, **options)

    def transport(
        self,
        *,
        errors: str = "reply",
        limits: PoolLimits | None = None,
        mirror_max_in_flight: int = 64,
        mirror_body_limit: int = 1 << 20,
        rng: Random | None = None,
    ) -> MeshTransport:
        """An ``httpx.BaseTransport`` that routes requests through the mesh.

        >>> client = httpx.Client(transport=mesh.transport())  # doctest: +SKIP
        >>> client.get("http://backend:8080/api")               # doctest: +SKIP

        * ``errors``: ``"reply"`` (default) answers like Envoy would, with a
          local reply (404 ``NR``, 503 ``UH``, ...); ``"raise"`` raises the
          matching :class:`~inmesh.outbound.LocalReplyError` (or the
          ``httpx.ConnectError`` subclass of a connection failure) instead.
        * ``limits``: connection pool limits per destination.
        * ``mirror_max_in_flight``: shadow requests running at once; more are
          dropped. ``mirror_body_limit``: bytes of a streamed body kept to
          mirror it.
        * ``rng``: the random source of weighted picks, faults and mirrors
          (default: a private :class:`random.Random`).

        Thread-safe; close it, or the ``httpx.Client`` that owns it, before
        the mesh.
        """
        from .outbound._sync.connect import Connector
        from .outbound._sync.transport import MeshTransport

        self.outbound_planner()  # compile now, so configuration errors surface here
        connector = (
            Connector(self._identity, limits=limits) if limits else Connector(self._identity)
        )
        return MeshTransport(
            self,
            connector,
            errors=errors,
            rng=rng,
            mirror_max_in_flight=mirror_max_in_flight,
            mirror_body_limit=mirror_body_limit,
        )

    def async_transport(
        self,
        *,
        errors: str = "reply",
        limits: PoolLimits | None = None,
        mirror_max_in_flight: int = 64,
        mirror_body_limit: int = 1 << 20,
        rng: Random | None = None,
    ) -> AsyncMeshTransport:
        """An ``httpx.AsyncBaseTransport`` that routes requests through the mesh.

        Same options as :meth:`transport`; works on asyncio and trio.
        """
        from .outbound._async.connect import AsyncConnector
        from .outbound._async.transport import AsyncMeshTransport

        self.outbound_planner()
        def connector() -> AsyncConnector:
            return (
                AsyncConnector(self._identity, limits=limits)
                if limits
                else AsyncConnector(self._identity)
            )

        return AsyncMeshTransport(
            self,
            connector(),
            shadow_connector=connector(),
            errors=errors,
            rng=rng,
            mirror_max_in_flight=mirror_max_in_flight,
            mirror_body_limit=mirror_body_limit,
        )

    def outbound_planner(self) -> OutboundPlanner:
        """The outbound decision path for the configuration in force (compiled on first use)."""
        planner = self._planner
        if planner is not None:
            return planner  # reloads replace it (see _on_snapshot)
        with self._planner_lock:
            if self._planner is None:
                self._planner = self._build_planner(self._compiled)
            return self._planner

    def serve(self, app: Any, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
        """Serve ``app`` (ASGI or WSGI) with mTLS per PeerAuthentication, until stopped."""
        from .inbound.serve import serve

        serve(app, self, host, port, **options)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Stop watching files and rotating certificates; join the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._admin is not None:
            self._admin.close()
        self._store.close()
        self._close_dns()
        if self._identity is not None:
            _close_quietly(self._identity)
        if self._telemetry_registry is not None:
            from .telemetry.metrics import MeshStateCollector

            MeshStateCollector.for_registry(self._telemetry_registry).discard(self)
        log.info("mesh for %s/%s closed", self._workload.namespace, self._workload.name)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop (threads are joined in a worker)."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Mesh:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Mesh:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"config {self.snapshot.version}"
        return f"<Mesh {self._workload.namespace}/{self._workload.name} {state}>"

    # -- internals ------------------------------------------------------------

    def _compile(self, snapshot: ConfigSnapshot) -> _Compiled:
        policies = policies_from_snapshot(snapshot.of_kind("PeerAuthentication"))
        pa = effective_peer_authentication(
            policies,
            namespace=self._workload.namespace,
            labels=self._workload.labels,
            root_namespace=self._options.root_namespace,
        )
        from .discovery.registry import Registry

        registry = Registry.from_snapshot(snapshot)
        for warning in registry.warnings:
            log.warning("%s", warning)
        from .policy.authz import AuthorizationEngine

        evaluator = AuthorizationEngine.compile(
            snapshot, self._workload, custom_authorizer=self._custom_authorizer
        )
        return _Compiled(
            snapshot=snapshot,
            peer_authentication=pa,
            registry=registry,
            authorizer=None if evaluator.is_noop else evaluator,
            peer_policies=tuple(policies),
        )

    def _build_planner(self, compiled: _Compiled) -> OutboundPlanner:
        from .outbound.plan import ClusterManager, OutboundPlanner

        if self._clusters is None:
            import random

            from ._clock import MONOTONIC

            self._clusters = ClusterManager(
                clock=self._clock or MONOTONIC,
                rng=self._rng or random.Random(),
                workload=self._workload,
            )
        return OutboundPlanner(
            compiled.snapshot,
            compiled.registry,
            self._workload,
            self._clusters,
            self._outbound_options,
            peer_authentication=compiled.peer_policies,
        )

    def _on_snapshot(self, snapshot: ConfigSnapshot) -> None:
        compiled = self._compile(snapshot)
        previous = self._compiled.peer_authentication
        with self._planner_lock:
            if self._planner is not None:
                self._planner = self._build_planner(compiled)
            self._compiled = compiled
            if self._clusters is not None:
                forgotten = self._clusters.retain(compiled.registry)
                if forgotten:
                    log.debug("clusters gone with the configuration: %s", ", ".join(forgotten))
        self._update_dns(compiled.registry.dns_hostnames)
        if previous.mode != compiled.peer_authentication.mode:
            log.info(
                "PeerAuthentication for %s/%s is now %s (was %s)",
                self._workload.namespace,
                self._workload.name,
                compiled.peer_authentication.mode.value,
                previous.mode.value,
            )

    # -- telemetry --------------------------------------------------------------

    def _make_telemetry(
        self,
        registry: Any,
        cluster_id: str,
        access_log: str | None,
        tracing: bool,
        propagation: str,
    ) -> Telemetry:
        from .telemetry import Telemetry, Tracing

        if registry is _DEFAULT_REGISTRY:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        self._telemetry_registry = registry
        self._config_reloads_seen = 0
        return Telemetry(
            self._workload,
            cluster_id=cluster_id,
            registry=registry,
            access_log=access_log,
            tracing=Tracing(enabled=tracing, propagation=propagation),
            local_principal=self._principal,
            services=self._inbound_service,
        )

    def _principal(self) -> str | None:
        identity = getattr(self, "_identity", None)
        if identity is None:
            return None
        spiffe = self.spiffe_id
        return None if spiffe is None else str(spiffe)

    def _inbound_service(self, authority: str) -> tuple[str, str] | None:
        match = self._compiled.registry.lookup(
            authority, caller_namespace=self._workload.namespace
        )
        if match is None:
            return None
        svc = match.service
        return svc.hostname, svc.namespace

    @property
    def telemetry(self) -> Telemetry:
        """This mesh's :class:`~inmesh.telemetry.Telemetry` (metrics, traces, access logs)."""
        return self._telemetry

    @property
    def metrics_registry(self) -> Any:
        """The prometheus-client registry the mesh's metrics go to (``None``: off)."""
        return self._telemetry_registry

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """``(host, port)`` the admin endpoint listens on, if it runs."""
        admin = self._admin
        return None if admin is None else admin.address

    def admin_app(self) -> Any:
        """The admin endpoint as an ASGI app, to mount in an existing app (see :mod:`inmesh.admin`)."""
        from .admin import AdminApp

        return AdminApp(self).asgi

    def admin_wsgi_app(self) -> Any:
        """The admin endpoint as a WSGI app."""
        from .admin import AdminApp

        return AdminApp(self).wsgi

    # StateSource (inmesh.telemetry.metrics): read at scrape time.

    def cluster_stats(self) -> list[ClusterStats]:
        """Per upstream cluster: endpoints, health, ejections, retries, overflows, in flight."""
        from .telemetry.metrics import ClusterStats

        clusters = self._clusters
        if clusters is None:
            return []
        out = []
        for name, hosts, runtime in clusters.snapshot():
            outlier = runtime.outlier.stats() if runtime.outlier is not None else None
            admission = runtime.admission.stats()
            out.append(
                ClusterStats(
                    name=name,
                    endpoints=len(hosts),
                    healthy=sum(1 for h in hosts if h.healthy),
                    ejections_active=outlier.ejected_now if outlier is not None else 0,
                    ejections_total=runtime.ejections_total(),
                    retries=runtime.retries_total(),
                    overflows=admission.overflow_total + runtime.retry_overflows,
                    requests_active=sum(h.active for h in hosts),
                )
            )
        return out

    def mesh_stats(self) -> MeshStats:
        """Configuration reloads and errors, and the certificate's expiry."""
        from .telemetry.metrics import MeshStats

        stats = self._store.stats
        expiry: float | None = None
        spiffe = ""
        identity = self._identity
        if identity is not None:
            try:
                cert = identity.current()
                expiry = cert.not_after.timestamp()
                spiffe = str(cert.spiffe_id)
            except Exception:  # pragma: no cover - a source mid-rotation
                expiry = None
        return MeshStats(
            config_reloads=stats.reloads,
            config_errors=stats.reload_errors,
            certificate_expiry=expiry,
            spiffe_id=spiffe,
        )

    def _close_dns(self) -> None:
        dns = self._dns
        if dns is not None:
            dns.close()

    def _update_dns(self, hostnames: frozenset[str]) -> None:
        """Keep the DNS cache on the registry's hostnames; start it when first needed."""
        with self._lock:
            if self._closed:
                return
            if self._dns is None:
                if not hostnames:
                    return
                from .discovery.dns import DnsCache

                self._dns = DnsCache(
                    self._dns_resolver, thread_name=f"inmesh-dns-{self._workload.name}"
                )
                self._dns.set_hostnames(hostnames)
                self._dns.start()
            else:
                self._dns.set_hostnames(hostnames)

    def _check_identity(self, source: CertificateSource) -> None:
        from .errors import CertificateError

        spiffe_id = source.current().spiffe_id
        if spiffe_id.trust_domain != self._trust_domain:
            raise CertificateError(
                f"this workload's certificate is for trust domain {spiffe_id.trust_domain!r}, "
                f"the mesh's is {self._trust_domain!r}; issue a certificate in "
                f"{self._trust_domain!r} or pass trust_domain={spiffe_id.trust_domain!r}"
            )
        expected_sa = self._workload.service_account
        if spiffe_id.is_istio_workload and (
            spiffe_id.namespace != self._workload.namespace
            or spiffe_id.service_account != expected_sa
        ):
            log.warning(
                "certificate identity %s does not match workload %s/%s (service account %s)",
                spiffe_id,
                self._workload.namespace,
                self._workload.name,
                expected_sa,
            )


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _close_quietly(source: object) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("closing %r failed", source)
