"""Errors of the outbound connector, and the one place foreign exceptions are translated.

The classes extend inmesh's tree (:mod:`inmesh.errors`) and, where a caller
of httpx would look for one, the matching httpx exception, so
``except httpx.ConnectError`` keeps working::

    InmeshError
    ├── UpstreamConnectError (also httpx.ConnectError)     no usable connection to the endpoint
    │   │                                                   (refused, unreachable; Envoy: UF)
    │   └── UpstreamTLSError                               the TLS handshake failed, or TLS cannot be set up
    │       ├── UpstreamCertificateError                   the server's certificate was refused
    │       │   │                                           (unknown CA, expired...: chain verification)
    │       │   └── UpstreamIdentityError                  valid chain, wrong identity: SPIFFE ID or SAN
    │       │                                               not expected for the destination
    │       └── ClientCertificateRejectedError             the server refused *our* certificate (a TLS
    │                                                       alert; with TLS 1.3 it arrives after the
    │                                                       request was written, but the server never
    │                                                       processed it)
    ├── UpstreamConnectTimeoutError (also httpx.ConnectTimeout)   connect or handshake took too long
    └── ConnectorClosedError (also RuntimeError)           the connector was closed

None of them is an httpcore exception, so httpcore never retries them. All
of them are raised before any request byte was sent, except
:class:`ClientCertificateRejectedError` under TLS 1.3 (see above). Each carries the
``endpoint`` (``(address, port)``) and the ``destination`` key it concerns.

:func:`mapped_exception` is the single translation table for what comes
out of an httpcore pool: httpcore's exceptions become httpx's (as
``httpx.HTTPTransport`` does), connection failures become the classes above.
:func:`map_httpcore_exceptions` applies it as a context manager; the request
path uses ``except MAPPED_EXCEPTIONS`` and :func:`raise_mapped` instead, which
cost nothing unless something is raised.
:func:`handshake_error` and :func:`read_error` classify TLS failures at the
stream, where the underlying :class:`ssl.SSLError` is still attached
(httpcore's pool re-raises ``from None``, which drops it).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Hashable, Iterator
from typing import Any, NoReturn

import httpcore
import httpx

from inmesh.errors import InmeshError

__all__ = [
    "CLIENT_CERTIFICATE_ALERTS",
    "MAPPED_EXCEPTIONS",
    "ClientCertificateRejectedError",
    "ConnectorClosedError",
    "UpstreamCertificateError",
    "UpstreamConnectError",
    "UpstreamConnectTimeoutError",
    "UpstreamIdentityError",
    "UpstreamTLSError",
    "handshake_error",
    "map_httpcore_exceptions",
    "mapped_exception",
    "raise_mapped",
    "read_error",
]

Endpoint = tuple[str, int]

CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    }
)
"""OpenSSL reasons of the alerts a server sends when it refuses the client's certificate."""


def _where(endpoint: Endpoint | None) -> str:
    if endpoint is None:
        return "the upstream"
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class UpstreamConnectError(InmeshError, httpx.ConnectError):
    """No usable connection to an upstream endpoint could be set up; nothing was sent."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        destination: Hashable | None = None,
    ) -> None:
        httpx.ConnectError.__init__(self, message)
        self.endpoint = endpoint
        """``(address, port)`` of the endpoint, when known."""
        self.destination = destination
        """The destination key the connection was for, when known."""


class UpstreamTLSError(UpstreamConnectError):
    """The TLS handshake with the endpoint failed, or TLS could not be set up."""


class UpstreamCertificateError(UpstreamTLSError):
    """The server's certificate chain was refused (``verify_code``, ``verify_message``: OpenSSL's)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        destination: Hashable | None = None,
        verify_code: int | None = None,
        verify_message: str = "",
    ) -> None:
        super().__init__(message, endpoint=endpoint, destination=destination)
        self.verify_code = verify_code
        self.verify_message = verify_message


