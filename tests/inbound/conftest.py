"""Shared fixtures for the inbound tests: a mesh CA, certificates, contexts, apps, processes.

Real things only: certificates from :class:`LocalCA`, servers on 127.0.0.1 with
ephemeral ports, httpx clients holding real client certificates, real
subprocesses for the CLI, uvicorn's CLI and gunicorn.

The test apps (FastAPI and Flask) are written once, as :data:`APPS_SOURCE`:
in-process tests load it as a module, subprocess tests import it from a file
written into a temporary directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.identity.sources import CertificateSource, MemorySource
from inmesh.identity.spiffe import SpiffeId
from inmesh.identity.tls import build_client_context
from inmesh.model import Workload
from inmesh.policy.authz import AuthzEvaluator
from inmesh.policy.peer_authn import MtlsMode

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend-sa"
BACKEND = "spiffe://cluster.local/ns/default/sa/backend-sa"
BACKEND_WORKLOAD = Workload("backend", service_account="backend-sa", labels={"app": "backend"})

APPS_SOURCE = textwrap.dedent(
    '''
    """Test apps: each endpoint reports what the app sees of its caller."""
    import os

    import a2wsgi
    import flask
    from fastapi import FastAPI, Request

    from inmesh.inbound.asgi import MeshASGIMiddleware, peer_of
    from inmesh.inbound.wsgi import MeshWSGIMiddleware

    fastapi_app = FastAPI()
    CALLS = {"fastapi": 0, "flask": 0}


    @fastapi_app.api_route("/whoami", methods=["GET", "POST"])
    async def whoami(request: Request):
        CALLS["fastapi"] += 1
        state_peer = getattr(request.state, "inmesh_peer", "unset")
        return {
            "app": "fastapi",
            "peer": None if peer_of(request.scope) is None else str(peer_of(request.scope)),
            "state_peer": state_peer if state_peer in (None, "unset") else str(state_peer),
            "xfcc": request.headers.getlist("x-forwarded-client-cert"),
            "scheme": request.url.scheme,
        }


    flask_app = flask.Flask("inbound_test_flask")


    @flask_app.route("/whoami", methods=["GET", "POST"])
    def flask_whoami():
        CALLS["flask"] += 1
        peer = flask.request.environ.get("inmesh.peer", "unset")
        xfcc = flask.request.headers.get("X-Forwarded-Client-Cert")
        return {
            "app": "flask",
            "peer": peer if peer in (None, "unset") else str(peer),
            "xfcc": [] if xfcc is None else [xfcc],
            "scheme": flask.request.scheme,
        }


    def _context():
        """For servers configured outside inmesh (uvicorn CLI, gunicorn): from env vars."""
        from inmesh.identity.sources import DirectorySource
        from inmesh.inbound.context import StaticInboundContext
        from inmesh.model import Workload
        from inmesh.policy.peer_authn import MtlsMode

        source = DirectorySource(os.environ["INBOUND_TEST_CERT_DIR"], poll_interval=0)
        source.start()
        return StaticInboundContext(
            Workload("backend", service_account="backend-sa"),
            source,
            mode=MtlsMode(os.environ.get("INBOUND_TEST_MODE", "STRICT")),
        )


    if os.environ.get("INBOUND_TEST_CERT_DIR"):
        CONTEXT = _context()
        # ASGI: FastAPI behind the middleware (uvicorn CLI, gunicorn's uvicorn worker)
        asgi_app = MeshASGIMiddleware(fastapi_app, CONTEXT)
        # ASGI: Flask through a2wsgi behind the middleware
        flask_asgi_app = MeshASGIMiddleware(
            a2wsgi.WSGIMiddleware(MeshWSGIMiddleware(flask_app, CONTEXT)), CONTEXT
        )
        # WSGI: Flask behind the WSGI middleware (gunicorn sync worker)
        flask_app.wsgi_app = MeshWSGIMiddleware(flask_app.wsgi_app, CONTEXT)
    '''
)


def load_apps() -> types.ModuleType:
    """A fresh copy of the test apps module (in-process)."""
    module = types.ModuleType("inbound_test_apps")
    exec(compile(APPS_SOURCE, "inbound_test_apps.py", "exec"), module.__dict__)
    return module


@pytest.fixture
def apps() -> types.ModuleType:
    return load_apps()


@pytest.fixture(scope="session")
def apps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``inbound_test_apps.py`` for subprocesses."""
    d = tmp_path_factory.mktemp("apps")
    (d / "inbound_test_apps.py").write_text(APPS_SOURCE)
    return d


