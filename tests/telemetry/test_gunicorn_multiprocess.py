"""Istio's metrics under gunicorn with several workers (prometheus-client multiprocess mode).

A real gunicorn with 3 sync workers serves a WSGI app wrapped by
``mesh.wsgi``; ``PROMETHEUS_MULTIPROC_DIR`` is set and the gunicorn config
marks dead workers, as docs/observability.md says. Requests spread over the
workers; ``/metrics`` (a ``MultiProcessCollector`` over a fresh registry,
served outside the mesh) must report the sum of all of them.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        importlib.util.find_spec("gunicorn") is None, reason="gunicorn is not installed"
    ),
]

APP = textwrap.dedent(
    """
    import os

    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client import multiprocess

    import inmesh

    mesh = inmesh.Mesh(
        [],
        workload=inmesh.Workload("backend", labels={"app": "backend", "version": "v1"}),
        watch=False,
    )


    def hello(environ, start_response):
        body = f"pid {os.getpid()}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


    meshed = mesh.wsgi(hello)


    def app(environ, start_response):
        if environ["PATH_INFO"] == "/metrics":
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        return meshed(environ, start_response)
    """
)

CONFIG = textwrap.dedent(
    """
    from prometheus_client import multiprocess


    def child_exit(server, worker):
        multiprocess.mark_process_dead(worker.pid)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_requests_are_summed_over_workers(tmp_path: Path) -> None:
    (tmp_path / "mpapp.py").write_text(APP)
    (tmp_path / "gunicorn_conf.py").write_text(CONFIG)
    prom = tmp_path / "prom"
    prom.mkdir()
    port = _free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "3",
            "-b",
            f"127.0.0.1:{port}",
            "-c",
            str(tmp_path / "gunicorn_conf.py"),
            "mpapp:app",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/metrics", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "gunicorn.log").read_text()) from None
                time.sleep(0.1)
        pids = set()
        n = 30
        for _ in range(n):  # a new connection each time, so the workers share them
            with httpx.Client() as client:
                r = client.get(base + "/", headers={"connection": "close"})
                assert r.status_code == 200
                pids.add(r.text)
        text = httpx.get(base + "/metrics", timeout=5).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "istio_requests_total":
                    assert sample.labels["reporter"] == "destination"
                    assert sample.labels["destination_workload"] == "backend"
                    assert sample.labels["response_code"] == "200"
                    total += sample.value
        assert total == n, text
        assert "istio_request_duration_milliseconds_bucket" in text
        assert len(list(prom.glob("*.db"))) >= 2  # more than one worker wrote its file
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
