"""``inmesh demo``: the seed's frontend and backend in a mesh, on this machine, in ~20 s.

What it does, step by step (each one checks what it shows and fails the
demo, exit status 1, when the mesh does not behave):

1. a throw-away CA and workload certificates (:class:`~inmesh.identity.ca.LocalCA`)
   and the mesh configuration (:mod:`inmesh.demo.config`) in a temporary directory;
2. four real processes started with ``python -m inmesh.cli.serve``: backend
   v1 twice and v2 (WSGI), the frontend (ASGI), all STRICT mTLS; then the
   ServiceEntries and WorkloadEntries for their ports;
3. the identities, read from each server's certificate in a TLS handshake;
4. STRICT mTLS and the AuthorizationPolicy: the demo (service account
   ``demo-sa``) reaches the backend through the frontend, is refused in
   plaintext, and gets 403 ``RBAC: access denied`` calling the backend itself;
5. the 90/10 canary split, measured through the frontend;
6. an instance crashes (SIGKILL): the seed's retries hide the connection
   failures (``connect-failure`` is in Istio's default ``retryOn``; a 503 is
   not, since Istio 1.24), and outlier detection ejects it;
7. it restarts on the same port and comes back once its ejection time is up;
8. ``istio_requests_total`` from the frontend's admin endpoint, when this
   build has one (skipped with a note otherwise);
9. everything stopped and removed (Ctrl-C and SIGTERM too).

``keep_running``: after step 8, print the URLs and wait for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

from inmesh.demo import config as demo_config
from inmesh.demo.apps import BACKEND_TEXT
from inmesh.demo.progress import Progress, Step

__all__ = ["DemoError", "run_demo"]

STEPS = 9
NAMESPACE = "default"
FRONTEND_SA = "frontend-sa"
BACKEND_SA = "backend-sa"
DEMO_SA = "demo-sa"
FLAKY = "backend-v1-b"
START_TIMEOUT = 30.0
_ANNOUNCE = re.compile(rb"inmesh: serving \S+ on (\S+):(\d+) ")
_ADMIN = re.compile(rb"inmesh: admin endpoint on http://[^\s:]+:(\d+)")  # inmesh serve's line


class DemoError(Exception):
    """A step did not see what the mesh should have done."""

    def __init__(self, message: str, logs: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.logs = tuple(logs)


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


@dataclass
class Instance:
    """One service instance: a real ``inmesh serve`` process."""

    name: str
    app: str
    version: str
    service_account: str
    target: str
    interface: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log: IO[bytes] | None = None
    log_offset: int = 0

    @property
    def cert_dir(self) -> Path:
        return self.workdir / "certs" / self.name

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / f"{self.name}.log"

    @property
    def labels(self) -> str:
        return f"app={self.app},version={self.version}"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"


@dataclass
class Answer:
    """What the frontend answered to one request."""

    status: int
    text: str
    version: str
    instance: str
    attempt: int
    error: str = ""
    """Why the frontend answered 500 (its ``X-Frontend-Error``)."""

    def describe(self) -> str:
        return f"{self.status} {self.text!r}" + (f" ({self.error})" if self.error else "")


class Demo:
    """The demo's workspace, processes and steps; :meth:`close` undoes everything."""

    def __init__(
        self, progress: Progress, *, requests: int = 200, keep_running: bool = False
    ) -> None:
        self.progress = progress
        self.requests = requests
        self.keep_running = keep_running
        self.workdir = Path(tempfile.mkdtemp(prefix="inmesh-demo-"))
        self.mesh_dir = self.workdir / "mesh"
        self.instances: list[Instance] = []
        self.admin = False
        """Whether the frontend was started with its admin endpoint (set by :meth:`start`)."""
        self.admin_port: int | None = None
        self._mesh: Any = None
        self._client: Any = None
        self._demo_cert: Any = None
        self._closed = False
        self._ejected_at = 0.0
        self.finished = 0.0
        """When the last step ended (``time.monotonic()``)."""
        self.waiting = False
        """True once the demo is done and waits for Ctrl-C (``keep_running``)."""

    # -- the steps ------------------------------------------------------------

    def run(self) -> None:
        p = self.progress
        p.heading("inmesh demo: the seed's frontend and backend, in a mesh, on this machine")
        p.line(f"workspace: {self.workdir}")
        with p.step("A throw-away CA, workload certificates and the seed's mesh config") as s:
            self.prepare(s)
        with p.step(
            "Start backend v1 (x2) and v2 (WSGI) and the frontend (ASGI) with inmesh serve"
        ) as s:
            self.start(s)
        with p.step("Identities, read from each server's certificate") as s:
            self.identities(s)
        with p.step("STRICT mTLS and the AuthorizationPolicy") as s:
            self.authorization(s)
        with p.step("Canary: 90/10 between backend v1 and v2") as s:
            self.canary(s)
        with p.step(f"{FLAKY} crashes: retries hide it, outlier detection ejects it") as s:
            self.crash(s)
        with p.step(f"{FLAKY} restarts and comes back after its ejection time") as s:
            self.restart(s)
        with p.step("Metrics: istio_requests_total from the frontend") as s:
            self.metrics(s)
        self.finished = time.monotonic()
        if self.keep_running:
            self.wait_for_ctrl_c()

    def prepare(self, s: Step) -> None:
        from inmesh.identity.ca import LocalCA
        from inmesh.identity.spiffe import SpiffeId

        def instance(
            name: str, app: str, version: str, sa: str, target: str, iface: str
        ) -> Instance:
            return Instance(
                name, app, version, sa, f"inmesh.demo.apps:{target}", iface, self.workdir
            )

        self.instances = [
            instance("frontend", "frontend", "v1", FRONTEND_SA, "make_frontend", "asgi"),
            instance("backend-v1-a", "backend", "v1", BACKEND_SA, "backend", "wsgi"),
            instance(FLAKY, "backend", "v1", BACKEND_SA, "backend", "wsgi"),
            instance("backend-v2", "backend", "v2", BACKEND_SA, "backend", "wsgi"),
        ]
        s.status("creating the CA")
        ca = LocalCA.create()
        ca.save(self.workdir / "ca")
        s.detail(f"CA (EC P-256, trust domain {ca.trust_domain}): {self.workdir / 'ca'}")
        for inst in self.instances:
            s.status(f"issuing {inst.name}'s certificate")
            ca.issue(SpiffeId.for_workload(NAMESPACE, inst.service_account)).write(inst.cert_dir)
        self._demo_cert = ca.issue(SpiffeId.for_workload(NAMESPACE, DEMO_SA))
        s.detail(
            f"certificates (24 h, Istio's file names): {', '.join(i.name for i in self.instances)}"
            f", and one for you ({DEMO_SA})"
        )
        written = demo_config.write_resources(self.mesh_dir)
        (self.workdir / "logs").mkdir()
        s.detail(f"mesh config: {self.mesh_dir}/")
        for path in written:
            s.detail(f"  {path.name}")

    def start(self, s: Step) -> None:
        self.admin = True  # the frontend serves the admin endpoint (--admin-port 0)
        for inst in self.instances:
            self._spawn(inst)
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(self.instances)
        while waiting:
            s.status(f"waiting for {', '.join(i.name for i in waiting)}")
            for inst in list(waiting):
                port = self._announced(inst)
                if port:
                    inst.port = port
                    waiting.remove(inst)
            if waiting and time.monotonic() > deadline:
                raise DemoError(
                    f"{', '.join(i.name for i in waiting)} did not start in {START_TIMEOUT:.0f} s",
                    [i.log_path for i in waiting],
                )
            time.sleep(0.05)
        endpoints = [
            demo_config.Endpoint(i.name, i.app, i.version, i.service_account, i.port)
            for i in self.instances
        ]
        _atomic_write(self.mesh_dir / "services.yaml", demo_config.services_yaml(endpoints))
        for inst in self.instances:
            kind = inst.interface.upper()
            s.detail(f"{inst.name:<13} {kind}  127.0.0.1:{inst.port:<6} labels {inst.labels}")
        s.detail("services.yaml: a ServiceEntry per service, a WorkloadEntry per instance")
        s.status("waiting for the frontend to reach every backend")
        self._open_client()
        # Until every backend has answered through the frontend once: a fresh
        # process's first request can exceed the seed's perTryTimeout (100ms).
        unseen = {i.name for i in self.instances if i.app == "backend"}
        deadline = time.monotonic() + START_TIMEOUT
        last: Answer | None = None
        while unseen:
            self._check_alive()
            try:
                last = self.call_frontend()
            except Exception as exc:
                last = Answer(0, f"{type(exc).__name__}: {exc}", "", "", 0)
            if last.status == 200:
                unseen.discard(last.instance)
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the frontend did not reach {', '.join(sorted(unseen))} in "
                    f"{START_TIMEOUT:.0f} s; last answer: {last.describe()}",
                    [i.log_path for i in self.instances],
                )
            if last.status != 200:
                time.sleep(0.05)
        if self.admin:
            frontend = self.instance("frontend")
            m = _ADMIN.search(frontend.log_path.read_bytes())
            self.admin_port = int(m.group(1)) if m else None

    def identities(self, s: Step) -> None:
        from inmesh.identity.tls import build_client_context, peer_spiffe_id

        ctx = build_client_context(self._demo_cert)
        for inst in self.instances:
            s.status(inst.name)
            with (
                socket.create_connection(("127.0.0.1", inst.port), timeout=5) as raw,
                ctx.wrap_socket(raw) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
            sid = peer_spiffe_id(der) if der else None
            if sid is None or sid.service_account != inst.service_account:
                raise DemoError(
                    f"{inst.name} presented {sid}, not service account {inst.service_account}"
                )
            s.detail(f"{inst.name:<13} {sid}")
        s.detail(f"{'you (demo)':<13} {self._demo_cert.spiffe_id}")

    def authorization(self, s: Step) -> None:
        import httpx

        answer = self.call_frontend()
        if answer.status != 200 or answer.text != f"Frontend says: {BACKEND_TEXT}":
            raise DemoError(f"you -> frontend: {answer.describe()}")
        s.detail(f"you -> frontend -> backend (mTLS both ways): 200 {answer.text!r}")

        target = self.instance("backend-v1-a")
        s.status("plaintext call")
        try:
            r = httpx.get(f"http://127.0.0.1:{target.port}/", timeout=5)
        except httpx.TransportError as exc:
            s.detail(
                f"plaintext -> {target.name}: refused ({type(exc).__name__}); "
                "STRICT: no client certificate, no connection"
            )
        else:
            raise DemoError(f"plaintext -> {target.name} was answered: {r.status_code} {r.text!r}")

        s.status("calling the backend as demo-sa")
        r = self._client.get("http://backend:8080/")
        if r.status_code != 403 or r.text != "RBAC: access denied":
            raise DemoError(
                f"you ({DEMO_SA}) -> backend: expected 403, got {r.status_code} {r.text!r}"
            )
        s.detail(f"you ({DEMO_SA}) -> backend: 403 {r.text!r}")
        s.detail("  AuthorizationPolicy allow-frontend-to-backend admits only")
        s.detail(f"  cluster.local/ns/{NAMESPACE}/sa/{FRONTEND_SA}")

    def canary(self, s: Step) -> None:
        answers = self.fan_out(s, self.requests)
        ok = [a for a in answers if a.status == 200]
        self._check_errors(s, answers, allowed=0.05)
        v1 = sum(a.version == "v1" for a in ok)
        v2 = sum(a.version == "v2" for a in ok)
        n = len(ok)
        s.detail(
            f"{len(answers)} requests through the frontend: "
            f"v1 {v1} ({100 * v1 / n:.1f} %), v2 {v2} ({100 * v2 / n:.1f} %)"
        )
        s.detail("  the VirtualService says 90/10; each request is drawn at random")
        self._note_failures(s, answers)
        if not 0.02 <= v2 / n <= 0.25:
            raise DemoError(f"v2 got {100 * v2 / n:.1f} % of the requests, far from 10 %")

    def crash(self, s: Step) -> None:
        flaky = self.instance(FLAKY)
        assert flaky.proc is not None
        flaky.proc.kill()
        flaky.proc.wait()
        s.detail(f"{FLAKY} (v1) killed with SIGKILL: connecting to it now fails")
        answers: list[Answer] = []
        retried = clean = 0
        for i in range(150):
            s.status(f"request {i + 1}: {retried} retried, then {clean} on the first try")
            a = self.call_frontend()
            answers.append(a)
            if a.status != 200:
                self._check_errors(s, answers, allowed=2)
                continue
            if a.attempt > 1:
                retried += 1
                clean = 0
                self._ejected_at = time.monotonic()
            elif a.version == "v1":
                clean += 1
            if retried and clean >= 20:
                break
        else:
            raise DemoError(
                f"{FLAKY} was not ejected: requests to v1 kept being retried"
                if retried
                else f"no request was retried: did any reach {FLAKY}?"
            )
        ok = sum(a.status == 200 for a in answers)
        s.detail(f"{len(answers)} requests through the frontend, one at a time: {ok} answered 200")
        s.detail(f"  {retried} picked {FLAKY} first: connection refused, retried on backend-v1-a")
        s.detail("  (retries: attempts 3; connect-failure is in Istio's default retryOn)")
        s.detail("  after 5 failures in a row (consecutive5xxErrors: 5) it was ejected:")
        s.detail(f"  the next {clean} requests to v1 went to backend-v1-a on the first try")
        self._note_failures(s, answers)

    def restart(self, s: Step) -> None:
        flaky = self.instance(FLAKY)
        s.status(f"starting {FLAKY} again on port {flaky.port}")
        self._spawn(flaky, port=flaky.port)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._announced(flaky):
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{FLAKY} did not restart in {START_TIMEOUT:.0f} s", [flaky.log_path]
                )
            time.sleep(0.05)
        s.detail(f"{FLAKY} started again on 127.0.0.1:{flaky.port}")
        deadline = time.monotonic() + 15
        sent = 0
        answers: list[Answer] = []
        while time.monotonic() < deadline:
            s.status(f"waiting for the frontend to send it traffic ({sent} requests)")
            a = self.call_frontend()
            sent += 1
            answers.append(a)
            if a.status != 200:
                self._check_errors(s, answers, allowed=2)
            if a.instance == FLAKY:
                break
            time.sleep(0.02)
        else:
            raise DemoError(f"{FLAKY} did not come back within 15 s", [flaky.log_path])
        s.detail(
            f"back in the pool {time.monotonic() - self._ejected_at:.1f} s after its ejection "
            f"(baseEjectionTime {demo_config.BASE_EJECTION_TIME}, checked every "
            f"{demo_config.OUTLIER_INTERVAL}:"
        )
        s.detail("  the seed's 30s and 10s, shortened for the demo)")
        self._note_failures(s, answers)

    def metrics(self, s: Step) -> None:
        import httpx

        if not self.admin:
            s.detail(
                "skipped: this build has no admin endpoint yet (Mesh(admin_port=...) "
                "serving /stats/prometheus)"
            )
            return
        if self.admin_port is None:
            s.detail("skipped: the frontend did not say where its admin endpoint listens")
            return
        url = f"http://127.0.0.1:{self.admin_port}/stats/prometheus"
        try:
            r = httpx.get(url, timeout=5)
        except httpx.HTTPError as exc:
            s.detail(f"skipped: {url} did not answer ({type(exc).__name__})")
            return
        rows = _requests_total(r.text) if r.status_code == 200 else []
        if not rows:
            s.detail(f"skipped: {url} answered {r.status_code} without istio_requests_total")
            return
        s.detail(f"{url}, istio_requests_total:")
        s.detail(f"  {'reporter':<12} {'source -> destination':<32} {'code':<5} {'flags':<6} count")
        for reporter, route, code, flags, value in rows[:12]:
            s.detail(f"  {reporter:<12} {route:<32} {code:<5} {flags:<6} {value}")
        if len(rows) > 12:
            s.detail(f"  ... and {len(rows) - 12} more series")

    def wait_for_ctrl_c(self) -> None:
        p = self.progress
        frontend = self.instance("frontend")
        demo_certs = self.workdir / "certs" / "demo"
        self._demo_cert.write(demo_certs)
        p.line()
        p.heading("The services keep running; Ctrl-C stops them.")
        for inst in self.instances:
            p.line(
                f"  {inst.name:<13} {inst.url}  (mTLS: a certificate of the mesh's CA is required)"
            )
        p.line("Call the frontend with your certificate (-k: SPIFFE certificates name no host):")
        p.line(
            f"  curl -sk --cert {demo_certs}/cert-chain.pem --key {demo_certs}/key.pem "
            f"{frontend.url}"
        )
        p.line(f"Edit the mesh config in {self.mesh_dir}/: the services reload it.")
        if self.admin_port is not None:
            p.line(f"Metrics: http://127.0.0.1:{self.admin_port}/stats/prometheus")
        self.waiting = True
        while True:
            self._check_alive()
            time.sleep(0.5)

    # -- processes --------------------------------------------------------------

    def _spawn(self, inst: Instance, port: int = 0) -> None:
        # The caller's INMESH_* variables are not the demo's workloads'.
        env = {k: v for k, v in os.environ.items() if not k.startswith("INMESH_")}
        import inmesh

        package_root = str(Path(inmesh.__file__).resolve().parent.parent)
        path = env.get("PYTHONPATH")
        env.update(
            PYTHONPATH=os.pathsep.join([package_root, path]) if path else package_root,
            PYTHONUNBUFFERED="1",
            VERSION=inst.version,
            INMESH_DEMO_INSTANCE=inst.name,
        )
        extra: list[str] = []
        if inst.app == "frontend":
            # Made from the serving mesh (--factory): one mesh for mTLS in and calls out.
            extra.append("--factory")
            if self.admin:
                extra += ["--admin-port", "0"]  # inmesh serve prints the port it got
        cmd = [
            sys.executable,
            "-m",
            "inmesh.cli.serve",
            inst.target,
            "--port",
            str(port),
            "--config",
            str(self.mesh_dir),
            "--workload",
            inst.name,
            "--namespace",
            NAMESPACE,
            "--service-account",
            inst.service_account,
            "--labels",
            inst.labels,
            "--cert-dir",
            str(inst.cert_dir),
            "--interface",
            inst.interface,
            *extra,
        ]
        if inst.log is not None:
            inst.log.close()
        inst.log_offset = inst.log_path.stat().st_size if inst.log_path.exists() else 0
        inst.log = open(inst.log_path, "ab")  # noqa: SIM115 - closed in _stop_processes
        inst.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=inst.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )

    def _announced(self, inst: Instance) -> int:
        assert inst.proc is not None
        try:
            with open(inst.log_path, "rb") as f:
                f.seek(inst.log_offset)
                data = f.read()
        except OSError:
            data = b""
        m = _ANNOUNCE.search(data)
        if m:
            return int(m.group(2))
        if inst.proc.poll() is not None:
            raise DemoError(
                f"{inst.name} exited with status {inst.proc.returncode} at start", [inst.log_path]
            )
        return 0

    def _check_alive(self) -> None:
        for inst in self.instances:
            if inst.proc is not None and inst.proc.poll() is not None:
                raise DemoError(
                    f"{inst.name} exited with status {inst.proc.returncode}", [inst.log_path]
                )

    def _stop_processes(self) -> int:
        running = [i for i in self.instances if i.proc is not None and i.proc.poll() is None]
        for inst in running:
            assert inst.proc is not None
            with contextlib.suppress(ProcessLookupError):
                inst.proc.terminate()
        deadline = time.monotonic() + 10
        for inst in self.instances:
            if inst.proc is None:
                continue
            try:
                inst.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait()
            if inst.log is not None:
                inst.log.close()
                inst.log = None
        return len(running)

    # -- calls --------------------------------------------------------------------

    def _open_client(self) -> None:
        import httpx

        from inmesh import Mesh, Workload
        from inmesh.identity.sources import MemorySource

        self._mesh = Mesh(
            self.mesh_dir,
            workload=Workload(
                "demo", namespace=NAMESPACE, service_account=DEMO_SA, labels={"app": "demo"}
            ),
            identity=MemorySource(self._demo_cert),
            watch=False,
        )
        self._client = httpx.Client(transport=self._mesh.transport(), timeout=10)

    def call_frontend(self) -> Answer:
        r = self._client.get("http://frontend:3000/")
        h = r.headers
        return Answer(
            r.status_code,
            r.text,
            h.get("x-backend-version", ""),
            h.get("x-backend-instance", ""),
            int(h.get("x-backend-attempt", "1") or 1),
            h.get("x-frontend-error", ""),
        )

    def fan_out(self, s: Step, n: int, concurrency: int = 4) -> list[Answer]:
        """``n`` calls to the frontend, ``concurrency`` at a time."""
        answers: list[Answer] = []
        lock = threading.Lock()

        def one(_: int) -> None:
            try:
                a = self.call_frontend()
            except Exception as exc:
                a = Answer(0, f"{type(exc).__name__}: {exc}", "", "", 0)
            with lock:
                answers.append(a)
                s.status(f"{len(answers)}/{n} requests")

        with ThreadPoolExecutor(concurrency, thread_name_prefix="inmesh-demo") as pool:
            list(pool.map(one, range(n)))
        return answers

    def _check_errors(self, s: Step, answers: list[Answer], allowed: float) -> None:
        """Fail the step when more than ``allowed`` answers (a count, or a fraction if < 1) are not 200.

        A few are tolerated and shown: on a busy machine a request can
        outlive the seed's perTryTimeout of 100ms (504, flag UT), which
        Istio's default retryOn does not retry.
        """
        bad = [a for a in answers if a.status != 200]
        if not bad:
            return
        limit = allowed * len(answers) if allowed < 1 else allowed
        if len(bad) > limit:
            raise DemoError(
                f"{len(bad)} of {len(answers)} requests failed, e.g. {bad[-1].describe()}",
                [i.log_path for i in self.instances],
            )

    @staticmethod
    def _note_failures(s: Step, answers: list[Answer]) -> None:
        bad = [a for a in answers if a.status != 200]
        if bad:
            s.detail(
                f"  {len(bad)} failed on this busy machine, e.g. {bad[-1].describe()} (the seed's "
                "perTryTimeout is 100ms, and Istio does not retry a per-try timeout by default)"
            )

    def instance(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    # -- the end --------------------------------------------------------------------

    def close(self) -> tuple[int, bool]:
        """Stop everything; return (processes stopped, workspace removed)."""
        if self._closed:
            return 0, not self.workdir.exists()
        self._closed = True
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        if self._mesh is not None:
            with contextlib.suppress(Exception):
                self._mesh.close()
        stopped = self._stop_processes()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return stopped, not self.workdir.exists()


def _requests_total(text: str) -> list[tuple[str, str, str, str, int]]:
    """``istio_requests_total`` samples of a Prometheus page, in a few columns."""
    from prometheus_client.parser import text_string_to_metric_families

    def who(labels: dict[str, str], side: str) -> str:
        workload = labels.get(f"{side}_workload", "unknown")
        if workload != "unknown":
            version = labels.get(f"{side}_version", "unknown")
            return workload if version in ("unknown", "") else f"{workload} {version}"
        principal = labels.get(f"{side}_principal", "")
        return principal.rsplit("/sa/", 1)[-1] if "/sa/" in principal else "unknown"

    rows = []
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return []
    for family in families:
        for sample in family.samples:
            if sample.name != "istio_requests_total":
                continue
            labels = dict(sample.labels)
            rows.append(
                (
                    labels.get("reporter", "?"),
                    f"{who(labels, 'source')} -> {who(labels, 'destination')}",
                    labels.get("response_code", "?"),
                    labels.get("response_flags", "-"),
                    int(sample.value),
                )
            )
    return sorted(rows)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 15) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo like Ctrl-C (main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, handler) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Let clean-up finish: a second Ctrl-C must not leave processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _missing_server_packages() -> list[str]:
    import importlib.util

    return [name for name in ("uvicorn", "a2wsgi") if importlib.util.find_spec(name) is None]


