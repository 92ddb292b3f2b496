"""Messages of ``istio.type.v1beta1`` shared by the security kinds.

Mirrors ``PolicyTargetReference`` of istio/api ``type/v1beta1/selector.proto``.
Its ``WorkloadSelector`` (``matchLabels``) is shared with DestinationRule, so it
is :class:`~inmesh.config.resources._common.MatchLabelsSelector`. Data only;
the checks are in ``inmesh.config.validation.authorization_policy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .._schema import spec_field

__all__ = ["PolicyTargetReference"]


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