# -- certificates ---------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="session")
def ca() -> LocalCA:
    """The mesh CA (root + intermediate), trust domain cluster.local."""
    return LocalCA.create(intermediate=True)


@pytest.fixture(scope="session")
def other_ca() -> LocalCA:
    """Another CA for the same trust domain name: not trusted by the mesh."""
    return LocalCA.create()


@pytest.fixture(scope="session")
def backend_cert(ca: LocalCA) -> WorkloadCertificate:
    return ca.issue(BACKEND)


@pytest.fixture(scope="session")
def frontend_cert(ca: LocalCA) -> WorkloadCertificate:
    return ca.issue(FRONTEND)


@pytest.fixture
def backend_source(backend_cert: WorkloadCertificate) -> Iterator[MemorySource]:
    source = MemorySource(backend_cert)
    source.start()
    yield source
    source.close()


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory, backend_cert: WorkloadCertificate) -> Path:
    """Istio's three files for the backend."""
    d = tmp_path_factory.mktemp("backend-certs")
    backend_cert.write(d)
    return d


def client_context(cert: WorkloadCertificate) -> ssl.SSLContext:
    """A client context presenting ``cert`` and trusting its bundle."""
    return build_client_context(cert)


def no_cert_context(ca: LocalCA) -> ssl.SSLContext:
    """A TLS client trusting the mesh root but presenting no certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca.trust_bundle_pem.decode())
    return ctx


def expected_xfcc(client: WorkloadCertificate, server: str = BACKEND) -> str:
    """The XFCC an Istio sidecar gives the app for ``client`` calling ``server``."""
    digest = hashlib.sha256(client.der).hexdigest()
    return f'By={server};Hash={digest};Subject="";URI={client.spiffe_id.uri}'


# -- contexts -------------------------------------------------------------------


@dataclass
class MutableContext:
    """An InboundContext whose mode can change (as a config reload would)."""

    certificates: CertificateSource | None
    mode: MtlsMode = MtlsMode.STRICT
    port_modes: dict[int, MtlsMode] = field(default_factory=dict)
    trusted_proxy_xfcc: bool = False
    workload: Workload = BACKEND_WORKLOAD
    evaluator: AuthzEvaluator | None = None
    path_normalization: str = "BASE"

    def authorizer(self) -> AuthzEvaluator | None:
        return self.evaluator

    def local_identity(self) -> SpiffeId | None:
        return None if self.certificates is None else self.certificates.current().spiffe_id

    def mtls_mode(self, port: int | None) -> MtlsMode:
        if port is not None and port in self.port_modes:
            return self.port_modes[port]
        return self.mode


@pytest.fixture
def context(backend_source: MemorySource) -> MutableContext:
    return MutableContext(backend_source)


# -- threads ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Every thread a test starts must be gone (joined) shortly after it ends."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left running: {extra}")
        time.sleep(0.02)


# -- clients and processes ----------------------------------------------------------


def whoami(
    client: httpx.Client, base: str, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    r = client.get(f"{base}/whoami", headers=headers)
    assert r.status_code == 200, (r.status_code, r.text)
    data: dict[str, Any] = r.json()
    return data


@dataclass
class Process:
    """A server subprocess whose stderr goes to a file."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"did not stop on {sig}:\n{self.output()}") from None
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_process(
    args: list[str],
    ready: str,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> Process:
    """Start ``args``; wait until stderr matches ``ready`` (a regex with a ``port`` group)."""
    log = cwd / f"server-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    pattern = re.compile(ready)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pattern.search(log.read_text(errors="replace"))
        if m:
            return Process(proc, log, int(m.group("port")))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    raise AssertionError(f"{args[:4]} did not become ready:\n{log.read_text(errors='replace')}")


PYTHON = sys.executable
