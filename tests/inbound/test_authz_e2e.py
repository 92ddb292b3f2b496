"""AuthorizationPolicy end to end: a real :class:`inmesh.Mesh`, a real server, real mTLS.

The seed's policies (tests/data/seeds/01 and 02) are loaded from files by a
mesh for the backend workload (labels ``app=backend``); requests come over
TLS with real client certificates (or plaintext under PERMISSIVE). What a
denied client sees: ``403``, ``content-type: text/plain``, body ``RBAC: access
denied``; the app is not called.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmesh import Mesh
from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import MemorySource
from inmesh.inbound.asgi import decision_of
from inmesh.inbound.serve import BackgroundServer, serve_in_thread
from inmesh.policy.authz import AuthzRequest, ExternalDecision

from .conftest import BACKEND_WORKLOAD, FRONTEND, client_context

SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"
STRICT_SEED = SEEDS / "01-peer-authentication-strict.yaml"
ALLOW_SEED = SEEDS / "02-authz-allow-frontend-to-backend.yaml"
OTHER = "spiffe://cluster.local/ns/default/sa/other-sa"

PERMISSIVE = """
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
"""


def policy(name: str, spec: str, annotations: str = "") -> str:
    meta = f"{{name: {name}, namespace: default{', annotations: ' + annotations if annotations else ''}}}"
    return (
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
        f"metadata: {meta}\nspec:\n" + "\n".join("  " + line for line in spec.splitlines())
    )


class App:
    """A raw ASGI app that records what it served."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        decision = decision_of(scope)
        with self.lock:
            self.seen.append(
                {
                    "path": scope["path"],
                    "raw_path": scope.get("raw_path"),
                    "peer": None if decision is None else str(decision.peer_id),
                    "policy": None if decision is None else decision.policy_id,
                }
            )
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served " + scope["path"].encode()})


@pytest.fixture
def other_cert(ca: LocalCA) -> WorkloadCertificate:
    return ca.issue(OTHER)


def make_mesh(config_dir: Path, backend_cert: WorkloadCertificate, **kw: Any) -> Mesh:
    source = MemorySource(backend_cert)
    return Mesh([config_dir], workload=BACKEND_WORKLOAD, identity=source, poll_interval=0.05, **kw)


@pytest.fixture
def served(
    tmp_path: Path, backend_cert: WorkloadCertificate
) -> Iterator[tuple[Path, Mesh, App, BackgroundServer]]:
    """A mesh over a config directory holding the seed (01 + 02), and a server."""
    config = tmp_path / "mesh"
    config.mkdir()
    shutil.copy(STRICT_SEED, config)
    shutil.copy(ALLOW_SEED, config)
    app = App()
    with make_mesh(config, backend_cert) as mesh, serve_in_thread(app, mesh) as server:
        yield config, mesh, app, server


def get(cert: WorkloadCertificate | None, port: int, path: str = "/api") -> httpx.Response:
    if cert is None:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    return httpx.get(f"https://127.0.0.1:{port}{path}", verify=client_context(cert), timeout=5)


