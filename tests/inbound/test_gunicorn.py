"""Real gunicorn: the sync/gthread workers with the WSGI middleware (Flask), the uvicorn worker
with inmesh's protocol and the ASGI middleware (FastAPI)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from inmesh.identity.ca import LocalCA
from inmesh.identity.certificate import WorkloadCertificate

from .conftest import (
    FRONTEND,
    PYTHON,
    client_context,
    expected_xfcc,
    no_cert_context,
    start_process,
    whoami,
)

pytestmark = pytest.mark.e2e

READY = r"Listening at: https://127\.0\.0\.1:(?P<port>\d+)"


def gunicorn(app: str, worker: str, cert_dir: Path) -> list[str]:
    return [
        PYTHON,
        "-m",
        "gunicorn",
        app,
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--worker-class",
        worker,
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
    ]


@pytest.mark.parametrize(
    ("app", "worker"),
    [
        ("inbound_test_apps:flask_app", "sync"),
        ("inbound_test_apps:flask_app", "gthread"),
        ("inbound_test_apps:asgi_app", "inmesh.inbound.uvicorn.UvicornWorker"),
    ],
)
def test_gunicorn(
    apps_dir: Path,
    cert_dir: Path,
    frontend_cert: WorkloadCertificate,
    ca: LocalCA,
    app: str,
    worker: str,
) -> None:
    proc = start_process(
        gunicorn(app, worker, cert_dir),
        READY,
        cwd=apps_dir,
        env={"INBOUND_TEST_CERT_DIR": str(cert_dir)},
    )
    base = f"https://127.0.0.1:{proc.port}"
    try:
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            for _ in range(2):
                seen = whoami(client, base, {"x-forwarded-client-cert": "By=spiffe://evil"})
                assert seen["peer"] == FRONTEND, proc.output()
                assert seen["xfcc"] == [expected_xfcc(frontend_cert)]
        # gunicorn's handshake requires a client certificate (--cert-reqs 2)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/whoami", verify=no_cert_context(ca))
        # a certificate of the same CA but another trust domain: refused by inmesh
        foreign = ca.issue("spiffe://other.domain/ns/default/sa/frontend-sa")
        r = httpx.get(f"{base}/whoami", verify=client_context(foreign))
        assert r.status_code == 403
        assert r.text == "peer authentication failed: client trust domain not accepted"
    finally:
        assert proc.stop() == 0, proc.output()
