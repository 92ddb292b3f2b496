"""Messages of ``istio.type.v1beta1`` shared by the security kinds.

Mirrors istio/api ``type/v1beta1/selector.proto``: ``WorkloadSelector``
(``matchLabels``, unlike the networking kinds' ``labels``) and
``PolicyTargetReference``. Data only; the checks are in
``inmesh.config.validation.peer_authentication`` (selector) and
``inmesh.config.validation.authorization_policy`` (target references).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from .._schema import spec_field

__all__ = ["PolicyTargetReference", "WorkloadSelector"]


@dataclass(frozen=True, slots=True)
class WorkloadSelector:
    """``istio.type.v1beta1.WorkloadSelector{matchLabels}``.

    Selects the workloads in the policy's namespace whose labels include every
    ``matchLabels`` entry (all workloads of the mesh when the policy is in the
    root namespace). Without labels it selects every workload, as if unset.
    """

    __istio_name__: ClassVar[str] = "WorkloadSelector"
    match_labels: Mapping[str, str] = spec_field(
        default_factory=dict,
        note="exact label values; no wildcards; all entries must match",
    )


@dataclass(frozen=True, slots=True)
class PolicyTargetReference:
    """``istio.type.v1beta1.PolicyTargetReference{group, kind, name, namespace}``.

    Attaches a policy to a Gateway, GatewayClass, Service (waypoints) or
    ServiceEntry instead of selecting workloads by label.
    """

    __istio_name__: ClassVar[str] = "PolicyTargetReference"
    group: str = spec_field(
        default="", note='"" or core for Service, gateway.networking.k8s.io, networking.istio.io'
    )
    kind: str = spec_field(
        default="", required=True, note="Gateway, GatewayClass, Service or ServiceEntry"
    )
    name: str = spec_field(default="", required=True)
    namespace: str = spec_field(
        default="", note="must stay empty: cross-namespace references are not supported"
    )
