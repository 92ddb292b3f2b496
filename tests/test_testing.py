"""``inmesh.testing``: meshes of in-process apps, driven by a fake clock, without sockets."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

import anyio
import fastapi
import flask
import httpx
import pytest

from inmesh.errors import ConfigError
from inmesh.inbound.asgi import peer_of
from inmesh.outbound import NoHealthyUpstreamError, UpstreamConnectError
from inmesh.testing import SERVICE_LABEL, FakeClock, MeshTestbed, metric_value

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend-sa"

ROUTING = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"""


def fastapi_app(version: str, hits: list[str] | None = None) -> fastapi.FastAPI:
    """An ASGI app answering which version it is and who called it."""
    app = fastapi.FastAPI()

    @app.get("/")
    async def index(request: fastapi.Request) -> dict[str, Any]:
        if hits is not None:
            hits.append(version)
        peer = peer_of(request.scope)
        return {"version": version, "peer": None if peer is None else str(peer)}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await anyio.sleep(5)
        return {"version": version}

    return app


def flask_app(version: str, hits: list[str] | None = None) -> flask.Flask:
    """The WSGI twin of :func:`fastapi_app`."""
    app = flask.Flask(f"reviews-{version}")

    @app.get("/")
    def index() -> dict[str, Any]:
        if hits is not None:
            hits.append(version)
        peer = flask.request.environ["inmesh.peer"]
        return {"version": version, "peer": None if peer is None else str(peer)}

    @app.get("/slow")
    def slow() -> dict[str, str]:
        time.sleep(2)
        return {"version": version}

    return app


def reviews(testbed: MeshTestbed, hits: list[str] | None = None) -> Any:
    """reviews v1 (FastAPI) and v2 (Flask), the routing rules, and the caller's mesh."""
    testbed.workload(
        "reviews-v1", service="reviews", labels={"version": "v1"}, app=fastapi_app("v1", hits)
    )
    testbed.workload(
        "reviews-v2", service="reviews", labels={"version": "v2"}, app=flask_app("v2", hits)
    )
    testbed.apply(ROUTING)
    return testbed.workload("frontend", service_account="frontend-sa")


@pytest.fixture
def testbed() -> Iterator[MeshTestbed]:
    with MeshTestbed(seed=7) as tb:
        yield tb


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The async tests run on asyncio and on trio."""
    return str(request.param)


# -- routing ------------------------------------------------------------------------------


def test_routes_by_header_and_splits_by_weight(testbed: MeshTestbed) -> None:
    frontend = reviews(testbed)
    with testbed.client(frontend) as client:
        for _ in range(5):
            r = client.get("http://reviews:8080/", headers={"end-user": "jason"})
            assert r.status_code == 200
            assert r.json() == {"version": "v2", "peer": FRONTEND}
        versions = [client.get("http://reviews:8080/").json()["version"] for _ in range(200)]
    counts = collections.Counter(versions)
    assert 140 <= counts["v1"] <= 180, counts
    assert counts["v1"] + counts["v2"] == 200


def test_the_seed_makes_the_same_choices() -> None:
    def run(seed: int) -> list[str]:
        with MeshTestbed(seed=seed) as tb:
            frontend = reviews(tb)
            with tb.client(frontend) as client:
                return [client.get("http://reviews:8080/").json()["version"] for _ in range(40)]

    first = run(3)
    assert run(3) == first
    assert set(first) == {"v1", "v2"}


@pytest.mark.anyio
async def test_async_client_routes_to_asgi_and_wsgi_apps(testbed: MeshTestbed) -> None:
    frontend = reviews(testbed)
    async with testbed.async_client(frontend) as client:
        jason = await client.get("http://reviews:8080/", headers={"end-user": "jason"})
        assert jason.json() == {"version": "v2", "peer": FRONTEND}  # Flask, in a worker thread
        seen = collections.Counter()
        for _ in range(50):
            r = await client.get("http://reviews:8080/")
            assert r.status_code == 200
            assert r.json()["peer"] == FRONTEND
            seen[r.json()["version"]] += 1
    assert seen["v1"] > seen["v2"] > 0
    info = jason.extensions["inmesh.request_info"]
    assert info.cluster == "outbound|8080|v2|reviews.default.svc.cluster.local"
    assert info.upstream_host == f"{testbed.address('reviews-v2')}:8080"


# -- security -------------------------------------------------------------------------------

ALLOW_FRONTEND = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend-allow}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/frontend-sa]}}]
"""

