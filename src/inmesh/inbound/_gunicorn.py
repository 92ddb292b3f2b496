"""gunicorn workers running uvicorn with inmesh's protocol classes.

Loaded through :mod:`inmesh.inbound.uvicorn` (``-k inmesh.inbound.uvicorn.UvicornWorker``);
needs the ``uvicorn-worker`` package.
"""

from __future__ import annotations

from typing import Any

import uvicorn_worker as _uvicorn_worker  # type: ignore[import-untyped]

__all__ = ["UvicornH11Worker", "UvicornWorker"]


class UvicornWorker(_uvicorn_worker.UvicornWorker):  # type: ignore[misc]
    """``uvicorn_worker.UvicornWorker`` with :class:`inmesh.inbound.uvicorn.AutoHTTPProtocol`.

    gunicorn's ``--certfile/--keyfile/--ca-certs/--cert-reqs 2`` configure TLS
    as usual; the ASGI app sees ``scope["extensions"]["tls"]``.
    """

    CONFIG_KWARGS: dict[str, Any] = {
        **_uvicorn_worker.UvicornWorker.CONFIG_KWARGS,
        "http": "inmesh.inbound.uvicorn:AutoHTTPProtocol",
    }


class UvicornH11Worker(_uvicorn_worker.UvicornH11Worker):  # type: ignore[misc]
    """``uvicorn_worker.UvicornH11Worker`` with :class:`inmesh.inbound.uvicorn.H11Protocol`."""

    CONFIG_KWARGS: dict[str, Any] = {
        **_uvicorn_worker.UvicornH11Worker.CONFIG_KWARGS,
        "http": "inmesh.inbound.uvicorn:H11Protocol",
    }
