"""The mesh's httpx transport: a client sidecar inside the process (async source).

``mesh.async_transport()`` returns an :class:`AsyncMeshTransport`; give it to
``httpx.AsyncClient(transport=...)`` and keep calling ``http://backend:8080``.
Per request it runs the sans-I/O decision path of
:mod:`inmesh.outbound.plan` (registry, VirtualService route, CORS, fault,
weighted destination, cluster, balancer pick, headers) and only does the I/O
itself: the injected fault delay, the exchange through the
:class:`~inmesh.outbound.AsyncConnector` (mutual TLS, identity checks,
pools), and the mirrored copies.

Where the mesh answers a request itself it returns Envoy's local reply
(:mod:`inmesh.outbound.replies`); with ``errors="raise"`` it raises the
matching :class:`~inmesh.outbound.LocalReplyError` instead, and connection
failures keep their typed ``httpx.ConnectError`` subclasses.

Bodies stream through in both directions. A request body is buffered only to
mirror it: a body the app gave as bytes is shared as it is; a streamed body
is copied while it is sent, up to ``mirror_body_limit`` bytes (beyond that the
copy is abandoned and the request is not mirrored).

Every response carries ``extensions["inmesh.request_info"]``, the request's
:class:`~inmesh.outbound.replies.RequestInfo` (route, cluster, upstream host,
response flags).
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable
from types import TracebackType

import httpcore
import httpx

from inmesh._clock import MONOTONIC, Clock, Random
from inmesh.balancing import Host
from inmesh.discovery.registry import AddressKind
from inmesh.routing.match import RequestAttrs

from .._errors import (
    FaultAbortError,
    LocalReplyError,
    NoClusterError,
    NoHealthyUpstreamError,
    NoRouteError,
    RegistryOnlyError,
    UpstreamConnectError,
)
from .._io import DEFAULT_SHADOW_TIMEOUT, AsyncShadowDispatcher, sleep_async
from ..plan import (
    PASSTHROUGH,
    PASSTHROUGH_CLUSTER,
    OutboundPlanner,
    Routed,
    ShadowTarget,
    response_headers,
    upstream_headers,
)
from ..replies import REQUEST_INFO_KEY, LocalReply, RequestInfo, fault_abort, upstream_reset
from .connect import AsyncConnector

__all__ = ["AsyncMeshTransport"]

logger = logging.getLogger("inmesh.outbound")

_DEFAULT_PORTS = {"http": 80, "https": 443}
ERRORS_REPLY = "reply"
ERRORS_RAISE = "raise"
DEFAULT_MIRROR_BODY_LIMIT = 1 << 20
"""Bytes of a streamed request body kept to mirror it (1 MiB)."""


class OutboundSource(typing.Protocol):
    """What a transport reads from its mesh (the :class:`~inmesh.Mesh` implements it)."""

    def outbound_planner(self) -> OutboundPlanner: ...

    def resolved_addresses(self, hostname: str) -> tuple[str, ...]: ...


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that routes requests as an Istio sidecar would.

    Made by :meth:`inmesh.Mesh.async_transport`; see there for the options.
    Close it (or the client that owns it) to close its connections.
    """

    def __init__(
        self,
        source: OutboundSource,
        connector: AsyncConnector,
        *,
        errors: str = ERRORS_REPLY,
        rng: Random | None = None,
        clock: Clock = MONOTONIC,
        mirror_max_in_flight: int = 64,
        mirror_body_limit: int = DEFAULT_MIRROR_BODY_LIMIT,
        source_ip: str | None = None,
        passthrough: httpx.AsyncBaseTransport | None = None,
        shadow_connector: AsyncConnector | None = None,
    ) -> None:
        if errors not in (ERRORS_REPLY, ERRORS_RAISE):
            raise ValueError(f"errors must be {ERRORS_REPLY!r} or {ERRORS_RAISE!r}, not {errors!r}")
        self._source = source
        self._connector = connector
        self._shadow_connector = shadow_connector
        self._raise = errors == ERRORS_RAISE
        self._rng: Random = rng if rng is not None else random.Random()
        self._clock = clock
        self._mirrors = AsyncShadowDispatcher(mirror_max_in_flight)
        self._mirror_body_limit = mirror_body_limit
        self._source_ip = source_ip if source_ip is not None else _local_source()
        self._passthrough = passthrough

    @property
    def connector(self) -> AsyncConnector:
        return self._connector

    @property
    def mirror_stats(self) -> typing.Any:
        """Counters of mirrored requests (dispatched, completed, failed, dropped)."""
        return self._mirrors.stats

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        planner = self._source.outbound_planner()
        url = request.url
        authority = request.headers.get("host") or url.netloc.decode("ascii")
        attrs = RequestAttrs.build(
            method=request.method,
            scheme=url.scheme,
            authority=authority,
            target=url.raw_path.decode("ascii"),
            headers=request.headers.multi_items(),
            port=url.port or _DEFAULT_PORTS.get(url.scheme),
        )
        result = planner.route(attrs, self._rng)
        if result is PASSTHROUGH:
            return await self._pass_through(request)
        if isinstance(result, LocalReply):
            info = RequestInfo(
                route_name="block_all" if result.details == "direct_response" else "",
            )
            for flag in result.flags:
                info.flag(flag)
            return self._reply(request, result, info)
        assert isinstance(result, Routed)
        routed = result
        info = routed.info
        fault = routed.fault
        if fault is not None:
            if fault.delay is not None:
                info.flag("DI")
                await sleep_async(fault.delay)
            if fault.abort_status is not None or fault.grpc_status is not None:
                return self._reply(
                    request,
                    fault_abort(fault.abort_status or 200, fault.grpc_status),
                    info,
                )
        cluster = routed.cluster
        host, cookie = cluster.pick(attrs, self._rng, source_ip=self._source_ip)
        if host is None:
            return self._reply(request, _UH, info)
        body, stream = _request_body(request)
        copy: _BodyCopy | None = None
        content: typing.Any = body if body is not None else stream
        if routed.mirrors:
            if body is not None:
                self._mirror(request, routed, body)
            else:
                copy = _BodyCopy(self._mirror_body_limit)
                content = _tee(stream, copy)
        try:
            response = await self._send(request, routed, host, content, info, attempt=1)
        finally:
            if copy is not None:
                if copy.complete:
                    self._mirror(request, routed, b"".join(copy.chunks))
                else:
                    logger.debug(
                        "request to %s not mirrored: body incomplete or over %d bytes",
                        routed.authority,
                        self._mirror_body_limit,
                    )
        if isinstance(response, LocalReply):
            return self._reply(request, response, info)
        extra: list[tuple[bytes, bytes]] = []
        if info.upstream_service_time is not None:
            ms = int(info.upstream_service_time * 1000)
            extra.append((b"x-envoy-upstream-service-time", str(ms).encode()))
        if cookie is not None:
            extra.append((b"set-cookie", cookie.encode("latin-1")))
        if routed.cors is not None:
            extra.extend((k.encode(), v.encode("latin-1")) for k, v in routed.cors.response_headers)
        headers = response_headers(response.headers, routed.response_headers, extra)
        extensions = dict(response.extensions)
        extensions[REQUEST_INFO_KEY] = info
        return httpx.Response(
            status_code=response.status,
            headers=headers,
            stream=_AsyncResponseStream(
                typing.cast(AsyncIterable[bytes], response.stream), host.end
            ),
            extensions=extensions,
            request=request,
        )

    # -- upstream ---------------------------------------------------------------

    async def _send(
        self,
        request: httpx.Request,
        routed: Routed,
        host: Host,
        content: typing.Any,
        info: RequestInfo,
        *,
        attempt: int,
        authority: str | None = None,
        connector: AsyncConnector | None = None,
    ) -> httpcore.Response | LocalReply:
        """One attempt to ``host``; a :class:`LocalReply` when no response headers came."""
        cluster = routed.cluster
        ep = host.endpoint
        tls = cluster.tls_for(host, authority or routed.authority)
        address = ep.address
        if ep.kind is AddressKind.HOSTNAME:
            resolved = self._source.resolved_addresses(address)
            if resolved:
                address = resolved[0]
        info.upstream_host = f"{address}:{ep.port}"
        info.attempts = attempt
        if ep.kind is AddressKind.UNIX:
            return upstream_reset("UF", "connection failure", "unix socket endpoints")
        headers = upstream_headers(
            request.headers.raw,
            routed,
            attempt=attempt,
            scheme=request.url.scheme,
            authority=authority,
        )
        core = httpcore.Request(
            method=request.method.encode("ascii"),
            url=httpcore.URL(
                scheme=b"https" if tls.secure else b"http",
                host=address.encode("ascii"),
                port=ep.port,
                target=routed.path.encode("ascii"),
            ),
            headers=headers,
            content=content,
            extensions=request.extensions,
        )
        host.begin()
        start = self._clock.now()
        try:
            # One pool per endpoint, as Envoy keeps connection pools per host (and
            # httpcore's threaded pool is only race-free with one origin per pool).
            response = await (connector or self._connector).handle_async_request(
                (cluster.name, info.upstream_host), tls, core
            )
        except BaseException as exc:
            host.end()
            reply = self._reset_reply(exc, info)
            if reply is None:
                raise
            return reply
        info.upstream_service_time = self._clock.now() - start
        return response

    def _reset_reply(self, exc: BaseException, info: RequestInfo) -> LocalReply | None:
        """Envoy's reply for a failure before response headers; ``None``: re-raise."""
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return None  # the app's own httpx timeouts stay the app's
        if self._raise or not isinstance(exc, (httpx.TransportError, OSError)):
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                info.flag("UF")
            return None
        if isinstance(exc, httpx.ConnectTimeout):
            reply = upstream_reset("UF", "connection timeout")
        elif isinstance(exc, (httpx.ConnectError, UpstreamConnectError)):
            reply = upstream_reset("UF", "connection failure", _failure_reason(exc))
        elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            reply = upstream_reset("UC", "connection termination")
        elif isinstance(exc, httpx.LocalProtocolError):
            return None
        else:
            reply = upstream_reset("UF", "connection failure", _failure_reason(exc))
        logger.debug("upstream %s failed: %s", info.upstream_host, exc)
        return reply

    # -- local replies -------------------------------------------------------------

    def _reply(
        self, request: httpx.Request, reply: LocalReply, info: RequestInfo
    ) -> httpx.Response:
        for flag in reply.flags:
            info.flag(flag)
        info.response_code_details = reply.details
        if self._raise and reply.is_error:
            raise _reply_error(reply, info, request)
        return httpx.Response(
            status_code=reply.status,
            headers=reply.header_list(),
            content=reply.body,
            extensions={REQUEST_INFO_KEY: info},
            request=request,
        )

    async def _pass_through(self, request: httpx.Request) -> httpx.Response:
        transport = self._passthrough
        if transport is None:
            transport = self._passthrough = httpx.AsyncHTTPTransport()
        response = await transport.handle_async_request(request)
        response.extensions = {
            **response.extensions,
            REQUEST_INFO_KEY: RequestInfo(route_name="allow_any", cluster=PASSTHROUGH_CLUSTER),
        }
        return response

    # -- mirroring -----------------------------------------------------------------

    def _mirror(self, request: httpx.Request, routed: Routed, body: bytes) -> None:
        timeout = routed.decision.timeout.seconds if routed.decision.timeout else None
        for target in routed.mirrors:

            async def job(target: ShadowTarget = target) -> None:
                await self._shadow(request, routed, target, body, timeout)

            if self._mirrors.dispatch(job, timeout):
                routed.info.mirrored += 1

    async def _shadow(
        self,
        request: httpx.Request,
        routed: Routed,
        target: ShadowTarget,
        body: bytes,
        timeout: float | None,
    ) -> None:
        cluster = target.cluster
        attrs = RequestAttrs(method=request.method, authority=target.authority)
        host, _ = cluster.pick(attrs, self._rng, source_ip=self._source_ip)
        if host is None:
            return
        shadow = Routed(
            info=RequestInfo(route_name=routed.info.route_name, cluster=cluster.name),
            decision=routed.decision,
            destination=routed.destination,
            cluster=cluster,
            authority=target.authority,
            path=routed.path,
            original_path=routed.original_path,
        )
        limit = timeout if timeout is not None else DEFAULT_SHADOW_TIMEOUT
        extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), limit)}
        shadow_request = httpx.Request(
            request.method, request.url, headers=request.headers, extensions=extensions
        )
        response = await self._send(
            shadow_request,
            shadow,
            host,
            body,
            shadow.info,
            attempt=1,
            authority=target.authority,
            connector=self._shadow_connector,
        )
        if isinstance(response, LocalReply):
            return
        try:
            async for _ in typing.cast(AsyncIterable[bytes], response.stream):
                pass
        finally:
            closer = getattr(response.stream, "aclose", None)
            if closer is not None:
                await closer()
            host.end()

    # -- lifecycle ---------------------------------------------------------------------

    async def aclose(self) -> None:
        stopped = await self._mirrors.aclose()
        if self._passthrough is not None:
            await self._passthrough.aclose()
        await self._connector.aclose()
        shadows = self._shadow_connector
        if shadows is not None:
            if stopped:
                await shadows.aclose()
            else:
                # A shadow still reads from its connection: closing it from here
                # could hand its file descriptor to a new connection while the
                # shadow still reads. It ends at its timeout; the pools go with it.
                logger.debug("shadow requests still running at close; their pools stay open")

    async def __aenter__(self) -> AsyncMeshTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


