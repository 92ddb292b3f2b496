"""Path spellings against path-based AuthorizationPolicies, on real servers over mTLS.

A corpus of request targets, written raw on a TLS socket (an HTTP client
would normalize them), against

* (a) a DENY policy on ``/admin`` and ``/admin/*`` (with Istio's
  ``DECODE_AND_MERGE_SLASHES``, the normalization Istio recommends when DENY
  policies name paths: under ``BASE`` ``/admin%2Fx`` is *not* ``/admin/x``
  for the policy, but most apps decode it, CVE-2021-31920), and
* (a') the same DENY policy under Istio's default ``BASE``: the app is given
  the escaped slash still escaped, so it routes on the segments the policy saw,
* (b) an ALLOW policy on ``/public/*`` (Istio's default ``BASE``),

served by uvicorn (:func:`inmesh.inbound.serve.serve_in_thread`, ASGI) and
by gunicorn (a subprocess, sync worker, Flask behind
:class:`~inmesh.inbound.wsgi.MeshWSGIMiddleware`, TLS with ``--cert-reqs 2``).
The app records every path it serves. For every spelling:

* the policy's verdict on the normalized path decides: a denied request is
  never served (403 ``RBAC: access denied``), whatever the spelling;
* a spelling Envoy refuses (``%00``, ``#``...) gets 400 and is not served;
* a served request shows the app exactly the normalized path.
"""

from __future__ import annotations

import ast
import socket
import ssl
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inmesh import Mesh
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import MemorySource
from inmesh.policy.normalize import NormalizedPath, normalize_path

from .conftest import BACKEND_WORKLOAD, PYTHON, client_context, start_process

CORPUS: list[bytes] = [
    # plain
    b"/admin",
    b"/admin/",
    b"/admin/users",
    b"/public/x",
    b"/public/",
    # dot segments
    b"/public/../admin",
    b"/public/../admin/users",
    b"/x/../admin",
    b"/./admin",
    b"/admin/.",
    b"/admin/..",
    b"/admin/x/..",
    b"/../admin",
    b"/../../admin/x",
    b"/public/./../admin",
    # encoded dots, any case
    b"/%2e%2e/admin",
    b"/public/%2e%2e/admin",
    b"/public/%2E%2e/admin",
    b"/public/%2E%2E/admin/x",
    b"/public/.%2e/admin",
    b"/%2eadmin",
    b"/%61dmin",
    b"/%61%64%6d%69%6e/x",
    b"/admi%6E",
    # slashes
    b"//admin",
    b"///admin/x",
    b"/public//../admin",
    b"/admin%2fx",
    b"/admin%2Fx",
    b"/public%2f..%2fadmin",
    b"/public/..%2fadmin",
    b"/public/..%2Fadmin/x",
    b"/public%2f%2e%2e%2fadmin",
    # backslashes
    b"/public\\..\\admin",
    b"/admin\\x",
    b"/public/..%5cadmin",
    b"/public/%2e%2e%5cadmin",
    b"\\admin",
    # case, parameters
    b"/ADMIN",
    b"/Admin/x",
    b"/admin;x=1",
    b"/admin;/x",
    b"/public/..;/admin",
    b"/public/.;x/../admin",
    b"/public/x/..;y/../admin",
    # NUL, fragments
    b"/admin%00",
    b"/public/x%00/../../admin",
    b"/public/%00",
    b"/admin#frag",
    b"/public/x#/../../admin",
    # trailing dots, overlong UTF-8, double encoding
    b"/admin/.%2e",
    b"/public/%c0%ae%c0%ae/admin",
    b"/public/%c0%ae%c0%ae%c0%afadmin",
    b"/public/%252e%252e/admin",
    b"/%252e%252e/admin",
    b"/%25%32%65%25%32%65/admin",
    # tabs, spaces, unicode
    b"/admin\t",
    b"/public/%09/../../admin",
    b"/admin%20",
    b"/public/\xc3\xa9/../../admin",
    b"/adm\xc3\xadn",
    b"/public/%e2%80%ae/x",
    # queries
    b"/public/x?/../../admin",
    b"/admin?x=/public/",
    b"/public/x?a=%2e%2e",
]
assert len(CORPUS) >= 40


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str
    policy: str
    denies: Callable[[str], bool]


