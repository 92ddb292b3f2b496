"""The seed's two services as plain WSGI and ASGI apps, so the demo needs no framework.

They behave as ``examples/flask_backend`` and ``examples/fastapi_frontend``
do, plus the demo's knobs:

* :func:`backend` (WSGI): ``GET /`` answers ``Hello from Backend!`` with
  ``X-Backend-Version`` (from ``VERSION``), and for the demo
  ``X-Backend-Instance`` (from ``INMESH_DEMO_INSTANCE``) and
  ``X-Backend-Attempt`` (the ``x-envoy-attempt-count`` the caller's mesh
  sent: 2 and more after a retry).
* :func:`make_frontend` (ASGI, ``inmesh serve --factory``): ``GET /`` calls
  ``http://backend:8080`` through the serving mesh's ``async_transport()``
  and answers ``Frontend says: <the backend's text>`` with the backend's
  ``X-Backend-*`` headers, or 500 ``Error contacting backend`` (with
  ``X-Frontend-Error`` saying why, for the demo's messages).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["BACKEND_TEXT", "Frontend", "backend", "make_frontend"]

BACKEND_TEXT = "Hello from Backend!"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def backend(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The seed's backend: ``Hello from Backend!`` (WSGI)."""
    if environ.get("PATH_INFO", "/") != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found"]
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Backend-Version", os.environ.get("VERSION", "v1")),
        ("X-Backend-Instance", os.environ.get("INMESH_DEMO_INSTANCE", "backend")),
        ("X-Backend-Attempt", environ.get("HTTP_X_ENVOY_ATTEMPT_COUNT", "1")),
    ]
    start_response("200 OK", headers)
    return [BACKEND_TEXT.encode()]


class Frontend:
    """The seed's frontend (ASGI): calls ``http://backend:8080`` through the mesh."""

    def __init__(self, mesh: Any) -> None:
        self._mesh = mesh
        """The serving mesh (it belongs to ``inmesh serve``, which closes it)."""
        self._client: Any = None

    def _start(self) -> Any:
        # Synchronous: no await between the check and the assignment, so one
        # event loop never builds two clients.
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(transport=self._mesh.async_transport())
        return self._client

    async def _stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/":
            await _reply(send, 404, "Not Found")
            return
        import httpx

        client = self._start()
        try:
            answer = await client.get("http://backend:8080")
            answer.raise_for_status()  # like the seed's axios: non-2xx is an error
        except httpx.HTTPStatusError as exc:
            r = exc.response
            info = r.extensions.get("inmesh.request_info")  # Envoy's response flags
            flags = f" {info.flags}" if info is not None else ""
            why = f"{r.status_code}{flags} {r.text[:60]}"
            await _reply(
                send, 500, "Error contacting backend", [(b"x-frontend-error", _latin1(why))]
            )
            return
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
            await _reply(
                send, 500, "Error contacting backend", [(b"x-frontend-error", _latin1(why))]
            )
            return
        extra = [
            (k.encode(), v.encode())
            for k, v in answer.headers.items()
            if k.startswith("x-backend-")
        ]
        await _reply(send, 200, f"Frontend says: {answer.text}", extra)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _latin1(text: str) -> bytes:
    return " ".join(text.split()).encode("latin-1", "replace")


async def _reply(
    send: Send, status: int, text: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_frontend(mesh: Any) -> Frontend:
    """The frontend made from the serving mesh: ``inmesh serve inmesh.demo.apps:make_frontend --factory``."""
    return Frontend(mesh)