_UH = LocalReply(503, b"no healthy upstream", ("UH",), "no_healthy_upstream")


class _BodyCopy:
    """A streamed request body copied for mirroring, up to ``limit`` bytes."""

    __slots__ = ("chunks", "complete", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False


class _AsyncResponseStream(httpx.AsyncByteStream):
    """The upstream body, passed through; tells the balancer when the request is over."""

    def __init__(self, stream: AsyncIterable[bytes], on_close: Callable[[], None]) -> None:
        self._stream = stream
        self._on_close: Callable[[], None] | None = on_close

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is None:
            return
        try:
            closer = getattr(self._stream, "aclose", None)
            if closer is not None:
                await closer()
        finally:
            on_close()


async def _tee(stream: AsyncIterable[bytes], copy: _BodyCopy) -> AsyncIterator[bytes]:
    """Pass ``stream`` through, copying it into ``copy`` while it fits."""
    async for chunk in stream:
        if copy.size <= copy.limit:
            copy.size += len(chunk)
            if copy.size <= copy.limit:
                copy.chunks.append(chunk)
            else:
                copy.chunks.clear()
        yield chunk
    copy.complete = copy.size <= copy.limit


def _request_body(request: httpx.Request) -> tuple[bytes | None, typing.Any]:
    """``(bytes, None)`` for a body already in memory, else ``(None, stream)``."""
    try:
        return request.content, None
    except httpx.RequestNotRead:
        return None, request.stream


def _failure_reason(exc: BaseException) -> str:
    """Envoy's transport failure reason, as close as Python's errors allow."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ECONNREFUSED, errno.ECONNRESET):
            return f"delayed connect error: {seen.errno}"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "refused" in text.lower():
        return f"delayed connect error: {errno.ECONNREFUSED}"
    if "certificate" in text.lower() or "tls" in text.lower() or "ssl" in text.lower():
        return f"TLS_error:|{text}:TLS_error_end"
    return text


def _reply_error(reply: LocalReply, info: RequestInfo, request: httpx.Request) -> LocalReplyError:
    flags = set(reply.flags)
    message = f"{reply.status} {reply.details or 'local reply'}"
    if reply.body:
        message += f": {reply.text}"
    cls: type[LocalReplyError]
    if "NR" in flags:
        cls = NoRouteError
    elif "NC" in flags:
        cls = NoClusterError
    elif "UH" in flags:
        cls = NoHealthyUpstreamError
    elif "FI" in flags:
        cls = FaultAbortError
    elif reply.status == 502 and not flags:
        cls = RegistryOnlyError
    else:
        cls = LocalReplyError
    return cls(message, reply=reply, info=info, request=request)


def _local_source() -> str:
    """This process's stand-in for the source IP that ``useSourceIp`` hashes.

    A sidecar hashes the pod's IP, so every request of one workload instance
    lands on the same endpoint; the host name gives the same stickiness
    without a DNS lookup.
    """
    return socket.gethostname()
