"""Mesh: construction, compiled state that follows reloads, identity, lifecycle."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import inmesh
from inmesh.identity.ca import LocalCA
from inmesh.identity.sources import CASource
from inmesh.identity.spiffe import SpiffeId
from inmesh.policy.peer_authn import MtlsMode

BACKEND = inmesh.Workload(
    "backend", service_account="backend-sa", labels={"app": "backend", "version": "v1"}
)

PA = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: {mode}}}
"""


def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_no_config_means_permissive(tmp_path: Path) -> None:
    with inmesh.Mesh(workload=BACKEND) as mesh:
        assert mesh.mtls_mode(8080) is MtlsMode.PERMISSIVE
        assert mesh.spiffe_id is None
        assert len(mesh.snapshot) == 0


def test_peer_authentication_follows_reloads(tmp_path: Path) -> None:
    f = tmp_path / "pa.yaml"
    f.write_text(PA.format(mode="STRICT"))
    with inmesh.Mesh(tmp_path, workload=BACKEND) as mesh:
        assert mesh.mtls_mode(8080) is MtlsMode.STRICT
        f.write_text(PA.format(mode="DISABLE"))
        wait_for(lambda: mesh.mtls_mode(8080) is MtlsMode.DISABLE)


def test_seed_config_is_strict_for_backend() -> None:
    seeds = Path(__file__).resolve().parents[1] / "data" / "seeds"
    with inmesh.Mesh(
        [
            seeds / "01-peer-authentication-strict.yaml",
            seeds / "02-authz-allow-frontend-to-backend.yaml",
        ],
        workload=BACKEND,
    ) as mesh:
        assert mesh.mtls_mode(8080) is MtlsMode.STRICT


def test_invalid_config_raises_at_start(tmp_path: Path) -> None:
    (tmp_path / "pa.yaml").write_text(PA.format(mode="STRIKT"))
    with pytest.raises(inmesh.ConfigError, match="did you mean 'STRICT'"):
        inmesh.Mesh(tmp_path, workload=BACKEND)


def test_identity_from_ca_source() -> None:
    ca = LocalCA.create()
    source = CASource(ca, SpiffeId.for_workload("default", "backend-sa"))
    with inmesh.Mesh(workload=BACKEND, identity=source) as mesh:
        assert str(mesh.spiffe_id) == "spiffe://cluster.local/ns/default/sa/backend-sa"
    assert not any(t.name.startswith("inmesh") for t in threading.enumerate())


def test_identity_from_cert_dir(tmp_path: Path) -> None:
    ca = LocalCA.create()
    ca.issue(SpiffeId.for_workload("default", "backend-sa")).write(tmp_path)
    with inmesh.Mesh(workload=BACKEND, cert_dir=tmp_path) as mesh:
        assert mesh.spiffe_id == SpiffeId.for_workload("default", "backend-sa")


def test_wrong_trust_domain_is_refused_at_start(tmp_path: Path) -> None:
    ca = LocalCA.create(trust_domain="example.org")
    ca.issue(SpiffeId.for_workload("default", "backend-sa", trust_domain="example.org")).write(
        tmp_path
    )
    with pytest.raises(inmesh.CertificateError, match="trust domain"):
        inmesh.Mesh(workload=BACKEND, cert_dir=tmp_path)
    assert not any(t.name.startswith("inmesh") for t in threading.enumerate())


def test_missing_cert_dir_is_a_certificate_error(tmp_path: Path) -> None:
    with pytest.raises(inmesh.CertificateError):
        inmesh.Mesh(workload=BACKEND, cert_dir=tmp_path / "nope")


def test_from_env(tmp_path: Path) -> None:
    (tmp_path / "pa.yaml").write_text(PA.format(mode="STRICT"))
    env = {
        "INMESH_CONFIG": str(tmp_path),
        "INMESH_WORKLOAD": "backend",
        "INMESH_SERVICE_ACCOUNT": "backend-sa",
        "INMESH_LABELS": "app=backend,version=v1",
        "INMESH_TRUST_XFCC": "true",
    }
    with inmesh.Mesh.from_env(env) as mesh:
        assert mesh.workload.labels["version"] == "v1"
        assert mesh.mtls_mode(None) is MtlsMode.STRICT
        assert mesh.trusted_proxy_xfcc is True


def test_from_env_requires_a_workload() -> None:
    with pytest.raises(ValueError, match="INMESH_WORKLOAD"):
        inmesh.Mesh.from_env({})


def test_close_is_idempotent_and_joins_threads(tmp_path: Path) -> None:
    (tmp_path / "pa.yaml").write_text(PA.format(mode="STRICT"))
    mesh = inmesh.Mesh(tmp_path, workload=BACKEND)
    mesh.close()
    mesh.close()
    assert mesh.closed
    assert not any(t.name == "inmesh-config-watch" for t in threading.enumerate())


def test_two_meshes_in_one_process_are_independent(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "pa.yaml").write_text(PA.format(mode="STRICT"))
    (b / "pa.yaml").write_text(PA.format(mode="DISABLE"))
    with inmesh.Mesh(a, workload=BACKEND) as m1, inmesh.Mesh(b, workload=BACKEND) as m2:
        assert m1.mtls_mode(1) is MtlsMode.STRICT
        assert m2.mtls_mode(1) is MtlsMode.DISABLE


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_context_manager(backend: str) -> None:
    import anyio

    async def main() -> None:
        async with inmesh.Mesh(workload=BACKEND) as mesh:
            assert not mesh.closed
        assert mesh.closed

    anyio.run(main, backend=backend)


def test_workload_validation() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        inmesh.Workload("Backend")
    assert inmesh.Workload.parse_labels("app=a, version=v1") == {"app": "a", "version": "v1"}
    with pytest.raises(ValueError):
        inmesh.Workload.parse_labels("app")


SE_DNS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: localhost}]
"""


def test_registry_and_background_dns_follow_the_config(tmp_path: Path) -> None:
    (tmp_path / "se.yaml").write_text(SE_DNS)
    with inmesh.Mesh(tmp_path, workload=BACKEND) as mesh:
        match = mesh.registry.lookup("backend:8080", caller_namespace="default")
        assert match is not None and match.service.hostname == "backend.default.svc.cluster.local"
        wait_for(lambda: "127.0.0.1" in mesh.resolved_addresses("localhost"))
        assert any(t.name == "inmesh-dns-backend" for t in threading.enumerate())
    assert not any(t.name == "inmesh-dns-backend" for t in threading.enumerate())


def test_no_dns_thread_without_dns_endpoints() -> None:
    with inmesh.Mesh(workload=BACKEND):
        assert not any(t.name.startswith("inmesh-dns") for t in threading.enumerate())


def test_bad_path_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="MERGE_SLASHES"):
        inmesh.Mesh(workload=BACKEND, path_normalization="merge")


def test_asgi_and_wsgi_wrappers_use_this_mesh(tmp_path: Path) -> None:
    from inmesh.inbound.asgi import MeshASGIMiddleware
    from inmesh.inbound.wsgi import MeshWSGIMiddleware

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        pass

    def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
        return []

    with inmesh.Mesh(workload=BACKEND) as mesh:
        assert isinstance(mesh.asgi(app), MeshASGIMiddleware)
        assert isinstance(mesh.wsgi(wsgi_app), MeshWSGIMiddleware)
        assert mesh.authorizer() is None
