"""Upstream clusters: what a destination's connections look like, decided without I/O.

* :mod:`~inmesh.upstream.policy`: :class:`DestinationRuleIndex`, which
  DestinationRule applies to a destination and its :class:`EffectivePolicy`
  after Istio's port-level and subset merge rules.
* :mod:`~inmesh.upstream.tls`: :class:`UpstreamTLS` and
  :func:`resolve_upstream_tls`, the TLS of one endpoint's connections from a
  DestinationRule's ``tls`` block and Istio's auto mTLS.

Tier 3: imports the config resources and the tier-2 engines (discovery,
policy); does no I/O.
"""

from __future__ import annotations

from .policy import DestinationRuleIndex, EffectivePolicy
from .tls import (
    MESH_ALPN,
    PLAINTEXT,
    TLS_MODE_LABEL,
    TLSOrigin,
    UpstreamTLS,
    UpstreamTLSMode,
    destination_identities,
    endpoint_tls_mode,
    istio_sni,
    resolve_upstream_tls,
    upstream_tls_for,
)

__all__ = [
    "MESH_ALPN",
    "PLAINTEXT",
    "TLS_MODE_LABEL",
    "DestinationRuleIndex",
    "EffectivePolicy",
    "TLSOrigin",
    "UpstreamTLS",
    "UpstreamTLSMode",
    "destination_identities",
    "endpoint_tls_mode",
    "istio_sni",
    "resolve_upstream_tls",
    "upstream_tls_for",
]
