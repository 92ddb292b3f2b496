"""ASGI middleware: peer identity, PeerAuthentication and XFCC for an ASGI app.

A pure ASGI middleware (starlette's shape) over
:class:`~inmesh.inbound.decide.InboundDecider`::

    app = MeshASGIMiddleware(app, mesh)        # or mesh.asgi(app)

Where the facts come from, in order (:func:`connection_facts`):

1. ``scope["extensions"]["inmesh.transport"]`` and ``["tls"]``, set from the
   socket by :mod:`inmesh.inbound.uvicorn`'s protocols (also under
   :func:`inmesh.inbound.serve.serve`): authoritative;
2. ``scope["extensions"]["tls"]`` alone (a server implementing the ASGI TLS
   extension): the leaf is ``client_cert_chain[0]``;
3. otherwise ``scope["scheme"]``: ``http``/``ws`` is plaintext; ``https``/``wss``
   is TLS whose client certificate inmesh cannot see (logged once; see
   :mod:`~inmesh.inbound.decide`). Note that a server trusting
   ``X-Forwarded-Proto`` (uvicorn's ``--proxy-headers``, on for 127.0.0.1 by
   default) lets a client choose this scheme.

What the app sees when the request is served:

* ``x-forwarded-client-cert`` exactly as an Istio sidecar sets it (Envoy
  APPEND_FORWARD, see :mod:`~inmesh.inbound.decide`); any XFCC from the network
  is removed unless ``trusted_proxy_xfcc`` (and kept+appended only on mTLS);
* ``scope["extensions"]["inmesh"]``: the
  :class:`~inmesh.inbound.decide.InboundDecision` (``.peer_id``: the client's
  :class:`~inmesh.identity.spiffe.SpiffeId` or ``None``; ``.principal``;
  ``.xfcc``; ``.mode``); :func:`decision_of` and :func:`peer_of` read it;
* ``scope["state"]["inmesh_peer"]`` when the server provides lifespan state
  (uvicorn does): Starlette/FastAPI's ``request.state.inmesh_peer``.

* exactly the normalized path (the one AuthorizationPolicies matched):
  ``scope["raw_path"]``/``scope["path"]`` are rewritten from
  :class:`~inmesh.policy.normalize.NormalizedPath` (the query is untouched);
  the decision carries ``.path`` and ``.authz`` (policy id, dry-run, audit).

What a refused request sees (no app call): peer authentication: ``403``,
``content-type: text/plain``, ``connection: close``, body ``peer
authentication failed: <what>`` (see
:class:`~inmesh.inbound.decide.RefusalReason`); authorization: ``403``,
``content-type: text/plain``, body ``RBAC: access denied`` (or a CUSTOM
authorizer's status, body and headers); a refused path: ``400`` (``404``
for a non origin-form target) with an empty body; a refused
WebSocket gets ``websocket.close`` code 1008 before acceptance (uvicorn
answers the upgrade with 403). Scopes other than ``http``/``websocket``
(lifespan) pass through untouched. A scope already decided by an outer
inmesh middleware passes through too.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.to_thread

from inmesh.identity.spiffe import SpiffeId
from inmesh.inbound.context import InboundContext
from inmesh.inbound.decide import (
    ConnectionFacts,
    InboundDecider,
    InboundDecision,
    RequestFacts,
)
from inmesh.inbound.xfcc import XFCC_HEADER_BYTES
from inmesh.policy.authz import AuthzRequest
from inmesh.policy.normalize import NormalizedPath, asgi_request_target
from inmesh.resilience.deadline import deadline_scope, inbound_deadline
from inmesh.telemetry.core import InboundCall, Telemetry, grpc_status_of

__all__ = [
    "DECISION_KEY",
    "STATE_PEER_KEY",
    "MeshASGIMiddleware",
    "connection_facts",
    "decision_of",
    "peer_of",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DECISION_KEY = "inmesh"
"""``scope["extensions"][DECISION_KEY]``: the request's :class:`InboundDecision`."""

STATE_PEER_KEY = "inmesh_peer"
"""``scope["state"][STATE_PEER_KEY]``: the peer's SPIFFE ID or ``None`` (``request.state.inmesh_peer``)."""

# Kept in sync with inmesh.inbound.uvicorn (not imported: it imports uvicorn).
_TRANSPORT_KEY = "inmesh.transport"
_PEER_DER_KEY = "inmesh.peer_der"
_SECURE_SCHEMES = frozenset({"https", "wss"})


def _peer_der(tls: MutableMapping[str, Any]) -> bytes | None:
    der = tls.get(_PEER_DER_KEY, False)
    if der is not False:
        return der if der else None
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(chain[0])
    except ValueError:
        return None