class UpstreamIdentityError(UpstreamCertificateError):
    """The server's chain is valid but it is not who the destination expects.

    ``peer``: the server's SPIFFE ID (mesh mTLS) or ``None``; ``peer_names``:
    every subject alternative name it presented; ``expected``: the accepted
    names, sorted. The connection was closed before any request byte was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        destination: Hashable | None = None,
        peer: str | None = None,
        peer_names: tuple[str, ...] = (),
        expected: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            message,
            endpoint=endpoint,
            destination=destination,
            verify_message="identity mismatch",
        )
        self.peer = peer
        self.peer_names = peer_names
        self.expected = expected


class ClientCertificateRejectedError(UpstreamTLSError):
    """The server refused this workload's certificate (``alert``: OpenSSL's reason)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        destination: Hashable | None = None,
        alert: str = "",
    ) -> None:
        super().__init__(message, endpoint=endpoint, destination=destination)
        self.alert = alert


class UpstreamConnectTimeoutError(InmeshError, httpx.ConnectTimeout):
    """Connecting to the endpoint, or the TLS handshake, timed out; nothing was sent."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        destination: Hashable | None = None,
    ) -> None:
        httpx.ConnectTimeout.__init__(self, message)
        self.endpoint = endpoint
        self.destination = destination


class ConnectorClosedError(InmeshError, RuntimeError):
    """A request was made through a connector after it was closed."""


# -- classification -----------------------------------------------------------


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _alert(err: ssl.SSLError) -> str:
    reason = getattr(err, "reason", None)
    return reason if isinstance(reason, str) and reason in CLIENT_CERTIFICATE_ALERTS else ""


def handshake_error(
    exc: BaseException,
    *,
    endpoint: Endpoint | None,
    destination: Hashable | None,
) -> UpstreamConnectError | UpstreamConnectTimeoutError | None:
    """The typed error for a failed ``start_tls``, or ``None`` to re-raise ``exc`` as is."""
    where = _where(endpoint)
    if isinstance(exc, (httpcore.ConnectTimeout, TimeoutError)):
        return UpstreamConnectTimeoutError(
            f"TLS handshake with {where} timed out", endpoint=endpoint, destination=destination
        )
    if not isinstance(exc, (httpcore.ConnectError, ssl.SSLError, OSError)):
        return None
    err = _ssl_error_in(exc)
    if isinstance(err, ssl.SSLCertVerificationError):
        message = err.verify_message or str(err)
        return UpstreamCertificateError(
            f"TLS handshake with {where} failed: the server certificate was refused: {message}",
            endpoint=endpoint,
            destination=destination,
            verify_code=err.verify_code,
            verify_message=message,
        )
    if err is not None and _alert(err):
        return ClientCertificateRejectedError(
            f"{where} refused this workload's certificate ({_alert(err)})",
            endpoint=endpoint,
            destination=destination,
            alert=_alert(err),
        )
    detail = str(err) if err is not None else (str(exc) or "the server closed the connection")
    return UpstreamTLSError(
        f"TLS handshake with {where} failed: {detail}", endpoint=endpoint, destination=destination
    )


def read_error(
    exc: BaseException,
    *,
    endpoint: Endpoint | None,
    destination: Hashable | None,
) -> BaseException | None:
    """The error to raise for a failed read on a TLS stream, or ``None`` to re-raise ``exc``.

    A server alert refusing our certificate becomes :class:`ClientCertificateRejectedError`;
    another raw :class:`ssl.SSLError` (anyio lets those through) becomes an
    ``httpcore.ReadError``, as the sync backend reports it.
    """
    err = _ssl_error_in(exc)
    if err is None:
        return None
    alert = _alert(err)
    if alert:
        return ClientCertificateRejectedError(
            f"{_where(endpoint)} refused this workload's certificate ({alert})",
            endpoint=endpoint,
            destination=destination,
            alert=alert,
        )
    if isinstance(exc, ssl.SSLError):
        return httpcore.ReadError(str(exc))
    return None


_HTTPCORE_TO_HTTPX: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: UpstreamConnectTimeoutError,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: UpstreamConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


MAPPED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    ssl.SSLError,
)
"""What :func:`mapped_exception` handles; anything else passes through unchanged."""


def mapped_exception(exc: BaseException, request: httpx.Request | None = None) -> BaseException:
    """The exception to raise for ``exc``, one of :data:`MAPPED_EXCEPTIONS`.

    ``exc`` itself for an httpx exception (inmesh's included; re-raise it),
    else the new httpx exception (raise it ``from exc``, as :func:`raise_mapped`
    does).
    """
    if isinstance(exc, httpx.HTTPError):
        if request is not None:
            exc.request = request
        return exc
    new: httpx.HTTPError
    if isinstance(exc, ssl.SSLError):
        new = httpx.ReadError(str(exc))
    else:
        mapped: type[httpx.HTTPError] = httpx.TransportError
        for cls in type(exc).__mro__:
            found = _HTTPCORE_TO_HTTPX.get(cls)
            if found is not None:
                mapped = found
                break
        new = mapped(str(exc))
    if request is not None:
        new.request = request
    return new


def raise_mapped(exc: BaseException, request: httpx.Request | None = None) -> NoReturn:
    """Raise :func:`mapped_exception` of ``exc`` (``from exc`` when it is a new one).

    Call it in ``except MAPPED_EXCEPTIONS as exc:``.
    """
    new = mapped_exception(exc, request)
    if new is exc:
        raise exc
    raise new from exc


@contextlib.contextmanager
def map_httpcore_exceptions(request: httpx.Request | None = None) -> Iterator[None]:
    """Translate what an httpcore pool raises into httpx / inmesh exceptions.

    httpcore's exceptions map to the most specific httpx class (connect
    failures to :class:`UpstreamConnectError` / :class:`UpstreamConnectTimeoutError`);
    a stray :class:`ssl.SSLError` to ``httpx.ReadError``; inmesh's own
    exceptions pass through. ``request`` (optional) is attached to every
    httpx exception raised, as httpx's ``.request``.
    """
    try:
        yield
    except MAPPED_EXCEPTIONS as exc:
        raise_mapped(exc, request)


# -- local replies as exceptions (errors="raise") -------------------------------


class LocalReplyError(InmeshError, httpx.TransportError):
    """The mesh answered the request itself, with an Envoy local reply.

    Raised instead of returning the reply by transports made with
    ``errors="raise"``. ``reply`` is the
    :class:`~inmesh.outbound.replies.LocalReply` (status, body, flags,
    details) and ``info`` the request's
    :class:`~inmesh.outbound.replies.RequestInfo`.
    """

    def __init__(
        self, message: str, *, reply: Any, info: Any, request: httpx.Request | None = None
    ) -> None:
        httpx.TransportError.__init__(self, message)
        if request is not None:
            self.request = request
        self.reply = reply
        self.info = info

    @property
    def status_code(self) -> int:
        """The status the reply would have had."""
        return int(self.reply.status)

    @property
    def response_flags(self) -> str:
        return ",".join(self.reply.flags) or "-"


class NoRouteError(LocalReplyError):
    """404 ``NR``: a VirtualService exists for the host but none of its routes matched."""


class RegistryOnlyError(LocalReplyError):
    """502: the host is not in the registry and the mesh is ``REGISTRY_ONLY``."""


class NoClusterError(LocalReplyError):
    """503 ``NC``: the route's destination (host, port or subset) does not exist."""


class NoHealthyUpstreamError(LocalReplyError, httpx.ConnectError):
    """503 ``UH``: the destination has no (healthy) endpoint."""


class FaultAbortError(LocalReplyError):
    """The route's fault injection aborted the request (flag ``FI``)."""


class UpstreamTimeoutError(LocalReplyError, httpx.TimeoutException):
    """504 ``UT``: the route timeout or the per-try timeout expired."""


class UpstreamOverflowError(LocalReplyError):
    """503 ``UO``: a circuit breaker refused the request (``x-envoy-overloaded``)."""
