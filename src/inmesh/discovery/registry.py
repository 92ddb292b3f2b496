"""The service registry: services and endpoints from ServiceEntry and WorkloadEntry.

:meth:`Registry.build` turns typed ``ServiceEntry`` and ``WorkloadEntry``
resources into frozen :class:`Service` and :class:`Endpoint` values, the way
istio/istio ``pilot/pkg/serviceregistry/serviceentry/conversion.go`` does:

* one :class:`Service` per host of a ServiceEntry (namespace = the entry's);
* endpoints from the inline ``endpoints`` or from the WorkloadEntries its
  ``workloadSelector`` selects (same namespace, labels a superset), sorted by
  name; hostname and ``unix://`` WorkloadEntries are only selected by DNS
  entries; a DNS entry with neither gets one endpoint per host, the host itself;
* an endpoint's port: ``unix://`` address -> 0, else WorkloadEntry
  ``ports[<port name>]`` > ServicePort ``targetPort`` > ServicePort ``number``;
* several entries with the same host in one namespace become one service:
  the oldest (``creationTimestamp``, then namespace and name) owns it, later
  ones add their ports when they agree on resolution, labels, selector and
  exportTo, and all of them contribute endpoints (only the first for a
  DNS_ROUND_ROBIN port).

:meth:`Registry.lookup` is the sidecar's host match (see ``_hosts.py``): exact
host or VIP, then Kubernetes short names, then the most specific wildcard; per
host the service in the caller's namespace wins, else the oldest one exported
to it; the port must be one of the service's. Results are memoized, so the hot
path is one dict lookup.

Imports: the standard library, ``inmesh.errors`` and ``inmesh.config`` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from inmesh.config.resources._common import Resource
from inmesh.config.resources.service_entry import ServiceEntrySpec, WorkloadEntrySpec
from inmesh.errors import Diagnostic

from . import _build
from ._hosts import canonical_ip, kube_aliases, split_authority
from ._values import (
    TLS_MODE_DISABLED,
    TLS_MODE_ISTIO,
    AddressKind,
    Endpoint,
    HostMatch,
    Port,
    Service,
)

if TYPE_CHECKING:
    from inmesh.config.snapshot import ConfigSnapshot

__all__ = [
    "TLS_MODE_DISABLED",
    "TLS_MODE_ISTIO",
    "AddressKind",
    "Endpoint",
    "HostMatch",
    "Port",
    "Registry",
    "Service",
]

_CACHE_SIZE = 8192
_MISS: Any = object()


class Registry:
    """An immutable index of services and endpoints, built for per-request lookups.

    Build one with :meth:`build` (or :meth:`from_snapshot`); a configuration
    reload builds a new one. Reads are safe from any thread.

    >>> reg = Registry.build(snapshot.of_kind("ServiceEntry"), snapshot.of_kind("WorkloadEntry"))
    >>> service, port = reg.lookup("backend:8080", caller_namespace="default")
    >>> reg.endpoints(service, port)
    (Endpoint(address='10.0.0.7', port=9080, ...),)
    """

    __slots__ = (
        "_alias",
        "_by_key",
        "_cache",
        "_dns_hostnames",
        "_domain_suffix",
        "_endpoints",
        "_exact",
        "_services",
        "_short",
        "_trust_domain",
        "_warnings",
        "_wild_dot",
        "_wild_other",
    )

    def __init__(
        self,
        services: Sequence[Service],
        endpoints: Mapping[tuple[str, str, int], tuple[Endpoint, ...]],
        *,
        domain_suffix: str = "cluster.local",
        trust_domain: str = "cluster.local",
        warnings: Iterable[Diagnostic] = (),
    ) -> None:
        """Index ``services`` (oldest first) and their ``endpoints``.

        ``endpoints`` is keyed by ``(namespace, hostname, port number)``.
        Prefer :meth:`build`; this is the seam for tests and other sources.
        """
        self._services = tuple(services)
        self._endpoints = dict(endpoints)
        self._domain_suffix = domain_suffix.lower().strip(".")
        self._trust_domain = trust_domain
        self._warnings = tuple(warnings)
        self._by_key: dict[tuple[str, str], Service] = {}
        exact: dict[str, list[Service]] = {}
        wild: dict[str, list[Service]] = {}
        self._alias: dict[str, str] = {}
        self._short: dict[tuple[str, str], str] = {}
        for svc in self._services:
            self._by_key.setdefault(svc.key, svc)
            host = svc.hostname
            exact.setdefault(host, []).append(svc)
            for vip in svc.addresses:
                if vip != host and "/" not in vip:
                    exact.setdefault(vip, []).append(svc)
            if host.startswith("*"):
                wild.setdefault(host[1:], []).append(svc)
                continue
            kube = kube_aliases(host, self._domain_suffix)
            if kube is not None:
                name, ns, medium = kube
                self._alias.setdefault(medium, host)
                self._alias.setdefault(medium + ".svc", host)
                self._short.setdefault((name, ns), host)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._wild_dot = {k: tuple(v) for k, v in wild.items() if k.startswith(".")}
        self._wild_other = tuple(
            sorted(
                ((k, tuple(v)) for k, v in wild.items() if not k.startswith(".")),
                key=lambda kv: -len(kv[0]),
            )
        )
        self._dns_hostnames = frozenset(
            ep.address.lower()
            for eps in self._endpoints.values()
            for ep in eps
            if ep.kind is AddressKind.HOSTNAME
        )
        self._cache: dict[tuple[str, str, int | None], HostMatch | None] = {}

    # -- construction ---------------------------------------------------------

    @classmethod
    def build(
        cls,
        service_entries: Iterable[Resource[ServiceEntrySpec]],
        workload_entries: Iterable[Resource[WorkloadEntrySpec]] = (),
        *,
        domain_suffix: str = "cluster.local",
        trust_domain: str = "cluster.local",
    ) -> Registry:
        """Build the registry from ServiceEntry and WorkloadEntry resources.

        The inputs are assumed valid (``inmesh.config`` rejected the rest).
        What Istio would silently drop is reported in :attr:`warnings`.
        """
        built = _build.build(service_entries, workload_entries, trust_domain=trust_domain)
        return cls(
            built.services,
            built.endpoints,
            domain_suffix=domain_suffix,
            trust_domain=trust_domain,
            warnings=built.warnings,
        )

    @classmethod
    def from_snapshot(cls, snapshot: ConfigSnapshot) -> Registry:
        """:meth:`build` from a config snapshot, with its domain suffix and trust domain."""
        return cls.build(
            snapshot.of_kind("ServiceEntry"),
            snapshot.of_kind("WorkloadEntry"),
            domain_suffix=snapshot.options.domain_suffix,
            trust_domain=snapshot.options.trust_domain,
        )

    @classmethod
    def empty(cls) -> Registry:
        """A registry without services."""
        return cls((), {})

    # -- reads ---------------------------------------------------------------

    @property
    def services(self) -> tuple[Service, ...]:
        """Every service, oldest ServiceEntry first."""
        return self._services

    @property
    def domain_suffix(self) -> str:
        """The cluster domain (``cluster.local``) Kubernetes-style hosts end with."""
        return self._domain_suffix

    @property
    def trust_domain(self) -> str:
        """The SPIFFE trust domain of the endpoints' identities."""
        return self._trust_domain

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        """What the build ignored, naming the resource (e.g. a WorkloadEntry without address)."""
        return self._warnings

    @property
    def dns_hostnames(self) -> frozenset[str]:
        """Every endpoint hostname (lower case) that must be resolved to connect."""
        return self._dns_hostnames

    def service(self, hostname: str, *, namespace: str | None = None) -> Service | None:
        """The service for ``hostname`` (case-insensitive) in ``namespace``.

        Without ``namespace``: the oldest service with that host. This is a
        registry read, not a host match: no aliases, no wildcard expansion.
        """
        host = hostname.lower().rstrip(".")
        if namespace is not None:
            return self._by_key.get((namespace, host))
        for svc in self._exact.get(host, ()):
            if svc.hostname == host:
                return svc
        return None

    def endpoints(self, service: Service, port: int | Port) -> tuple[Endpoint, ...]:
        """The endpoints of ``service`` for the service port ``port`` (a number or a :class:`Port`)."""
        number = port if isinstance(port, int) else port.number
        return self._endpoints.get((service.namespace, service.hostname, number), ())

    def lookup(
        self,
        authority: str,
        *,
        caller_namespace: str,
        default_port: int | None = None,
    ) -> HostMatch | None:
        """Match a request's authority (``Host``) as a sidecar in ``caller_namespace`` would.

        ``authority`` may carry a port (``backend:8080``, ``[::1]:80``); without
        one, ``default_port`` is used (pass the scheme's, 80 or 443, to match
        Istio, which routes by the port connected to). The service must declare
        that port. With neither, the service's first port is returned.
        ``None`` means no service matches: Istio would pass the request through.

        Accepted names: the exact host (any case, optionally with a trailing
        dot) or a VIP of the entry; for ``<name>.<ns>.svc.<suffix>`` hosts also
        ``<name>.<ns>``, ``<name>.<ns>.svc`` and, from namespace ``<ns>``,
        ``<name>``; then wildcard hosts, the longest matching suffix winning.
        """
        key = (authority, caller_namespace, default_port)
        hit = self._cache.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        result = self._lookup(authority, caller_namespace, default_port)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _lookup(self, authority: str, namespace: str, default_port: int | None) -> HostMatch | None:
        parsed = split_authority(authority)
        if parsed is None:
            return None
        host, port, absolute = parsed
        if port is None:
            port = default_port
        if ":" in host:  # an IPv6 literal: compare canonical forms
            host = canonical_ip(host) or host
        found = _match(self._exact.get(host), namespace, port)
        if found is not None:
            return found
        if not absolute:
            if "." not in host:
                fqdn = self._short.get((host, namespace))
            else:
                fqdn = self._alias.get(host)
            if fqdn is not None:
                found = _match(self._exact.get(fqdn), namespace, port)
                if found is not None:
                    return found
        return self._match_wildcard(host, namespace, port)

    def _match_wildcard(self, host: str, namespace: str, port: int | None) -> HostMatch | None:
        best: HostMatch | None = None
        best_len = 0
        dot = host.find(".")
        while dot > 0:
            candidates = self._wild_dot.get(host[dot:])
            if candidates is not None:
                best = _match(candidates, namespace, port)
                if best is not None:
                    best_len = len(host) - dot
                    break
            dot = host.find(".", dot + 1)
        for suffix, candidates in self._wild_other:
            if len(suffix) <= best_len:
                break
            if len(host) > len(suffix) and host.endswith(suffix):
                found = _match(candidates, namespace, port)
                if found is not None:
                    return found
        return best

    def __len__(self) -> int:
        return len(self._services)

    def __repr__(self) -> str:
        n_eps = sum(len(v) for v in self._endpoints.values())
        return f"<Registry {len(self._services)} services, {n_eps} endpoints>"


def _pick(candidates: tuple[Service, ...], namespace: str) -> Service | None:
    """Same-namespace service first, else the oldest visible one (istio ``selectServices``)."""
    first: Service | None = None
    for svc in candidates:
        if svc.visible_to(namespace):
            if svc.namespace == namespace:
                return svc
            if first is None:
                first = svc
    return first


def _match(
    candidates: tuple[Service, ...] | None, namespace: str, port: int | None
) -> HostMatch | None:
    if not candidates:
        return None
    svc = _pick(candidates, namespace)
    if svc is None or not svc.ports:
        return None
    if port is None:
        return HostMatch(svc, svc.ports[0])
    found = svc.port(port)
    return HostMatch(svc, found) if found is not None else None
