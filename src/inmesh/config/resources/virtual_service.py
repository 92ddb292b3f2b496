"""VirtualService (``networking.istio.io``): how requests for a set of hosts are routed.

Mirrors istio/api ``networking/v1alpha3/virtual_service.proto``: HTTP routes
(matches, weighted destinations, redirects, direct responses, delegation,
rewrites, timeouts, retries, fault injection, mirroring, CORS and header
operations), TLS and TCP routes, ``gateways`` and ``exportTo``. Deprecated
fields (``mirrorPercent`` and its proto spelling ``mirror_percent``,
``corsPolicy.allowOrigin``, ``fault.delay.percent``) are modelled too, since
Istio still reads them.

Data only; Istio's checks are in ``inmesh.config.validation.virtual_service``.
Unset optional values are ``None`` (lists and maps: empty); proto ``oneof``
groups are listed in ``__oneofs__``. Short host names are kept as written:
they are relative to the VirtualService's namespace and expanded later.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from .._schema import Support, spec_field
from ._common import Duration, Percent, PortSelector, StringMatch

__all__ = [
    "MESH_GATEWAY",
    "CorsPolicy",
    "Delegate",
    "Destination",
    "FaultAbort",
    "FaultDelay",
    "HTTPBody",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "HeaderOperations",
    "Headers",
    "L4MatchAttributes",
    "RedirectPortSelection",
    "RegexRewrite",
    "RouteDestination",
    "TCPRoute",
    "TLSMatchAttributes",
    "TLSRoute",
    "UnmatchedPreflights",
    "VirtualServiceSpec",
]

MESH_GATEWAY = "mesh"
"""The reserved gateway name for the sidecars of the mesh (and so for inmesh)."""

_L4_ONLY = "inmesh routes HTTP only; TLS/TCP routes are accepted and validated but not applied"
_MESH_ONLY = "only 'mesh' applies (no gateways listed means mesh); inmesh is not a gateway"
_ISTIO_REJECTS = "Istio refuses this field: it is not supported yet"


# ---------------------------------------------------------------------------
# Enums


class RedirectPortSelection(str, enum.Enum):
    """``HTTPRedirect.RedirectPortSelection``: where a redirect's port comes from."""

    FROM_PROTOCOL_DEFAULT = "FROM_PROTOCOL_DEFAULT"
    FROM_REQUEST_PORT = "FROM_REQUEST_PORT"
    __numbers__: ClassVar[dict[int, str]]


RedirectPortSelection.__numbers__ = {0: "FROM_PROTOCOL_DEFAULT", 1: "FROM_REQUEST_PORT"}


class UnmatchedPreflights(str, enum.Enum):
    """``CorsPolicy.UnmatchedPreflights``: what happens to preflights whose origin does not match."""

    UNSPECIFIED = "UNSPECIFIED"  # means FORWARD
    FORWARD = "FORWARD"
    IGNORE = "IGNORE"
    __numbers__: ClassVar[dict[int, str]]


UnmatchedPreflights.__numbers__ = {0: "UNSPECIFIED", 1: "FORWARD", 2: "IGNORE"}


# ---------------------------------------------------------------------------
# Destinations and headers


@dataclass(frozen=True, slots=True)
class Destination:
    """A service (and optionally subset and port) that traffic is sent to."""

    __istio_name__: ClassVar[str] = "Destination"
    host: str | None = spec_field(
        required=True,
        note="a registry host; a short name is relative to this VirtualService's namespace",
    )
    subset: str | None = spec_field(note="must name a subset of a DestinationRule for the host")
    port: PortSelector | None = spec_field(
        note="needed only when the destination service has several ports"
    )


@dataclass(frozen=True, slots=True)
class HeaderOperations:
    """``Headers.HeaderOperations``: set (overwrite), add (append) and remove headers."""

    __istio_name__: ClassVar[str] = "HeaderOperations"
    set: Mapping[str, str] = spec_field(default_factory=dict)
    add: Mapping[str, str] = spec_field(default_factory=dict)
    remove: tuple[str, ...] = spec_field(default=())


@dataclass(frozen=True, slots=True)
class Headers:
    """Header operations on the request sent upstream and the response returned."""

    __istio_name__: ClassVar[str] = "Headers"
    request: HeaderOperations | None = spec_field()
    response: HeaderOperations | None = spec_field()


@dataclass(frozen=True, slots=True)
class HTTPRouteDestination:
    """One weighted destination of an HTTP route, with its own header operations."""

    __istio_name__: ClassVar[str] = "HTTPRouteDestination"
    destination: Destination | None = spec_field(required=True)
    weight: int | None = spec_field(
        note="relative to the sum of the route's weights; a single destination gets everything"
    )
    headers: Headers | None = spec_field()


