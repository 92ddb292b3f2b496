"""Envoy's local replies and the per-request record, sans I/O.

When a client sidecar answers a request itself instead of forwarding it,
the reply has a fixed shape (istio-semantics.md §6.2; Envoy
``source/common/router/router.cc`` and ``stream_info/utility.h``): a status,
a short ``text/plain`` body (or none), response flags and a
``response_code_details`` string. The mesh transports reproduce those
replies byte for byte, so an app and its tests see what they would see in
an Istio cluster:

==========================  ======  ===================================  =======
situation                   status  body                                 flags
==========================  ======  ===================================  =======
no route matched            404     (empty)                              NR
destination not in registry 503     (empty)                              NC
no healthy endpoint         503     ``no healthy upstream``              UH
connect failure / reset     503     ``upstream connect error or ...``    UF/UC/UR
fault abort                 config  ``fault filter abort``               FI
REGISTRY_ONLY, unknown host 502     (empty)                              (none)
==========================  ======  ===================================  =======

``REGISTRY_ONLY`` is Istio's ``block_all`` catch-all virtual host, a direct
response with status 502 (istio/istio ``pilot/pkg/networking/core/httproute.go``
``buildCatchAllVirtualHost``), so it carries no response flag.

:class:`RequestInfo` is what one request did (route, cluster, upstream host,
flags, attempts); the transports attach it to every response as
``response.extensions["inmesh.request_info"]`` for logs, metrics and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NO_HEALTHY_UPSTREAM_BODY",
    "REQUEST_INFO_KEY",
    "LocalReply",
    "RequestInfo",
    "block_all",
    "cluster_not_found",
    "fault_abort",
    "no_healthy_upstream",
    "route_not_found",
    "upstream_reset",
]

REQUEST_INFO_KEY = "inmesh.request_info"
"""The ``httpx.Response.extensions`` key of the :class:`RequestInfo`."""

NO_HEALTHY_UPSTREAM_BODY = "no healthy upstream"
_RESET_PREFIX = "upstream connect error or disconnect/reset before headers. "


@dataclass(slots=True)
class RequestInfo:
    """What one outbound request did, as Envoy's stream info records it.

    Mutable while the request runs; read it after the response.

    * ``route_name``: ``<route.name>.<match.name>``, ``default`` for a host
      without VirtualService, ``allow_any``/``block_all`` for hosts outside
      the registry.
    * ``cluster``: ``outbound|<port>|<subset>|<host>`` (``PassthroughCluster``
      for pass-through traffic); ``""`` when no cluster was chosen.
    * ``upstream_host``: the endpoint, ``address:port``.
    * ``response_flags``: Envoy's short flags, in the order they were set.
    * ``response_code_details``: Envoy's ``%RESPONSE_CODE_DETAILS%``.
    * ``attempts``: upstream attempts made (``x-envoy-attempt-count`` of the last).
    * ``upstream_service_time``: seconds from sending to the response headers.
    * ``mirrored``: shadow copies dispatched.
    """

    route_name: str = ""
    cluster: str = ""
    upstream_host: str = ""
    response_flags: list[str] = field(default_factory=list)
    response_code_details: str = ""
    transport_failure_reason: str = ""
    attempts: int = 0
    upstream_service_time: float | None = None
    mirrored: int = 0
    destination_service: str = ""
    destination_namespace: str = ""
    destination_subset: str = ""
    observation: Any = field(default=None, repr=False, compare=False)
    """The request's telemetry (:class:`~inmesh.telemetry.OutboundCall`), internal."""

    def flag(self, flag: str) -> None:
        """Add a response flag (once)."""
        if flag not in self.response_flags:
            self.response_flags.append(flag)

    @property
    def flags(self) -> str:
        """``%RESPONSE_FLAGS%``: the flags joined with ``,``, or ``-``."""
        return ",".join(self.response_flags) if self.response_flags else "-"


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response the mesh makes itself (no upstream answered it)."""

    status: int
    body: bytes = b""
    flags: tuple[str, ...] = ()
    details: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    is_error: bool = True
    """False for replies the configuration asks for (redirects, direct responses)."""

    def header_list(self) -> list[tuple[bytes, bytes]]:
        """The reply's headers as Envoy sends them (``content-type`` only with a body)."""
        out: list[tuple[bytes, bytes]] = []
        if self.body:
            has_type = any(k.lower() == "content-type" for k, _ in self.headers)
            if not has_type:
                out.append((b"content-type", b"text/plain"))
        out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers)
        out.append((b"content-length", str(len(self.body)).encode()))
        return out

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def route_not_found() -> LocalReply:
    return _NR


def cluster_not_found() -> LocalReply:
    return _NC


def no_healthy_upstream() -> LocalReply:
    return _UH


def block_all() -> LocalReply:
    return _BLOCK_ALL


def fault_abort(
    status: int, grpc_status: int | None = None, *, grpc_request: bool | None = None
) -> LocalReply:
    """The fault filter's reply (shape from :meth:`FaultDecision.abort_reply`):
    the configured status with ``fault filter abort``, or for a gRPC request
    HTTP 200 with ``grpc-status``. ``grpc_request`` ``None``: a gRPC request
    when ``grpc_status`` is given."""
    from inmesh.routing.fault import FaultDecision

    decision = FaultDecision(abort_status=status, grpc_status=grpc_status)
    grpc = grpc_status is not None if grpc_request is None else grpc_request
    shape = decision.abort_reply(grpc_request=grpc)
    assert shape is not None
    code, headers, text = shape
    return LocalReply(code, text.encode(), ("FI",), "fault_filter_abort", tuple(headers))


def upstream_reset(
    flag: str, reason: str, detail: str = "", *, retried: bool = False, status: int = 503
) -> LocalReply:
    """Envoy's reply when no response headers came back.

    ``reason`` is Envoy's reset reason (``connection failure``, ``connection
    termination``, ``remote reset``, ``overflow`` ...), ``detail`` the
    transport failure reason (a TLS error, ...). Body as in Envoy's
    ``Filter::onUpstreamReset``:
    ``upstream connect error or disconnect/reset before headers. [retried and the latest ]reset
    reason: <reason>[, transport failure reason: <detail>]``.
    """
    body = (
        _RESET_PREFIX + ("retried and the latest " if retried else "") + f"reset reason: {reason}"
    )
    if detail:
        body += f", transport failure reason: {detail}"
    code = reason.replace(" ", "_")
    details = f"upstream_reset_before_response_started{{{code}"
    details += f",{_detail_token(detail)}}}" if detail else "}"
    flags: tuple[str, ...] = (flag, "URX") if retried else (flag,)
    headers: tuple[tuple[str, str], ...] = (("x-envoy-overloaded", "true"),) if flag == "UO" else ()
    return LocalReply(status, body.encode(), flags, details, headers)


def _detail_token(detail: str) -> str:
    """Envoy escapes whitespace in details tokens with ``_``."""
    return "_".join(detail.split())


_NR = LocalReply(404, b"", ("NR",), "route_not_found")
_NC = LocalReply(503, b"", ("NC",), "cluster_not_found")
_UH = LocalReply(503, NO_HEALTHY_UPSTREAM_BODY.encode(), ("UH",), "no_healthy_upstream")
_BLOCK_ALL = LocalReply(502, b"", (), "direct_response")
