"""PeerAuthentication checks, after Istio's own.

Two gates decide whether Istio takes a PeerAuthentication, and both are
reproduced here as errors:

- the validating webhook / ``istioctl validate``: istio/istio
  ``pkg/config/validation/validation.go`` (``ValidatePeerAuthentication``,
  ``validateWorkloadSelector``, and ``validateMetadata`` /
  ``checkDryRunAnnotation`` for annotations);
- the CRD schema the Kubernetes API server applies first (the kubebuilder
  markers in istio/api ``security/v1beta1/peer_authentication.proto`` and
  ``type/v1beta1/selector.proto``). Comments say "(CRD)" where a rule exists
  only there.

Istio's warnings stay warnings; hints Istio does not give are warnings too,
and their comments say "inmesh hint". :func:`check_workload_selector` is
shared with AuthorizationPolicy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._schema import Reporter
from .._yaml import Path
from ..resources._common import MatchLabelsSelector
from ..resources.peer_authentication import PeerAuthenticationSpec
from ._common import check_selector_label, check_selector_size, is_k8s_label

__all__ = ["DRY_RUN_ANNOTATION", "check_workload_selector", "validate_peer_authentication"]

DRY_RUN_ANNOTATION = "istio.io/dry-run"

_MAX_SELECTOR_LABELS = 4096  # (CRD) maxProperties


def validate_peer_authentication(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidatePeerAuthentication`` plus the CRD rules, on a parsed resource."""
    spec: PeerAuthenticationSpec = resource.spec
    annotations: Mapping[str, str] = resource.metadata.annotations

    if DRY_RUN_ANNOTATION in annotations:
        # checkDryRunAnnotation: only AuthorizationPolicy supports it.
        rep.error(
            ("metadata", "annotations", DRY_RUN_ANNOTATION),
            f"PeerAuthentication does not support the {DRY_RUN_ANNOTATION} annotation",
            "remove the annotation; to try a stricter mode first, use PERMISSIVE before STRICT",
        )

    check_workload_selector(spec.selector, ("spec", "selector"), rep)

    ports = spec.port_level_mtls
    if ports is None:
        return
    ppath: Path = ("spec", "portLevelMtls")
    has_labels = spec.selector is not None and bool(spec.selector.match_labels)
    if not has_labels:
        # validation.go, and the CRD rule "portLevelMtls requires selector"
        rep.error(
            ppath,
            "portLevelMtls needs a selector with matchLabels: a namespace- or mesh-wide "
            "PeerAuthentication cannot have port-level mTLS",
            "add selector.matchLabels naming the workload whose ports these are, or move "
            "the port settings to a workload-level policy",
        )
    if not ports:
        # validation.go ("must have at least one element") and (CRD) minProperties=1
        rep.error(
            ppath,
            "portLevelMtls is empty",
            "add at least one entry such as 8080: {mode: DISABLE}, or remove portLevelMtls",
        )
    for port in ports:
        if not 1 <= port <= 65535:
            rep.error(
                (*ppath, str(port)),
                f"port {port} is out of range",
                "use a workload port from 1 to 65535",
            )


def check_workload_selector(
    selector: MatchLabelsSelector | None, path: Path, rep: Reporter
) -> None:
    """Istio's ``validateWorkloadSelector`` plus the CRD rules for ``matchLabels``."""
    if selector is None:
        return
    labels = selector.match_labels
    lpath: Path = (*path, "matchLabels")
    if not labels:
        # validateWorkloadSelector warns: "workload selector specified without labels"
        rep.warn(
            path,
            "the selector has no matchLabels, so it selects every workload in the "
            "namespace, as if it were not set",
            "add matchLabels, or remove the selector to make the policy namespace-wide on purpose",
        )
        return
    check_selector_size(labels, lpath, rep, _MAX_SELECTOR_LABELS)
    for key, value in labels.items():
        kpath: Path = (*lpath, key)
        if check_selector_label(key, value, kpath, rep) and not is_k8s_label(key, value):
            # inmesh hint: Istio accepts it, but no workload can carry such a label.
            rep.warn(
                kpath,
                f"{key}={value} is not a valid Kubernetes label, so no workload carries it "
                "and the selector matches nothing",
                "use letters, digits, '-', '_' and '.' (keys may have a DNS-name prefix and '/')",
            )