@dataclass(frozen=True, slots=True)
class RouteDestination:
    """One weighted destination of a TLS or TCP route."""

    __istio_name__: ClassVar[str] = "RouteDestination"
    destination: Destination | None = spec_field(required=True)
    weight: int | None = spec_field()


@dataclass(frozen=True, slots=True)
class Delegate:
    """The VirtualService (``name`` in ``namespace``) an HTTP route hands its requests to."""

    __istio_name__: ClassVar[str] = "Delegate"
    name: str | None = spec_field()
    namespace: str | None = spec_field(note="defaults to the namespace of the root VirtualService")


# ---------------------------------------------------------------------------
# HTTP route parts


@dataclass(frozen=True, slots=True)
class HTTPMatchRequest:
    """Conditions that must all hold for a route to apply (the ``match`` list is OR-ed)."""

    __istio_name__: ClassVar[str] = "HTTPMatchRequest"
    name: str | None = spec_field(note="joined to the route name in logs and metrics")
    uri: StringMatch | None = spec_field(
        note="the path without the query string; regex must match the whole path"
    )
    scheme: StringMatch | None = spec_field()
    method: StringMatch | None = spec_field()
    authority: StringMatch | None = spec_field(note="the Host header as received")
    headers: Mapping[str, StringMatch] = spec_field(
        default_factory=dict,
        note="lower-case names; {} means the header is present",
    )
    port: int | None = spec_field(note="the service port the client addressed")
    source_labels: Mapping[str, str] = spec_field(
        default_factory=dict, note="compared with the labels of the calling workload"
    )
    gateways: tuple[str, ...] = spec_field(
        default=(),
        support=Support.PARTIAL,
        note=_MESH_ONLY,
        enforced_if=lambda gws: not gws or set(gws) == {MESH_GATEWAY},
    )
    query_params: Mapping[str, StringMatch] = spec_field(
        default_factory=dict, note="{} means the parameter is present"
    )
    ignore_uri_case: bool | None = spec_field(note="for exact and prefix uri matches only")
    without_headers: Mapping[str, StringMatch] = spec_field(
        default_factory=dict, note="matches when the header match does not"
    )
    source_namespace: str | None = spec_field(note="the namespace of the calling workload")
    stat_prefix: str | None = spec_field(
        support=Support.IGNORED, note="names Envoy per-route statistics, which inmesh has not"
    )

    @property
    def is_empty(self) -> bool:
        """No condition at all: the match accepts every request."""
        return (
            self.uri is None
            and self.scheme is None
            and self.method is None
            and self.authority is None
            and not self.headers
            and not self.port
            and not self.source_labels
            and not self.gateways
            and not self.query_params
            and not self.without_headers
            and not self.source_namespace
        )


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    """``RegexRewrite{match, rewrite}``: an RE2 substitution over the path."""

    __istio_name__: ClassVar[str] = "RegexRewrite"
    match: str | None = spec_field(note="an RE2 regex")
    rewrite: str | None = spec_field(note="the replacement; \\1 refers to a capture group")


@dataclass(frozen=True, slots=True)
class HTTPRewrite:
    """Rewrites the path and/or authority before the request is forwarded."""

    __istio_name__: ClassVar[str] = "HTTPRewrite"
    uri: str | None = spec_field(note="replaces the matched prefix (or the whole path)")
    authority: str | None = spec_field()
    uri_regex_rewrite: RegexRewrite | None = spec_field()


@dataclass(frozen=True, slots=True)
class HTTPRedirect:
    """Answers with a redirect instead of forwarding the request."""

    __istio_name__: ClassVar[str] = "HTTPRedirect"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (("port", "derive_port"),)
    uri: str | None = spec_field(note="replaces the whole path")
    authority: str | None = spec_field()
    port: int | None = spec_field()
    derive_port: RedirectPortSelection | None = spec_field()
    scheme: str | None = spec_field(note="http or https")
    redirect_code: int | None = spec_field(istio_default=301)
    prefix_rewrite: str | None = spec_field(
        note="replaces the matched prefix; every uri match of the route must be a prefix"
    )


@dataclass(frozen=True, slots=True)
class HTTPBody:
    """The body of a direct response: text or base64-encoded bytes."""

    __istio_name__: ClassVar[str] = "HTTPBody"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (("string_", "bytes_"),)
    string_: str | None = spec_field()
    bytes_: bytes | None = spec_field(note="base64-encoded in YAML")

    @property
    def content(self) -> bytes:
        """The body as bytes (text is UTF-8 encoded)."""
        if self.bytes_ is not None:
            return self.bytes_
        return (self.string_ or "").encode()


@dataclass(frozen=True, slots=True)
class HTTPDirectResponse:
    """Answers with a fixed status and body instead of forwarding the request."""

    __istio_name__: ClassVar[str] = "HTTPDirectResponse"
    status: int | None = spec_field(required=True)
    body: HTTPBody | None = spec_field(note="at most 1MB")


