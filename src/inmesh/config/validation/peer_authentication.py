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

import re
from collections.abc import Mapping
from typing import Any

from .._schema import Reporter
from .._yaml import Path
from ..resources._security_types import WorkloadSelector
from ..resources.peer_authentication import PeerAuthenticationSpec

__all__ = ["DRY_RUN_ANNOTATION", "check_workload_selector", "validate_peer_authentication"]

DRY_RUN_ANNOTATION = "istio.io/dry-run"

_MAX_SELECTOR_LABELS = 4096  # (CRD) maxProperties
_MAX_SELECTOR_VALUE_LEN = 63  # (CRD) map-value MaxLength

# Kubernetes label syntax, for the inmesh hint below (Istio does not check it).
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*/)?{_NAME}")
_LABEL_VALUE_RE = re.compile(rf"(?:{_NAME})?")


def validate_peer_authentication(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidatePeerAuthentication`` plus the CRD rules, on a parsed resource."""
    spec: PeerAuthenticationSpec = resource.spec
    annotations: Mapping[str, str] = resource.metadata.annotations

    if DRY_RUN_ANNOTATION in annotations:
        # checkDryRunAnnotation: only AuthorizationPolicy supports it.
        rep.error(
            ("metadata", "annotations", DRY_RUN_ANNOTATION),
            f"PeerAuthentication does not support the {DRY_RUN_ANNOTATION} annotation",
            "remove the annotation; to try a stricter mode first, use PERMISSIVE "
            "before STRICT",
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
    selector: WorkloadSelector | None, path: Path, rep: Reporter
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
            "add matchLabels, or remove the selector to make the policy namespace-wide "
            "on purpose",
        )
        return
    if len(labels) > _MAX_SELECTOR_LABELS:  # (CRD) maxProperties
        rep.error(
            lpath,
            f"{len(labels)} labels is more than the {_MAX_SELECTOR_LABELS} Istio allows",
            "select on the few labels that identify the workload",
        )
    for key, value in labels.items():
        kpath: Path = (*lpath, key)
        bad = False
        if not key:
            bad = True
            rep.error(kpath, "a selector label key must not be empty", "name the label")
        if "*" in key or "*" in value:
            bad = True
            rep.error(
                kpath,
                f"wildcard in selector label {key}={value}: selectors match exact values only",
                "write the exact label value; to select every workload, remove the selector",
            )
        if len(value) > _MAX_SELECTOR_VALUE_LEN:  # (CRD) map-value MaxLength=63
            bad = True
            rep.error(
                kpath,
                f"selector label value is {len(value)} characters long; Istio allows at "
                f"most {_MAX_SELECTOR_VALUE_LEN}",
                "use the label value the workload carries (label values are at most 63 "
                "characters)",
            )
        if not bad and not (_LABEL_KEY_RE.fullmatch(key) and _LABEL_VALUE_RE.fullmatch(value)):
            # inmesh hint: Istio accepts it, but no workload can carry such a label.
            rep.warn(
                kpath,
                f"{key}={value} is not a valid Kubernetes label, so no workload carries it "
                "and the selector matches nothing",
                "use letters, digits, '-', '_' and '.' (keys may have a DNS-name prefix "
                "and '/')",
            )
