"""Building the registry's contents from ServiceEntry and WorkloadEntry resources.

Follows istio/istio ``pilot/pkg/serviceregistry/serviceentry/conversion.go``
(``convertServices``, ``convertWorkloadEntryToWorkloadInstance``,
``convertWorkloadInstanceToServiceInstance``, ``convertServiceEntryToInstances``)
and ``controller.go`` (``mergeServicesInstancesByNamespaceHost``); the rules
are summarized in :mod:`inmesh.discovery.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from inmesh.config.resources._common import Resource
from inmesh.config.resources.service_entry import (
    Resolution,
    ServiceEntrySpec,
    WorkloadEntrySpec,
)
from inmesh.errors import Diagnostic, Severity

from ._hosts import canonical_ip, is_ip
from ._values import (
    DNS_RESOLUTIONS,
    EMPTY_LABELS,
    TLS_MODE_DISABLED,
    TLS_MODE_ISTIO,
    AddressKind,
    Endpoint,
    Port,
    Service,
)

__all__ = ["Built", "build"]

_TLS_MODE_LABEL = "security.istio.io/tlsMode"
_LOCALITY_LABEL = "topology.istio.io/locality"
_LEGACY_LOCALITY_LABEL = "istio-locality"
_NETWORK_LABEL = "topology.istio.io/network"
_REGION_LABEL = "topology.kubernetes.io/region"
_ZONE_LABEL = "topology.kubernetes.io/zone"
_SUBZONE_LABEL = "topology.istio.io/subzone"
_WORKLOAD_NAME_LABEL = "service.istio.io/workload-name"
_AUTO_REGISTRATION_ANNOTATION = "istio.io/autoRegistrationGroup"
_UNIX_PREFIX = "unix://"


@dataclass(frozen=True, slots=True)
class Built:
    """What :func:`build` produces: services oldest first, endpoints, warnings."""

    services: list[Service]
    endpoints: dict[tuple[str, str, int], tuple[Endpoint, ...]]
    warnings: list[Diagnostic]


def build(
    service_entries: Iterable[Resource[ServiceEntrySpec]],
    workload_entries: Iterable[Resource[WorkloadEntrySpec]],
    *,
    trust_domain: str,
) -> Built:
    """Services and endpoints (keyed by namespace, hostname, port) from the resources."""
    builder = _Builder(trust_domain)
    builder.add_workload_entries(workload_entries)
    builder.add_service_entries(service_entries)
    return builder.finish()


class _Workload:
    """A WorkloadEntry (or inline endpoint) with everything per-port work reuses."""

    __slots__ = ("_by_port", "address", "fields", "kind", "port_map")

    def __init__(
        self, spec: WorkloadEntrySpec, *, name: str, namespace: str, trust_domain: str
    ) -> None:
        raw_labels = spec.labels
        address = spec.address or ""
        if address.startswith(_UNIX_PREFIX):
            kind = AddressKind.UNIX
            address = address[len(_UNIX_PREFIX) :]
        elif is_ip(address):
            kind = AddressKind.IP
        else:
            kind = AddressKind.HOSTNAME
        locality = spec.locality or _sanitize_locality(
            raw_labels.get(_LOCALITY_LABEL) or raw_labels.get(_LEGACY_LOCALITY_LABEL) or ""
        )
        network = spec.network or raw_labels.get(_NETWORK_LABEL, "")
        tls_mode = raw_labels.get(_TLS_MODE_LABEL) or (
            TLS_MODE_ISTIO if spec.service_account else TLS_MODE_DISABLED
        )
        sa = spec.service_account or ""
        self.address = address
        self.kind = kind
        self.port_map = spec.ports
        # Endpoint's fields after (address, port, kind), in order.
        self.fields = (
            _augment_labels(raw_labels, locality, network),
            sa,
            f"spiffe://{trust_domain}/ns/{namespace}/sa/{sa}" if sa else "",
            spec.weight or 1,
            locality,
            network,
            name,
            namespace,
            tls_mode,
        )
        self._by_port: dict[int, Endpoint] = {}

    @property
    def dns_only(self) -> bool:
        """Hostname and socket workloads only back DNS ServiceEntries (istio ``DNSServiceEntryOnly``)."""
        return self.kind is not AddressKind.IP

    def endpoint(self, port: Port) -> Endpoint:
        if self.kind is AddressKind.UNIX:
            number = 0
        else:
            mapped = self.port_map.get(port.name, 0)
            number = mapped if mapped > 0 else (port.target_port or port.number)
        ep = self._by_port.get(number)
        if ep is None:
            ep = self._by_port[number] = Endpoint(self.address, number, self.kind, *self.fields)
        return ep


def _sanitize_locality(label: str) -> str:
    """Kubernetes labels cannot hold ``/``: ``region.zone`` means ``region/zone`` (istio ``SanitizeLocalityLabel``)."""
    return label if "/" in label else label.replace(".", "/")


def _augment_labels(labels: Mapping[str, str], locality: str, network: str) -> Mapping[str, str]:
    """Add Istio's topology labels (istio ``AugmentLabels``, without a cluster id)."""
    if not locality and not network:
        if not labels:
            return EMPTY_LABELS
        return labels if isinstance(labels, MappingProxyType) else MappingProxyType(dict(labels))
    out = dict(labels)
    parts = locality.split("/") if locality else []
    for key, value in zip((_REGION_LABEL, _ZONE_LABEL, _SUBZONE_LABEL), parts, strict=False):
        if value:
            out[key] = value
    if network and not out.get(_NETWORK_LABEL):
        out[_NETWORK_LABEL] = network
    return MappingProxyType(out)