DENY_ADMIN = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend-deny-admin}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin]}}]
"""


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_authorization_sees_the_callers_service_account(testbed: MeshTestbed, kind: str) -> None:
    app = fastapi_app("v1") if kind == "fastapi" else flask_app("v1")
    backend = testbed.workload("backend", app=app, service_account="backend-sa")
    frontend = testbed.workload("frontend", service_account="frontend-sa")
    intruder = testbed.workload("intruder", service_account="intruder-sa")
    testbed.apply(ALLOW_FRONTEND, DENY_ADMIN)
    with testbed.client(frontend) as ok, testbed.client(intruder) as bad:
        assert ok.get("http://backend:8080/").json() == {"version": "v1", "peer": FRONTEND}
        denied = bad.get("http://backend:8080/")
        assert (denied.status_code, denied.text) == (403, "RBAC: access denied")
        admin = ok.get("http://backend:8080/admin")
        assert (admin.status_code, admin.text) == (403, "RBAC: access denied")
        testbed.delete("AuthorizationPolicy", "backend-allow")
        assert bad.get("http://backend:8080/").status_code == 200
    assert (
        metric_value(
            backend,
            "istio_requests_total",
            reporter="destination",
            response_code="403",
            source_principal="spiffe://cluster.local/ns/default/sa/intruder-sa",
        )
        == 1.0
    )


def test_the_caller_checks_the_servers_identity(testbed: MeshTestbed) -> None:
    testbed.workload("backend", app=fastapi_app("v1"), service_account="backend-sa")
    frontend = testbed.workload("frontend")
    testbed.apply(
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/someone-else]}
"""
    )
    with (
        testbed.client(frontend, errors="raise") as client,
        pytest.raises(UpstreamConnectError) as err,
    ):
        client.get("http://backend:8080/")
    assert "presented SPIFFE ID spiffe://cluster.local/ns/default/sa/backend-sa" in str(err.value)


# -- resilience -----------------------------------------------------------------------------


def flaky_app(failures: int, hits: list[float]) -> fastapi.FastAPI:
    """503 for the first ``failures`` calls, then 200."""
    app = fastapi.FastAPI()

    @app.get("/")
    async def index() -> fastapi.Response:
        hits.append(time.monotonic())
        status = 503 if len(hits) <= failures else 200
        return fastapi.Response(str(len(hits)), status_code=status)

    return app


RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky}
spec:
  hosts: [flaky]
  http:
  - route: [{destination: {host: flaky}}]
    retries: {attempts: 3, retryOn: 5xx, backoff: 5s}
"""


def test_retries_hide_failures_without_backoff(testbed: MeshTestbed) -> None:
    hits: list[float] = []
    testbed.workload("flaky", app=flaky_app(2, hits))
    frontend = testbed.workload("frontend")
    testbed.apply(RETRIES)
    with testbed.client(frontend) as client:
        start = time.monotonic()
        r = client.get("http://flaky:8080/")
        elapsed = time.monotonic() - start
    assert (r.status_code, r.text) == (200, "3")
    assert r.extensions["inmesh.request_info"].attempts == 3
    assert elapsed < 1.0  # a 5 s base back-off would sleep [0, 5) s, then [0, 10) s
    assert metric_value(frontend, "istio_requests_total", response_code="200") == 1.0


@pytest.mark.anyio
async def test_async_retries_hide_failures_without_backoff(testbed: MeshTestbed) -> None:
    hits: list[float] = []
    testbed.workload("flaky", app=flaky_app(2, hits))
    frontend = testbed.workload("frontend")
    testbed.apply(RETRIES)
    async with testbed.async_client(frontend) as client:
        start = time.monotonic()
        r = await client.get("http://flaky:8080/")
        elapsed = time.monotonic() - start
    assert (r.status_code, r.text) == (200, "3")
    assert elapsed < 1.0


def test_outlier_ejection_ends_when_the_fake_clock_moves(testbed: MeshTestbed) -> None:
    hits: list[str] = []
    testbed.workload(
        "good", service="backend", labels={"version": "good"}, app=fastapi_app("good", hits)
    )
    bad = flask.Flask("bad")

    @bad.get("/")
    def fail() -> tuple[str, int]:
        hits.append("bad")
        return "broken", 500

    testbed.workload("bad", service="backend", labels={"version": "bad"}, app=bad)
    frontend = testbed.workload("frontend")
    testbed.apply(
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
"""
    )
    with testbed.client(frontend) as client:
        statuses = [client.get("http://backend:8080/").status_code for _ in range(10)]
        assert statuses.count(500) == 5  # round robin: every other request, until the 5th
        assert hits.count("bad") == 5
        assert [client.get("http://backend:8080/").status_code for _ in range(20)] == [200] * 20
        assert hits.count("bad") == 5  # ejected: traffic avoids it
        [stats] = frontend.cluster_stats()
        assert (stats.ejections_active, stats.healthy) == (1, 1)

        testbed.clock.advance(29)
        client.get("http://backend:8080/")
        assert hits.count("bad") == 5  # still ejected
        testbed.clock.advance(2)  # 31 s: past baseEjectionTime, at an interval tick
        for _ in range(4):
            client.get("http://backend:8080/")
        assert hits.count("bad") == 7  # back in rotation
    assert frontend.cluster_stats()[0].ejections_active == 0


