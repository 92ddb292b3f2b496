"""Certificate rotation under load, over real mTLS between inmesh's server and connector.

Server and client certificates are rotated every 2 s for 30 s (set
INMESH_ROTATION_SECONDS to change it) while two client threads send requests
continuously — half of them on fresh connections. Acceptance: zero failed
requests, and new connections present the new certificates on both sides.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from pathlib import Path

import httpcore
import pytest
from cryptography import x509

import inmesh
from inmesh.identity.ca import LocalCA
from inmesh.identity.sources import MemorySource
from inmesh.identity.spiffe import SpiffeId
from inmesh.inbound.serve import serve_in_thread
from inmesh.outbound._sync.connect import Connector
from inmesh.upstream.tls import UpstreamTLS, UpstreamTLSMode

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DURATION = float(os.environ.get("INMESH_ROTATION_SECONDS", "30"))
PERIOD = 2.0
FRONTEND = SpiffeId.for_workload("default", "frontend-sa")
BACKEND = SpiffeId.for_workload("default", "backend-sa")
STRICT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


def serial_of_pem(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    chain = scope["extensions"]["tls"]["client_cert_chain"]
    body = str(serial_of_pem(chain[0])).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def server_serial(port: int, client: inmesh.identity.WorkloadCertificate) -> int:  # type: ignore[name-defined]
    from inmesh.identity.tls import build_client_context

    ctx = build_client_context(client)
    import socket

    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_rotation_under_load(tmp_path: Path) -> None:
    (tmp_path / "pa.yaml").write_text(STRICT)
    ca = LocalCA.create()
    server_source = MemorySource(ca.issue(BACKEND))
    client_source = MemorySource(ca.issue(FRONTEND))
    client_source.start()
    workload = inmesh.Workload("backend", service_account="backend-sa", labels={"app": "backend"})
    mesh = inmesh.Mesh(tmp_path, workload=workload, identity=server_source)
    server = serve_in_thread(app, mesh, port=0)
    tls = UpstreamTLS(
        mode=UpstreamTLSMode.ISTIO_MUTUAL, subject_alt_names=frozenset({str(BACKEND)})
    )
    connector = Connector(client_source)
    stop = threading.Event()
    ok = [0, 0]
    failures: list[str] = []
    seen_client_serials: set[int] = set()
    lock = threading.Lock()

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            headers = [(b"host", b"backend:8080")]
            if i % 2:
                headers.append((b"connection", b"close"))
            req = httpcore.Request("GET", f"https://127.0.0.1:{server.port}/", headers=headers)
            try:
                resp = connector.handle_request("outbound|8080||backend", tls, req)
                body = b"".join(resp.stream)  # type: ignore[union-attr]
                resp.close()
                if resp.status != 200:
                    failures.append(f"status {resp.status}")
                    continue
                with lock:
                    ok[worker] += 1
                    seen_client_serials.add(int(body))
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(2)]
    for t in threads:
        t.start()
    rotations = 0
    try:
        deadline = time.monotonic() + DURATION
        while time.monotonic() < deadline:
            time.sleep(PERIOD)
            new_server = ca.issue(BACKEND)
            new_client = ca.issue(FRONTEND)
            server_source.update(new_server)
            client_source.update(new_client)
            rotations += 1
            # A new connection to the server now gets the new server certificate...
            assert server_serial(server.port, new_client) == new_server.serial_number
            # ...and the server sees the new client certificate on new connections.
            target = new_client.serial_number
            end = time.monotonic() + 1.5
            while target not in seen_client_serials and time.monotonic() < end:
                time.sleep(0.01)
            assert target in seen_client_serials, f"rotation {rotations}: new client cert not seen"
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        connector.close()
        server.stop()
        mesh.close()
    assert rotations >= int(DURATION / PERIOD) - 1
    assert not failures, failures[:5]
    assert sum(ok) > 100, ok
    print(f"rotations={rotations} requests={sum(ok)} failures={len(failures)}")


def test_client_of_another_ca_is_refused(tmp_path: Path) -> None:
    """A client certificate from a CA the mesh does not trust is refused at the handshake."""
    (tmp_path / "pa.yaml").write_text(STRICT)
    ca = LocalCA.create()
    other = LocalCA.create()
    server_source = MemorySource(ca.issue(BACKEND))
    workload = inmesh.Workload("backend", service_account="backend-sa", labels={"app": "backend"})
    with inmesh.Mesh(tmp_path, workload=workload, identity=server_source) as mesh:
        server = serve_in_thread(app, mesh, port=0)
        try:
            bad = other.issue(FRONTEND)
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                from inmesh.identity.tls import build_client_context

                ctx = build_client_context(bad)
                import socket

                with (
                    socket.create_connection(("127.0.0.1", server.port)) as raw,
                    ctx.wrap_socket(raw) as s,
                ):
                    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    if not s.recv(100):
                        raise ConnectionError("closed")
        finally:
            server.stop()
