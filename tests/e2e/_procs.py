"""Real processes for the end-to-end tests: ``inmesh`` CLI runs, ``inmesh serve`` workloads.

* :func:`inmesh_cli` runs ``python -m inmesh ...`` (``ca init``, ``cert issue``);
  :class:`Pki` is a throw-away CA made that way, with workload certificates
  issued on demand into Istio's file layout.
* :class:`Processes` starts ``python -m inmesh.cli.serve`` workloads on
  ephemeral ports of 127.0.0.1 (the port is read from the line the command
  prints on stderr), several at once, and stops every one of them in
  :meth:`Processes.close` (SIGTERM, then SIGKILL); an ``atexit`` hook kills
  whatever a crashed test run left behind.
* :func:`task_app` is the app those workloads serve (imported by the child
  process as ``tests.e2e._procs:task_app``): it answers JSON describing the
  request it received and appends the same record to the file named by
  ``TASK_APP_LOG``; ``?sleep=<seconds>`` delays the answer and
  ``?status=<code>`` picks its status.
* :func:`apply` writes one YAML file into a configuration directory
  atomically, as ``kubectl apply`` would change one resource; watchers never
  read half a file.

Only the standard library is imported at module level, so the child
processes import this module cheaply.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.e2e._procs:task_app"

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


atexit.register(_kill_leftovers)


# -- the CLI -------------------------------------------------------------------


def inmesh_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m inmesh ARGS``; fail the test with its output if it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "inmesh", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"inmesh {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


class Pki:
    """A throw-away CA (``inmesh ca init --intermediate``) and workload certificates.

    :meth:`issue` runs ``inmesh cert issue`` for several identities at once
    and returns their directories (``cert-chain.pem``, ``key.pem``,
    ``root-cert.pem``).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_dir = directory / "ca"
        inmesh_cli("ca", "init", str(self.ca_dir), "--intermediate")
        self._issued: dict[tuple[str, str], Path] = {}

    def cert_dir(self, namespace: str, service_account: str) -> Path:
        return self._issued[(namespace, service_account)]

    def issue(self, *identities: tuple[str, str]) -> list[Path]:
        """Certificates for ``(namespace, service account)`` pairs, issued in parallel."""
        todo = [i for i in dict.fromkeys(identities) if i not in self._issued]
        procs = []
        for namespace, sa in todo:
            out = self.directory / "certs" / namespace / sa
            spiffe_id = f"spiffe://cluster.local/ns/{namespace}/sa/{sa}"
            args = ["cert", "issue", "--ca", str(self.ca_dir), "--spiffe-id", spiffe_id]
            proc = subprocess.Popen(
                [sys.executable, "-m", "inmesh", *args, "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            procs.append(((namespace, sa), out, proc))
        for key, out, proc in procs:
            output, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise AssertionError(f"inmesh cert issue {key} failed: {output.decode()}")
            self._issued[key] = out
        return [self._issued[i] for i in identities]


# -- inmesh serve workloads ------------------------------------------------------


@dataclass
class Workload:
    """One ``inmesh serve`` process."""

    name: str
    namespace: str
    service_account: str
    labels: dict[str, str]
    proc: subprocess.Popen[bytes]
    stderr: Path
    requests_log: Path
    port: int = 0

    def requests(self, marker: str | None = None) -> list[dict[str, Any]]:
        """The requests the app received (each as :func:`task_app` answers it), oldest first;
        with ``marker``, only those whose query contains it."""
        if not self.requests_log.exists():
            return []
        records = [json.loads(line) for line in self.requests_log.read_text().splitlines()]
        return [r for r in records if marker is None or marker in r["query"]]


@dataclass
class Processes:
    """``inmesh serve`` workloads started together; :meth:`close` stops them all."""

    directory: Path
    workloads: dict[str, Workload] = field(default_factory=dict)

    def start(
        self,
        name: str,
        *,
        config: Path,
        cert_dir: Path | None,
        service_account: str,
        labels: Mapping[str, str],
        namespace: str = "default",
        extra_args: Iterable[str] = (),
    ) -> Workload:
        """Launch ``python -m inmesh.cli.serve`` serving :func:`task_app`; returns at once
        (see :meth:`wait_ready`)."""
        stderr = self.directory / f"{name}.stderr"
        requests_log = self.directory / f"{name}.requests.jsonl"
        label_arg = ",".join(f"{k}={v}" for k, v in labels.items())
        args = [sys.executable, "-m", "inmesh.cli.serve", APP, "--app-dir", str(REPO_ROOT)]
        args += ["--port", "0", "--config", str(config), "--workload", name]
        args += ["--namespace", namespace, "--service-account", service_account]
        args += ["--labels", label_arg]
        if cert_dir is not None:
            args += ["--cert-dir", str(cert_dir)]
        args += list(extra_args)
        env = {**os.environ, "TASK_APP_NAME": name, "TASK_APP_LOG": str(requests_log)}
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=self.directory
            )
        _LIVE.add(proc)
        workload = Workload(
            name, namespace, service_account, dict(labels), proc, stderr, requests_log
        )
        self.workloads[name] = workload
        return workload

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every workload printed ``inmesh: serving ... on HOST:PORT``."""
        deadline = time.monotonic() + timeout
        for w in self.workloads.values():
            while not w.port:
                text = w.stderr.read_text(errors="replace")
                for line in text.splitlines():
                    if line.startswith("inmesh: serving ") and " on " in line:
                        address = line.split(" on ", 1)[1].split()[0]
                        w.port = int(address.rsplit(":", 1)[1])
                if w.port:
                    break
                if w.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"inmesh serve {w.name} did not start (exit {w.proc.poll()}):\n{text}"
                    )
                time.sleep(0.02)

    def __getitem__(self, name: str) -> Workload:
        return self.workloads[name]

    def close(self) -> None:
        procs = [w.proc for w in self.workloads.values()]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            _LIVE.discard(proc)


# -- configuration ---------------------------------------------------------------


def apply(directory: Path, name: str, text: str) -> Path:
    """Write ``directory/name`` atomically (temporary file, then rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def delete(directory: Path, name: str) -> None:
    (directory / name).unlink(missing_ok=True)


# -- the app the workloads serve ----------------------------------------------------


async def task_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI app: answers (and logs) ``{"server", "method", "path", "query", "host",
    "headers", "peer", "body"}``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = scope["query_string"].decode("latin-1")
    decision = scope.get("extensions", {}).get("inmesh")
    peer = getattr(decision, "peer_id", None)
    record = {
        "server": os.environ.get("TASK_APP_NAME", "?"),
        "method": scope["method"],
        "path": scope["path"],
        "query": query,
        "host": headers.get("host", ""),
        "headers": headers,
        "peer": None if peer is None else str(peer),
        "body": body.decode("latin-1"),
        "at": time.time(),
    }
    log = os.environ.get("TASK_APP_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
    params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if "sleep" in params:
        await asyncio.sleep(float(params["sleep"]))
    payload = json.dumps(record).encode()
    await send(
        {
            "type": "http.response.start",
            "status": int(params.get("status", "200")),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
