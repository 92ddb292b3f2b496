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

A request starts in :meth:`AsyncMeshTransport.handle_async_request` and ends
in one place per way out: :meth:`_AsyncResponseStream._finished` for a
response from upstream (once its body is read or the stream closed),
:meth:`AsyncMeshTransport._reply` for a local reply (returned, or raised with
``errors="raise"``), :meth:`AsyncMeshTransport._pass_through` for a host
outside the registry; otherwise an exception leaves ``handle_async_request``
(``errors="raise"`` connection failures, the app's own httpx timeouts).

The per-request path is kept lean (see docs/performance.md): the headers go
to httpcore without being checked again, one wrapper sits on the response
body, and circuit-breaker tickets, attempt scopes and the connect observer
are only set up when the cluster or route asks for them.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import random
import socket
import ssl
import typing
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType

import httpcore
import httpx

from inmesh._clock import MONOTONIC, Clock, Random
from inmesh.balancing import Host
from inmesh.discovery.registry import AddressKind
from inmesh.resilience.admission import FREE_TICKET, Ticket, TicketState
from inmesh.resilience.deadline import current_deadline
from inmesh.resilience.outcome import Failure, Outcome
from inmesh.resilience.retry import RetryState
from inmesh.routing.fault import FaultDecision, is_grpc_content_type
from inmesh.routing.match import LazyHeaders, RequestAttrs
from inmesh.telemetry.core import OutboundCall, Telemetry

from .._common import CONNECT_OBSERVER, DEFAULT_LIMITS, PEER_ID, PoolLimits, keepalive_options
from .._errors import (
    MAPPED_EXCEPTIONS,
    FaultAbortError,
    LocalReplyError,
    NoClusterError,
    NoHealthyUpstreamError,
    NoRouteError,
    RegistryOnlyError,
    UpstreamConnectError,
    UpstreamOverflowError,
    UpstreamTimeoutError,
    UpstreamTLSError,
    raise_mapped,
)
from .._io import (
    DEFAULT_SHADOW_TIMEOUT,
    AsyncAttemptScope,
    AsyncShadowDispatcher,
    AsyncWaiter,
    ShadowStats,
    sleep_async,
)
from ..plan import (
    PASSTHROUGH,
    PASSTHROUGH_CLUSTER,
    ClusterRuntime,
    Faulted,
    OutboundPlanner,
    Passthrough,
    Routed,
    ShadowTarget,
    response_headers,
    upstream_headers,
)
from ..replies import (
    REQUEST_INFO_KEY,
    LocalReply,
    RequestInfo,
    fault_abort,
    no_healthy_upstream,
    upstream_reset,
)
from ..replies import block_all as _block_all
from .connect import AsyncConnector, _AsyncMappedStream

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
        retry_backoff: bool = True,
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
        self._propagate = bool(getattr(source, "deadline_propagation", True))
        self._telemetry: Telemetry | None = getattr(source, "telemetry", None)
        self._backoff = retry_backoff
        """Sleep Envoy's back-off between retries (``False``: retry at once, for tests)."""

    @property
    def connector(self) -> AsyncConnector:
        return self._connector

    @property
    def mirror_stats(self) -> ShadowStats:
        """Counters of mirrored requests (dispatched, completed, failed, dropped)."""
        return self._mirrors.stats

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        planner = self._source.outbound_planner()
        attrs = _request_attrs(request)
        result = planner.route(attrs, self._rng)
        tel = self._telemetry
        if tel is None:
            if not isinstance(result, Routed):
                return await self._not_routed(request, result, None)
            return await self._routed(request, planner, attrs, result, None)
        obs = tel.outbound(request)
        try:
            if not isinstance(result, Routed):
                return await self._not_routed(request, result, obs)
            result.info.observation = obs
            internal = result.cluster.service.mesh_internal
            extra = obs.request_headers(mesh_peer=internal)
            return await self._routed(request, planner, attrs, result, extra)
        except BaseException:
            obs.abandon()
            raise

    async def _routed(
        self,
        request: httpx.Request,
        planner: OutboundPlanner,
        attrs: RequestAttrs,
        routed: Routed,
        extra: list[tuple[bytes, bytes]] | None,
    ) -> httpx.Response:
        """A request with a route and a cluster: admission, attempts, retries, the response."""
        info = routed.info
        if routed.fault is not None:
            aborted = await self._fault(request, routed.fault, info)
            if aborted is not None:
                return aborted
        cluster = routed.cluster
        runtime = cluster.runtime
        body, stream = _request_body(request)
        copy: _BodyCopy | None = None
        content: typing.Any = body if body is not None else stream
        if routed.mirrors:
            if body is not None:
                self._mirror(request, routed, body)
            else:
                copy = _BodyCopy(self._mirror_body_limit)
                content = _tee(stream, copy)
        deadline = self._deadline(routed)
        state = RetryState(
            planner.retry_policy(routed), clock=self._clock, rng=self._rng, deadline=deadline
        )
        if runtime.counted:
            admitted = await self._admit(runtime, deadline)
            if admitted is None:
                return self._reply(request, upstream_reset("UO", "overflow"), info)
            ticket = admitted
        else:
            ticket = FREE_TICKET  # no circuit-breaker limits: nothing to count
        retry_slots = 0
        done = False
        try:
            while True:
                host, cookie = cluster.pick(
                    attrs, self._rng, source_ip=self._source_ip, avoid=state.avoid
                )
                if host is None:
                    return self._reply(request, no_healthy_upstream(), info)
                state.record_host(host)
                attempt = await self._send(
                    request,
                    routed,
                    host,
                    content,
                    info,
                    attempt=state.attempt,
                    timeout=state.attempt_timeout(),
                    route_deadline=deadline,
                    ticket=ticket,
                    extra=extra,
                )
                if runtime.outlier is not None:
                    runtime.report(host, attempt.outcome)
                if retry_slots:
                    runtime.retries.release()
                    retry_slots -= 1
                response = attempt.response
                decision = state.on_outcome(
                    attempt.outcome,
                    replayable=body is not None,
                    budget_ok=runtime.admit_retry,
                )
                if decision.overflow:
                    runtime.retry_overflows += 1
                if decision.retry:
                    runtime.retries_sent += 1
                    retry_slots += 1
                    if response is not None:
                        await _discard(response)
                        host.end()
                    if decision.backoff and self._backoff:
                        await sleep_async(decision.backoff)
                    continue
                if response is None:
                    if attempt.error is not None and self._raise:
                        obs = info.observation
                        if obs is not None:
                            failed = attempt.reply
                            obs.finish(info, failed.status if failed is not None else 0, 0)
                        raise attempt.error
                    failed = attempt.reply
                    assert failed is not None
                    if state.attempt > 1 and failed.status == 503 and failed.flags:
                        failed = upstream_reset(
                            failed.flags[0], attempt.reason, attempt.detail, retried=True
                        )
                    flags = tuple(f for f in failed.flags if f != "URX")
                    if decision.exhausted:
                        flags += ("URX",)
                    if decision.overflow:
                        flags += ("UO",)
                    return self._reply(request, dataclasses.replace(failed, flags=flags), info)
                if decision.exhausted:
                    info.flag("URX")
                if decision.overflow:
                    info.flag("UO")
                done = True
                return self._response(
                    request, routed, response, host, cookie, info, ticket, deadline
                )
        finally:
            if retry_slots:
                runtime.retries.release()
            if not done:
                ticket.release()
            if copy is not None:
                if copy.complete:
                    self._mirror(request, routed, b"".join(copy.chunks))
                else:
                    logger.debug(
                        "request to %s not mirrored: body incomplete or over %d bytes",
                        routed.authority,
                        self._mirror_body_limit,
                    )

    async def _not_routed(
        self,
        request: httpx.Request,
        result: LocalReply | Faulted | Passthrough,
        obs: OutboundCall | None,
    ) -> httpx.Response:
        """A request that goes nowhere upstream: passed through, or answered locally."""
        if result is PASSTHROUGH:
            return await self._pass_through(request, obs)
        if isinstance(result, LocalReply):
            info = RequestInfo(route_name="block_all" if result is BLOCK_ALL else "")
            info.observation = obs
            for flag in result.flags:
                info.flag(flag)
            return self._reply(request, result, info)
        assert isinstance(result, Faulted)
        result.info.observation = obs
        aborted = await self._fault(request, result.fault, result.info)
        return aborted or self._reply(request, result.reply, result.info)

    async def _fault(
        self, request: httpx.Request, fault: FaultDecision, info: RequestInfo
    ) -> httpx.Response | None:
        """The fault filter: sleep the delay (flag ``DI``); the abort's reply, if any."""
        if fault.delay is not None:
            info.flag("DI")
            await sleep_async(fault.delay)
        if not fault.aborts:
            return None
        grpc = is_grpc_content_type(request.headers.get("content-type"))
        reply = fault_abort(fault.abort_status or 200, fault.grpc_status, grpc_request=grpc)
        return self._reply(request, reply, info)

    def _response(
        self,
        request: httpx.Request,
        routed: Routed,
        response: httpcore.Response,
        host: Host,
        cookie: str | None,
        info: RequestInfo,
        ticket: Ticket,
        deadline: float | None,
    ) -> httpx.Response:
        """The app's response: upstream status and body, the route's response headers."""
        upstream = response.headers
        obs = info.observation
        if obs is not None:
            stream = response.extensions.get("network_stream")
            peer = stream.get_extra_info(PEER_ID) if stream is not None else None
            upstream = obs.response_headers(upstream, peer)
        extra: list[tuple[bytes, bytes]] = []
        if info.upstream_service_time is not None:
            ms = int(info.upstream_service_time * 1000)
            extra.append((b"x-envoy-upstream-service-time", str(ms).encode()))
        if cookie is not None:
            extra.append((b"set-cookie", cookie.encode("latin-1")))
        if routed.cors is not None and routed.cors.response_headers:
            cors = [(k.encode(), v.encode("latin-1")) for k, v in routed.cors.response_headers]
            names = {k for k, _ in cors}
            upstream = [h for h in upstream if h[0].lower() not in names]  # Envoy sets, not adds
            extra.extend(cors)
        extensions = response.extensions  # httpcore's own dict, made for this response
        extensions[REQUEST_INFO_KEY] = info
        return httpx.Response(
            status_code=response.status,
            headers=response_headers(upstream, routed.response_headers, extra),
            stream=_AsyncResponseStream(
                typing.cast(AsyncIterable[bytes], response.stream),
                host,
                ticket,
                deadline,
                self._clock,
                _Finish(obs, info, response.status) if obs is not None else None,
            ),
            extensions=extensions,
            request=request,
        )

    def _deadline(self, routed: Routed) -> float | None:
        """When the route timeout fires (absolute), bounded by a propagated deadline."""
        timeout = routed.decision.timeout
        at = self._clock.now() + timeout.seconds if timeout is not None else None
        if self._propagate:
            inherited = current_deadline()
            if inherited is not None and (at is None or inherited.at < at):
                at = inherited.at
        return at

    async def _admit(self, runtime: ClusterRuntime, deadline: float | None) -> Ticket | None:
        """A circuit-breaker ticket: now, after waiting as a pending request, or ``None`` (overflow)."""
        if not runtime.counted:
            return FREE_TICKET
        waiter = AsyncWaiter()
        ticket = runtime.admission.admit(waiter.ready)
        if ticket.state is TicketState.OVERFLOW:
            return None
        if ticket.state is TicketState.PENDING:
            left = None if deadline is None else max(0.0, deadline - self._clock.now())
            if not await waiter.wait(left) or not ticket.admitted:
                ticket.release()
                return None
        return ticket

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
        timeout: float | None = None,
        route_deadline: float | None = None,
        ticket: Ticket | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> _Attempt:
        """One attempt to ``host``: the response, or the reply and outcome of its failure.

        ``timeout`` bounds the wait for response headers (the per-try timeout
        and what is left of the route timeout): cancellation on the event
        loop, clamped socket timeouts in threads.
        """
        cluster = routed.cluster
        pool = cluster.runtime.admission.settings
        ep = host.endpoint
        tls = cluster.tls_for(host, authority or routed.authority)
        address = ep.address
        if ep.kind is AddressKind.HOSTNAME:
            resolved = self._source.resolved_addresses(address)
            if resolved:
                address = resolved[0]
        info.upstream_host = upstream_host = f"{address}:{ep.port}"
        info.attempts = attempt
        if ep.kind is AddressKind.UNIX:
            return _Attempt.failed(
                Failure.CONNECT_FAILURE,
                upstream_reset("UF", "connection failure", "unix socket endpoints"),
                "connection failure",
                "unix socket endpoints",
            )
        headers = upstream_headers(
            request.headers.raw,
            routed,
            attempt=attempt,
            scheme=request.url.scheme,
            authority=authority,
            extra=extra or (),
        )
        if pool.max_requests_per_connection == 1:
            headers.append((b"connection", b"close"))  # one request per connection
        if route_deadline is not None and self._propagate:
            left_ms = max(0, int((route_deadline - self._clock.now()) * 1000))
            headers = [h for h in headers if h[0] != _EXPECTED_TIMEOUT]
            headers.append((_EXPECTED_TIMEOUT, str(left_ms).encode()))
        core = _core_request(
            request.method.encode("ascii"),
            b"https" if tls.secure else b"http",
            address.encode("ascii"),
            ep.port,
            routed.path.encode("ascii"),
            headers,
            content,
            _clamped(request.extensions, timeout, pool.connect_timeout),
        )
        idle = pool.idle_timeout
        per_connection = pool.max_requests_per_connection
        duration = pool.max_connection_duration
        keepalive = pool.tcp_keepalive
        if (
            idle == DEFAULT_LIMITS.keepalive_expiry
            and per_connection is None
            and duration is None
            and keepalive is None
        ):
            limits = None
        else:
            limits = _pool_limits(idle, per_connection, duration, keepalive)
        if connector is None:
            connector = self._connector
        # One pool per endpoint, as Envoy keeps connection pools per host.
        destination = (cluster.name, upstream_host)
        counted = ticket is not None and ticket is not FREE_TICKET
        expired = False
        host.begin()
        start = self._clock.now()
        try:
            if timeout is None and not counted:
                response = await connector.exchange(destination, tls, core, limits)
            else:
                token = CONNECT_OBSERVER.set(ticket) if counted else None
                try:
                    with AsyncAttemptScope(timeout) as scope:
                        response = await connector.exchange(destination, tls, core, limits)
                    expired = scope.expired
                finally:
                    if token is not None:
                        CONNECT_OBSERVER.reset(token)
        except BaseException as exc:
            host.end()
            if timeout is not None and _is_timeout(exc, request.extensions, timeout):
                return self._timed_out(route_deadline)
            failed = self._failure(exc, info)
            if failed is None:
                raise
            return failed
        if expired:
            host.end()
            return self._timed_out(route_deadline)
        info.upstream_service_time = self._clock.now() - start
        return _Attempt(response, None, _outcome(response))

    def _timed_out(self, route_deadline: float | None) -> _Attempt:
        if route_deadline is not None and self._clock.now() >= route_deadline - 0.001:
            reply = _timeout_reply("response_timeout")
        else:
            reply = _timeout_reply("upstream_per_try_timeout")
        return _Attempt(None, reply, Outcome.failed(Failure.PER_TRY_TIMEOUT), "timeout")

    def _failure(self, exc: BaseException, info: RequestInfo) -> _Attempt | None:
        """Envoy's reply and outcome for a failure before response headers; ``None``: re-raise."""
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return None  # the app's own httpx timeouts stay the app's
        if not isinstance(exc, (httpx.TransportError, OSError)):
            return None
        if isinstance(exc, httpx.LocalProtocolError):
            return None
        if isinstance(exc, httpx.ConnectTimeout):
            failure, flag, reason, detail = Failure.CONNECT_TIMEOUT, "UF", "connection timeout", ""
        elif isinstance(exc, (httpx.ConnectError, UpstreamConnectError)):
            failure, flag, reason = Failure.CONNECT_FAILURE, "UF", "connection failure"
            detail = _failure_reason(exc)
        elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            failure, flag, reason, detail = Failure.RESET, "UC", "connection termination", ""
        else:
            failure, flag, reason = Failure.CONNECT_FAILURE, "UF", "connection failure"
            detail = _failure_reason(exc)
        logger.debug("upstream %s failed: %s", info.upstream_host, exc)
        return _Attempt(
            None,
            upstream_reset(flag, reason, detail),
            Outcome.failed(failure),
            reason,
            detail,
            exc if isinstance(exc, Exception) else None,
        )

    # -- local replies -------------------------------------------------------------

    def _reply(
        self, request: httpx.Request, reply: LocalReply, info: RequestInfo
    ) -> httpx.Response:
        for flag in reply.flags:
            info.flag(flag)
        info.response_code_details = reply.details
        obs = info.observation
        if obs is not None:
            obs.finish(info, reply.status, len(reply.body))
        if self._raise and reply.is_error:
            raise _reply_error(reply, info, request)
        return httpx.Response(
            status_code=reply.status,
            headers=reply.header_list(),
            content=reply.body,
            extensions={REQUEST_INFO_KEY: info},
            request=request,
        )

    async def _pass_through(
        self, request: httpx.Request, obs: OutboundCall | None
    ) -> httpx.Response:
        transport = self._passthrough
        if transport is None:
            transport = self._passthrough = httpx.AsyncHTTPTransport()
        info = RequestInfo(route_name="allow_any", cluster=PASSTHROUGH_CLUSTER)
        if obs is not None:
            info.observation = obs
            extra = obs.request_headers(mesh_peer=False)
            if extra:
                names = {k for k, _ in extra}
                kept = [h for h in request.headers.raw if h[0].lower() not in names]
                request = httpx.Request(
                    request.method,
                    request.url,
                    headers=[*kept, *extra],
                    stream=request.stream,
                    extensions=request.extensions,
                )
        response = await transport.handle_async_request(request)
        response.extensions = {**response.extensions, REQUEST_INFO_KEY: info}
        if obs is not None:
            response.stream = _AsyncObservedStream(
                typing.cast(httpx.AsyncByteStream, response.stream),
                _Finish(obs, info, response.status_code),
            )
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
        attempt = await self._send(
            shadow_request,
            shadow,
            host,
            body,
            shadow.info,
            attempt=1,
            authority=target.authority,
            connector=self._shadow_connector,
            timeout=limit,
        )
        response = attempt.response
        if response is None:
            return
        received = _AsyncMappedStream(typing.cast(AsyncIterable[bytes], response.stream))
        try:
            async for _ in received:
                pass
        finally:
            await received.aclose()
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


BLOCK_ALL = _block_all()
"""Istio's ``block_all`` reply (``REGISTRY_ONLY``), one shared value."""


_TIMEOUT_KEYS = ("connect", "read", "write", "pool")
_EXPECTED_TIMEOUT = b"x-envoy-expected-rq-timeout-ms"


class _Attempt:
    """One attempt's result: a response, or a local reply for its failure."""

    __slots__ = ("detail", "error", "outcome", "reason", "reply", "response")

    def __init__(
        self,
        response: httpcore.Response | None,
        reply: LocalReply | None,
        outcome: Outcome,
        reason: str = "",
        detail: str = "",
        error: Exception | None = None,
    ) -> None:
        self.response = response
        self.reply = reply
        self.outcome = outcome
        self.reason = reason
        self.detail = detail
        self.error = error

    @classmethod
    def failed(cls, failure: Failure, reply: LocalReply, reason: str, detail: str) -> _Attempt:
        return cls(None, reply, Outcome.failed(failure), reason, detail)


def _timeout_reply(details: str) -> LocalReply:
    return LocalReply(504, b"upstream request timeout", ("UT",), details)


def _clamped(
    extensions: dict[str, typing.Any], limit: float | None, connect_timeout: float
) -> dict[str, typing.Any]:
    """The request's extensions with socket timeouts no longer than ``limit``, and
    the connect timeout no longer than the cluster's ``connectTimeout``."""
    current = extensions.get("timeout") or {}
    if limit is None:
        connect = current.get("connect")
        if connect is not None and connect <= connect_timeout:
            return extensions  # nothing to clamp (httpx's default 5 s is below Istio's 10 s)
    bounded = {}
    for key in _TIMEOUT_KEYS:
        value = current.get(key)
        if limit is not None:
            value = limit if value is None else min(value, limit)
        if key == "connect":
            value = connect_timeout if value is None else min(value, connect_timeout)
        bounded[key] = value
    return {**extensions, "timeout": bounded}


def _is_timeout(exc: BaseException, extensions: dict[str, typing.Any], limit: float) -> bool:
    """Whether a socket timeout was the mesh's (clamped) one rather than the app's."""
    if not isinstance(exc, httpx.TimeoutException) or isinstance(exc, httpx.ConnectTimeout):
        return False
    own = (extensions.get("timeout") or {}).get("read")
    return own is None or limit < own


def _request_attrs(request: httpx.Request) -> RequestAttrs:
    """What routing reads from ``request``; its headers are folded only if read."""
    url = request.url
    headers = request.headers
    return RequestAttrs.build(
        method=request.method,
        scheme=url.scheme,
        authority=headers.get("host") or url.netloc.decode("ascii"),
        target=url.raw_path.decode("ascii"),
        headers=LazyHeaders(headers.multi_items),
        port=url.port or _DEFAULT_PORTS.get(url.scheme),
    )


_new = object.__new__


def _core_request(
    method: bytes,
    scheme: bytes,
    host: bytes,
    port: int | None,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    content: typing.Any,
    extensions: dict[str, typing.Any],
) -> httpcore.Request:
    """``httpcore.Request(method, httpcore.URL(...), headers=..., content=..., extensions=...)``
    without its checks: every part is already bytes (httpx validated the app's
    headers, the mesh encoded its own), and checking each header again costs
    more than the rest of the hand-off."""
    if "target" in extensions:  # httpcore's request-target override: let httpcore apply it
        url = httpcore.URL(scheme=scheme, host=host, port=port, target=target)
        return httpcore.Request(
            method, url, headers=headers, content=content, extensions=extensions
        )
    url = _new(httpcore.URL)
    url.scheme = scheme
    url.host = host
    url.port = port
    url.target = target
    core: httpcore.Request = _new(httpcore.Request)
    core.method = method
    core.url = url
    core.headers = headers
    if content is None or isinstance(content, bytes):
        content = httpx.ByteStream(content or b"")  # what httpx hands httpcore
    core.stream = content
    core.extensions = extensions
    return core


@functools.lru_cache(maxsize=64)
def _pool_limits(
    idle_timeout: float | None,
    per_connection: int | None,
    duration: float | None,
    keepalive: tuple[int | None, int | None, int | None] | None,
) -> PoolLimits:
    """The pool limits of a cluster's ``idleTimeout``, ``maxRequestsPerConnection``,
    ``maxConnectionDuration`` and ``tcpKeepalive`` (one object per combination)."""
    return PoolLimits(
        keepalive_expiry=idle_timeout,
        max_requests_per_connection=per_connection,
        max_connection_duration=duration,
        socket_options=keepalive_options(*keepalive) if keepalive is not None else (),
    )


_OUTCOMES: dict[int, Outcome] = {}
"""``Outcome.response(status)`` per status: outcomes are immutable, most are plain."""


def _outcome(response: httpcore.Response) -> Outcome:
    """The outcome of an attempt that got response headers."""
    grpc_status: int | None = None
    seen_grpc = ratelimited = False
    for key, value in response.headers:
        name = key.lower()
        if name == b"grpc-status" and not seen_grpc:
            seen_grpc = True
            try:
                grpc_status = int(value)
            except ValueError:
                grpc_status = None
        elif name == b"x-envoy-ratelimited":
            ratelimited = True
    status = response.status
    if grpc_status is None and not ratelimited:
        outcome = _OUTCOMES.get(status)
        if outcome is None:
            outcome = _OUTCOMES.setdefault(status, Outcome.response(status))
        return outcome
    return Outcome.response(status, grpc_status=grpc_status, ratelimited=ratelimited)


async def _discard(response: httpcore.Response) -> None:
    """Read and drop a response that is being retried (frees its connection)."""
    body = _AsyncMappedStream(typing.cast(AsyncIterable[bytes], response.stream))
    try:
        async for _ in body:
            pass
    except Exception as exc:
        logger.debug("discarding a retried response failed: %s", exc)
    finally:
        await body.aclose()


class _BodyCopy:
    """A streamed request body copied for mirroring, up to ``limit`` bytes."""

    __slots__ = ("chunks", "complete", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False


class _AsyncResponseStream(httpx.AsyncByteStream):
    """The upstream body, passed through; where a request that got a response ends.

    The one wrapper around httpcore's stream: empty chunks are dropped and
    httpcore's errors become httpx's (:func:`mapped_exception`). When the app
    closes it (httpx does once the body is read), :meth:`_finished` tells the
    balancer and the circuit breaker the request is over.

    With a route deadline, the body must arrive before it: on the event loop a
    stalled read is cancelled when it passes; in threads the deadline is
    checked between chunks (each read is bounded by the clamped socket
    timeout), so a slow-drip upstream cannot outlive the route timeout.
    """

    __slots__ = ("_clock", "_deadline", "_finish", "_host", "_open", "_stream", "_ticket")

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        host: Host,
        ticket: Ticket,
        deadline: float | None = None,
        clock: Clock = MONOTONIC,
        finish: _Finish | None = None,
    ) -> None:
        self._stream = stream
        self._host = host
        self._ticket = ticket
        self._deadline = deadline
        self._clock = clock
        self._open = True
        self._finish = finish

    async def __aiter__(self) -> AsyncIterator[bytes]:
        finish = self._finish
        if self._deadline is not None:
            async for chunk in self._until_deadline(self._deadline):
                if finish is not None:
                    finish.sent += len(chunk)
                yield chunk
            return
        try:
            async for chunk in self._stream:
                if chunk:
                    if finish is not None:
                        finish.sent += len(chunk)
                    yield chunk
        except MAPPED_EXCEPTIONS as exc:
            raise_mapped(exc)

    async def _until_deadline(self, deadline: float) -> AsyncIterator[bytes]:
        chunks = self._stream.__aiter__()
        while True:
            left = deadline - self._clock.now()
            if left <= 0:
                raise _body_timeout()
            with AsyncAttemptScope(left) as scope:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except MAPPED_EXCEPTIONS as exc:
                    raise_mapped(exc)
            if scope.expired:
                raise _body_timeout()
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            closer = getattr(self._stream, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except MAPPED_EXCEPTIONS as exc:
                    raise_mapped(exc)
        finally:
            self._finished()

    def _finished(self) -> None:
        """The request is over (its body was read or dropped): free its host and ticket."""
        self._host.end()
        self._ticket.release()
        if self._finish is not None:
            self._finish.done()


class _Finish:
    """What the response stream tells telemetry when the request ends: bytes sent to the app."""

    __slots__ = ("info", "obs", "sent", "status")

    def __init__(self, obs: OutboundCall, info: RequestInfo, status: int) -> None:
        self.obs = obs
        self.info = info
        self.status = status
        self.sent = 0

    def done(self) -> None:
        self.obs.finish(self.info, self.status, self.sent)


class _AsyncObservedStream(httpx.AsyncByteStream):
    """A pass-through response body, counted; closing it finishes the request's telemetry."""

    __slots__ = ("_finish", "_open", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, finish: _Finish) -> None:
        self._stream = stream
        self._finish = finish
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            self._finish.sent += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            await self._stream.aclose()
        finally:
            self._finish.done()


def _body_timeout() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("upstream request timeout: the route timeout expired during the body")


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
        # TLS first: a refused certificate is not a refused connection.
        if isinstance(seen, (UpstreamTLSError, ssl.SSLError)):
            return f"TLS_error:|{seen}:TLS_error_end"
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
    elif "UT" in flags:
        cls = UpstreamTimeoutError
    elif "UO" in flags:
        cls = UpstreamOverflowError
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
