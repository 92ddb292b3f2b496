"""WSGI middleware: the twin of :mod:`inmesh.inbound.asgi` over the same decision.

::

    app = MeshWSGIMiddleware(flask_app.wsgi_app, mesh)     # or mesh.wsgi(app)

Where the facts come from, in order (:func:`connection_facts`):

1. ``environ["gunicorn.socket"]`` / ``environ["werkzeug.socket"]``: an
   ``ssl.SSLSocket`` gives TLS and ``getpeercert(binary_form=True)`` (gunicorn
   sync/gthread workers with ``--certfile ... --ca-certs ... --cert-reqs 2``,
   werkzeug with an ``SSLContext`` requiring client certificates); a plain
   socket means plaintext, whatever the headers say;
2. ``environ["asgi.scope"]`` (a2wsgi under an ASGI server): as the ASGI
   middleware reads it; if an inmesh ASGI middleware already decided (as under
   :func:`inmesh.inbound.serve.serve`), that decision is reused as is;
3. ``environ["SSL_CLIENT_CERT"]`` (PEM), **only** with
   ``trust_front_server=True``: the server in front (mod_wsgi with
   ``SSLOptions +ExportCertData``, ...) verified the client against the mesh
   root and nothing else can set that variable;
4. otherwise ``wsgi.url_scheme``: ``http`` is plaintext, ``https`` is TLS
   whose client certificate inmesh cannot see (logged once).

What the app sees when served: ``HTTP_X_FORWARDED_CLIENT_CERT`` as Envoy sets
it (see :mod:`~inmesh.inbound.decide`), ``environ["inmesh.peer"]`` (the
client's :class:`~inmesh.identity.spiffe.SpiffeId` or ``None``) and
``environ["inmesh.decision"]`` (the
:class:`~inmesh.inbound.decide.InboundDecision`). In Flask:
``request.environ["inmesh.peer"]``.

The app also sees exactly the normalized path the policies matched:
``PATH_INFO`` is rewritten (``SCRIPT_NAME`` kept; a normalized path outside
it is refused with 404) and ``RAW_URI``/``REQUEST_URI`` become the
normalized target.

What a refused request sees (the app is not called): ``403 Forbidden``,
``Content-Type: text/plain``, body ``peer authentication failed: <what>``
(:class:`~inmesh.inbound.decide.RefusalReason`) or ``RBAC: access denied``
(an AuthorizationPolicy; a CUSTOM authorizer chooses status, body and
headers); ``400``/``404`` with an empty body when the method or path is
refused. No ``Connection`` header: WSGI
apps may not send hop-by-hop headers (gunicorn's sync worker closes anyway).
"""

from __future__ import annotations

import functools
import http
import ssl
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

from inmesh.identity.spiffe import SpiffeId
from inmesh.identity.tls import verified_peer_der
from inmesh.inbound.asgi import DECISION_KEY
from inmesh.inbound.asgi import connection_facts as _scope_facts
from inmesh.inbound.context import InboundContext
from inmesh.inbound.decide import ConnectionFacts, InboundDecider, InboundDecision, RequestFacts
from inmesh.policy.authz import AuthzRequest
from inmesh.policy.normalize import NormalizedPath, wsgi_request_target
from inmesh.resilience.deadline import deadline_scope, inbound_deadline
from inmesh.telemetry.core import InboundCall, Telemetry

__all__ = [
    "ENVIRON_DECISION_KEY",
    "ENVIRON_PEER_KEY",
    "MeshWSGIMiddleware",
    "connection_facts",
    "decision_of",
    "peer_of",
]

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ENVIRON_PEER_KEY = "inmesh.peer"
"""``environ[ENVIRON_PEER_KEY]``: the client's SPIFFE ID, or ``None``."""

ENVIRON_DECISION_KEY = "inmesh.decision"
"""``environ[ENVIRON_DECISION_KEY]``: the request's :class:`InboundDecision`."""

_XFCC_ENVIRON = "HTTP_X_FORWARDED_CLIENT_CERT"
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


def _local_port(sock: Any) -> int | None:
    try:
        name = sock.getsockname()
    except (OSError, AttributeError):
        return None
    return name[1] if isinstance(name, tuple) and len(name) >= 2 else None


def _environ_port(environ: Environ) -> int | None:
    try:
        return int(environ.get("SERVER_PORT") or 0) or None
    except ValueError:
        return None