def under_admin(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


DENY_ADMIN = Scenario(
    "deny-admin",
    "DECODE_AND_MERGE_SLASHES",
    "action: DENY\n  rules:\n  - to:\n    - operation: {paths: [/admin, /admin/*]}",
    under_admin,
)
ALLOW_PUBLIC = Scenario(
    "allow-public",
    "BASE",
    "action: ALLOW\n  rules:\n  - to:\n    - operation: {paths: [/public/*]}",
    lambda path: not path.startswith("/public/"),
)
# Under Istio's default BASE the policy sees /admin%2Fx as one segment; inmesh
# hands the app the same segments (the escaped slash stays escaped), so the
# CVE-2021-31920 mismatch cannot happen in-process even without DECODE_AND_MERGE_SLASHES.
DENY_ADMIN_BASE = Scenario("deny-admin-base", "BASE", DENY_ADMIN.policy, under_admin)
SCENARIOS = [DENY_ADMIN, DENY_ADMIN_BASE, ALLOW_PUBLIC]

PA = """apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


def write_config(directory: Path, scenario: Scenario) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pa.yaml").write_text(PA)
    (directory / "ap.yaml").write_text(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {scenario.name}, namespace: default}}\n"
        f"spec:\n  {scenario.policy}\n"
    )
    return directory


# -- a raw TLS client -----------------------------------------------------------------


def raw_request(port: int, ctx: ssl.SSLContext, target: bytes, probe: int) -> tuple[int, bytes]:
    """Send ``GET <target> HTTP/1.1`` verbatim; (status, body) -- status 0: no response."""
    request = (
        b"GET " + target + b" HTTP/1.1\r\nHost: backend\r\n"
        b"X-Probe: " + str(probe).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        tls.sendall(request)
        chunks: list[bytes] = []
        while True:
            try:
                data = tls.recv(65536)
            except (ssl.SSLError, ConnectionError):
                break
            if not data:
                break
            chunks.append(data)
    response = b"".join(chunks)
    if not response.startswith(b"HTTP/1."):
        return 0, response
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- the servers ----------------------------------------------------------------------


class Recorder:
    """A raw ASGI app recording (probe, path, raw_path) of what it serves."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str, bytes]] = {}
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        probe = int(dict(scope["headers"]).get(b"x-probe", b"-1"))
        with self.lock:
            self.seen[probe] = (scope["path"], scope["raw_path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})


GUNICORN_APP = textwrap.dedent(
    '''
    """Flask behind the inmesh WSGI middleware; records every PATH_INFO it serves."""
    import os

    import flask

    from inmesh import Mesh
    from inmesh.inbound.wsgi import MeshWSGIMiddleware
    from inmesh.model import Workload

    LOG = os.environ["ATTACK_LOG"]
    flask_app = flask.Flask("attack")


    @flask_app.route("/", defaults={"rest": ""})
    @flask_app.route("/<path:rest>")
    def anything(rest):
        return "served " + flask.request.path


    def recorder(app):
        def wrapped(environ, start_response):
            with open(LOG, "a", encoding="utf-8") as log:
                log.write(environ.get("HTTP_X_PROBE", "-1") + "\\t" + repr(environ["PATH_INFO"]) + "\\n")
            return app(environ, start_response)
        return wrapped


    mesh = Mesh(
        [os.environ["ATTACK_CONFIG"]],
        workload=Workload("backend", service_account="backend-sa", labels={"app": "backend"}),
        cert_dir=os.environ["ATTACK_CERTS"],
        path_normalization=os.environ["ATTACK_MODE"],
        watch=False,
    )
    app = MeshWSGIMiddleware(recorder(flask_app.wsgi_app), mesh)
    '''
)


@dataclass
class Served:
    port: int
    seen: Callable[[], dict[int, str]]
    """probe -> the path the app saw (ASGI scope["path"] / WSGI PATH_INFO)"""
    expected: Callable[[NormalizedPath], str]
    """what the app must see for a normalized path"""
    raw: Callable[[], dict[int, bytes]]
    strips_fragment: bool = False
    """uvicorn (httptools and h11) drops ``#...`` before building the scope: the
    middleware cannot see it (nor refuse it as Envoy does); what precedes it is
    matched and served, so it is no bypass."""


@pytest.fixture(params=["uvicorn", "gunicorn"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=SCENARIOS, ids=[s.name for s in SCENARIOS])
def scenario(request: pytest.FixtureRequest) -> Scenario:
    s: Scenario = request.param
    return s


@pytest.fixture
def served(
    flavour: str,
    scenario: Scenario,
    tmp_path: Path,
    backend_cert: WorkloadCertificate,
    cert_dir: Path,
) -> Iterator[Served]:
    config = write_config(tmp_path / "mesh", scenario)
    if flavour == "uvicorn":
        from inmesh.inbound.serve import serve_in_thread

        app = Recorder()
        with (
            Mesh(
                [config],
                workload=BACKEND_WORKLOAD,
                identity=MemorySource(backend_cert),
                path_normalization=scenario.mode,
                watch=False,
            ) as mesh,
            serve_in_thread(app, mesh) as server,
        ):
            yield Served(
                server.port,
                lambda: {k: v[0] for k, v in app.seen.items()},
                lambda n: n.asgi_path,
                lambda: {k: v[1] for k, v in app.seen.items()},
                strips_fragment=True,
            )
        return
    (tmp_path / "attack_app.py").write_text(GUNICORN_APP)
    log = tmp_path / "served.log"
    log.touch()
    proc = start_process(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "attack_app:app",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--worker-class",
            "sync",
            "--certfile",
            str(cert_dir / "cert-chain.pem"),
            "--keyfile",
            str(cert_dir / "key.pem"),
            "--ca-certs",
            str(cert_dir / "root-cert.pem"),
            "--cert-reqs",
            "2",
            "--graceful-timeout",
            "2",
        ],
        r"Listening at: https://127\.0\.0\.1:(?P<port>\d+)",
        cwd=tmp_path,
        env={
            "ATTACK_LOG": str(log),
            "ATTACK_CONFIG": str(config),
            "ATTACK_CERTS": str(cert_dir),
            "ATTACK_MODE": scenario.mode,
        },
    )

    def seen() -> dict[int, str]:
        out: dict[int, str] = {}
        for line in log.read_text(encoding="utf-8").splitlines():
            probe, _, path = line.partition("\t")
            out[int(probe)] = ast.literal_eval(path)
        return out

    try:
        yield Served(proc.port, seen, lambda n: n.wsgi_path_info, dict)
    finally:
        proc.stop()


def test_path_spellings(
    served: Served,
    scenario: Scenario,
    frontend_cert: WorkloadCertificate,
) -> None:
    ctx = client_context(frontend_cert)
    results: dict[int, tuple[bytes, int, bytes, NormalizedPath]] = {}
    for probe, target in enumerate(CORPUS):
        status, body = raw_request(served.port, ctx, target, probe)
        as_seen = target.partition(b"#")[0] if served.strips_fragment else target
        results[probe] = (target, status, body, normalize_path(as_seen, scenario.mode))
    seen = served.seen()
    raw = served.raw()
    problems: list[str] = []
    outcomes: dict[str, int] = {"served": 0, "denied": 0, "refused": 0, "server-refused": 0}
    for probe, (target, status, body, n) in results.items():
        what = f"{target!r} -> {status} {body[:40]!r} (normalized {n.path!r})"
        path = seen.get(probe)
        # never served: anything the policy denies, under any spelling
        if path is not None and scenario.denies(path):
            problems.append(f"served a denied path {path!r}: {what}")
        if not n.ok:
            outcomes["refused"] += 1
            if path is not None or status not in (400, 404):
                problems.append(f"Envoy refuses it ({n.refusal}), expected {n.status}: {what}")
            elif status != n.status and status != 400:
                problems.append(f"expected {n.status}: {what}")
            continue
        if status == 400 and path is None:
            outcomes["server-refused"] += 1  # the HTTP server itself refused the line
            continue
        if scenario.denies(n.path):
            outcomes["denied"] += 1
            if path is not None or status != 403 or body != b"RBAC: access denied":
                problems.append(f"expected 403 RBAC: access denied: {what}")
            continue
        outcomes["served"] += 1
        if path is None:
            problems.append(f"allowed but not served: {what}")
        elif path != served.expected(n):
            problems.append(f"app saw {path!r}, expected {served.expected(n)!r}: {what}")
        elif probe in raw and raw[probe] != n.raw_path:
            problems.append(f"app saw raw_path {raw[probe]!r}, expected {n.raw_path!r}: {what}")
    assert not problems, "\n".join(problems)
    # the corpus exercises every outcome
    assert outcomes["served"] >= 5 and outcomes["denied"] >= 15 and outcomes["refused"] >= 3, (
        outcomes
    )