def assert_rbac_denied(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.text == "RBAC: access denied"
    assert r.headers["content-type"] == "text/plain"
    assert "connection" not in r.headers or r.headers["connection"] != "close"


def wait_for(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_seed_frontend_allowed_other_denied(
    served: tuple[Path, Mesh, App, BackgroundServer],
    frontend_cert: WorkloadCertificate,
    other_cert: WorkloadCertificate,
) -> None:
    _, _, app, server = served
    r = get(frontend_cert, server.port)
    assert r.status_code == 200 and r.text == "served /api"
    assert app.seen == [
        {
            "path": "/api",
            "raw_path": b"/api",
            "peer": FRONTEND,
            "policy": "ns[default]-policy[allow-frontend-to-backend]-rule[0]",
        }
    ]
    assert_rbac_denied(get(other_cert, server.port))
    assert len(app.seen) == 1  # the app was not called


def test_permissive_plaintext_caller_is_denied(
    tmp_path: Path, backend_cert: WorkloadCertificate, frontend_cert: WorkloadCertificate
) -> None:
    config = tmp_path / "mesh"
    config.mkdir()
    (config / "pa.yaml").write_text(PERMISSIVE)
    shutil.copy(ALLOW_SEED, config)
    app = App()
    with make_mesh(config, backend_cert) as mesh, serve_in_thread(app, mesh) as server:
        assert_rbac_denied(get(None, server.port))  # plaintext: no principal
        assert get(frontend_cert, server.port).status_code == 200
        assert [s["peer"] for s in app.seen] == [FRONTEND]


def test_allow_nothing_deny_by_path_and_reload(
    served: tuple[Path, Mesh, App, BackgroundServer],
    frontend_cert: WorkloadCertificate,
) -> None:
    config, mesh, app, server = served
    assert get(frontend_cert, server.port).status_code == 200

    # allow-nothing: replaces the seed's ALLOW policy; reloaded without a restart
    (config / ALLOW_SEED.name).write_text(policy("allow-nothing", "{}"))
    wait_for(lambda: get(frontend_cert, server.port).status_code == 403)
    assert_rbac_denied(get(frontend_cert, server.port, "/anything"))

    # DENY by path (and nothing else): /admin is denied, the rest allowed
    (config / ALLOW_SEED.name).write_text(
        policy(
            "deny-admin",
            "action: DENY\nrules:\n- to:\n  - operation: {paths: [/admin, /admin/*]}",
        )
    )
    wait_for(lambda: get(frontend_cert, server.port).status_code == 200)
    r = get(frontend_cert, server.port, "/admin/x")
    assert_rbac_denied(r)
    # a dot-segment spelling is normalized before matching (httpx keeps %2e)
    assert_rbac_denied(get(frontend_cert, server.port, "/public/%2e%2e/admin"))
    n = len(app.seen)
    assert get(frontend_cert, server.port, "/public/%2E%2e/ok").status_code == 200
    assert app.seen[n]["path"] == "/ok"  # the app sees the normalized path
    assert all(not s["path"].startswith("/admin") for s in app.seen)
    assert mesh.authorizer() is not None


def test_custom_authorizer_status_body_headers(
    tmp_path: Path, backend_cert: WorkloadCertificate, frontend_cert: WorkloadCertificate
) -> None:
    asked: list[tuple[str, str]] = []

    class Hook:
        def check(self, request: AuthzRequest, provider: str) -> bool | ExternalDecision:
            asked.append((provider, request.path))
            time.sleep(0.01)  # blocking is fine: the ASGI middleware runs it in a thread
            if request.path.startswith("/secret"):
                return ExternalDecision(False, 401, b"no", headers=(("x-why", "hook"),))
            return ExternalDecision(True, upstream_headers=(("x-user", "alice"),))

    config = tmp_path / "mesh"
    config.mkdir()
    shutil.copy(STRICT_SEED, config)
    (config / "custom.yaml").write_text(
        policy("ext", "action: CUSTOM\nprovider: {name: hook}\nrules:\n- {}")
    )
    app = App()
    with (
        make_mesh(config, backend_cert, custom_authorizer=Hook()) as mesh,
        serve_in_thread(app, mesh) as server,
    ):
        r = get(frontend_cert, server.port, "/secret")
        assert r.status_code == 401 and r.text == "no"
        assert r.headers["x-why"] == "hook"
        assert get(frontend_cert, server.port, "/open").status_code == 200
    assert asked == [("hook", "/secret"), ("hook", "/open")]
    assert [s["path"] for s in app.seen] == ["/open"]


def test_audit_and_dry_run_are_logged(
    tmp_path: Path,
    backend_cert: WorkloadCertificate,
    frontend_cert: WorkloadCertificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = tmp_path / "mesh"
    config.mkdir()
    shutil.copy(STRICT_SEED, config)
    (config / "audit.yaml").write_text(
        policy("audit-all", "action: AUDIT\nrules:\n- to:\n  - operation: {paths: [/api]}")
    )
    (config / "dry.yaml").write_text(
        policy(
            "dry-deny",
            "action: DENY\nrules:\n- {}",
            annotations='{"istio.io/dry-run": "true"}',
        )
    )
    app = App()
    caplog.set_level(logging.INFO, logger="inmesh.authz")
    with make_mesh(config, backend_cert) as mesh, serve_in_thread(app, mesh) as server:
        assert get(frontend_cert, server.port).status_code == 200  # dry-run never enforces
    lines = [r.getMessage() for r in caplog.records if r.name == "inmesh.authz"]
    assert len(lines) == 2, lines
    audit, dry = lines
    assert audit.startswith("AUDIT GET /api") and "policy[audit-all]" in audit
    assert dry.startswith("dry-run GET /api") and "DENY:denied" in dry, dry


def test_wsgi_middleware_paths_and_denial(
    tmp_path: Path, backend_cert: WorkloadCertificate
) -> None:
    """The WSGI twin, in process: SCRIPT_NAME kept, PATH_INFO normalized, 403/400/404."""
    from inmesh.inbound.wsgi import MeshWSGIMiddleware, decision_of

    config = tmp_path / "mesh"
    config.mkdir()
    (config / "pa.yaml").write_text(PERMISSIVE)
    (config / "deny.yaml").write_text(
        policy("deny-admin", "action: DENY\nrules:\n- to:\n  - operation: {paths: [/app/admin*]}")
    )
    seen: list[tuple[str, str, str | None]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        decision = decision_of(environ)
        assert decision is not None and decision.authz is not None
        seen.append((environ["SCRIPT_NAME"], environ["PATH_INFO"], environ.get("RAW_URI")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def call(raw_uri: str, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "/app",
            "PATH_INFO": "/ignored",
            "RAW_URI": raw_uri,
            "QUERY_STRING": "",
            "SERVER_PORT": "8080",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http",
        }
        got: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            got["status"], got["headers"] = status, dict(headers)

        body = b"".join(wsgi(environ, start_response))
        return got["status"], got["headers"], body

    with make_mesh(config, backend_cert) as mesh:
        wsgi = MeshWSGIMiddleware(app, mesh)
        assert call("/app/x/%2e%2E/y?q=1")[0] == "200 OK"
        assert seen == [("/app", "/y", "/app/y?q=1")]
        status, headers, body = call("/app/x/../admin/z")
        assert (status, body) == ("403 Forbidden", b"RBAC: access denied")
        assert headers == {"Content-Type": "text/plain", "Content-Length": "19"}
        assert call("/app/%00") == ("400 Bad Request", {"Content-Length": "0"}, b"")
        assert call("/app/../admin") == ("404 Not Found", {"Content-Length": "0"}, b"")
        assert call("/app/x", method="get")[0] == "400 Bad Request"
        assert len(seen) == 1
