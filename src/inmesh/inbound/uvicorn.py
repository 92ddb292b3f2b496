"""uvicorn protocol classes that show the app the verified client certificate.

uvicorn (0.54) does not set the ASGI TLS extension (python-tech.md §1.1).
These subclasses of its HTTP protocols do, per connection, without copying
any uvicorn method: ``connection_made`` (which runs after the TLS handshake)
reads the peer certificate once and replaces ``self.app``, for this
connection only, with a thin wrapper that adds to every scope:

``scope["extensions"]["tls"]`` (TLS connections only), shaped as the ASGI TLS extension:
    ``server_cert`` (``None``: not available), ``client_cert_chain`` (PEM
    strings; the leaf only: Python < 3.13 cannot read the verified chain, and
    OpenSSL already verified it), ``client_cert_name`` (RFC 4514 subject, or
    ``None``), ``client_cert_error`` (``None``: the handshake verified it),
    ``tls_version`` (``0x0304`` for TLS 1.3), ``cipher_suite`` (IANA id),
    and ``"inmesh.peer_der"``: the leaf DER (``None`` without certificate),
    which saves the middleware a PEM round trip;
``scope["extensions"]["inmesh.transport"]``: ``"tls"`` or ``"plaintext"``,
    from the socket itself: the middleware trusts it over ``scope["scheme"]``
    (which ``X-Forwarded-Proto`` can change).

WebSocket upgrades get the same extensions: the HTTP protocol hands uvicorn
a per-connection factory that wraps the WebSocket protocol's ``app`` the same
way (works with uvicorn's three WebSocket implementations, which all keep the
app in ``self.app``).

Usage::

    uvicorn app:app --http inmesh.inbound.uvicorn:HttpToolsProtocol \\
        --ssl-certfile cert-chain.pem --ssl-keyfile key.pem \\
        --ssl-ca-certs root-cert.pem --ssl-cert-reqs 2
    uvicorn.Config(app, http=inmesh.inbound.uvicorn.AutoHTTPProtocol, ...)
    gunicorn -k inmesh.inbound.uvicorn.UvicornWorker app:app \\
        --certfile cert-chain.pem --keyfile key.pem --ca-certs root-cert.pem --cert-reqs 2

``UvicornWorker`` (loaded on first use, not in ``__all__``; needs the
``uvicorn-worker`` package) is ``uvicorn_worker.UvicornWorker`` with ``CONFIG_KWARGS["http"]``
set to :class:`AutoHTTPProtocol`; ``UvicornH11Worker`` uses :class:`H11Protocol`.
The app itself must still be wrapped in
:class:`~inmesh.inbound.asgi.MeshASGIMiddleware` to act on the extension.

Not covered: uvicorn's ``zttp``/HTTP/2 protocols (no subclass; their scopes
have no ``inmesh.transport`` and are judged by ``scope["scheme"]``).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol as _UvicornH11Protocol

__all__ = [
    "PEER_DER_KEY",
    "TRANSPORT_KEY",
    "AutoHTTPProtocol",
    "H11Protocol",
    "HttpToolsProtocol",
    "tls_extension",
]

TRANSPORT_KEY = "inmesh.transport"
"""``scope["extensions"][TRANSPORT_KEY]``: ``"tls"`` or ``"plaintext"``, set from the socket."""

PEER_DER_KEY = "inmesh.peer_der"
"""``scope["extensions"]["tls"][PEER_DER_KEY]``: the client's leaf certificate, DER, or ``None``."""

_Scope = MutableMapping[str, Any]
_ASGIApp = Callable[[_Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _cipher_ids() -> dict[str, int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    return {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}


_CIPHER_IDS = _cipher_ids()


def _subject(der: bytes) -> str | None:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension dict for an established TLS connection.

    Also used by :mod:`inmesh.inbound.serve`; see the module docstring for the keys.
    The client certificate is read with
    :func:`~inmesh.identity.tls.verified_peer_der` (none for a stale resumed session).
    """
    from inmesh.identity.tls import verified_peer_der

    der = verified_peer_der(ssl_object)
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": _subject(der) if der else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": _CIPHER_IDS.get(cipher[0]) if cipher else None,
        PEER_DER_KEY: der or None,
    }


class _ConnectionApp:
    """The app of one connection: adds the connection's extensions to each scope."""

    __slots__ = ("app", "tls", "transport")

    def __init__(self, app: _ASGIApp, tls: dict[str, Any] | None) -> None:
        self.app = app
        self.tls = tls
        self.transport = "plaintext" if tls is None else "tls"

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        ext = scope.get("extensions")
        if ext is None:
            scope["extensions"] = ext = {}
        ext[TRANSPORT_KEY] = self.transport
        if self.tls is not None:
            ext["tls"] = self.tls
        await self.app(scope, receive, send)


def _connection_tls(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return tls_extension(ssl_object)


def _websocket_protocol(
    ws_class: Callable[..., Any], tls: dict[str, Any] | None, **kwargs: Any
) -> Any:
    protocol = ws_class(**kwargs)
    app = getattr(protocol, "app", None)
    if app is not None:
        protocol.app = _ConnectionApp(app, tls)
    return protocol


class _ConnectionExtensionsMixin:
    """Per connection: wrap ``self.app`` (and the WebSocket protocol's) with the extensions."""

    app: Any
    ws_protocol_class: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        tls = _connection_tls(transport)
        self.app = _ConnectionApp(self.app, tls)
        ws = self.ws_protocol_class
        if ws is not None:
            self.ws_protocol_class = functools.partial(_websocket_protocol, ws, tls)


class H11Protocol(_ConnectionExtensionsMixin, _UvicornH11Protocol):
    """uvicorn's h11 protocol, setting the TLS extension (see the module docstring)."""


try:
    from uvicorn.protocols.http.httptools_impl import (
        HttpToolsProtocol as _UvicornHttpToolsProtocol,
    )
except ImportError:  # pragma: no cover - httptools not installed
    HttpToolsProtocol: type[asyncio.Protocol] = H11Protocol
    AutoHTTPProtocol: type[asyncio.Protocol] = H11Protocol
else:

    class HttpToolsProtocol(  # type: ignore[no-redef]
        _ConnectionExtensionsMixin, _UvicornHttpToolsProtocol
    ):
        """uvicorn's httptools protocol, setting the TLS extension (see the module docstring)."""

    AutoHTTPProtocol = HttpToolsProtocol
    """:class:`HttpToolsProtocol` when httptools is installed, else :class:`H11Protocol`."""


def __getattr__(name: str) -> Any:
    if name in ("UvicornWorker", "UvicornH11Worker"):
        from inmesh.inbound import _gunicorn

        return getattr(_gunicorn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
