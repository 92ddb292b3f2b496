"""One mesh's telemetry: what the transports and middleware call per request.

:class:`Telemetry` is built by the :class:`~inmesh.Mesh` (one per mesh). Per
request the drivers call:

* outbound (reporter ``source``): :meth:`Telemetry.outbound` at the start,
  :meth:`OutboundCall.request_headers` for the headers to add upstream (peer
  metadata, trace context, the inbound request's ``x-request-id``),
  :meth:`OutboundCall.response_headers` on the response headers (reads and
  removes the peer's metadata), and :meth:`OutboundCall.finish` once, when
  the response body ends (or at a local reply);
* inbound (reporter ``destination``): :meth:`Telemetry.inbound` with the
  request's headers, :meth:`InboundCall.response_headers` for the headers to
  add to the response, and :meth:`InboundCall.finish` once.

``finish`` records the four Istio metrics, ends the span and writes the
access log line. The inbound call is also the request's context
(:func:`current_inbound`): outbound calls made while serving it read its
``x-request-id`` and trace headers from there, so applications forward
nothing themselves.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from inmesh.model import Workload

from .accesslog import AccessRecord, format_json, format_text
from .metrics import IstioMetrics, Recorder
from .peer import (
    METADATA_HEADER,
    METADATA_ID_HEADER,
    UNKNOWN,
    PeerMetadata,
    PeerMetadataCache,
    local_metadata,
    node_id,
)
from .tracing import Tracing, header_map, set_attributes

if TYPE_CHECKING:
    import httpx
    from opentelemetry.context import Context
    from opentelemetry.trace import Span
    from prometheus_client import CollectorRegistry

    from inmesh.outbound.replies import RequestInfo

__all__ = [
    "ACCESS_LOGGER",
    "InboundCall",
    "OutboundCall",
    "ServiceLookup",
    "Telemetry",
    "current_inbound",
]

ACCESS_LOGGER = "inmesh.access"

_INBOUND: contextvars.ContextVar[InboundCall | None] = contextvars.ContextVar(
    "inmesh_inbound_request", default=None
)

ServiceLookup = Callable[[str], "tuple[str, str] | None"]
"""``authority`` -> ``(service host, service namespace)`` from the registry, or ``None``."""

_REQUEST_ID = b"x-request-id"
_USER_AGENT = b"user-agent"
_XFF = b"x-forwarded-for"
_CONTENT_TYPE = b"content-type"
_GRPC_STATUS = b"grpc-status"
_MX = frozenset({METADATA_HEADER, METADATA_ID_HEADER})
_PASSTHROUGH = "PassthroughCluster"
_BLACKHOLE = "BlackHoleCluster"


def current_inbound() -> InboundCall | None:
    """The inbound request being served in this context, if any."""
    return _INBOUND.get()


def _spiffe_namespace(principal: str) -> str:
    """``ns`` of ``spiffe://<td>/ns/<ns>/sa/<sa>``; ``""`` otherwise."""
    parts = principal.split("/")
    if len(parts) >= 7 and parts[3] == "ns":
        return parts[4]
    return ""


def _protocol(content_type: bytes | None) -> str:
    return (
        "grpc"
        if content_type is not None and content_type.startswith(b"application/grpc")
        else "http"
    )


