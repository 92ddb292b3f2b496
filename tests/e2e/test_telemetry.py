"""Telemetry end to end: real frontend and backend processes over mTLS.

Both are ``inmesh serve`` processes (tests/e2e/apps/telemetry_apps.py); the
frontend calls the backend through its own mesh transport and forwards no
headers. Acceptance (issue 7):

* after N requests both processes expose ``istio_requests_total`` with
  exactly the label set and value Istio would produce for that call
  (reporter ``source`` on the frontend, ``destination`` on the backend),
  plus the series of a ``UH`` and a ``UO`` case;
* with an in-memory OpenTelemetry SDK in each process, one trace id spans
  frontend SERVER -> frontend CLIENT -> backend SERVER, correctly parented;
* access log lines appear in Istio's text format on both sides.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e._procs import Pki

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
N = 7
TD = "cluster.local"


@dataclass
class Served:
    name: str
    proc: subprocess.Popen[bytes]
    stderr: Path
    port: int = 0
    admin: int = 0

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin}/stats/prometheus", timeout=10).text


def _start(
    tmp: Path,
    name: str,
    app: str,
    *,
    config: Path,
    cert_dir: Path,
    sa: str,
    labels: str,
    env: dict[str, str],
) -> Served:
    err = tmp / f"{name}.stderr"
    args = [sys.executable, "-m", "inmesh.cli.serve", f"tests.e2e.apps.telemetry_apps:{app}"]
    args += ["--app-dir", str(REPO), "--port", "0", "--config", str(config)]
    args += ["--workload", name, "--service-account", sa, "--labels", labels]
    args += ["--cert-dir", str(cert_dir), "--admin-port", "0", "--access-log", "text"]
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=f, env={**os.environ, **env}, cwd=REPO
        )
    return Served(name, proc, err)


def _wait(served: Served, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = served.stderr.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("inmesh: serving ") and " on " in line:
                served.port = int(line.split(" on ", 1)[1].split()[0].rsplit(":", 1)[1])
            if line.startswith("inmesh: admin endpoint on "):
                served.admin = int(line.rsplit(":", 1)[1].strip("/"))
        if served.port and served.admin:
            return
        if served.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{served.name} did not start:\n{served.stderr.read_text()}")


def _stop(*procs: Served) -> None:
    for s in procs:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    for s in procs:
        try:
            s.proc.wait(10)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(5)


def _services(backend_port: int) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: backend, namespace: default}}
        spec:
          hosts: [backend.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: 8080, name: http, protocol: HTTP}}]
          endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_port}}}, labels: {{security.istio.io/tlsMode: istio}}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: slow, namespace: default}}
        spec:
          hosts: [slow.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: 8080, name: http, protocol: HTTP}}]
          endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_port}}}, labels: {{security.istio.io/tlsMode: istio}}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: nohosts, namespace: default}}
        spec:
          hosts: [nohosts.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: 8080, name: http, protocol: HTTP}}]
          workloadSelector: {{labels: {{app: nothing-selects-this}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: slow, namespace: default}}
        spec:
          host: slow.default.svc.cluster.local
          trafficPolicy:
            connectionPool:
              tcp: {{maxConnections: 1}}
              http: {{http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}
        """
    )


@dataclass
class Mesh2:
    frontend: Served
    backend: Served
    pki: Pki


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh2]:
    tmp = tmp_path_factory.mktemp("telemetry")
    pki = Pki(tmp / "pki")
    front_certs, back_certs, _ = pki.issue(
        ("default", "frontend-sa"), ("default", "backend-sa"), ("default", "client-sa")
    )
    config = tmp / "config"
    config.mkdir()
    env = {"INMESH_TEST_OTEL": "1"}
    backend = _start(
        tmp,
        "backend",
        "backend",
        config=config,
        cert_dir=back_certs,
        sa="backend-sa",
        labels="app=backend,version=v1",
        env=env,
    )
    try:
        _wait(backend)
        (config / "services.yaml").write_text(_services(backend.port))
        front_env = {
            **env,
            "INMESH_WORKLOAD": "frontend",
            "INMESH_SERVICE_ACCOUNT": "frontend-sa",
            "INMESH_LABELS": "app=frontend,version=v1",
            "INMESH_CONFIG": str(config),
            "INMESH_CERT_DIR": str(front_certs),
            "INMESH_ACCESS_LOG": "text",
        }
        frontend = _start(
            tmp,
            "frontend",
            "frontend",
            config=config,
            cert_dir=front_certs,
            sa="frontend-sa",
            labels="app=frontend,version=v1",
            env=front_env,
        )
        try:
            _wait(frontend)
            time.sleep(0.5)  # the backend's watcher picks up services.yaml
            yield Mesh2(frontend, backend, pki)
        finally:
            _stop(frontend)
    finally:
        _stop(backend)


