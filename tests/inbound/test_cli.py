"""``inmesh serve`` as a real subprocess: FastAPI and Flask, config reloads, --mode, signals."""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from inmesh.cli.serve import context_from_args, load_app, register
from inmesh.identity.certificate import WorkloadCertificate
from inmesh.policy.peer_authn import MtlsMode

from .conftest import (
    FRONTEND,
    PYTHON,
    Process,
    client_context,
    expected_xfcc,
    start_process,
    whoami,
)

pytestmark = pytest.mark.e2e

READY = r"inmesh: serving \S+ on 127\.0\.0\.1:(?P<port>\d+) \(PeerAuthentication (?P<mode>\w+)\)"

PA = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"""


def serve_args(app: str, config: Path, cert_dir: Path, apps_dir: Path, *extra: str) -> list[str]:
    return [
        "serve", app,
        "--host", "127.0.0.1", "--port", "0",
        "--config", str(config),
        "--workload", "backend", "--namespace", "default",
        "--service-account", "backend-sa", "--labels", "app=backend,version=v1",
        "--cert-dir", str(cert_dir),
        "--trust-domain", "cluster.local",
        "--app-dir", str(apps_dir),
        *extra,
    ]  # fmt: skip


def command(args: list[str]) -> list[str]:
    """``python -m inmesh serve ...`` once registered in cli/main.py, else the module alone."""
    from inmesh.cli import main

    if "inmesh.cli.serve" in main._COMMAND_MODULES:
        return [PYTHON, "-m", "inmesh", *args]
    return [PYTHON, "-m", "inmesh.cli.serve", *args[1:]]


def start(args: list[str], cwd: Path) -> Process:
    return start_process(command(args), READY, cwd=cwd)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mesh"
    d.mkdir()
    (d / "pa.yaml").write_text(PA.format(mode="STRICT"))
    return d


@pytest.mark.parametrize("app", ["inbound_test_apps:fastapi_app", "inbound_test_apps:flask_app"])
def test_serve_subprocess(
    tmp_path: Path,
    apps_dir: Path,
    cert_dir: Path,
    config_dir: Path,
    frontend_cert: WorkloadCertificate,
    app: str,
) -> None:
    proc = start(serve_args(app, config_dir, cert_dir, apps_dir), tmp_path)
    base = f"https://127.0.0.1:{proc.port}"
    try:
        assert "PeerAuthentication STRICT" in proc.output()
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            seen = whoami(client, base, {"x-forwarded-client-cert": "By=spiffe://evil"})
        assert seen["peer"] == FRONTEND
        assert seen["xfcc"] == [expected_xfcc(frontend_cert)]
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{proc.port}/whoami")
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output()


def test_config_reload_and_sigint(
    tmp_path: Path,
    apps_dir: Path,
    cert_dir: Path,
    config_dir: Path,
    frontend_cert: WorkloadCertificate,
) -> None:
    proc = start(
        serve_args("inbound_test_apps:fastapi_app", config_dir, cert_dir, apps_dir), tmp_path
    )
    plain = f"http://127.0.0.1:{proc.port}/whoami"
    try:
        with pytest.raises(httpx.TransportError):
            httpx.get(plain)
        (config_dir / "pa.yaml").write_text(PA.format(mode="PERMISSIVE"))
        deadline = time.monotonic() + 5
        while True:  # the mesh re-reads the files (poll 0.25 s); new connections follow
            try:
                r = httpx.get(plain)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, proc.output()
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["peer"] is None
    finally:
        code = proc.stop(signal.SIGINT)
    assert code == 130, proc.output()


def test_mode_override(tmp_path: Path, apps_dir: Path, cert_dir: Path, config_dir: Path) -> None:
    proc = start(
        serve_args(
            "inbound_test_apps:flask_app", config_dir, cert_dir, apps_dir, "--mode", "permissive"
        ),
        tmp_path,
    )
    try:
        r = httpx.get(f"http://127.0.0.1:{proc.port}/whoami")
        assert r.status_code == 200 and r.json()["peer"] is None
    finally:
        assert proc.stop() == 0, proc.output()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cert-dir", "/nonexistent"], "cannot read"),
        (["--labels", "oops"], "not key=value"),
    ],
)
def test_startup_errors_exit_1(
    tmp_path: Path, apps_dir: Path, cert_dir: Path, config_dir: Path, extra: list[str], message: str
) -> None:
    args = serve_args("inbound_test_apps:fastapi_app", config_dir, cert_dir, apps_dir, *extra)
    done = subprocess.run(
        command(args),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inmesh")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_register_and_context_from_args(apps_dir: Path, cert_dir: Path, config_dir: Path) -> None:
    args = _parse(serve_args("inbound_test_apps:fastapi_app", config_dir, cert_dir, apps_dir))
    assert args.func.__name__ == "run"
    context, close = context_from_args(args)
    try:
        assert context.mtls_mode(8080) is MtlsMode.STRICT
        assert str(context.local_identity()) == "spiffe://cluster.local/ns/default/sa/backend-sa"
        assert context.workload.labels == {"app": "backend", "version": "v1"}
        assert context.trusted_proxy_xfcc is False
    finally:
        close()
    args = _parse(
        serve_args("m:a", config_dir, cert_dir, apps_dir, "--mode", "DISABLE", "--trust-xfcc")
    )
    context, close = context_from_args(args)
    try:
        assert context.mtls_mode(8080) is MtlsMode.DISABLE
        assert context.trusted_proxy_xfcc is True
        assert context.certificates is not None
        assert context.workload.name == "backend"
    finally:
        close()


def test_load_app(apps_dir: Path) -> None:
    app = load_app("inbound_test_apps:flask_app.wsgi_app", str(apps_dir))
    assert callable(app)
    with pytest.raises(ValueError, match="MODULE:APP"):
        load_app("no_colon")
    with pytest.raises(ValueError, match="no attribute"):
        load_app("inbound_test_apps:missing", str(apps_dir))


def test_inmesh_main_with_serve_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the lead's one-line change to cli/main.py gives: `inmesh serve ...` parses."""
    from inmesh.cli import main

    if "inmesh.cli.serve" not in main._COMMAND_MODULES:
        monkeypatch.setattr(main, "_COMMAND_MODULES", (*main._COMMAND_MODULES, "inmesh.cli.serve"))
    args = main.build_parser().parse_args(
        ["--log-level", "INFO", "serve", "m:a", "--workload", "backend", "--mode", "strict"]
    )
    assert args.func.__name__ == "run" and args.mode == "STRICT" and args.port == 8080


