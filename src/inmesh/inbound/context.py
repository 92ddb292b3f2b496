"""What the inbound path needs from the mesh, as one small protocol.

The ASGI/WSGI middleware and the serving helpers depend only on
:class:`InboundContext`; :class:`inmesh.Mesh` provides one that follows the
live configuration and certificate rotation, and :class:`StaticInboundContext`
is a fixed one for tests and embedding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from inmesh.model import Workload
from inmesh.policy.peer_authn import MtlsMode

if TYPE_CHECKING:
    from inmesh.identity.sources import CertificateSource
    from inmesh.identity.spiffe import SpiffeId
    from inmesh.policy.authz import AuthzEvaluator

__all__ = ["InboundContext", "StaticInboundContext"]


class InboundContext(Protocol):
    """The mesh as the server side sees it. Every method is cheap and thread-safe."""

    @property
    def workload(self) -> Workload:
        """This workload (its labels select policies)."""
        ...

    @property
    def certificates(self) -> CertificateSource | None:
        """This workload's certificate source, or ``None`` when it has no identity."""
        ...

    def local_identity(self) -> SpiffeId | None:
        """This workload's SPIFFE ID (the XFCC ``By=``), from its current certificate."""
        ...

    def mtls_mode(self, port: int | None) -> MtlsMode:
        """The effective PeerAuthentication mode for a workload port, per the live config."""
        ...

    @property
    def trusted_proxy_xfcc(self) -> bool:
        """Whether an incoming ``x-forwarded-client-cert`` comes from a trusted proxy.

        ``False`` (the default) removes any XFCC that arrived from the network.
        """
        ...

    def authorizer(self) -> AuthzEvaluator | None:
        """The AuthorizationPolicy evaluator for this workload under the live config.

        ``None`` when no policy applies (every request is allowed).
        """
        ...

    @property
    def path_normalization(self) -> str:
        """``BASE`` (Istio's default), ``MERGE_SLASHES``, ``DECODE_AND_MERGE_SLASHES`` or ``NONE``."""
        ...


@dataclass(frozen=True)
class StaticInboundContext:
    """A fixed :class:`InboundContext`: one mode (or a mode per port), one identity."""

    workload: Workload
    certificates: CertificateSource | None = None
    mode: MtlsMode = MtlsMode.PERMISSIVE
    port_modes: Mapping[int, MtlsMode] = field(default_factory=dict)
    trusted_proxy_xfcc: bool = False
    evaluator: AuthzEvaluator | None = None
    path_normalization: str = "BASE"

    def authorizer(self) -> AuthzEvaluator | None:
        return self.evaluator

    def local_identity(self) -> SpiffeId | None:
        if self.certificates is None:
            return None
        return self.certificates.current().spiffe_id

    def mtls_mode(self, port: int | None) -> MtlsMode:
        if port is not None and port in self.port_modes:
            return self.port_modes[port]
        return self.mode
