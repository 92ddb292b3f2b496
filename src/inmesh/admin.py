"""The admin endpoint: what Envoy's admin interface shows, for an in-process mesh.

Opt-in, and bound to 127.0.0.1 unless told otherwise::

    mesh = inmesh.Mesh(..., admin_port=15000)     # or INMESH_ADMIN_PORT / --admin-port
    app.mount("/mesh", mesh.admin_app())           # or inside an existing ASGI app
    wsgi_app = mesh.admin_wsgi_app()               # or a WSGI one

=====================  ===================================================================
``/stats/prometheus``  the mesh's metrics registry in Prometheus text format (Istio's
                       ``istio_*`` metrics, the ``inmesh_*`` cluster and config metrics);
                       under prometheus-client multiprocess mode, every process's metrics
``/config_dump``       the configuration in force (JSON), as ``inmesh config dump`` prints it
``/clusters``          upstream clusters: endpoints, health, ejections, in-flight requests
                       (Envoy's ``cluster::host::stat::value`` text; ``?format=json``)
``/certs``             the workload identity and trust bundle: SPIFFE ID, serials, validity
                       (never a private key)
``/ready``             ``200 LIVE`` while the mesh runs, ``503`` once closed
=====================  ===================================================================

Everything it shows is read-only. The server is a small stdlib HTTP server on
its own thread (joined on :meth:`Mesh.close`), never on an event loop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from inmesh.mesh import Mesh

__all__ = ["AdminApp", "AdminServer"]

log = logging.getLogger("inmesh.admin")

Reply = tuple[int, str, bytes]

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class AdminApp:
    """The admin pages of one mesh, as a plain handler and as ASGI/WSGI apps."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self._routes: dict[str, Callable[[dict[str, list[str]]], Reply]] = {
            "/": self._index,
            "/stats/prometheus": self._prometheus,
            "/config_dump": self._config_dump,
            "/clusters": self._clusters,
            "/certs": self._certs,
            "/ready": self._ready,
        }

    def handle(self, method: str, path: str, query: str = "") -> Reply:
        """``(status, content type, body)`` for one request."""
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"method not allowed: the admin endpoint is read-only\n"
        route = self._routes.get(path.rstrip("/") or "/")
        if route is None:
            return 404, _TEXT, b"not found; see / for the admin pages\n"
        try:
            return route(parse_qs(query))
        except Exception:
            log.exception("admin page %s failed", path)
            return 500, _TEXT, b"internal error (logged by inmesh.admin)\n"

    # -- pages ------------------------------------------------------------------------

    def _index(self, _: dict[str, list[str]]) -> Reply:
        lines = ["inmesh admin", ""]
        lines += [f"  {p}" for p in self._routes if p != "/"]
        return 200, _TEXT, ("\n".join(lines) + "\n").encode()

    def _prometheus(self, _: dict[str, list[str]]) -> Reply:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.mesh.metrics_registry
        if registry is None:
            return 404, _TEXT, b"metrics are off for this mesh (metrics_registry=None)\n"
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            from inmesh.telemetry.metrics import MeshStateCollector

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            state = MeshStateCollector()
            state.add(self.mesh)
            merged.register(state)
            registry = merged
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    def _config_dump(self, _: dict[str, list[str]]) -> Reply:
        from inmesh.config.dump import snapshot_to_data

        data = snapshot_to_data(self.mesh.snapshot)
        return 200, _JSON, json.dumps(data, indent=2, default=str).encode()

    def _clusters(self, query: dict[str, list[str]]) -> Reply:
        clusters = self.mesh._clusters  # the mesh's cluster manager (None before any request)
        rows: list[dict[str, Any]] = []
        if clusters is not None:
            for name, hosts, runtime in clusters.snapshot():
                outlier = runtime.outlier
                ejected = {id(h) for h in outlier.ejected()} if outlier is not None else set()
                admission = runtime.admission.stats()
                rows.append(
                    {
                        "name": name,
                        "rq_active": admission.active,
                        "rq_pending_active": admission.pending,
                        "upstream_rq_retry": runtime.retries_total(),
                        "upstream_rq_pending_overflow": admission.overflow_total,
                        "outlier_detection_ejections": runtime.ejections_total(),
                        "hosts": [
                            {
                                "address": f"{h.endpoint.address}:{h.endpoint.port}",
                                "weight": h.weight,
                                "locality": h.locality or "",
                                "rq_active": h.active,
                                "health_flags": (
                                    "/failed_outlier_check"
                                    if id(h) in ejected
                                    else ("healthy" if h.healthy else "/failed_active_hc")
                                ),
                            }
                            for h in hosts
                        ],
                    }
                )
        if query.get("format", [""])[0] == "json":
            return 200, _JSON, json.dumps({"clusters": rows}, indent=2).encode()
        lines: list[str] = []
        for c in rows:
            n = c["name"]
            for stat in (
                "rq_active",
                "rq_pending_active",
                "upstream_rq_retry",
                "upstream_rq_pending_overflow",
                "outlier_detection_ejections",
            ):
                lines.append(f"{n}::{stat}::{c[stat]}")
            for h in c["hosts"]:
                prefix = f"{n}::{h['address']}"
                lines.append(f"{prefix}::weight::{h['weight']}")
                lines.append(f"{prefix}::rq_active::{h['rq_active']}")
                lines.append(f"{prefix}::health_flags::{h['health_flags']}")
                if h["locality"]:
                    lines.append(f"{prefix}::locality::{h['locality']}")
        return 200, _TEXT, ("\n".join(lines) + "\n" if lines else "").encode()

    def _certs(self, _: dict[str, list[str]]) -> Reply:
        source = self.mesh.certificates
        if source is None:
            return 200, _JSON, json.dumps({"certificates": []}).encode()
        cert = source.current()
        now = dt.datetime.now(dt.timezone.utc)

        def describe(c: Any) -> dict[str, Any]:
            not_after = c.not_valid_after_utc
            return {
                "serial_number": format(c.serial_number, "x"),
                "subject": c.subject.rfc4514_string(),
                "valid_from": c.not_valid_before_utc.isoformat(),
                "expiration_time": not_after.isoformat(),
                "days_until_expiration": int((not_after - now).total_seconds() // 86400),
                "seconds_until_expiration": int((not_after - now).total_seconds()),
            }

        doc = {
            "certificates": [
                {
                    "spiffe_id": str(cert.spiffe_id),
                    "version": cert.version,
                    "cert_chain": [describe(c) for c in cert.chain],  # the leaf first
                    "ca_cert": [describe(c) for c in cert.trust_bundle],
                }
            ]
        }
        return 200, _JSON, json.dumps(doc, indent=2).encode()

    def _ready(self, _: dict[str, list[str]]) -> Reply:
        if self.mesh.closed:
            return 503, _TEXT, b"PRE_INITIALIZING\n"
        return 200, _TEXT, b"LIVE\n"

    # -- adapters ---------------------------------------------------------------------

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI app (HTTP only). Mounted under a prefix, ``root_path`` is stripped."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        path = scope.get("path", "/")
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        status, ctype, body = self.handle(
            scope.get("method", "GET"), path, scope.get("query_string", b"").decode("latin-1")
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
        )

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """WSGI app."""
        status, ctype, body = self.handle(
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("PATH_INFO", "/") or "/",
            environ.get("QUERY_STRING", ""),
        )
        from http import HTTPStatus

        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", ctype), ("Content-Length", str(len(body)))],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]


class AdminServer:
    """The admin pages served on ``host:port`` from a background thread."""

    def __init__(self, mesh: Mesh, *, host: str = "127.0.0.1", port: int = 0) -> None:
        app = AdminApp(mesh)

        class Handler(BaseHTTPRequestHandler):
            server_version = "inmesh-admin"

            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                status, ctype, body = app.handle(self.command, path, query)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = _serve  # noqa: N815 - http.server's naming
            do_HEAD = _serve  # noqa: N815
            do_POST = _serve  # noqa: N815
            do_PUT = do_DELETE = do_PATCH = _serve  # noqa: N815 - 405, as mounted

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("admin: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.25},
            name=f"inmesh-admin-{self.address[1]}",
            daemon=True,
        )
        self._thread.start()
        log.info("admin endpoint on http://%s:%d/", *self.address)

    def close(self) -> None:
        """Stop serving and join the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