def connection_facts(scope: Scope) -> ConnectionFacts:
    """The :class:`ConnectionFacts` of an HTTP or WebSocket scope (see the module docstring)."""
    server = scope.get("server")
    port = server[1] if server else None
    ext = scope.get("extensions")
    if ext:
        tls = ext.get("tls")
        transport = ext.get(_TRANSPORT_KEY)
        if transport is not None:
            if tls is None or transport != "tls":
                return ConnectionFacts(tls=False, local_port=port, via="uvicorn")
            return ConnectionFacts(
                tls=True, peer_der=_peer_der(tls), local_port=port, via="uvicorn"
            )
        if tls is not None:
            return ConnectionFacts(
                tls=True, peer_der=_peer_der(tls), local_port=port, via="ASGI TLS extension"
            )
    if scope.get("scheme") in _SECURE_SCHEMES:
        return ConnectionFacts(
            tls=True, peer_visible=False, local_port=port, via="ASGI server without TLS extension"
        )
    return ConnectionFacts(tls=False, local_port=port, via="ASGI server")


def decision_of(scope: Scope) -> InboundDecision | None:
    """The decision inmesh made for this request's scope, if any."""
    ext = scope.get("extensions")
    return None if not ext else ext.get(DECISION_KEY)


def peer_of(scope: Scope) -> SpiffeId | None:
    """The verified SPIFFE ID of the client of this request, or ``None``."""
    decision = decision_of(scope)
    return None if decision is None else decision.peer_id


def _refusal(decision: InboundDecision) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    reason = decision.reason
    assert reason is not None
    status = decision.status
    assert status is not None
    body = decision.body
    headers: list[tuple[bytes, bytes]] = []
    if body or decision.authz is not None:
        headers.append((b"content-type", b"text/plain"))
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    for name, value in decision.response_headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    if reason.peer_authentication:
        headers.append((b"connection", b"close"))
    return status, headers, body


def _authz_request(scope: Scope, peer: SpiffeId | None, path: NormalizedPath) -> AuthzRequest:
    return AuthzRequest.from_asgi(scope, peer=peer, path=path)


def _with_path(scope: Scope, n: NormalizedPath) -> None:
    """Make the app see the normalized path (``scope`` is the middleware's copy)."""
    raw = n.raw_path
    path = n.asgi_path
    if scope.get("raw_path") == raw and scope.get("path") == path:
        return
    root = scope.get("root_path") or ""
    old = scope.get("path")
    if root and isinstance(old, str) and old.startswith(root) and not path.startswith(root):
        path = root + path  # a server that puts root_path into path (uvicorn >= 0.26)
    scope["path"] = path
    scope["raw_path"] = raw