@dataclass(frozen=True, slots=True)
class HTTPRetry:
    """Retry policy for one route; ``attempts: 0`` turns retries off."""

    __istio_name__: ClassVar[str] = "HTTPRetry"
    attempts: int | None = spec_field(
        note="retries after the first try; without a retries block the mesh default is 2"
    )
    per_try_timeout: Duration | None = spec_field(note="default: bounded by the route timeout")
    retry_on: str | None = spec_field(
        istio_default="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        note="comma-separated Envoy retry conditions and HTTP status codes",
    )
    retry_remote_localities: bool | None = spec_field(
        support=Support.NOT_YET, note="inmesh does not yet prefer other localities on retry"
    )
    retry_ignore_previous_hosts: bool | None = spec_field(istio_default=True)
    backoff: Duration | None = spec_field(
        istio_default=Duration.of(0.025),
        note="base interval of the jittered exponential back-off (maximum 10x)",
    )

    @property
    def retry_on_tokens(self) -> tuple[str, ...]:
        """The conditions of ``retryOn`` as written (empty when unset)."""
        return tuple(self.retry_on.split(",")) if self.retry_on else ()


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """``HTTPFaultInjection.Delay``: wait before forwarding a share of the requests."""

    __istio_name__: ClassVar[str] = "HTTPFaultInjection.Delay"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (("fixed_delay", "exponential_delay"),)
    percent: int | None = spec_field(
        deprecated="use percentage: {value: <0-100>}; percent is read only without percentage"
    )
    fixed_delay: Duration | None = spec_field()
    exponential_delay: Duration | None = spec_field(support=Support.NOT_YET, note=_ISTIO_REJECTS)
    percentage: Percent | None = spec_field(note="unset means no request is delayed")

    @property
    def fraction(self) -> float:
        """Share of requests delayed, 0-1 (``percentage`` wins over ``percent``)."""
        if self.percentage is not None:
            return self.percentage.fraction
        return (self.percent or 0) / 100.0


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """``HTTPFaultInjection.Abort``: answer a share of the requests with an error."""

    __istio_name__: ClassVar[str] = "HTTPFaultInjection.Abort"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("http_status", "grpc_status", "http2_error"),
    )
    http_status: int | None = spec_field()
    grpc_status: str | None = spec_field(note="a gRPC status name such as UNAVAILABLE")
    http2_error: str | None = spec_field(support=Support.NOT_YET, note=_ISTIO_REJECTS)
    percentage: Percent | None = spec_field(note="unset means no request is aborted")


@dataclass(frozen=True, slots=True)
class HTTPFaultInjection:
    """Client-side fault injection: a delay and/or an abort."""

    __istio_name__: ClassVar[str] = "HTTPFaultInjection"
    delay: FaultDelay | None = spec_field()
    abort: FaultAbort | None = spec_field()


