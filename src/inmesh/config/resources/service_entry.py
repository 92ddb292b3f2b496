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


Location.__numbers__ = {0: "MESH_EXTERNAL", 1: "MESH_INTERNAL"}  # type: ignore[misc]


class Resolution(str, enum.Enum):
    """``ServiceEntry.Resolution``: how endpoint addresses are found."""

    NONE = "NONE"
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"
    DYNAMIC_DNS = "DYNAMIC_DNS"
    __numbers__: ClassVar[dict[int, str]]


Resolution.__numbers__ = {  # type: ignore[misc]
    0: "NONE",
    1: "STATIC",
    2: "DNS",
    3: "DNS_ROUND_ROBIN",
    4: "DYNAMIC_DNS",
}


@dataclass(frozen=True, slots=True)
class WorkloadEntrySpec:
    """A non-Kubernetes workload (a VM, a process on this host, ...)."""

    __istio_name__: ClassVar[str] = "WorkloadEntry"
    address: str | None = spec_field(
        note="an IP, a DNS name (resolved in the background) or unix:///path"
    )
    ports: Mapping[str, int] = spec_field(default_factory=dict)
    labels: Mapping[str, str] = spec_field(default_factory=dict)
    network: str | None = spec_field(
        support=Support.PARTIAL,
        note="recorded on the endpoint; cross-network gateways are not modelled",
    )
    locality: str | None = spec_field()
    weight: int | None = spec_field()
    service_account: str | None = spec_field()


@dataclass(frozen=True, slots=True)
class ServicePort:
    """``ServicePort{number, protocol, name, targetPort}``."""

    __istio_name__: ClassVar[str] = "ServicePort"
    number: int | None = spec_field(required=True)
    protocol: str | None = spec_field()
    name: str | None = spec_field(required=True)
    target_port: int | None = spec_field()


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
    location: Location = spec_field(default=Location.MESH_EXTERNAL)
    resolution: Resolution = spec_field(default=Resolution.NONE)
    endpoints: tuple[WorkloadEntrySpec, ...] = spec_field(default=())
    workload_selector: WorkloadSelector | None = spec_field()
    export_to: tuple[str, ...] = spec_field(default=())
    subject_alt_names: tuple[str, ...] = spec_field(default=())