@dataclass(slots=True)
class _Member:
    """One ServiceEntry's contribution to one (namespace, host)."""

    resource: Resource[ServiceEntrySpec]
    ports: tuple[Port, ...]
    endpoints: Mapping[int, tuple[Endpoint, ...]]


def _age(resource: Resource[Any]) -> tuple[str, str, str]:
    """Oldest first; resources without ``creationTimestamp`` count as newest, then by namespace and name."""
    return (resource.metadata.creation_timestamp or "\uffff", resource.namespace, resource.name)


class _Builder:
    def __init__(self, trust_domain: str) -> None:
        self.trust_domain = trust_domain
        self.warnings: list[Diagnostic] = []
        # namespace -> workloads sorted by name; (namespace, key, value) -> workloads
        self.by_namespace: dict[str, list[_Workload]] = {}
        self.by_label: dict[tuple[str, str, str], list[_Workload]] = {}
        self.groups: dict[tuple[str, str], list[_Member]] = {}

    def warn(self, resource: Resource[Any], message: str, fix: str = "", path: str = "") -> None:
        self.warnings.append(
            Diagnostic(
                Severity.WARNING,
                message,
                fix,
                file=resource.source.file,
                line=resource.source.line,
                kind=resource.kind,
                namespace=resource.namespace,
                name=resource.name,
                path=path,
            )
        )

    def workload(
        self, spec: WorkloadEntrySpec, resource: Resource[Any], name: str, path: str
    ) -> _Workload | None:
        if not spec.address:
            self.warn(
                resource,
                "endpoint without an address (reached through a network gateway in Istio) is skipped",
                "give it an address; inmesh does not model cross-network gateways",
                path,
            )
            return None
        return _Workload(
            spec, name=name, namespace=resource.namespace, trust_domain=self.trust_domain
        )

    def add_workload_entries(self, entries: Iterable[Resource[WorkloadEntrySpec]]) -> None:
        for res in sorted(entries, key=lambda r: (r.namespace, r.name)):
            meta = res.metadata
            name = (
                meta.annotations.get(_AUTO_REGISTRATION_ANNOTATION)
                or meta.labels.get(_WORKLOAD_NAME_LABEL)
                or res.name
            )
            wl = self.workload(res.spec, res, name, "spec.address")
            if wl is None:
                continue
            ns = res.namespace
            self.by_namespace.setdefault(ns, []).append(wl)
            for k, v in res.spec.labels.items():
                self.by_label.setdefault((ns, k, v), []).append(wl)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[_Workload]:
        if not selector:
            return self.by_namespace.get(namespace, [])
        lists = [self.by_label.get((namespace, k, v), []) for k, v in selector.items()]
        smallest = min(lists, key=len)
        if len(lists) == 1:
            return smallest
        chosen = {id(w) for w in smallest}
        for other in lists:
            if other is not smallest:
                chosen &= {id(w) for w in other}
        return [w for w in smallest if id(w) in chosen]

    def add_service_entries(self, entries: Iterable[Resource[ServiceEntrySpec]]) -> None:
        for res in sorted(entries, key=_age):
            spec = res.spec
            ns = res.namespace
            ports = tuple(Port.from_spec(p) for p in spec.ports if p.number)
            dns = spec.resolution in DNS_RESOLUTIONS
            workloads: list[_Workload] | None = None
            if spec.endpoints:
                workloads = []
                for i, ep in enumerate(spec.endpoints):
                    wl = self.workload(ep, res, f"{res.name}-{i}", f"spec.endpoints[{i}].address")
                    if wl is not None:
                        workloads.append(wl)
            elif spec.workload_selector is not None:
                selected = self.select(ns, spec.workload_selector.labels)
                workloads = [w for w in selected if dns or not w.dns_only]
            shared: Mapping[int, tuple[Endpoint, ...]] | None = None
            if workloads is not None:
                shared = {p.number: tuple(w.endpoint(p) for w in workloads) for p in ports}
            for raw_host in spec.hosts:
                host = raw_host.lower()
                if shared is not None:
                    eps = shared
                elif dns:  # no endpoints, no selector: the host itself is the endpoint
                    eps = {p.number: (self.host_endpoint(host, p, res),) for p in ports}
                else:
                    eps = {}
                self.groups.setdefault((ns, host), []).append(_Member(res, ports, eps))

    def host_endpoint(self, host: str, port: Port, res: Resource[ServiceEntrySpec]) -> Endpoint:
        return Endpoint(
            address=host,
            port=port.target_port or port.number,
            kind=AddressKind.HOSTNAME,
            workload_name=res.name,
            namespace=res.namespace,
        )

    def finish(self) -> Built:
        services: list[Service] = []
        endpoints: dict[tuple[str, str, int], tuple[Endpoint, ...]] = {}
        for (ns, host), members in self.groups.items():
            owner = members[0].resource
            ports = list(members[0].ports)
            for m in members[1:]:
                if _can_merge(owner, m.resource):
                    known = {p.number for p in ports}
                    ports.extend(p for p in m.ports if p.number not in known)
                else:
                    self.warn(
                        m.resource,
                        f"host {host!r} is already defined in namespace {ns} by the older "
                        f"ServiceEntry {owner.name} with a different resolution, labels, "
                        "workloadSelector or exportTo; only its endpoints are used",
                        "define each host once per namespace, or make the entries agree",
                        "spec.hosts",
                    )
            spec = owner.spec
            services.append(
                Service(
                    hostname=host,
                    namespace=ns,
                    ports=tuple(ports),
                    location=spec.location,
                    resolution=spec.resolution,
                    subject_alt_names=tuple(spec.subject_alt_names),
                    export_to=tuple(spec.export_to),
                    addresses=tuple(canonical_ip(a) or a for a in spec.addresses),
                    labels=MappingProxyType(dict(owner.metadata.labels))
                    if owner.metadata.labels
                    else EMPTY_LABELS,
                    source=owner,
                )
            )
            if len(members) == 1:
                for number, eps in members[0].endpoints.items():
                    endpoints[(ns, host, number)] = eps
                continue
            merged: dict[int, list[Endpoint]] = {}
            seen: set[int] = set()
            for m in members:
                rr = m.resource.spec.resolution is Resolution.DNS_ROUND_ROBIN
                for number, eps in m.endpoints.items():
                    if not eps or (rr and number in seen):
                        continue
                    merged.setdefault(number, []).extend(eps)
                    seen.add(number)
            for number, eps_list in merged.items():
                endpoints[(ns, host, number)] = tuple(eps_list)
        return Built(services, endpoints, self.warnings)


def _can_merge(a: Resource[ServiceEntrySpec], b: Resource[ServiceEntrySpec]) -> bool:
    """istio ``canMergeServices``: same resolution, labels, selector and exportTo."""
    sa, sb = a.spec, b.spec
    sel_a = dict(sa.workload_selector.labels) if sa.workload_selector else None
    sel_b = dict(sb.workload_selector.labels) if sb.workload_selector else None
    return (
        sa.resolution is sb.resolution
        and dict(a.metadata.labels) == dict(b.metadata.labels)
        and sel_a == sel_b
        and set(sa.export_to) == set(sb.export_to)
    )