def run_demo(
    *,
    keep_running: bool = False,
    requests: int = 200,
    out: TextIO | None = None,
    live: bool | None = None,
) -> int:
    """Run the demo; the exit status: 0 done, 1 a step failed, 130 interrupted."""
    progress = Progress(out, total=STEPS, live=live)
    missing = _missing_server_packages()
    if missing:
        progress.line(
            f"inmesh demo: error: serving needs {' and '.join(missing)}, inmesh's dependencies: "
            f"pip install {' '.join(missing)}"
        )
        return 1
    started = time.monotonic()
    demo = Demo(progress, requests=requests, keep_running=keep_running)
    code = 0
    failure: DemoError | None = None
    try:
        with _signals_as_interrupts():
            demo.run()
    except DemoError as exc:
        failure = exc
        code = 1
    except KeyboardInterrupt as exc:
        code = 0 if demo.waiting and not isinstance(exc, _Terminated) else 130
    except Exception as exc:  # a step's call broke: say so, clean up, exit 1
        failure = DemoError(f"{type(exc).__name__}: {exc}", [i.log_path for i in demo.instances])
        code = 1
    finally:
        with _no_interrupts():
            logs = {path: _tail(path) for path in failure.logs} if failure else {}
            _report_stop(progress, demo, started, code)
    if failure is not None:
        progress.line()
        progress.line(f"inmesh demo: error: {failure}")
        for path, tail in logs.items():
            if tail:
                progress.line(f"--- last lines of {path.name}:")
                for text in tail:
                    progress.line(f"    {text}")
    elif code == 0:
        _next_steps(progress)
    return code


def _report_stop(progress: Progress, demo: Demo, started: float, code: int) -> None:
    with progress.step("Stop everything", index=STEPS) as s:
        s.status("stopping the services")
        stopped, removed = demo.close()
        s.detail(
            f"{stopped} process(es) stopped; {demo.workdir} "
            f"{'removed' if removed else 'could not be removed'}"
        )
    if code == 0:
        took = (demo.finished or time.monotonic()) - started
        progress.line(f"done: the demo took {took:.1f} s")


def _next_steps(progress: Progress) -> None:
    progress.line()
    progress.heading("Where to go next")
    for text in (
        "inmesh demo --keep-running      the same, then the services stay up to play with",
        "docs/demo.md                    what each step shows",
        "examples/                       the same services in Flask and FastAPI, the seed's YAML",
        "docs/getting-started.md         wiring your own app",
    ):
        progress.line(f"  {text}")
