"""The kinds inmesh reads, with the API versions Istio serves them under.

Importing this module registers them with the loader.
"""

from __future__ import annotations

from ._schema import KindInfo, register_kind
from .resources.service_entry import ServiceEntrySpec, WorkloadEntrySpec
from .validation.service_entry import validate_service_entry, validate_workload_entry

__all__ = ["NETWORKING", "SECURITY"]

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
_NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SEC_VERSIONS = ("v1", "v1beta1")

register_kind(
    KindInfo(
        "ServiceEntry",
        NETWORKING,
        _NET_VERSIONS,
        ServiceEntrySpec,
        validate_service_entry,
        "Adds services (hosts x ports) and their endpoints to the registry.",
    )
)
register_kind(
    KindInfo(
        "WorkloadEntry",
        NETWORKING,
        _NET_VERSIONS,
        WorkloadEntrySpec,
        validate_workload_entry,
        "One workload outside Kubernetes; selected by ServiceEntry workloadSelector.",
    )
)
