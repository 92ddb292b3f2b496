"""PeerAuthentication (``security.istio.io``).

Mirrors istio/api ``security/v1beta1/peer_authentication.proto``. Data only;
the checks are in ``inmesh.config.validation.peer_authentication`` and the
precedence rules (mesh < namespace < workload < port) in
``inmesh.policy.peer_authn``.

``portLevelMtls`` is a ``map<uint32, MutualTLS>`` in the proto. YAML (and the
JSON Kubernetes stores) can only write its keys as strings or integers, so
the model parses every key into an ``int``: ``spec.port_level_mtls[9090]``
works whether the YAML said ``9090:`` or ``"9090":``. A key that is not a
non-negative integer is a parse error at that key; the port range (1-65535)
is checked by validation, as Istio does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from .._schema import Reporter, parse_message, spec_field
from .._yaml import Path
from ._common import MatchLabelsSelector

__all__ = [
    "MutualTLS",
    "MutualTLSMode",
    "PeerAuthenticationSpec",
    "PortLevelMtls",
]



class MutualTLSMode(str, enum.Enum):
    """``PeerAuthentication.MutualTLS.Mode``: which connections the server side accepts."""

    UNSET = "UNSET"
    """Inherit from the namespace or mesh policy; PERMISSIVE when none sets a mode."""
    DISABLE = "DISABLE"
    """Plaintext only."""
    PERMISSIVE = "PERMISSIVE"
    """Plaintext and mutual TLS."""
    STRICT = "STRICT"
    """Mutual TLS with a client certificate only; plaintext connections are refused."""
    __numbers__: ClassVar[dict[int, str]]


MutualTLSMode.__numbers__ = {0: "UNSET", 1: "DISABLE", 2: "PERMISSIVE", 3: "STRICT"}


@dataclass(frozen=True, slots=True)
class MutualTLS:
    """``PeerAuthentication.MutualTLS{mode}``."""

    __istio_name__: ClassVar[str] = "MutualTLS"
    mode: MutualTLSMode = spec_field(
        default=MutualTLSMode.UNSET,
        istio_default=MutualTLSMode.UNSET,
        note="UNSET inherits from the namespace, then the mesh policy; PERMISSIVE if none sets it",
    )


_PORT_KEY_RE = re.compile(r"[0-9]+")


class PortLevelMtls(Mapping[int, MutualTLS]):
    """``portLevelMtls``: a workload (container) port -> :class:`MutualTLS`, read-only.

    Keys are ``int`` (see the module docstring). Ports are the workload's own
    ports, not the ports of a Service in front of it.
    """

    __slots__ = ("_items",)
    __istio_name__: ClassVar[str] = "map of port to MutualTLS"

    def __init__(self, items: Mapping[int, MutualTLS] | None = None) -> None:
        self._items: Mapping[int, MutualTLS] = MappingProxyType(dict(items or {}))

    def __getitem__(self, port: int) -> MutualTLS:
        return self._items[port]

    def __iter__(self) -> Iterator[int]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"PortLevelMtls({dict(self._items)!r})"

    @classmethod
    def __inmesh_parse__(cls, raw: Any, path: Path, rep: Reporter) -> PortLevelMtls | None:
        """Parse the YAML mapping; keys must be port numbers (Istio parses them as uint32)."""
        if not isinstance(raw, dict):
            rep.error(
                path,
                "expected a map from port number to {mode: ...}",
                "write it as a YAML mapping, e.g. portLevelMtls: {8080: {mode: DISABLE}}",
            )
            return None
        items: dict[int, MutualTLS] = {}
        written: dict[int, str] = {}
        for key, value in raw.items():
            text = str(key)
            kpath: Path = (*path, text)
            if not _PORT_KEY_RE.fullmatch(text):
                rep.error(
                    kpath,
                    f"portLevelMtls key {text!r} is not a port number",
                    "use the workload's port number as the key, e.g. 8080: {mode: DISABLE}",
                )
                continue
            # Cap before int(): huge digit strings are out of range anyway.
            port = int(text) if len(text) <= 12 else 10**12
            if port in written:
                # Istio reads both and keeps one of them (Go map order: either).
                rep.warn(
                    kpath,
                    f"keys {written[port]!r} and {text!r} both name port {port}; "
                    "only one of them takes effect",
                    "keep one entry per port",
                )
            written[port] = text
            # `9090:` with no value: jsonpb reads an empty MutualTLS (mode UNSET)
            parsed = parse_message(MutualTLS, {} if value is None else value, kpath, rep)
            if parsed is not None:
                items[port] = parsed
        return cls(items)


@dataclass(frozen=True, slots=True)
class PeerAuthenticationSpec:
    """Which connections the server side of the selected workloads accepts.

    Without ``selector`` the policy is namespace-wide (mesh-wide in the root
    namespace); ``portLevelMtls`` needs a selector.
    """

    __istio_name__: ClassVar[str] = "PeerAuthentication"
    selector: MatchLabelsSelector | None = spec_field(
        note="workloads in the policy's namespace; unset: the whole namespace "
        "(the whole mesh in the root namespace)"
    )
    mtls: MutualTLS | None = spec_field(
        note="STRICT refuses plaintext at the connection when inmesh owns the listener "
        "(mesh.serve, inmesh serve), with 403 from the middleware otherwise"
    )
    port_level_mtls: PortLevelMtls | None = spec_field(
        note="keys are workload ports (the port the server listens on)"
    )
