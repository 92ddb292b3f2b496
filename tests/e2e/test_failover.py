"""SIGKILL one of three backend processes under load: the mesh routes around it.

Three real backend processes (uvicorn, plain HTTP on 127.0.0.1), one frontend
mesh with the seed's outlier detection and a route timeout, async callers
sending continuously. One backend is killed with SIGKILL a second in.
Acceptance: at least 99.9 % of requests succeed (Istio's default retry policy
retries connect failures on another host, and outlier detection ejects the
dead one after 5 consecutive failures), and none outlives the route timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

import inmesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

SERVER = textwrap.dedent(
    """
    import socket, sys, uvicorn

    STATUS = int(sys.argv[1]) if len(sys.argv) > 1 else 200

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": STATUS,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", access_log=False)
    server = uvicorn.Server(config)

    import threading, time
    def announce():
        while not server.started:
            time.sleep(0.01)
        print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
    threading.Thread(target=announce, daemon=True).start()
    server.run()
    """
)

ROUTE_TIMEOUT = 2.0
DURATION = float(os.environ.get("INMESH_FAILOVER_SECONDS", "4"))


def start_backend(tmp: Path, index: int, status: int = 200) -> tuple[subprocess.Popen[bytes], int]:
    log = tmp / f"backend-{index}.log"
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(status)], stdout=out, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = log.read_text()
        if "PORT " in text:
            return proc, int(text.split("PORT ", 1)[1].split()[0])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"backend {index} did not start: {log.read_text()}")


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    procs = [start_backend(tmp_path, i) for i in range(3)]
    yield procs
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def config(tmp: Path, ports: list[int]) -> Path:
    entries = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}}}" for p in ports)
    (tmp / "mesh.yaml").write_text(
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
{entries}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend]
  http:
  - route: [{{destination: {{host: backend}}}}]
    timeout: {ROUTE_TIMEOUT}s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: default}}
spec:
  host: backend
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
"""
    )
    return tmp


@pytest.mark.anyio
async def test_sigkill_one_of_three(
    backends: list[tuple[subprocess.Popen[bytes], int]], tmp_path: Path
) -> None:
    path = config(tmp_path, [port for _, port in backends])
    workload = inmesh.Workload("frontend", service_account="frontend-sa")
    results: list[tuple[int, float]] = []
    with inmesh.Mesh(path, workload=workload, watch=False) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            stop = time.monotonic() + DURATION

            async def caller() -> None:
                while time.monotonic() < stop:
                    start = time.monotonic()
                    r = await client.get("http://backend:8080/")
                    results.append((r.status_code, time.monotonic() - start))

            async def killer() -> None:
                await anyio.sleep(1.0)
                backends[0][0].send_signal(signal.SIGKILL)

            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(caller)
                tg.start_soon(killer)
    ok = sum(status == 200 for status, _ in results)
    assert len(results) > 500
    assert ok / len(results) >= 0.999, (len(results) - ok, len(results))
    assert max(elapsed for _, elapsed in results) < ROUTE_TIMEOUT + 0.5


@pytest.mark.anyio
async def test_seed_outlier_detection_with_processes(tmp_path: Path) -> None:
    """The seed's DestinationRule (shortened interval and ejection time) with three
    backend processes, one answering 500."""
    procs = [
        start_backend(tmp_path, 0, 500),
        start_backend(tmp_path, 1),
        start_backend(tmp_path, 2),
    ]
    try:
        path = config(tmp_path, [port for _, port in procs])
        text = (path / "mesh.yaml").read_text()
        text = text.replace("interval: 10s", "interval: 200ms").replace(
            "baseEjectionTime: 30s", "baseEjectionTime: 1s"
        )
        text = text.replace(
            "  trafficPolicy:\n", "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n"
        )
        text = text.replace(f"    timeout: {ROUTE_TIMEOUT}s", "    retries: {attempts: 0}")
        (path / "mesh.yaml").write_text(text)
        workload = inmesh.Workload("frontend", service_account="frontend-sa")
        with inmesh.Mesh(path, workload=workload, watch=False) as mesh:
            async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
                first = [(await client.get("http://backend:8080/")).status_code for _ in range(30)]
                after = [(await client.get("http://backend:8080/")).status_code for _ in range(30)]
                await anyio.sleep(1.5)  # the 1 s ejection ends at a 200 ms sweep
                back = [(await client.get("http://backend:8080/")).status_code for _ in range(30)]
    finally:
        for proc, _ in procs:
            proc.kill()
            proc.wait(5)
    assert first.count(500) == 5  # ejected at the 5th consecutive error
    assert after.count(500) == 0  # the other two carry the traffic
    assert back.count(500) > 0  # it is back after the ejection time


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