def connection_facts(environ: Environ, *, trust_front_server: bool = False) -> ConnectionFacts:
    """The :class:`ConnectionFacts` of a WSGI request (see the module docstring)."""
    for key in _SOCKET_KEYS:
        sock = environ.get(key)
        if sock is None:
            continue
        port = _local_port(sock)
        if isinstance(sock, ssl.SSLSocket):
            der = verified_peer_der(sock)  # none for a stale resumed session
            return ConnectionFacts(tls=True, peer_der=der, local_port=port, via=key)
        return ConnectionFacts(tls=False, local_port=port, via=key)
    scope = environ.get("asgi.scope")
    if scope is not None:
        return _scope_facts(scope)
    port = _environ_port(environ)
    scheme_tls = environ.get("wsgi.url_scheme") == "https"
    if trust_front_server:
        pem = environ.get("SSL_CLIENT_CERT") or ""
        front_der: bytes | None = None
        if pem:
            try:
                front_der = ssl.PEM_cert_to_DER_cert(pem)
            except ValueError:
                front_der = None
        tls = scheme_tls or bool(pem) or str(environ.get("HTTPS", "")).lower() in ("on", "1")
        return ConnectionFacts(tls=tls, peer_der=front_der, local_port=port, via="SSL_CLIENT_CERT")
    if scheme_tls:
        return ConnectionFacts(
            tls=True, peer_visible=False, local_port=port, via="WSGI server without peer socket"
        )
    return ConnectionFacts(tls=False, local_port=port, via="WSGI server")


def _local_ip(environ: Environ) -> str | None:
    for key in _SOCKET_KEYS:
        sock = environ.get(key)
        if sock is not None:
            try:
                name = sock.getsockname()
            except (OSError, AttributeError):
                return None
            return str(name[0]) if isinstance(name, tuple) and name else None
    return None


def _authz_request(environ: Environ, peer: SpiffeId | None, path: NormalizedPath) -> AuthzRequest:
    return AuthzRequest.from_wsgi(environ, peer=peer, path=path, destination_ip=_local_ip(environ))


def _status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Refused"


def _with_path(environ: Environ, n: NormalizedPath) -> None:
    """Make the app see the normalized path: ``SCRIPT_NAME`` + ``PATH_INFO`` = it."""
    full = n.wsgi_path_info
    script = str(environ.get("SCRIPT_NAME", ""))
    environ["PATH_INFO"] = full[len(script) :] if script else full
    for key in ("RAW_URI", "REQUEST_URI"):
        if key in environ:
            environ[key] = n.target


def decision_of(environ: Environ) -> InboundDecision | None:
    """The decision inmesh made for this request, if any."""
    decision: InboundDecision | None = environ.get(ENVIRON_DECISION_KEY)
    return decision


def peer_of(environ: Environ) -> SpiffeId | None:
    """The verified SPIFFE ID of the client of this request, or ``None``."""
    decision = decision_of(environ)
    return None if decision is None else decision.peer_id


