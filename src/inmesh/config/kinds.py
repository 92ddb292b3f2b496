"""The kinds inmesh reads, with the API versions Istio serves them under.

Importing this module registers them with the loader. Each kind's model lives
in ``inmesh.config.resources.<module>`` and its checks in
``inmesh.config.validation.<module>``.
"""

from __future__ import annotations

import importlib

from ._schema import KindInfo, register_kind

__all__ = ["KIND_TABLE", "NETWORKING", "SECURITY"]

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
_NET_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SEC_VERSIONS = ("v1", "v1beta1")

# kind, group, versions, module, spec class, validate function, description
KIND_TABLE: tuple[tuple[str, str, tuple[str, ...], str, str, str, str], ...] = (
    (
        "VirtualService", NETWORKING, _NET_VERSIONS, "virtual_service",
        "VirtualServiceSpec", "validate_virtual_service",
        "Routing rules for hosts: matches, destinations and weights, retries, timeouts, faults.",
    ),
    (
        "DestinationRule", NETWORKING, _NET_VERSIONS, "destination_rule",
        "DestinationRuleSpec", "validate_destination_rule",
        "Policies for traffic to a host: subsets, load balancing, connection pools, "
        "outlier detection, TLS.",
    ),
    (
        "ServiceEntry", NETWORKING, _NET_VERSIONS, "service_entry",
        "ServiceEntrySpec", "validate_service_entry",
        "Adds services (hosts x ports) and their endpoints to the registry.",
    ),
    (
        "WorkloadEntry", NETWORKING, _NET_VERSIONS, "service_entry",
        "WorkloadEntrySpec", "validate_workload_entry",
        "One workload outside Kubernetes; selected by a ServiceEntry's workloadSelector.",
    ),
    (
        "PeerAuthentication", SECURITY, _SEC_VERSIONS, "peer_authentication",
        "PeerAuthenticationSpec", "validate_peer_authentication",
        "Which mutual-TLS mode a workload's server side accepts.",
    ),
    (
        "AuthorizationPolicy", SECURITY, _SEC_VERSIONS, "authorization_policy",
        "AuthorizationPolicySpec", "validate_authorization_policy",
        "Who may call a workload, with what: ALLOW, DENY, AUDIT and CUSTOM rules.",
    ),
)


def _register_all() -> None:
    for kind, group, versions, module, spec_name, validate_name, doc in KIND_TABLE:
        spec_module = importlib.import_module(f"inmesh.config.resources.{module}")
        check_module = importlib.import_module(f"inmesh.config.validation.{module}")
        register_kind(
            KindInfo(
                kind,
                group,
                versions,
                getattr(spec_module, spec_name),
                getattr(check_module, validate_name),
                doc,
            )
        )


_register_all()