class Telemetry:
    """Metrics, traces and access logs for one mesh (see the module docstring).

    * ``registry``: where Istio's metrics go (``None``: no metrics).
    * ``access_log``: ``None`` (off), ``"text"`` or ``"json"``; lines go to
      the ``inmesh.access`` logger at INFO.
    * ``tracing``: a :class:`~inmesh.telemetry.tracing.Tracing`.
    * ``local_principal``: this workload's SPIFFE ID now (or ``None``).
    * ``services``: resolves an inbound authority to its registry service.
    """

    def __init__(
        self,
        workload: Workload,
        *,
        cluster_id: str = "Kubernetes",
        registry: CollectorRegistry | None = None,
        access_log: str | None = None,
        tracing: Tracing | None = None,
        local_principal: Callable[[], str | None] = lambda: None,
        services: ServiceLookup | None = None,
        pod_name: str = "",
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if access_log not in (None, "text", "json"):
            raise ValueError(f"access_log must be None, 'text' or 'json', not {access_log!r}")
        self.workload = workload
        self.local = local_metadata(workload, cluster_id, pod_name)
        self._mx = [
            (METADATA_ID_HEADER, node_id(self.local)),
            (METADATA_HEADER, self.local.header_value()),
        ]
        self.peers = PeerMetadataCache()
        self.recorder = (
            Recorder(IstioMetrics.for_registry(registry)) if registry is not None else None
        )
        self.access_log = access_log
        self._format = format_json if access_log == "json" else format_text
        self.access_logger = logging.getLogger(ACCESS_LOGGER)
        self.tracing = tracing if tracing is not None else Tracing()
        self._trace_fields = self.tracing.fields()
        self.trace_header_names: tuple[str, ...] = tuple(
            sorted(f.decode("latin-1") for f in self._trace_fields)
        )
        """The trace headers forwarded from inbound to outbound requests."""
        self._local_principal = local_principal
        self._services = services
        self.clock = clock
        self.wall_clock = wall_clock

    @property
    def metrics(self) -> IstioMetrics | None:
        return None if self.recorder is None else self.recorder.metrics

    def local_principal(self) -> str:
        return self._local_principal() or ""

    # -- outbound -------------------------------------------------------------------

    def outbound(self, request: httpx.Request) -> OutboundCall:
        """Start observing one outbound request (at the top of the transport)."""
        return OutboundCall(self, request)

    # -- inbound ---------------------------------------------------------------------

    def inbound(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        scheme: str,
        peer_principal: str | None,
        local_address: str = "",
        remote_address: str = "",
        server_name: str = "",
        port: int | None = None,
    ) -> InboundCall:
        """Start observing one inbound request (the middleware, before the app)."""
        return InboundCall(
            self,
            method,
            path,
            headers,
            scheme=scheme,
            peer_principal=peer_principal,
            local_address=local_address,
            remote_address=remote_address,
            server_name=server_name,
            port=port,
        )

    def _service(self, authority: str) -> tuple[str, str, str]:
        """``(destination_service, _name, _namespace)`` of an inbound authority."""
        if authority.startswith("["):  # [v6] or [v6]:port
            host = authority[: authority.find("]") + 1]
        else:
            host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        found = self._services(authority) if self._services is not None and authority else None
        if found is not None:
            svc, ns = found
            return svc, svc, ns  # Istio names ServiceEntry services by their host
        if host:
            ip = host.startswith("[") or host.replace(".", "").isdigit()
            return host, host if ip else host.split(".", 1)[0], self.workload.namespace
        canonical = self.local.canonical_service
        return canonical, canonical, self.workload.namespace

    def _log(self, record: AccessRecord) -> None:
        if self.access_logger.isEnabledFor(logging.INFO):
            self.access_logger.info(self._format(record))


class OutboundCall:
    """One outbound request under observation (made by :meth:`Telemetry.outbound`)."""

    __slots__ = (
        "_done",
        "_span",
        "_started",
        "_wall",
        "inbound",
        "method",
        "peer",
        "peer_principal",
        "protocol",
        "request",
        "request_bytes",
        "request_id",
        "tel",
    )

    def __init__(self, tel: Telemetry, request: httpx.Request) -> None:
        self.tel = tel
        self.request = request
        self.method = request.method
        self._started = tel.clock()
        self._wall = 0.0
        self._span: Span | None = None
        self._done = False
        self.peer: PeerMetadata | None = None
        self.peer_principal: object = ""
        """The upstream's verified SPIFFE ID (``""``: none); text on demand."""
        self.request_bytes = 0
        self.inbound = _INBOUND.get()
        self.request_id: str | None = None
        self.protocol = "http"
        if tel.access_log is not None:
            self._wall = tel.wall_clock()

    def request_headers(self, *, mesh_peer: bool = True) -> list[tuple[bytes, bytes]]:
        """Headers to add to the app's request: peer metadata (to mesh-internal
        destinations only), trace context, and an ``x-request-id`` when the app
        set none (the one of the request being served, or a new one when
        access logs need it); an ``x-request-id`` added comes first.
        """
        tel = self.tel
        out: list[tuple[bytes, bytes]] = list(tel._mx) if mesh_peer else []
        request = self.request
        if request.method == "POST":  # gRPC is always a POST
            ctype = request.headers.get("content-type")
            if ctype is not None and ctype.startswith("application/grpc"):
                self.protocol = "grpc"
        self.request_bytes = _body_size(request)
        inbound = self.inbound
        tracer = tel.tracing.tracer()
        logged = tel.access_log is not None
        if inbound is None and tracer is None and not logged:
            return out  # nothing to forward, nothing to log: the fast path
        fields = tel._trace_fields
        present: set[bytes] = set()
        request_id: bytes | None = None
        for k, v in request.headers.raw:
            lk = k.lower()
            if lk == _REQUEST_ID:
                request_id = v
            elif lk in fields:
                present.add(lk)
        if request_id is None:
            if inbound is not None and inbound.request_id:
                request_id = inbound.request_id.encode("latin-1")
                out.insert(0, (_REQUEST_ID, request_id))
            elif logged:  # made here, so the log shows the id every attempt carries
                from inmesh.outbound.plan import new_request_id

                request_id = new_request_id().encode("latin-1")
                out.insert(0, (_REQUEST_ID, request_id))
        if request_id is not None:
            self.request_id = request_id.decode("latin-1")
        if tracer is not None:
            from opentelemetry.trace import SpanKind

            span = tracer.start_span(self.method, kind=SpanKind.CLIENT)
            self._span = span
            if span.is_recording():
                url = request.url
                set_attributes(
                    span,
                    (
                        ("http.request.method", self.method),
                        ("url.full", str(url)),
                        ("server.address", url.host),
                        ("server.port", url.port),
                        ("user_agent.original", request.headers.get("user-agent")),
                    ),
                )
            for key, value in tel.tracing.inject(span).items():
                name = key.encode("latin-1")
                if name not in present:
                    out.append((name, value.encode("latin-1")))
        elif inbound is not None and inbound.trace_headers and tel.tracing.enabled:
            out.extend(h for h in inbound.trace_headers if h[0] not in present)
        return out

    def response_headers(
        self, headers: list[tuple[bytes, bytes]], peer_principal: object | None
    ) -> list[tuple[bytes, bytes]]:
        """Read and remove the upstream's peer metadata; note its verified SPIFFE ID
        (a :class:`~inmesh.identity.spiffe.SpiffeId` or its text)."""
        if peer_principal is not None:
            self.peer_principal = peer_principal
        kept: list[tuple[bytes, bytes]] = []
        strip = False
        for h in headers:
            k = h[0].lower()
            if k in _MX:
                strip = True
                if k == METADATA_HEADER:
                    self.peer = self.tel.peers.get(h[1])
            else:
                kept.append(h)
        return kept if strip else headers

    @property
    def authority(self) -> str:
        request = self.request
        return request.headers.get("host") or request.url.netloc.decode("ascii")

    @property
    def done(self) -> bool:
        """Whether :meth:`finish` ran."""
        return self._done

    def abandon(self) -> None:
        """The request ended in an exception before any response: record it as status 0."""
        if not self._done:
            from inmesh.outbound.replies import RequestInfo

            self.finish(RequestInfo(), 0, 0)

    def finish(
        self,
        info: RequestInfo,
        status: int,
        response_bytes: int,
        *,
        grpc_status: str = "",
    ) -> None:
        """Record the request (once): metrics, span end, access log."""
        if self._done:
            return
        self._done = True
        tel = self.tel
        elapsed = tel.clock() - self._started
        flags = ",".join(info.response_flags) if info.response_flags else "-"
        recorder = tel.recorder
        if recorder is not None:
            peer = self.peer
            key = (
                peer,
                self.peer_principal,
                info.cluster,
                info.destination_service,
                status,
                flags,
                grpc_status,
                self.protocol,
            )
            recorder.record(
                key,
                lambda: self._labels(info, status, flags, grpc_status),
                elapsed * 1000.0,
                self.request_bytes,
                response_bytes,
            )
        span = self._span
        if span is not None:
            self._end_span(span, info, status, flags)
        if tel.access_log is not None:
            tel._log(
                AccessRecord(
                    start_time=self._wall,
                    method=self.method,
                    path=self._path(),
                    response_code=status,
                    response_flags=flags,
                    response_code_details=info.response_code_details or "via_upstream",
                    upstream_transport_failure_reason=info.transport_failure_reason,
                    bytes_received=self.request_bytes,
                    bytes_sent=response_bytes,
                    duration_ms=int(elapsed * 1000),
                    upstream_service_time=(
                        None
                        if info.upstream_service_time is None or not status
                        else str(int(info.upstream_service_time * 1000))
                    ),
                    x_forwarded_for=self.request.headers.get("x-forwarded-for"),
                    user_agent=self.request.headers.get("user-agent"),
                    request_id=self.request_id,
                    authority=self.authority,
                    upstream_host=info.upstream_host,
                    upstream_cluster=info.cluster,
                    route_name=info.route_name,
                )
            )

    def _path(self) -> str:
        return self.request.url.raw_path.decode("ascii", "replace")

    def _labels(self, info: RequestInfo, status: int, flags: str, grpc: str) -> tuple[str, ...]:
        tel = self.tel
        me = tel.local
        peer = self.peer
        principal = str(self.peer_principal)
        cluster = info.cluster
        service = info.destination_service or self.authority.rsplit(":", 1)[0] or UNKNOWN
        if cluster in (_PASSTHROUGH, _BLACKHOLE):
            service_name = cluster
        else:
            service_name = info.destination_service or service
        peer_ns = (peer.namespace if peer else "") or _spiffe_namespace(principal)
        return (
            "source",
            me.workload,
            me.canonical_service,
            me.canonical_revision,
            me.namespace,
            tel.local_principal() or UNKNOWN,
            me.app or UNKNOWN,
            me.version or UNKNOWN,
            me.cluster_id or UNKNOWN,
            (peer.workload if peer else "") or UNKNOWN,
            peer_ns or UNKNOWN,
            principal or UNKNOWN,
            (peer.app if peer else "") or UNKNOWN,
            (peer.version if peer else "") or UNKNOWN,
            service,
            (peer.canonical_service if peer else "") or UNKNOWN,
            ((peer.canonical_revision or "latest") if peer else UNKNOWN),
            service_name,
            info.destination_namespace or peer_ns or UNKNOWN,
            (peer.cluster_id if peer else "") or UNKNOWN,
            self.protocol,
            str(status),
            grpc,
            flags,
            "unknown",
        )

    def _end_span(self, span: Span, info: RequestInfo, status: int, flags: str) -> None:
        if span.is_recording():
            from opentelemetry.trace import Status, StatusCode

            host, _, port = info.upstream_host.rpartition(":")
            set_attributes(
                span,
                (
                    ("http.response.status_code", status or None),
                    ("http.request.resend_count", info.attempts - 1 if info.attempts > 1 else None),
                    ("network.peer.address", host or None),
                    ("network.peer.port", int(port) if port.isdigit() else None),
                    ("inmesh.upstream_cluster", info.cluster),
                    ("inmesh.route_name", info.route_name),
                    ("inmesh.response_flags", flags),
                    ("inmesh.attempts", info.attempts),
                    ("inmesh.peer.spiffe_id", str(self.peer_principal)),
                ),
            )
            if status >= 400 or status == 0:
                span.set_attribute("error.type", str(status) if status else "local_reply")
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class InboundCall:
    """One inbound request under observation (made by :meth:`Telemetry.inbound`).

    Also the request's context: ``request_id`` and ``trace_headers`` travel
    to the outbound calls made while serving it.
    """

    __slots__ = (
        "_done",
        "_otel_token",
        "_span",
        "_started",
        "_token",
        "_wall",
        "authority",
        "headers",
        "local_address",
        "method",
        "mx_received",
        "path",
        "peer",
        "peer_principal",
        "port",
        "protocol",
        "remote_address",
        "request_bytes",
        "request_id",
        "response_bytes",
        "scheme",
        "server_name",
        "status",
        "tel",
        "trace_headers",
        "user_agent",
        "xff",
    )

    def __init__(
        self,
        tel: Telemetry,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        *,
        scheme: str,
        peer_principal: str | None,
        local_address: str,
        remote_address: str,
        server_name: str,
        port: int | None,
    ) -> None:
        self.tel = tel
        self._started = tel.clock()
        self._wall = tel.wall_clock() if tel.access_log is not None else 0.0
        self._done = False
        self._span: Span | None = None
        self._otel_token: object = None
        self.method = method
        self.path = path
        self.scheme = scheme
        self.peer_principal = peer_principal or ""
        self.local_address = local_address
        self.remote_address = remote_address
        self.server_name = server_name
        self.port = port
        self.request_bytes = 0
        self.response_bytes = 0
        self.status: int | None = None
        """The response status once the app started its response."""
        self.peer: PeerMetadata | None = None
        self.mx_received = False
        self.request_id = ""
        self.user_agent: str | None = None
        self.xff: str | None = None
        self.authority = ""
        self.protocol = "http"
        trace_fields = tel._trace_fields
        traced: list[tuple[bytes, bytes]] = []
        strip = False
        for k, v in headers:
            if k == _REQUEST_ID:
                self.request_id = v.decode("latin-1")
            elif k == b"host":
                self.authority = v.decode("latin-1")
            elif k in trace_fields:
                traced.append((k, v))
            elif k == METADATA_HEADER:
                self.peer = tel.peers.get(v)
                self.mx_received = strip = True
            elif k == METADATA_ID_HEADER:
                strip = True
            elif k == _USER_AGENT:
                self.user_agent = v.decode("latin-1")
            elif k == _XFF:
                self.xff = v.decode("latin-1")
            elif k == _CONTENT_TYPE:
                self.protocol = _protocol(v)
        self.trace_headers = traced
        if strip:
            headers = [h for h in headers if h[0] not in _MX]
        if not self.request_id:
            from inmesh.outbound.plan import new_request_id

            self.request_id = new_request_id()
            headers = [*headers, (_REQUEST_ID, self.request_id.encode("latin-1"))]
        self.headers: Sequence[tuple[bytes, bytes]] = headers
        """The request headers the app should see (peer metadata removed, ``x-request-id`` set)."""
        self._token: contextvars.Token[InboundCall | None] | None = None

    def __enter__(self) -> InboundCall:
        """Make this the current request (and its span the current span) for the app."""
        self._token = _INBOUND.set(self)
        tracer = self.tel.tracing.tracer()
        if tracer is not None:
            from opentelemetry import context as otel_context
            from opentelemetry import trace

            parent: Context = self.tel.tracing.extract(
                header_map(self.trace_headers, self.tel._trace_fields)
            )
            span = tracer.start_span(self.method, context=parent, kind=trace.SpanKind.SERVER)
            self._span = span
            if span.is_recording():
                set_attributes(
                    span,
                    (
                        ("http.request.method", self.method),
                        ("url.path", self.path.split("?", 1)[0]),
                        ("url.scheme", self.scheme),
                        ("server.address", self.authority.rsplit(":", 1)[0]),
                        ("server.port", self.port),
                        ("client.address", self.remote_address.rsplit(":", 1)[0] or None),
                        ("user_agent.original", self.user_agent),
                        ("inmesh.peer.spiffe_id", self.peer_principal),
                    ),
                )
            self._otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._otel_token is not None:
            from opentelemetry import context as otel_context

            otel_context.detach(self._otel_token)  # type: ignore[arg-type]
            self._otel_token = None
        if self._token is not None:
            _INBOUND.reset(self._token)
            self._token = None

    @property
    def done(self) -> bool:
        """Whether :meth:`finish` ran."""
        return self._done

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers to add to the response: this workload's metadata, to a peer that sent its own."""
        return self.tel._mx if self.mx_received else []

    def finish(
        self,
        status: int,
        response_bytes: int,
        *,
        flags: str = "-",
        details: str = "via_upstream",
        grpc_status: str = "",
    ) -> None:
        """Record the request (once): metrics, span end, access log."""
        if self._done:
            return
        self._done = True
        tel = self.tel
        elapsed = tel.clock() - self._started
        recorder = tel.recorder
        if recorder is not None:
            key = (
                "destination",
                self.peer,
                self.peer_principal,
                self.authority,
                status,
                flags,
                grpc_status,
                self.protocol,
            )
            recorder.record(
                key,
                lambda: self._labels(status, flags, grpc_status),
                elapsed * 1000.0,
                self.request_bytes,
                response_bytes,
            )
        span = self._span
        if span is not None:
            if span.is_recording():
                from opentelemetry.trace import Status, StatusCode

                set_attributes(
                    span,
                    (
                        ("http.response.status_code", status or None),
                        ("inmesh.response_flags", flags),
                    ),
                )
                if status >= 500 or status == 0:
                    span.set_attribute("error.type", str(status) if status else "no_response")
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        if tel.access_log is not None:
            port = self.port or 0
            tel._log(
                AccessRecord(
                    start_time=self._wall,
                    method=self.method,
                    path=self.path,
                    response_code=status,
                    response_flags=flags,
                    response_code_details=details,
                    bytes_received=self.request_bytes,
                    bytes_sent=response_bytes,
                    duration_ms=int(elapsed * 1000),
                    x_forwarded_for=self.xff,
                    user_agent=self.user_agent,
                    request_id=self.request_id,
                    authority=self.authority,
                    # a local reply (an RBAC denial, ...) never reached the app: Envoy logs "-"
                    upstream_host=self.local_address if details == "via_upstream" else "",
                    upstream_cluster=f"inbound|{port}||",
                    downstream_local_address=self.local_address,
                    downstream_remote_address=self.remote_address,
                    requested_server_name=self.server_name,
                    route_name="default",
                )
            )

    def _labels(self, status: int, flags: str, grpc: str) -> tuple[str, ...]:
        tel = self.tel
        me = tel.local
        peer = self.peer
        principal = self.peer_principal
        local_principal = tel.local_principal()
        service, service_name, service_ns = tel._service(self.authority)
        peer_ns = _spiffe_namespace(principal) or (peer.namespace if peer else "")
        return (
            "destination",
            (peer.workload if peer else "") or UNKNOWN,
            (peer.canonical_service if peer else "") or UNKNOWN,
            ((peer.canonical_revision or "latest") if peer else UNKNOWN),
            peer_ns or UNKNOWN,
            principal or UNKNOWN,
            (peer.app if peer else "") or UNKNOWN,
            (peer.version if peer else "") or UNKNOWN,
            (peer.cluster_id if peer else "") or UNKNOWN,
            me.workload,
            me.namespace,
            (local_principal if principal else "") or UNKNOWN,
            me.app or UNKNOWN,
            me.version or UNKNOWN,
            service,
            me.canonical_service,
            me.canonical_revision,
            service_name,
            service_ns,
            me.cluster_id or UNKNOWN,
            self.protocol,
            str(status),
            grpc,
            flags,
            "mutual_tls" if principal and local_principal else "none",
        )


def grpc_status_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k.lower() == _GRPC_STATUS:
            return v.decode("latin-1")
    return ""


def _body_size(request: httpx.Request) -> int:
    """Request body bytes: the body's length when it is in memory, else ``content-length``."""
    content = getattr(request, "_content", None)
    if content is not None:
        return len(content)
    length = request.headers.get("content-length")
    return int(length) if length is not None and length.isdigit() else 0
