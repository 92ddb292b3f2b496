"""The two examples as real processes, with examples/mesh/, through the seed's scenarios.

examples/flask_backend (v1 and v2) and examples/fastapi_frontend are served
by ``inmesh serve`` with STRICT mTLS and the examples' mesh configuration;
only the ports in ``services.yaml`` are changed to the ones the processes
got. A test client with its own certificate calls them through its mesh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

import inmesh
from inmesh.identity.ca import LocalCA
from inmesh.identity.sources import MemorySource
from inmesh.identity.spiffe import SpiffeId

pytest.importorskip("flask")
pytest.importorskip("fastapi")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
INVALID = EXAMPLES / "invalid" / "04-invalid-loadbalancer-in-virtualservice.yaml"
ANNOUNCE = re.compile(r"inmesh: serving \S+ on \S+:(\d+) ")
START_TIMEOUT = 30.0


@dataclass
class Workload:
    name: str
    app_dir: Path
    service_account: str
    labels: str
    env: dict[str, str]
    cert_dir: Path = Path()
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0


@dataclass
class Fleet:
    ca: LocalCA
    mesh_dir: Path
    workloads: dict[str, Workload]

    @contextmanager
    def client(self, service_account: str) -> Iterator[httpx.Client]:
        """An httpx client for a workload of this service account, through its own mesh."""
        cert = self.ca.issue(SpiffeId.for_workload("default", service_account))
        mesh = inmesh.Mesh(
            self.mesh_dir,
            workload=inmesh.Workload("test-client", service_account=service_account),
            identity=MemorySource(cert),
            watch=False,
        )
        with mesh, httpx.Client(transport=mesh.transport(), timeout=10) as client:
            yield client


def serve_cmd(w: Workload, config: list[Path], cert_dir: Path) -> list[str]:
    # The frontend is made from the serving mesh (--factory): one mesh for both ways.
    app = ["app:create_app", "--factory"] if w.name == "frontend" else ["app:app"]
    cmd = [sys.executable, "-m", "inmesh.cli.serve", *app, "--app-dir", str(w.app_dir)]
    for path in config:
        cmd += ["--config", str(path)]
    return [
        *cmd,
        "--port",
        "0",
        "--workload",
        w.name,
        "--service-account",
        w.service_account,
        "--labels",
        w.labels,
        "--cert-dir",
        str(cert_dir),
    ]


def wait_for_port(proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        m = ANNOUNCE.search(log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{log.name}: no 'inmesh: serving' line:\n{log.read_text()}")


def services_for(ports: dict[str, int]) -> str:
    """examples/mesh/services.yaml with the WorkloadEntries' ports replaced."""
    docs = list(yaml.safe_load_all((EXAMPLES / "mesh" / "services.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "WorkloadEntry":
            doc["spec"]["ports"] = {"http": ports[doc["metadata"]["name"]]}
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("examples")
    mesh_dir = tmp / "mesh"
    mesh_dir.mkdir()
    for f in (EXAMPLES / "mesh").glob("*.yaml"):
        if f.name != "services.yaml":
            shutil.copy(f, mesh_dir / f.name)
    ca = LocalCA.create()
    frontend_env = {
        "INMESH_WORKLOAD": "frontend",
        "INMESH_SERVICE_ACCOUNT": "frontend-sa",
        "INMESH_LABELS": "app=frontend,version=v1",
        "INMESH_CONFIG": str(mesh_dir),
        "INMESH_CERT_DIR": str(tmp / "certs" / "frontend"),
    }
    workloads = {
        "backend-v1": Workload(
            "backend-v1",
            EXAMPLES / "flask_backend",
            "backend-sa",
            "app=backend,version=v1",
            {"VERSION": "v1"},
        ),
        "backend-v2": Workload(
            "backend-v2",
            EXAMPLES / "flask_backend",
            "backend-sa",
            "app=backend,version=v2",
            {"VERSION": "v2"},
        ),
        "frontend": Workload(
            "frontend",
            EXAMPLES / "fastapi_frontend",
            "frontend-sa",
            "app=frontend,version=v1",
            frontend_env,
        ),
    }
    logs = {}
    try:
        for w in workloads.values():
            w.cert_dir = tmp / "certs" / w.name
            ca.issue(SpiffeId.for_workload("default", w.service_account)).write(w.cert_dir)
            logs[w.name] = tmp / f"{w.name}.log"
            with open(logs[w.name], "wb") as out:
                w.proc = subprocess.Popen(
                    serve_cmd(w, [mesh_dir], w.cert_dir),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **w.env},
                )
        for w in workloads.values():
            assert w.proc is not None
            w.port = wait_for_port(w.proc, logs[w.name])
        services = services_for({name: w.port for name, w in workloads.items()})
        (mesh_dir / ".services.tmp").write_text(services)
        os.replace(mesh_dir / ".services.tmp", mesh_dir / "services.yaml")
        fleet = Fleet(ca, mesh_dir, workloads)
        # The frontend picks services.yaml up (it watches the directory); each
        # backend's first request may outlive the seed's perTryTimeout of 100ms.
        with fleet.client("test-client") as client:
            seen: set[str] = set()
            deadline = time.monotonic() + START_TIMEOUT
            while seen != {"v1", "v2"}:
                assert time.monotonic() < deadline, f"not every version answered: {seen}"
                r = client.get("http://frontend:3000/")
                if r.status_code == 200:
                    seen.add(r.headers["x-backend-version"])
                else:
                    time.sleep(0.05)
        yield fleet
    finally:
        for w in workloads.values():
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
        for w in workloads.values():
            if w.proc is not None:
                try:
                    w.proc.wait(10)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()


def test_frontend_calls_backend(fleet: Fleet) -> None:
    with fleet.client("test-client") as client:
        r = client.get("http://frontend:3000/")
    assert r.status_code == 200
    assert r.text == "Frontend says: Hello from Backend!"


def test_canary_split_90_10(fleet: Fleet) -> None:
    versions: list[str] = []
    failed = 0
    with fleet.client("test-client") as client:
        for _ in range(300):
            r = client.get("http://frontend:3000/")
            if r.status_code != 200:
                failed += 1  # a per-try timeout (100ms) on a busy machine
                continue
            assert r.text == "Frontend says: Hello from Backend!"
            versions.append(r.headers["x-backend-version"])
    assert failed <= 6, failed
    v2 = versions.count("v2") / len(versions)
    assert set(versions) == {"v1", "v2"}
    assert 0.033 <= v2 <= 0.2, v2  # 10 %, more than 4 standard deviations of slack


def test_other_service_account_gets_403(fleet: Fleet) -> None:
    with fleet.client("intruder-sa") as client:
        r = client.get("http://backend:8080/")
    assert r.status_code == 403
    assert r.text == "RBAC: access denied"
    with fleet.client("frontend-sa") as client:  # the principal the policy names
        ok = client.get("http://backend:8080/")
    assert ok.status_code == 200
    assert ok.text == "Hello from Backend!"


def test_plaintext_is_refused(fleet: Fleet) -> None:
    port = fleet.workloads["backend-v1"].port
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


@pytest.mark.parametrize("name", ["backend-v1", "frontend"])
def test_invalid_04_refused_at_start(fleet: Fleet, tmp_path: Path, name: str) -> None:
    w = fleet.workloads[name]
    config = [fleet.mesh_dir, INVALID]
    env = {**os.environ, **w.env}
    if name == "frontend":
        env["INMESH_CONFIG"] = os.pathsep.join(str(p) for p in config)
    out = subprocess.run(
        serve_cmd(w, config, w.cert_dir),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert (
        "04-invalid-loadbalancer-in-virtualservice.yaml:18: VirtualService default/backend: "
        "spec.http[0].loadBalancer: unknown field 'loadBalancer' in HTTPRoute; it belongs in "
        "DestinationRule spec.trafficPolicy.loadBalancer"
    ) in out.stderr
    assert "inmesh: serving" not in out.stderr
