"""The registry's values: :class:`Service`, :class:`Port`, :class:`Endpoint`, :class:`HostMatch`.

Frozen, slotted, comparable and hashable (mappings and the source resource
are left out of the hash). Re-exported by :mod:`inmesh.discovery.registry`,
which is where to import them from.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from inmesh.config.resources._common import Resource
from inmesh.config.resources.service_entry import (
    Location,
    Protocol,
    Resolution,
    ServiceEntrySpec,
    ServicePort,
)

__all__ = [
    "DNS_RESOLUTIONS",
    "EMPTY_LABELS",
    "TLS_MODE_DISABLED",
    "TLS_MODE_ISTIO",
    "AddressKind",
    "Endpoint",
    "HostMatch",
    "Port",
    "Service",
]

DNS_RESOLUTIONS = (Resolution.DNS, Resolution.DNS_ROUND_ROBIN)
"""Resolutions whose endpoint hostnames are resolved in the background."""
EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})
"""The shared empty label map."""


def _empty_labels() -> Mapping[str, str]:
    return EMPTY_LABELS


TLS_MODE_ISTIO = "istio"
"""``tls_mode`` of an endpoint that accepts Istio mutual TLS."""
TLS_MODE_DISABLED = "disabled"
"""``tls_mode`` of an endpoint that speaks plain text (or its own TLS)."""


class AddressKind(str, enum.Enum):
    """What :attr:`Endpoint.address` holds."""

    IP = "ip"
    """An IPv4 or IPv6 address: connect to it."""
    HOSTNAME = "hostname"
    """A DNS name: resolve it (see :mod:`inmesh.discovery.dns`), then connect."""
    UNIX = "unix"
    """A Unix domain socket path (the ``unix://`` prefix removed); the port is 0."""


@dataclass(frozen=True, slots=True)
class Port:
    """A service port: ``ServicePort{number, name, protocol, targetPort}``.

    ``protocol`` is ``None`` when unset (Istio sniffs it). ``target_port`` is
    the endpoints' default port (``None``: the same as ``number``).
    """

    number: int
    name: str
    protocol: Protocol | None = None
    target_port: int | None = None

    @classmethod
    def from_spec(cls, spec: ServicePort) -> Port:
        """The port a ``ServicePort`` of a ServiceEntry declares."""
        return cls(
            number=spec.number or 0,
            name=spec.name or "",
            protocol=spec.parsed_protocol,
            target_port=spec.target_port or None,
        )

    @property
    def is_http(self) -> bool:
        """Whether requests on this port are routed as HTTP (HTTP, HTTP2, GRPC, ...)."""
        return self.protocol is not None and self.protocol.is_http


@dataclass(frozen=True, slots=True)
class Service:
    """One host of a ServiceEntry, in the entry's namespace.

    ``hostname`` is lower case; ``ports`` in declaration order; ``addresses``
    the entry's VIPs (canonical IP text; CIDRs kept as written); ``labels`` the
    entry's metadata labels; ``source`` the (oldest) ServiceEntry it came from.
    Equality and hashing use the values, not ``source``.
    """

    hostname: str
    namespace: str
    ports: tuple[Port, ...] = ()
    location: Location = Location.MESH_EXTERNAL
    resolution: Resolution = Resolution.NONE
    subject_alt_names: tuple[str, ...] = ()
    export_to: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=_empty_labels, hash=False)
    source: Resource[ServiceEntrySpec] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, hostname)``: unique within a :class:`Registry`."""
        return (self.namespace, self.hostname)

    @property
    def mesh_internal(self) -> bool:
        """``location: MESH_INTERNAL`` (mTLS and policy apply)."""
        return self.location is Location.MESH_INTERNAL

    @property
    def is_wildcard(self) -> bool:
        """Whether the host is a wildcard (``*.example.com``)."""
        return self.hostname.startswith("*")

    @property
    def uses_dns(self) -> bool:
        """Resolution DNS or DNS_ROUND_ROBIN: endpoint hostnames are resolved in the background."""
        return self.resolution in DNS_RESOLUTIONS

    def port(self, number: int) -> Port | None:
        """The port with this number, or ``None``."""
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def visible_to(self, namespace: str) -> bool:
        """Whether ``exportTo`` lets a workload in ``namespace`` see this service.

        Empty or ``*``: everyone; ``.``: the service's own namespace; ``~``:
        nobody; any other value names a namespace (istio ``IsServiceVisible``).
        """
        export = self.export_to
        if not export or "*" in export:
            return True
        if "." in export and namespace == self.namespace:
            return True
        return namespace in export

    def cluster_name(self, port: int, subset: str = "") -> str:
        """Envoy's cluster name: ``outbound|<port>|<subset>|<hostname>``."""
        return f"outbound|{port}|{subset}|{self.hostname}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One workload instance serving one port of a :class:`Service`.

    * ``address``/``kind``: an IP, a hostname to resolve, or a socket path.
    * ``port``: the port to connect to (0 for Unix sockets).
    * ``labels``: the workload's labels plus Istio's topology labels
      (``topology.kubernetes.io/region``/``zone``, ``topology.istio.io/subzone``
      and ``network``), matched by DestinationRule subsets.
    * ``service_account`` as written, and ``spiffe_id``
      (``spiffe://<trust domain>/ns/<namespace>/sa/<account>``), both ``""``
      without one.
    * ``weight`` (>= 1), ``locality`` (``region/zone/subzone``), ``network``.
    * ``workload_name``/``namespace``: for metrics (``destination_workload``):
      the WorkloadEntry's name; ``<entry>-<index>`` for inline endpoints; the
      entry's name for a DNS host endpoint.
    * ``tls_mode``: :data:`TLS_MODE_ISTIO` when a service account is set,
      unless label ``security.istio.io/tlsMode`` says otherwise.

    (``_build`` creates endpoints positionally, for speed: keep the field order.)
    """

    address: str
    port: int
    kind: AddressKind = AddressKind.IP
    labels: Mapping[str, str] = field(default_factory=_empty_labels, hash=False)
    service_account: str = ""
    spiffe_id: str = ""
    weight: int = 1
    locality: str = ""
    network: str = ""
    workload_name: str = ""
    namespace: str = ""
    tls_mode: str = TLS_MODE_DISABLED

    @property
    def mtls(self) -> bool:
        """Whether the endpoint accepts Istio mutual TLS (auto mTLS uses it)."""
        return self.tls_mode == TLS_MODE_ISTIO

    @property
    def needs_dns(self) -> bool:
        """Whether ``address`` is a hostname to resolve before connecting."""
        return self.kind is AddressKind.HOSTNAME


class HostMatch(NamedTuple):
    """What :meth:`Registry.lookup` found: the service and the port asked for."""

    service: Service
    port: Port