FACTORY_APP = '''
import json


def create_app(mesh):
    """The app gets the serving mesh: one mesh for inbound and outbound."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps(
            {
                "workload": mesh.workload.name,
                "spiffe_id": str(mesh.spiffe_id),
                "has_transport": mesh.async_transport() is not None,
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


def broken(mesh):
    raise RuntimeError("no app today")
'''


def test_factory_gets_the_serving_mesh(
    tmp_path: Path, cert_dir: Path, config_dir: Path, frontend_cert: WorkloadCertificate
) -> None:
    apps = tmp_path / "factory_apps"
    apps.mkdir()
    (apps / "factory_app.py").write_text(FACTORY_APP)
    proc = start(
        serve_args("factory_app:create_app", config_dir, cert_dir, apps, "--factory"), tmp_path
    )
    try:
        with httpx.Client(verify=client_context(frontend_cert)) as client:
            seen = client.get(f"https://127.0.0.1:{proc.port}/").json()
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.output()
    assert seen == {
        "workload": "backend",
        "spiffe_id": "spiffe://cluster.local/ns/default/sa/backend-sa",
        "has_transport": True,
    }
    done = subprocess.run(
        command(serve_args("factory_app:broken", config_dir, cert_dir, apps, "--factory")),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert "factory_app:broken(mesh) failed: RuntimeError('no app today')" in done.stderr