class MeshWSGIMiddleware:
    """Peer identity, PeerAuthentication and XFCC in front of a WSGI app.

    ``context``: the mesh (:class:`inmesh.Mesh`) or any
    :class:`~inmesh.inbound.context.InboundContext`. ``trust_front_server``:
    take ``SSL_CLIENT_CERT`` from the environ as the verified client
    certificate (only when the front server verifies clients against the mesh
    root). ``fail_closed``: refuse TLS requests whose client certificate is
    not visible, instead of serving them without identity.
    """

    def __init__(
        self,
        app: WSGIApp,
        context: InboundContext,
        *,
        trust_front_server: bool = False,
        fail_closed: bool = False,
    ) -> None:
        self.app = app
        """The wrapped app."""
        self.trust_front_server = trust_front_server
        """Whether ``SSL_CLIENT_CERT`` is trusted."""
        self.decider = InboundDecider(context, fail_closed=fail_closed)
        """The decider (shared by every request through this middleware)."""
        self.telemetry: Telemetry | None = getattr(context, "telemetry", None)
        """Metrics, traces and access logs (``reporter="destination"``), if the context has them."""

    @property
    def context(self) -> InboundContext:
        """The mesh as the server side sees it."""
        return self.decider.context

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        scope = environ.get("asgi.scope")
        if scope is not None:
            ext = scope.get("extensions")
            outer: InboundDecision | None = ext.get(DECISION_KEY) if ext else None
            if outer is not None:  # an inmesh ASGI middleware already decided
                environ[ENVIRON_DECISION_KEY] = outer
                environ[ENVIRON_PEER_KEY] = outer.peer_id
                return self.app(environ, start_response)
        incoming: str | None = environ.get(_XFCC_ENVIRON)
        facts = connection_facts(environ, trust_front_server=self.trust_front_server)
        request = RequestFacts(
            wsgi_request_target(environ),
            str(environ.get("REQUEST_METHOD", "GET")),
            functools.partial(_authz_request, environ),
            str(environ.get("SCRIPT_NAME", "")),
        )
        decision = self.decider.decide(facts, xfcc=incoming, request=request)
        tel = self.telemetry
        call = None
        if tel is not None and (decision.allowed or decision.authz is not None):
            call = _observe(tel, environ, decision)
        if not decision.allowed:
            status = decision.status
            assert status is not None
            body = decision.body
            headers = [("Content-Length", str(len(body)))]
            if body or decision.authz is not None:
                headers.insert(0, ("Content-Type", "text/plain"))
            headers.extend(decision.response_headers)
            start_response(_status_line(status), headers)
            if call is not None:
                call.finish(
                    status,
                    len(body),
                    details=decision.response_code_details or "",
                    flags=getattr(decision.authz, "response_flags", "") or "-",
                )
            return [body]
        if decision.path is not None:
            _with_path(environ, decision.path)
        authz = decision.authz
        if authz is not None:
            for name, value in authz.upstream_headers:
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        if decision.xfcc is not None:
            environ[_XFCC_ENVIRON] = decision.xfcc
        elif incoming is not None:
            del environ[_XFCC_ENVIRON]
        environ[ENVIRON_DECISION_KEY] = decision
        environ[ENVIRON_PEER_KEY] = decision.peer_id
        if call is not None:
            return _observed(call, self._serve, environ, start_response)
        return self._serve(environ, start_response)

    def _serve(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if getattr(self.decider.context, "deadline_propagation", True):
            deadline = inbound_deadline(_deadline_headers(environ))
            if deadline is not None:
                # Outbound calls made while the app runs inherit what is left.
                with deadline_scope(deadline):
                    return self.app(environ, start_response)
        return self.app(environ, start_response)


def _deadline_headers(environ: Environ) -> list[tuple[bytes, bytes]]:
    out = []
    for key, name in (
        ("HTTP_X_ENVOY_EXPECTED_RQ_TIMEOUT_MS", b"x-envoy-expected-rq-timeout-ms"),
        ("HTTP_GRPC_TIMEOUT", b"grpc-timeout"),
    ):
        value = environ.get(key)
        if value:
            out.append((name, str(value).encode("latin-1")))
    return out


# Request headers telemetry reads, as WSGI environ keys.
_TELEMETRY_ENVIRON = (
    ("HTTP_HOST", b"host"),
    ("HTTP_X_REQUEST_ID", b"x-request-id"),
    ("HTTP_USER_AGENT", b"user-agent"),
    ("HTTP_X_FORWARDED_FOR", b"x-forwarded-for"),
    ("CONTENT_TYPE", b"content-type"),
    ("HTTP_X_ENVOY_PEER_METADATA", b"x-envoy-peer-metadata"),
    ("HTTP_X_ENVOY_PEER_METADATA_ID", b"x-envoy-peer-metadata-id"),
)


def _observe(tel: Telemetry, environ: Environ, decision: InboundDecision) -> InboundCall:
    headers: list[tuple[bytes, bytes]] = []
    for key, name in _TELEMETRY_ENVIRON:
        value = environ.get(key)
        if value:
            headers.append((name, str(value).encode("latin-1")))
    for field in tel.trace_header_names:
        value = environ.get("HTTP_" + field.upper().replace("-", "_"))
        if value:
            headers.append((field.encode("latin-1"), str(value).encode("latin-1")))
    environ.pop("HTTP_X_ENVOY_PEER_METADATA", None)
    environ.pop("HTTP_X_ENVOY_PEER_METADATA_ID", None)
    target = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    if not target:
        query = environ.get("QUERY_STRING")
        target = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "/"))
        target += f"?{query}" if query else ""
    local = remote = ""
    if tel.access_log is not None:
        local = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        remote = f"{environ.get('REMOTE_ADDR', '')}:{environ.get('REMOTE_PORT', '')}".rstrip(":")
    port = environ.get("SERVER_PORT")
    peer = decision.peer_id
    call = tel.inbound(
        str(environ.get("REQUEST_METHOD", "GET")),
        target,
        headers,
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        peer_principal=None if peer is None else str(peer),
        local_address=local,
        remote_address=remote,
        port=int(port) if port and str(port).isdigit() else None,
    )
    if "HTTP_X_REQUEST_ID" not in environ:
        environ["HTTP_X_REQUEST_ID"] = call.request_id
    try:
        call.request_bytes = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        call.request_bytes = 0
    return call


def _observed(
    call: InboundCall,
    app: Callable[[Environ, StartResponse], Iterable[bytes]],
    environ: Environ,
    start_response: StartResponse,
) -> Iterable[bytes]:
    """Run ``app`` as ``call``'s request; finish ``call`` when the server closes the body."""

    def observing_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
        try:
            call.status = int(status.split(" ", 1)[0])
        except ValueError:
            call.status = 0
        extra = call.response_headers()
        if extra:
            headers = [*headers, *((k.decode("latin-1"), v.decode("latin-1")) for k, v in extra)]
        return start_response(status, headers, *exc)

    try:
        with call:
            result = app(environ, observing_start_response)
    except BaseException:
        call.finish(500, 0)
        raise
    return _ObservedBody(call, result)


class _ObservedBody:
    """The app's body, counted; ``close()`` (PEP 3333) finishes the call."""

    def __init__(self, call: InboundCall, inner: Iterable[bytes]) -> None:
        self._call = call
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        call = self._call
        for chunk in self._inner:
            call.response_bytes += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            call = self._call
            call.finish(call.status or 0, call.response_bytes)