def _client(pki: Pki) -> httpx.Client:
    certs = pki.cert_dir("default", "client-sa")
    ctx = ssl.create_default_context(cafile=str(certs / "root-cert.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(certs / "cert-chain.pem", certs / "key.pem")
    return httpx.Client(verify=ctx, timeout=20)


def _series(text: str, name: str = "istio_requests_total") -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def _find(text: str, **match: str) -> list[tuple[dict[str, str], float]]:
    return [
        (labels, v)
        for labels, v in _series(text)
        if all(labels.get(k) == val for k, val in match.items())
    ]


def _istio_labels(reporter: str, code: str, flags: str = "-") -> dict[str, str]:
    """What Istio's stats filter reports for frontend -> backend over mTLS."""
    return {
        "reporter": reporter,
        "source_workload": "frontend",
        "source_canonical_service": "frontend",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "default",
        "source_principal": f"spiffe://{TD}/ns/default/sa/frontend-sa",
        "source_app": "frontend",
        "source_version": "v1",
        "source_cluster": "Kubernetes",
        "destination_workload": "backend",
        "destination_workload_namespace": "default",
        "destination_principal": f"spiffe://{TD}/ns/default/sa/backend-sa",
        "destination_app": "backend",
        "destination_version": "v1",
        "destination_service": "backend.default.svc.cluster.local",
        "destination_canonical_service": "backend",
        "destination_canonical_revision": "v1",
        "destination_service_name": "backend.default.svc.cluster.local",
        "destination_service_namespace": "default",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_code": code,
        "grpc_response_status": "",
        "response_flags": flags,
        "connection_security_policy": "unknown" if reporter == "source" else "mutual_tls",
    }


def test_both_sides_report_istio_requests_total(deployed: Mesh2) -> None:
    with _client(deployed.pki) as client:
        for _ in range(N):
            r = client.get(deployed.frontend.url("/"))
            assert r.status_code == 200, r.text
            assert r.text == "200 hello from backend"
    source = _find(deployed.frontend.metrics(), reporter="source", destination_workload="backend")
    assert source == [(_istio_labels("source", "200"), float(N))]
    dest = _find(
        deployed.backend.metrics(), reporter="destination", source_workload="frontend"
    )
    assert dest == [(_istio_labels("destination", "200"), float(N))]


def test_uh_and_uo_are_reported_with_their_flags(deployed: Mesh2) -> None:
    with _client(deployed.pki) as client:
        r = client.get(deployed.frontend.url("/call?host=nohosts"))
        assert r.text == "503 no healthy upstream"

        def slow() -> str:
            return client.get(deployed.frontend.url("/call?host=slow")).text

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: slow(), range(8)))
    assert any(a.startswith("503 ") for a in answers), answers
    assert any(a.startswith("200 ") for a in answers), answers
    text = deployed.frontend.metrics()
    unknown_peer = {
        "destination_workload": "unknown",
        "destination_workload_namespace": "unknown",
        "destination_principal": "unknown",
        "destination_app": "unknown",
        "destination_version": "unknown",
        "destination_canonical_service": "unknown",
        "destination_canonical_revision": "unknown",
        "destination_cluster": "unknown",
    }
    uh = _find(text, reporter="source", response_flags="UH")
    expected = {
        **_istio_labels("source", "503", "UH"),
        **unknown_peer,
        "destination_service": "nohosts.default.svc.cluster.local",
        "destination_service_name": "nohosts.default.svc.cluster.local",
    }
    assert uh == [(expected, 1.0)]
    uo = _find(text, reporter="source", response_flags="UO")
    overflowed = sum(1 for a in answers if a.startswith("503 "))
    expected = {
        **_istio_labels("source", "503", "UO"),
        **unknown_peer,
        "destination_service": "slow.default.svc.cluster.local",
        "destination_service_name": "slow.default.svc.cluster.local",
    }
    assert uo == [(expected, float(overflowed))]


def test_one_trace_across_frontend_and_backend(deployed: Mesh2) -> None:
    with _client(deployed.pki) as client:
        r = client.get(deployed.frontend.url("/"), headers={"x-request-id": "trace-me-1"})
        assert r.status_code == 200
        time.sleep(0.2)
        front = json.loads(client.get(deployed.frontend.url("/spans")).text)
        back = json.loads(client.get(deployed.backend.url("/spans")).text)
    server = [s for s in front if s["kind"] == "SERVER" and s["attributes"].get("url.path") == "/"]
    assert server, front
    root = server[-1]
    clients = [s for s in front if s["kind"] == "CLIENT" and s["parent_id"] == root["span_id"]]
    assert len(clients) == 1, front
    call = clients[0]
    assert call["trace_id"] == root["trace_id"]
    assert call["attributes"]["http.response.status_code"] == 200
    assert call["attributes"]["inmesh.upstream_cluster"] == (
        "outbound|8080||backend.default.svc.cluster.local"
    )
    assert call["attributes"]["inmesh.response_flags"] == "-"
    downstream = [s for s in back if s["kind"] == "SERVER" and s["parent_id"] == call["span_id"]]
    assert len(downstream) == 1, back
    assert downstream[0]["trace_id"] == root["trace_id"]
    assert downstream[0]["attributes"]["inmesh.peer.spiffe_id"] == (
        f"spiffe://{TD}/ns/default/sa/frontend-sa"
    )


def test_access_logs_on_both_sides(deployed: Mesh2) -> None:
    with _client(deployed.pki) as client:
        client.get(deployed.frontend.url("/"), headers={"x-request-id": "access-log-1"})
    time.sleep(0.3)
    front = [
        line
        for line in deployed.frontend.stderr.read_text().splitlines()
        if '"access-log-1"' in line
    ]
    back = [
        line
        for line in deployed.backend.stderr.read_text().splitlines()
        if '"access-log-1"' in line
    ]
    # the frontend: its inbound request and its outbound call (same request id)
    assert any(" inbound|" in line and line.split('"')[1] == "GET / HTTP/1.1" for line in front)
    outbound = [line for line in front if " outbound|8080||backend" in line]
    assert len(outbound) == 1, front
    assert " 200 - via_upstream - " in outbound[0]
    assert '"backend:8080"' in outbound[0]
    # the backend got the same x-request-id without the frontend forwarding it
    assert len(back) == 1, back
    assert " 200 - via_upstream - " in back[0]
    assert " inbound|" in back[0]