def test_down_refuses_connections(testbed: MeshTestbed) -> None:
    testbed.workload("backend", app=fastapi_app("v1"))
    frontend = testbed.workload("frontend")
    with testbed.client(frontend) as client, testbed.client(frontend, errors="raise") as raising:
        testbed.down("backend")
        r = client.get("http://backend:8080/")
        assert r.status_code == 503
        assert "UF" in r.extensions["inmesh.request_info"].flags
        assert "delayed connect error: 111" in r.text
        with pytest.raises(UpstreamConnectError):
            raising.get("http://backend:8080/")
        testbed.up("backend")
        assert client.get("http://backend:8080/").status_code == 200
        testbed.remove("backend")
        gone = client.get("http://backend:8080/")
        assert (gone.status_code, gone.text) == (503, "no healthy upstream")
        with pytest.raises(NoHealthyUpstreamError):
            raising.get("http://backend:8080/")


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_route_timeouts_hold_for_in_process_apps(testbed: MeshTestbed, kind: str) -> None:
    app = fastapi_app("v1") if kind == "fastapi" else flask_app("v1")
    testbed.workload("backend", app=app)
    frontend = testbed.workload("frontend")
    testbed.apply(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - {route: [{destination: {host: backend}}], timeout: 0.2s}
"""
    )
    with testbed.client(frontend) as client:
        start = time.monotonic()
        r = client.get("http://backend:8080/slow")
        assert time.monotonic() - start < 1.5
    assert (r.status_code, r.text) == (504, "upstream request timeout")


# -- telemetry -------------------------------------------------------------------------------


def test_metrics_land_in_both_meshes_registries(testbed: MeshTestbed) -> None:
    frontend = reviews(testbed)
    with testbed.client(frontend) as client:
        for _ in range(3):
            client.get("http://reviews:8080/", headers={"end-user": "jason"})
    source = metric_value(
        frontend,
        "istio_requests_total",
        reporter="source",
        destination_workload="reviews-v2",
        destination_principal="spiffe://cluster.local/ns/default/sa/reviews-v2",
        response_code="200",
    )
    destination = metric_value(
        testbed.mesh("reviews-v2"),
        "istio_requests_total",
        reporter="destination",
        source_workload="frontend",
        source_principal=FRONTEND,
        connection_security_policy="mutual_tls",
    )
    assert (source, destination) == (3.0, 3.0)
    assert metric_value(testbed.mesh("reviews-v1"), "istio_requests_total") == 0.0


# -- the testbed itself ------------------------------------------------------------------------


def test_fake_clock() -> None:
    clock = FakeClock(100.0)
    assert clock.now() == 100.0
    assert clock.advance(2.5) == 102.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_invalid_configuration_changes_nothing(testbed: MeshTestbed) -> None:
    testbed.workload("backend", app=fastapi_app("v1"))
    frontend = testbed.workload("frontend")
    version = frontend.snapshot.version
    with pytest.raises(ConfigError):
        testbed.apply(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: []}\n"
        )
    assert frontend.snapshot.version == version
    assert set(testbed.resources) == {
        ("ServiceEntry", "default", "backend"),
        ("WorkloadEntry", "default", "backend"),
    }
    assert SERVICE_LABEL in testbed.resources[("WorkloadEntry", "default", "backend")]


def test_calls_by_address_pass_through_to_the_app(testbed: MeshTestbed) -> None:
    testbed.workload("backend", app=fastapi_app("v1"))
    frontend = testbed.workload("frontend")
    with testbed.client(frontend) as client:
        r = client.get(f"http://{testbed.address('backend')}:8080/")
        assert r.json() == {"version": "v1", "peer": None}  # plain text: no identity
        assert r.extensions["inmesh.request_info"].cluster == "PassthroughCluster"
        with pytest.raises(httpx.ConnectError):
            client.get("http://10.9.9.9:8080/")


def test_app_exceptions(testbed: MeshTestbed) -> None:
    app = fastapi.FastAPI()

    @app.get("/")
    async def boom() -> None:
        raise RuntimeError("boom")

    testbed.workload("backend", app=app)
    frontend = testbed.workload("frontend")
    with testbed.client(frontend) as client, pytest.raises(RuntimeError, match="boom"):
        client.get("http://backend:8080/")
    testbed.raise_app_exceptions = False
    with testbed.client(frontend) as client:
        assert client.get("http://backend:8080/").status_code == 500


def test_close_closes_the_meshes_and_the_configuration() -> None:
    testbed = MeshTestbed()
    mesh = testbed.workload("backend", app=fastapi_app("v1"))
    client = testbed.client("backend")
    with pytest.raises(ValueError, match="already"):
        testbed.workload("backend")
    with pytest.raises(TypeError, match="watch"):
        testbed.workload("other", watch=True)
    testbed.close()
    assert mesh.closed and client.is_closed and testbed.closed
    assert not testbed.config_dir.exists()
    testbed.close()
