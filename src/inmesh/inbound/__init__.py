"""The server side of the mesh: peer identity, PeerAuthentication, XFCC, and serving with mTLS.

* :mod:`~inmesh.inbound.context`: :class:`InboundContext`, what the inbound
  path needs from the mesh (:class:`inmesh.Mesh` is one);
  :class:`StaticInboundContext` for tests and embedding;
* :mod:`~inmesh.inbound.decide`: the sans-I/O decision shared by ASGI and WSGI;
* :mod:`~inmesh.inbound.asgi` / :mod:`~inmesh.inbound.wsgi`: the middleware;
* :mod:`~inmesh.inbound.xfcc`: Envoy's ``x-forwarded-client-cert``;
* :mod:`~inmesh.inbound.uvicorn`: uvicorn protocols exposing the client certificate;
* :mod:`~inmesh.inbound.serve`: ``serve`` (import it from that module: the
  package attribute ``serve`` is the module), :func:`serve_async`,
  :func:`serve_in_thread`, :class:`MeshServer`: uvicorn with the mesh's TLS,
  one port for both plaintext and mTLS in PERMISSIVE.

Importing this package loads nothing else: the names below are imported on
first use (so ``uvicorn`` is only imported when serving).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .asgi import MeshASGIMiddleware
    from .context import InboundContext, StaticInboundContext
    from .decide import (
        ConnectionFacts,
        InboundDecider,
        InboundDecision,
        PeerCertificate,
        RefusalReason,
    )
    from .serve import (
        BackgroundServer,
        MeshServer,
        ServeError,
        serve_async,
        serve_in_thread,
    )
    from .wsgi import MeshWSGIMiddleware

__all__ = [
    "BackgroundServer",
    "ConnectionFacts",
    "InboundContext",
    "InboundDecider",
    "InboundDecision",
    "MeshASGIMiddleware",
    "MeshServer",
    "MeshWSGIMiddleware",
    "PeerCertificate",
    "RefusalReason",
    "ServeError",
    "StaticInboundContext",
    "serve_async",
    "serve_in_thread",
]

_LAZY = {
    "MeshASGIMiddleware": "asgi",
    "InboundContext": "context",
    "StaticInboundContext": "context",
    "ConnectionFacts": "decide",
    "InboundDecider": "decide",
    "InboundDecision": "decide",
    "PeerCertificate": "decide",
    "RefusalReason": "decide",
    "BackgroundServer": "serve",
    "MeshServer": "serve",
    "ServeError": "serve",
    "serve_async": "serve",
    "serve_in_thread": "serve",
    "MeshWSGIMiddleware": "wsgi",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
