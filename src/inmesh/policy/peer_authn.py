"""PeerAuthentication: the mTLS mode a workload's server side accepts, per port.

Istio's precedence (istio/istio ``pilot/pkg/security/authn/policy_applier.go``,
``ComposePeerAuthentication``):

* mesh level: a policy in the root namespace without a selector;
* namespace level: a policy in the workload's namespace without a selector;
* workload level: a policy in the workload's namespace whose selector matches
  the workload's labels (selector policies in the root namespace are ignored).

At each level the oldest policy (``creationTimestamp``, then name) wins when
several apply. Resolution starts at PERMISSIVE and applies the mesh, the
namespace and then the workload mode, each only if it is not UNSET. A
``portLevelMtls`` entry of the workload-level policy overrides the result for
that port; a port-level UNSET inherits the workload's resolved mode.

This module is pure: it takes plain values and returns an
:class:`EffectivePeerAuthentication`; no I/O, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "EffectivePeerAuthentication",
    "MtlsMode",
    "PeerAuthnPolicy",
    "effective_peer_authentication",
    "policies_from_snapshot",
]


class MtlsMode(str, enum.Enum):
    """The resolved mode (UNSET never survives resolution)."""

    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


@dataclass(frozen=True, slots=True)
class PeerAuthnPolicy:
    """One PeerAuthentication reduced to what precedence needs.

    ``mode`` and the values of ``port_modes`` are ``"UNSET"``, ``"DISABLE"``,
    ``"PERMISSIVE"`` or ``"STRICT"``; ``selector`` is ``None`` for a
    namespace- or mesh-wide policy.
    """

    namespace: str
    name: str
    mode: str = "UNSET"
    selector: Mapping[str, str] | None = None
    port_modes: Mapping[int, str] = field(default_factory=dict)
    created: str = ""


@dataclass(frozen=True, slots=True)
class EffectivePeerAuthentication:
    """The mode for the workload, and per-port overrides."""

    mode: MtlsMode
    port_modes: Mapping[int, MtlsMode] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    """``namespace/name`` of the policies that decided it, mesh level first."""

    def for_port(self, port: int | None) -> MtlsMode:
        if port is not None:
            mode = self.port_modes.get(port)
            if mode is not None:
                return mode
        return self.mode


def _oldest(policies: Iterable[PeerAuthnPolicy]) -> PeerAuthnPolicy | None:
    ordered = sorted(policies, key=lambda p: (p.created or "\uffff", p.name))
    return ordered[0] if ordered else None


def _apply(current: MtlsMode, mode: str) -> MtlsMode:
    return current if mode in ("", "UNSET") else MtlsMode(mode)


def effective_peer_authentication(
    policies: Iterable[PeerAuthnPolicy],
    *,
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = "istio-system",
) -> EffectivePeerAuthentication:
    """Resolve the effective mode for a workload in ``namespace`` with ``labels``."""
    mesh: list[PeerAuthnPolicy] = []
    ns_level: list[PeerAuthnPolicy] = []
    workload: list[PeerAuthnPolicy] = []
    for p in policies:
        if p.selector is None or not p.selector:
            if p.namespace == root_namespace:
                mesh.append(p)
            if p.namespace == namespace:
                ns_level.append(p)
        elif p.namespace == namespace and all(labels.get(k) == v for k, v in p.selector.items()):
            # (A workload in the root namespace is selected by selector policies there too.)
            workload.append(p)
    mode = MtlsMode.PERMISSIVE
    sources: list[str] = []
    chosen_mesh = _oldest(mesh)
    chosen_ns = _oldest(ns_level) if namespace != root_namespace else None
    chosen_wl = _oldest(workload)
    for chosen in (chosen_mesh, chosen_ns, chosen_wl):
        if chosen is not None:
            mode = _apply(mode, chosen.mode)
            sources.append(f"{chosen.namespace}/{chosen.name}")
    ports: dict[int, MtlsMode] = {}
    if chosen_wl is not None:
        for port, port_mode in chosen_wl.port_modes.items():
            ports[int(port)] = _apply(mode, port_mode)
    return EffectivePeerAuthentication(mode, MappingProxyType(ports), tuple(sources))


def policies_from_snapshot(resources: Iterable[Any]) -> list[PeerAuthnPolicy]:
    """Reduce ``PeerAuthentication`` resources of a snapshot to :class:`PeerAuthnPolicy`."""
    out = []
    for r in resources:
        spec = r.spec
        mtls = getattr(spec, "mtls", None)
        mode = _mode_name(getattr(mtls, "mode", None))
        selector = getattr(spec, "selector", None)
        match = dict(getattr(selector, "match_labels", None) or {}) if selector else None
        port_modes = {
            int(port): _mode_name(getattr(m, "mode", None))
            for port, m in (getattr(spec, "port_level_mtls", None) or {}).items()
        }
        out.append(
            PeerAuthnPolicy(
                namespace=r.namespace,
                name=r.name,
                mode=mode,
                selector=match or None,
                port_modes=port_modes,
                created=r.metadata.creation_timestamp or "",
            )
        )
    return out


def _mode_name(mode: Any) -> str:
    if mode is None:
        return "UNSET"
    return str(getattr(mode, "value", mode))