@dataclass(frozen=True, slots=True)
class HTTPMirrorPolicy:
    """One mirror target: a copy of the request is sent there and its answer ignored."""

    __istio_name__: ClassVar[str] = "HTTPMirrorPolicy"
    destination: Destination | None = spec_field(required=True)
    percentage: Percent | None = spec_field(istio_default=Percent(100.0))


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Cross-origin resource sharing for the route."""

    __istio_name__: ClassVar[str] = "CorsPolicy"
    allow_origin: tuple[str, ...] = spec_field(
        default=(), deprecated="use allowOrigins with {exact: <origin>} entries"
    )
    allow_origins: tuple[StringMatch, ...] = spec_field(default=())
    allow_methods: tuple[str, ...] = spec_field(default=())
    allow_headers: tuple[str, ...] = spec_field(default=())
    expose_headers: tuple[str, ...] = spec_field(default=())
    max_age: Duration | None = spec_field(note="whole seconds")
    allow_credentials: bool | None = spec_field()
    unmatched_preflights: UnmatchedPreflights | None = spec_field(
        istio_default=UnmatchedPreflights.FORWARD
    )


# ---------------------------------------------------------------------------
# Routes


@dataclass(frozen=True, slots=True)
class HTTPRoute:
    """One HTTP rule: conditions, then where and how the request goes."""

    __istio_name__: ClassVar[str] = "HTTPRoute"
    name: str | None = spec_field()
    match: tuple[HTTPMatchRequest, ...] = spec_field(
        default=(), note="none: the rule matches every request"
    )
    route: tuple[HTTPRouteDestination, ...] = spec_field(default=())
    redirect: HTTPRedirect | None = spec_field()
    direct_response: HTTPDirectResponse | None = spec_field()
    delegate: Delegate | None = spec_field(
        support=Support.NOT_YET,
        note="delegate VirtualServices are accepted and validated but not merged yet",
    )
    rewrite: HTTPRewrite | None = spec_field()
    timeout: Duration | None = spec_field(
        note="unset: no timeout (Envoy's 15s is not used); covers every attempt, back-off "
        "and the response body"
    )
    retries: HTTPRetry | None = spec_field(
        note="unset: Istio's default, 2 retries on connect-failure,refused-stream,unavailable,"
        "cancelled"
    )
    fault: HTTPFaultInjection | None = spec_field()
    mirror: Destination | None = spec_field()
    mirrors: tuple[HTTPMirrorPolicy, ...] = spec_field(default=())
    mirror_percent: int | None = spec_field(deprecated="use mirrorPercentage: {value: <0-100>}")
    mirror_percent_proto: int | None = spec_field(
        name="mirror_percent", deprecated="use mirrorPercentage: {value: <0-100>}"
    )
    mirror_percentage: Percent | None = spec_field(note="unset: every request is mirrored")
    cors_policy: CorsPolicy | None = spec_field()
    headers: Headers | None = spec_field()

    @property
    def mirror_share(self) -> float:
        """Share of requests copied to ``mirror``, 0-1, as Istio computes it."""
        if self.mirror_percentage is not None:
            return self.mirror_percentage.fraction
        legacy = (
            self.mirror_percent if self.mirror_percent is not None else self.mirror_percent_proto
        )
        return 1.0 if legacy is None else legacy / 100.0


@dataclass(frozen=True, slots=True)
class TLSMatchAttributes:
    """Conditions on a TLS connection (SNI, destination, source)."""

    __istio_name__: ClassVar[str] = "TLSMatchAttributes"
    sni_hosts: tuple[str, ...] = spec_field(default=(), required=True)
    destination_subnets: tuple[str, ...] = spec_field(default=())
    port: int | None = spec_field()
    source_labels: Mapping[str, str] = spec_field(default_factory=dict)
    gateways: tuple[str, ...] = spec_field(default=())
    source_namespace: str | None = spec_field()


@dataclass(frozen=True, slots=True)
class L4MatchAttributes:
    """Conditions on a TCP connection (destination, source)."""

    __istio_name__: ClassVar[str] = "L4MatchAttributes"
    destination_subnets: tuple[str, ...] = spec_field(default=())
    port: int | None = spec_field()
    source_subnet: str | None = spec_field()
    source_labels: Mapping[str, str] = spec_field(default_factory=dict)
    gateways: tuple[str, ...] = spec_field(default=())
    source_namespace: str | None = spec_field()


@dataclass(frozen=True, slots=True)
class TLSRoute:
    """A rule for unterminated TLS, routed by SNI."""

    __istio_name__: ClassVar[str] = "TLSRoute"
    match: tuple[TLSMatchAttributes, ...] = spec_field(default=(), required=True)
    route: tuple[RouteDestination, ...] = spec_field(default=())


@dataclass(frozen=True, slots=True)
class TCPRoute:
    """A rule for opaque TCP connections."""

    __istio_name__: ClassVar[str] = "TCPRoute"
    match: tuple[L4MatchAttributes, ...] = spec_field(default=())
    route: tuple[RouteDestination, ...] = spec_field(default=())


@dataclass(frozen=True, slots=True)
class VirtualServiceSpec:
    """Routing rules for a set of hosts.

    A VirtualService without ``hosts`` is a delegate: only a root
    VirtualService's ``http[].delegate`` can bring its routes into use.
    """

    __istio_name__: ClassVar[str] = "VirtualService"
    hosts: tuple[str, ...] = spec_field(
        default=(),
        note="Host header values this applies to; short names are relative to this namespace",
    )
    gateways: tuple[str, ...] = spec_field(
        default=(),
        support=Support.PARTIAL,
        note=_MESH_ONLY,
        enforced_if=lambda gws: not gws or set(gws) == {MESH_GATEWAY},
    )
    http: tuple[HTTPRoute, ...] = spec_field(
        default=(), note="applied by mesh.transport() / mesh.async_transport(); first match wins"
    )
    tls: tuple[TLSRoute, ...] = spec_field(default=(), support=Support.NOT_YET, note=_L4_ONLY)
    tcp: tuple[TCPRoute, ...] = spec_field(default=(), support=Support.NOT_YET, note=_L4_ONLY)
    export_to: tuple[str, ...] = spec_field(default=())

    @property
    def is_delegate(self) -> bool:
        """A delegate VirtualService (no hosts of its own)."""
        return not self.hosts

    @property
    def applies_to_mesh(self) -> bool:
        """Whether the rules apply to the mesh's sidecars (and so to inmesh)."""
        return not self.gateways or MESH_GATEWAY in self.gateways