class MeshASGIMiddleware:
    """Peer identity, PeerAuthentication and XFCC in front of an ASGI app.

    ``context``: the mesh (:class:`inmesh.Mesh`) or any
    :class:`~inmesh.inbound.context.InboundContext`. ``fail_closed``: refuse
    TLS requests whose client certificate the server does not expose (default:
    serve them without identity and log it once). See the module docstring for
    what the app and a refused client see.
    """

    def __init__(self, app: ASGIApp, context: InboundContext, *, fail_closed: bool = False) -> None:
        self.app = app
        """The wrapped app."""
        self.decider = InboundDecider(context, fail_closed=fail_closed)
        """The decider (shared by every request through this middleware)."""
        self.telemetry: Telemetry | None = getattr(context, "telemetry", None)
        """Metrics, traces and access logs (``reporter="destination"``), if the context has them."""

    @property
    def context(self) -> InboundContext:
        """The mesh as the server side sees it."""
        return self.decider.context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":  # noqa: PLR1714 - hot path
            await self.app(scope, receive, send)
            return
        ext = scope.get("extensions")
        if ext is not None and DECISION_KEY in ext:
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        incoming: str | None = None
        for name, value in headers:
            if name == XFCC_HEADER_BYTES:
                text = value.decode("latin-1")
                incoming = text if incoming is None else f"{incoming},{text}"
        request = RequestFacts(
            asgi_request_target(scope),
            scope.get("method", "GET"),
            functools.partial(_authz_request, scope),
        )
        evaluator = self.decider.context.authorizer()
        if evaluator is not None and evaluator.uses_custom:
            decision = await anyio.to_thread.run_sync(
                functools.partial(
                    self.decider.decide, connection_facts(scope), xfcc=incoming, request=request
                )
            )
        else:
            decision = self.decider.decide(connection_facts(scope), xfcc=incoming, request=request)
        tel = self.telemetry
        if not decision.allowed:
            if tel is not None and kind == "http" and decision.authz is not None:
                refused = self._observe(tel, scope, headers, decision)
                with refused:
                    await self._refuse(
                        kind,
                        decision,
                        _observed_send(
                            refused,
                            send,
                            details=decision.response_code_details or "",
                            flags=getattr(decision.authz, "response_flags", "") or "-",
                        ),
                    )
                return
            await self._refuse(kind, decision, send)
            return
        call: InboundCall | None = None
        if tel is not None and kind == "http":
            call = self._observe(tel, scope, headers, decision)
            headers = call.headers
        if incoming is not None:
            headers = [h for h in headers if h[0] != XFCC_HEADER_BYTES]
        if decision.xfcc is not None:
            headers = [*headers, (XFCC_HEADER_BYTES, decision.xfcc.encode("latin-1"))]
        authz = decision.authz
        if authz is not None and authz.upstream_headers:
            added = {k.lower().encode("latin-1") for k, _ in authz.upstream_headers}
            headers = [h for h in headers if h[0] not in added]
            headers.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in authz.upstream_headers
            )
        scope = dict(scope)
        if decision.path is not None:
            _with_path(scope, decision.path)
        scope["headers"] = headers
        scope["extensions"] = {**ext, DECISION_KEY: decision} if ext else {DECISION_KEY: decision}
        state = scope.get("state")
        if state is not None:
            state[STATE_PEER_KEY] = decision.peer_id
        if call is not None:
            with call:
                try:
                    await self._serve(
                        scope, _counted_receive(call, receive), _observed_send(call, send)
                    )
                except BaseException as exc:
                    if not call.done:
                        # Mid-response: the client went away (DC), or the app
                        # failed (UC, as Envoy sees an app closing its connection).
                        gone = isinstance(exc, (OSError, anyio.get_cancelled_exc_class()))
                        if gone:  # Envoy: DC, and code 0 if no response was sent
                            call.finish(call.status or 0, call.response_bytes, flags="DC")
                        else:
                            flags = "-" if call.status is None else "UC"
                            call.finish(call.status or 500, call.response_bytes, flags=flags)
                    raise
                if not call.done:
                    call.finish(call.status or 0, call.response_bytes)
            return
        await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if getattr(self.decider.context, "deadline_propagation", True):
            deadline = inbound_deadline(scope["headers"])
            if deadline is not None:
                # Outbound calls made while serving this request inherit what is left.
                with deadline_scope(deadline):
                    await self.app(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _observe(
        tel: Telemetry, scope: Scope, headers: list[tuple[bytes, bytes]], decision: InboundDecision
    ) -> InboundCall:
        if decision.path is not None:
            target = decision.path.target  # what the app sees and policies matched
        else:
            path = scope.get("raw_path") or scope.get("path", "/").encode("latin-1")
            query = scope.get("query_string")
            target = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        server = scope.get("server")
        local = remote = sni = ""
        if tel.access_log is not None:
            client = scope.get("client")
            local = f"{server[0]}:{server[1]}" if server else ""
            remote = f"{client[0]}:{client[1]}" if client else ""
            ext = scope.get("extensions") or {}
            sni = (ext.get("tls") or {}).get("server_name") or ""
        peer = decision.peer_id
        return tel.inbound(
            scope.get("method", "GET"),
            target,
            headers,
            scheme=scope.get("scheme", "http"),
            peer_principal=None if peer is None else str(peer),
            local_address=local,
            remote_address=remote,
            server_name=sni,
            port=server[1] if server else None,
        )

    @staticmethod
    async def _refuse(kind: str, decision: InboundDecision, send: Send) -> None:
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status, headers, body = _refusal(decision)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _counted_receive(call: InboundCall, receive: Receive) -> Receive:
    """``receive`` counting request body bytes into ``call``."""

    async def counted() -> MutableMapping[str, Any]:
        message = await receive()
        body = message.get("body")
        if body:
            call.request_bytes += len(body)
        return message

    return counted


def _observed_send(
    call: InboundCall, send: Send, *, details: str = "via_upstream", flags: str = "-"
) -> Send:
    """``send`` that adds the response's peer metadata and finishes ``call`` at the last byte."""
    grpc_status = ""
    trailers = False

    async def observed(message: MutableMapping[str, Any]) -> None:
        nonlocal grpc_status, trailers
        kind = message["type"]
        if kind == "http.response.start":
            call.status = message["status"]
            trailers = bool(message.get("trailers", False))
            extra = call.response_headers()
            if extra or call.protocol == "grpc":
                headers = list(message.get("headers") or ())
                if call.protocol == "grpc":
                    grpc_status = grpc_status_of(headers)
                if extra:
                    message = {**message, "headers": [*headers, *extra]}
        elif kind == "http.response.body":
            body = message.get("body")
            if body:
                call.response_bytes += len(body)
            if not message.get("more_body", False) and not trailers:
                await send(message)
                call.finish(
                    call.status or 0,
                    call.response_bytes,
                    grpc_status=grpc_status,
                    details=details,
                    flags=flags,
                )
                return
        elif kind == "http.response.trailers":
            if call.protocol == "grpc":
                grpc_status = grpc_status_of(message.get("headers") or ()) or grpc_status
            if not message.get("more_trailers", False):
                await send(message)
                call.finish(
                    call.status or 0,
                    call.response_bytes,
                    grpc_status=grpc_status,
                    details=details,
                    flags=flags,
                )
                return
        await send(message)

    return observed
