"""ServiceEntry and WorkloadEntry (``networking.istio.io``).

Mirrors istio/api ``networking/v1alpha3/service_entry.proto`` and
``workload_entry.proto``. Data only; the checks are in
``inmesh.config.validation.service_entry``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from .._schema import Support, spec_field
from ._common import WorkloadSelector

__all__ = [
    "Location",
    "Protocol",
    "Resolution",
    "ServiceEntrySpec",
    "ServicePort",
    "WorkloadEntrySpec",
]


class Location(str, enum.Enum):
    """``ServiceEntry.Location``: MESH_EXTERNAL (default) or MESH_INTERNAL."""

    MESH_EXTERNAL = "MESH_EXTERNAL"
    MESH_INTERNAL = "MESH_INTERNAL"
    __numbers__: ClassVar[dict[int, str]]


Location.__numbers__ = {0: "MESH_EXTERNAL", 1: "MESH_INTERNAL"}


class Resolution(str, enum.Enum):
    """``ServiceEntry.Resolution``: how endpoint addresses are found."""

    NONE = "NONE"
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"
    DYNAMIC_DNS = "DYNAMIC_DNS"
    __numbers__: ClassVar[dict[int, str]]


Resolution.__numbers__ = {
    0: "NONE",
    1: "STATIC",
    2: "DNS",
    3: "DNS_ROUND_ROBIN",
    4: "DYNAMIC_DNS",
}


class Protocol(str, enum.Enum):
    """A port protocol as Istio reads ``ServicePort.protocol``.

    The values are Istio's spellings (istio/istio ``pkg/config/protocol``).
    ``ServicePort.protocol`` stays the string that was written; Istio matches
    it case-insensitively, which :meth:`parse` reproduces.
    """

    HTTP = "HTTP"
    HTTPS = "HTTPS"
    HTTP2 = "HTTP2"
    HTTP_PROXY = "HTTP_PROXY"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    TCP = "TCP"
    TLS = "TLS"
    UDP = "UDP"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"

    @classmethod
    def parse(cls, text: str) -> Protocol | None:
        """The protocol ``text`` names (any case), or ``None`` if Istio does not know it."""
        return _PROTOCOLS.get(text.lower())

    @property
    def is_http(self) -> bool:
        """HTTP/1.1 or HTTP/2 (routed by the Host/authority header)."""
        return self in _HTTP

    @property
    def is_tls(self) -> bool:
        """TLS that the proxy does not terminate (routed by SNI)."""
        return self in (Protocol.HTTPS, Protocol.TLS)

    @property
    def is_tcp(self) -> bool:
        """Proxied as an opaque TCP stream (includes TLS and the database protocols)."""
        return self in _TCP


_PROTOCOLS = {p.value.lower(): p for p in Protocol}
_HTTP = frozenset(
    {Protocol.HTTP, Protocol.HTTP2, Protocol.HTTP_PROXY, Protocol.GRPC, Protocol.GRPC_WEB}
)
_TCP = frozenset(
    {Protocol.TCP, Protocol.HTTPS, Protocol.TLS, Protocol.MONGO, Protocol.REDIS, Protocol.MYSQL}
)


@dataclass(frozen=True, slots=True)
class WorkloadEntrySpec:
    """A non-Kubernetes workload (a VM, a process on this host, ...).

    Used both as the ``WorkloadEntry`` kind and inline in
    ``ServiceEntry.endpoints``.
    """

    __istio_name__: ClassVar[str] = "WorkloadEntry"
    address: str | None = spec_field(
        note="an IP, a DNS name (resolved in the background) or unix:///path; "
        "if empty, network is required"
    )
    ports: Mapping[str, int] = spec_field(
        default_factory=dict,
        note="service port name -> this endpoint's port; wins over the port's targetPort",
    )
    labels: Mapping[str, str] = spec_field(default_factory=dict)
    network: str | None = spec_field(
        support=Support.PARTIAL,
        note="recorded on the endpoint; cross-network gateways are not modelled",
    )
    locality: str | None = spec_field()
    weight: int | None = spec_field()
    service_account: str | None = spec_field(
        note="the workload's identity: spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>"
    )

    @property
    def is_unix(self) -> bool:
        """Whether the address is a Unix domain socket (``unix://...``)."""
        return (self.address or "").startswith("unix://")


@dataclass(frozen=True, slots=True)
class ServicePort:
    """``ServicePort{number, protocol, name, targetPort}``."""

    __istio_name__: ClassVar[str] = "ServicePort"
    number: int | None = spec_field(required=True)
    protocol: str | None = spec_field(
        note="HTTP, HTTPS, HTTP2, GRPC, GRPC-Web, HTTP_PROXY, TCP, TLS, UDP, Mongo, Redis "
        "or MySQL, in any case; unset means sniffed"
    )
    name: str | None = spec_field(required=True)
    target_port: int | None = spec_field(note="the endpoints' port when unset: number")

    @property
    def parsed_protocol(self) -> Protocol | None:
        """The :class:`Protocol`, or ``None`` when unset (sniffed) or unknown."""
        return Protocol.parse(self.protocol) if self.protocol else None


@dataclass(frozen=True, slots=True)
class ServiceEntrySpec:
    """A service in the mesh registry: hosts x ports, with endpoints."""

    __istio_name__: ClassVar[str] = "ServiceEntry"
    hosts: tuple[str, ...] = spec_field(default=(), required=True)
    addresses: tuple[str, ...] = spec_field(
        default=(),
        support=Support.PARTIAL,
        note="validated and recorded; inmesh routes by Host, not by VIP",
    )
    ports: tuple[ServicePort, ...] = spec_field(default=())
    location: Location = spec_field(
        default=Location.MESH_EXTERNAL, istio_default=Location.MESH_EXTERNAL
    )
    resolution: Resolution = spec_field(
        default=Resolution.NONE, istio_default=Resolution.NONE
    )
    endpoints: tuple[WorkloadEntrySpec, ...] = spec_field(
        default=(), note="at most 4096; only one of endpoints and workloadSelector"
    )
    workload_selector: WorkloadSelector | None = spec_field(
        note="selects WorkloadEntries in the ServiceEntry's namespace"
    )
    export_to: tuple[str, ...] = spec_field(default=())
    subject_alt_names: tuple[str, ...] = spec_field(default=())
