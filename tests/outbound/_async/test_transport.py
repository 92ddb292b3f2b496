"""The mesh transport end to end: real uvicorn backends with mutual TLS on 127.0.0.1 (async source).

Every test sends real requests through ``mesh.async_transport()`` to
backends started by :class:`tests.outbound.fleet.Fleet`; nothing is mocked.
Async tests run on asyncio and trio; ``scripts/unasync.py`` generates the
sync twin (``mesh.transport()``, threads instead of tasks).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmesh.identity.ca import LocalCA
from inmesh.outbound import (
    FaultAbortError,
    LocalReplyError,
    NoClusterError,
    NoHealthyUpstreamError,
    NoRouteError,
    RegistryOnlyError,
    UpstreamConnectError,
)
from inmesh.outbound._io import sleep_async
from inmesh.outbound.replies import REQUEST_INFO_KEY, RequestInfo

from .. import AsyncWorkers
from ..fleet import Fleet, frontend_mesh, write_config

pytestmark = pytest.mark.timeout(120)

DR_SUBSETS = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

CANARY = Path(__file__).parents[2] / "data" / "seeds" / "06-canary-90-10.yaml"


def binomial_bounds(n: int, p: float, z: float = 3.29) -> tuple[float, float]:
    """A two-sided 99.9 % interval for the count of a Binomial(n, p)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


@pytest.fixture(scope="module")
def fleet(ca: LocalCA) -> Iterator[Fleet]:
    f = Fleet(ca)
    f.start("backend-v1", {"version": "v1"})
    f.start("backend-v2", {"version": "v2"})
    f.start("shadow", {"version": "v1"}, service_account="shadow-sa")
    f.start("plain", {}, mtls=False)
    f.start("lb-a", {})
    f.start("lb-b", {})
    f.start("lb-slow", {})
    yield f
    f.close()


@pytest.fixture(autouse=True)
def _clean(fleet: Fleet) -> None:
    fleet.clear()


def backend_config(fleet: Fleet, *extra: str) -> list[str]:
    return [
        fleet.service_entry("backend"),
        fleet.workload_entries("backend-v1", "backend-v2"),
        *extra,
    ]


def info_of(response: httpx.Response) -> RequestInfo:
    info = response.extensions[REQUEST_INFO_KEY]
    assert isinstance(info, RequestInfo)
    return info


def server_of(response: httpx.Response) -> str:
    return str(response.headers.get("x-server", ""))


# -- traffic shifting -----------------------------------------------------------------


@pytest.mark.anyio
async def test_canary_90_10_over_mtls(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    canary = CANARY.read_text() if CANARY.exists() else None
    assert canary is not None, "tests/data/seeds/06-canary-90-10.yaml is missing"
    config = write_config(tmp_path, *backend_config(fleet, canary))
    n, workers = 10_000, 25
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:

            async def run() -> Counter[str]:
                seen: Counter[str] = Counter()
                for _ in range(n // workers):
                    r = await client.get("http://backend:8080/canary")
                    assert r.status_code == 200, (r.text, info_of(r))
                    seen[server_of(r)] += 1
                return seen

            results = await AsyncWorkers.run([run] * workers)
    total: Counter[str] = sum(results, Counter())
    assert sum(total.values()) == n
    low, high = binomial_bounds(n, 0.1)
    assert low <= total["backend-v2"] <= high, total
    # Mutual TLS all the way: the backend saw the frontend's SPIFFE ID in XFCC.
    xfcc = fleet.backends["backend-v2"].received[0].headers["x-forwarded-client-cert"]
    assert "URI=spiffe://cluster.local/ns/default/sa/frontend-sa" in xfcc


# -- matching ---------------------------------------------------------------------------

ROUTING = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: backend, subset: v2}}]
  - name: api-v2
    match: [{uri: {prefix: /v2/}}, {uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: backend, subset: v2}}]
  - name: query
    match: [{queryParams: {canary: {exact: "yes"}}}]
    route: [{destination: {host: backend, subset: v2}}]
  - name: from-v1-frontends
    match: [{uri: {prefix: /src}, sourceLabels: {app: frontend, version: v1}}]
    route: [{destination: {host: backend, subset: v2}}]
  - name: from-v9-frontends
    match: [{uri: {prefix: /other}, sourceLabels: {version: v9}}]
    route: [{destination: {host: backend, subset: v2}}]
  - name: rest
    route: [{destination: {host: backend, subset: v1}}]
"""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "headers", "expected", "route"),
    [
        ("/", {"end-user": "jason"}, "backend-v2", "jason"),
        ("/", {"end-user": "mary"}, "backend-v1", "rest"),
        ("/", {}, "backend-v1", "rest"),
        ("/v2/x", {}, "backend-v2", "api-v2"),
        ("/v2", {}, "backend-v1", "rest"),
        ("/items/42", {}, "backend-v2", "api-v2"),
        ("/items/42/x", {}, "backend-v1", "rest"),
        ("/q?canary=yes", {}, "backend-v2", "query"),
        ("/q?canary=no", {}, "backend-v1", "rest"),
        ("/src/a", {}, "backend-v2", "from-v1-frontends"),
        ("/other", {}, "backend-v1", "rest"),
    ],
)
async def test_match_routing_through_real_servers(
    fleet: Fleet,
    ca: LocalCA,
    tmp_path: Path,
    path: str,
    headers: dict[str, str],
    expected: str,
    route: str,
) -> None:
    config = write_config(tmp_path, *backend_config(fleet, DR_SUBSETS, ROUTING))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.get(f"http://backend:8080{path}", headers=headers)
    assert r.status_code == 200
    assert server_of(r) == expected
    info = info_of(r)
    assert info.route_name == route
    assert info.cluster == f"outbound|8080|{expected[-2:]}|backend.default.svc.cluster.local"


# -- request and response headers ---------------------------------------------------------

HEADERS_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: rewrite
    match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /new/, authority: backend.internal}
    headers:
      request: {set: {x-route: r1}, add: {x-added: a}, remove: [x-secret]}
      response: {set: {x-resp: "yes"}, remove: [x-server-remove]}
    route:
    - destination: {host: backend, subset: v1}
      headers: {request: {set: {x-dest: d1}}}
  - name: redirect
    match: [{uri: {exact: /moved}}]
    redirect: {uri: /elsewhere, authority: other.example.com, redirectCode: 302}
  - name: direct
    match: [{uri: {exact: /direct}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - name: rest
    route: [{destination: {host: backend, subset: v1}}]
"""


@pytest.mark.anyio
async def test_rewrite_and_header_operations(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    config = write_config(tmp_path, *backend_config(fleet, DR_SUBSETS, HEADERS_VS))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.get(
                "http://backend:8080/old/thing?x=1",
                headers={"x-secret": "s", "x-request-id": "rid-1"},
            )
    assert r.status_code == 200
    body = r.json()
    assert body["path"] == "/new/thing"
    assert body["query"] == "x=1"
    seen = body["headers"]
    assert seen["host"] == "backend.internal"
    assert seen["x-envoy-original-path"] == "/old/thing"
    assert seen["x-route"] == "r1"
    assert seen["x-dest"] == "d1"
    assert seen["x-added"] == "a"
    assert "x-secret" not in seen
    assert seen["x-request-id"] == "rid-1"
    assert seen["x-envoy-attempt-count"] == "1"
    assert seen["x-forwarded-proto"] == "http"
    assert r.headers["x-resp"] == "yes"
    assert int(r.headers["x-envoy-upstream-service-time"]) >= 0


@pytest.mark.anyio
async def test_request_id_generated(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    config = write_config(tmp_path, *backend_config(fleet))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            a = (await client.get("http://backend:8080/")).json()["headers"]["x-request-id"]
            b = (await client.get("http://backend:8080/")).json()["headers"]["x-request-id"]
    assert len(a) == 36 and a != b


@pytest.mark.anyio
async def test_redirect_and_direct_response(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    config = write_config(tmp_path, *backend_config(fleet, DR_SUBSETS, HEADERS_VS))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport(errors="raise")) as client:
            moved = await client.get("http://backend:8080/moved?q=1")
            direct = await client.get("http://backend:8080/direct")
    assert moved.status_code == 302
    assert moved.headers["location"] == "http://other.example.com/elsewhere?q=1"
    assert direct.status_code == 418
    assert direct.text == "short and stout"
    assert direct.headers["content-type"] == "text/plain"
    assert not any(b.received for b in fleet.backends.values())


# -- Envoy's local replies ------------------------------------------------------------------

NO_MATCH_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - match: [{uri: {prefix: /only}}]
    route: [{destination: {host: backend, subset: v1}}]
  - match: [{uri: {prefix: /nowhere}}]
    route: [{destination: {host: nowhere.example.com}}]
  - match: [{uri: {prefix: /nosubset}}]
    route: [{destination: {host: backend, subset: v9}}]
  - match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: backend, subset: v3}}]
"""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "status", "body", "flags", "error"),
    [
        ("/missing", 404, "", "NR", NoRouteError),
        ("/nowhere", 503, "", "NC", NoClusterError),
        ("/nosubset", 503, "", "NC", NoClusterError),
        ("/empty", 503, "no healthy upstream", "UH", NoHealthyUpstreamError),
    ],
)
async def test_local_replies(
    fleet: Fleet,
    ca: LocalCA,
    tmp_path: Path,
    path: str,
    status: int,
    body: str,
    flags: str,
    error: type[LocalReplyError],
) -> None:
    config = write_config(tmp_path, *backend_config(fleet, DR_SUBSETS, NO_MATCH_VS))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.get(f"http://backend:8080{path}")
        async with httpx.AsyncClient(transport=mesh.async_transport(errors="raise")) as client:
            with pytest.raises(error) as caught:
                await client.get(f"http://backend:8080{path}")
    assert r.status_code == status
    assert r.text == body
    assert info_of(r).flags == flags
    if body:
        assert r.headers["content-type"] == "text/plain"
    assert "x-envoy-upstream-service-time" not in r.headers
    assert isinstance(caught.value, httpx.TransportError)
    assert caught.value.status_code == status
    assert caught.value.response_flags == flags


@pytest.mark.anyio
async def test_connect_failure_reply(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    dead = """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: dead, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 1}
  labels: {app: dead}
  serviceAccount: backend-sa
"""
    config = write_config(tmp_path, fleet.service_entry("dead"), dead)
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.get("http://dead:8080/")
        async with httpx.AsyncClient(transport=mesh.async_transport(errors="raise")) as client:
            with pytest.raises(UpstreamConnectError):
                await client.get("http://dead:8080/")
    assert r.status_code == 503
    # Istio's default retry policy retries connect failures twice.
    assert r.text == (
        "upstream connect error or disconnect/reset before headers. retried and the latest "
        "reset reason: connection failure, transport failure reason: delayed connect error: 111"
    )
    assert info_of(r).flags == "UF,URX"
    assert info_of(r).attempts == 3


@pytest.mark.anyio
async def test_outside_the_registry(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    config = write_config(tmp_path, *backend_config(fleet))
    plain = fleet.backends["plain"]
    url = f"http://127.0.0.1:{plain.port}/out"
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.get(url)
    assert r.status_code == 200 and server_of(r) == "plain"
    assert info_of(r).cluster == "PassthroughCluster"
    with frontend_mesh(config, ca, outbound_traffic_policy="REGISTRY_ONLY") as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            blocked = await client.get(url)
        async with httpx.AsyncClient(transport=mesh.async_transport(errors="raise")) as client:
            with pytest.raises(RegistryOnlyError):
                await client.get(url)
    assert blocked.status_code == 502 and blocked.text == ""
    assert info_of(blocked).route_name == "block_all"
    assert len(plain.received) == 1


# -- fault injection ------------------------------------------------------------------------


def fault_vs(fault: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [backend]
  http:
  - fault: {fault}
    route: [{{destination: {{host: backend}}}}]
"""


@pytest.mark.anyio
async def test_fault_abort_half(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    vs = fault_vs("{abort: {httpStatus: 503, percentage: {value: 50}}}")
    config = write_config(tmp_path, *backend_config(fleet, vs))
    n = 600
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            responses = [await client.get("http://backend:8080/") for _ in range(n)]
        async with httpx.AsyncClient(transport=mesh.async_transport(errors="raise")) as client:
            with pytest.raises(FaultAbortError):
                for _ in range(60):
                    await client.get("http://backend:8080/")
    aborted = [r for r in responses if r.status_code == 503]
    low, high = binomial_bounds(n, 0.5)
    assert low <= len(aborted) <= high
    assert all(r.text == "fault filter abort" for r in aborted)
    assert all(info_of(r).flags == "FI" for r in aborted)
    assert all(r.status_code == 200 for r in responses if r not in aborted)


@pytest.mark.anyio
async def test_fault_delay_all(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    vs = fault_vs("{delay: {fixedDelay: 200ms, percentage: {value: 100}}}")
    config = write_config(tmp_path, *backend_config(fleet, vs))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            await client.get("http://backend:8080/")  # connect first
            start = time.monotonic()
            r = await client.get("http://backend:8080/")
            elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert elapsed >= 0.2
    assert info_of(r).flags == "DI"


@pytest.mark.anyio
async def test_fault_percentage_unset_injects_nothing(
    fleet: Fleet, ca: LocalCA, tmp_path: Path
) -> None:
    vs = fault_vs("{abort: {httpStatus: 500}, delay: {fixedDelay: 1s}}")
    config = write_config(tmp_path, *backend_config(fleet, vs))
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            start = time.monotonic()
            statuses = [(await client.get("http://backend:8080/")).status_code for _ in range(50)]
            elapsed = time.monotonic() - start
    assert statuses == [200] * 50
    assert elapsed < 1.0


# -- mirroring --------------------------------------------------------------------------------

SHADOW_SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow, namespace: default}
spec:
  hosts: [shadow.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: shadow}}
"""

MIRROR_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - route: [{destination: {host: backend, subset: v1}}]
    mirror: {host: shadow}
"""


async def _eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await sleep_async(0.02)


@pytest.mark.anyio
async def test_mirror_copies_with_shadow_host(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        *backend_config(fleet, DR_SUBSETS, MIRROR_VS, SHADOW_SE),
        fleet.workload_entries("shadow", service="shadow"),
    )
    shadow = fleet.backends["shadow"]
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.post("http://backend:8080/m", content=b"payload")
            await _eventually(lambda: len(shadow.received) == 1)
    assert r.status_code == 200 and server_of(r) == "backend-v1"
    copy = shadow.received[0]
    assert copy.headers["host"] == "backend-shadow:8080"
    assert copy.body == b"payload" and copy.method == "POST" and copy.path == "/m"
    assert info_of(r).mirrored == 1


@pytest.mark.anyio
async def test_mirror_streamed_body(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        *backend_config(fleet, DR_SUBSETS, MIRROR_VS, SHADOW_SE),
        fleet.workload_entries("shadow", service="shadow"),
    )
    shadow = fleet.backends["shadow"]

    async def chunks() -> Any:
        for part in (b"a" * 1000, b"b" * 1000):
            yield part

    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.post("http://backend:8080/s", content=chunks())
            await _eventually(lambda: len(shadow.received) == 1)
    assert r.json()["body"] == "a" * 1000 + "b" * 1000
    assert shadow.received[0].body == b"a" * 1000 + b"b" * 1000


@pytest.mark.anyio
async def test_hanging_or_failing_shadow_never_hurts(
    fleet: Fleet, ca: LocalCA, tmp_path: Path
) -> None:
    dead_shadow = """apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: dead-shadow, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 1}
  labels: {app: shadow}
  serviceAccount: shadow-sa
"""
    shadow = fleet.backends["shadow"]
    for extra in (fleet.workload_entries("shadow", service="shadow"), dead_shadow):
        config = write_config(
            tmp_path / str(len(extra)),
            *backend_config(fleet, DR_SUBSETS, MIRROR_VS, SHADOW_SE),
            extra,
        )
        shadow.hang = True
        with frontend_mesh(config, ca) as mesh:
            transport = mesh.async_transport(mirror_max_in_flight=4)
            async with httpx.AsyncClient(transport=transport) as client:
                await client.get("http://backend:8080/warm")
                start = time.monotonic()
                statuses = [
                    (await client.get("http://backend:8080/")).status_code for _ in range(20)
                ]
                elapsed = time.monotonic() - start
                stats = transport.mirror_stats
        shadow.hang = False
        assert statuses == [200] * 20
        assert elapsed < 2.0, elapsed  # 20 fast requests; a shadow wait would cost 3600 s
        assert stats.dispatched + stats.dropped == 21


# -- load balancing ----------------------------------------------------------------------------


def lb_config(fleet: Fleet, simple: str) -> list[str]:
    return [
        fleet.service_entry("lb"),
        fleet.workload_entries("lb-a", "lb-b", "lb-slow", service="lb"),
        f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: lb, namespace: default}}
spec:
  host: lb
  trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}
""",
    ]


async def _slow_share(fleet: Fleet, ca: LocalCA, directory: Path, simple: str) -> float:
    config = write_config(directory, *lb_config(fleet, simple))
    fleet.clear()
    fleet.backends["lb-slow"].delay = 0.08
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:

            async def run() -> list[str]:
                return [server_of(await client.get("http://lb:8080/")) for _ in range(15)]

            results = await AsyncWorkers.run([run] * 12)
    fleet.backends["lb-slow"].delay = 0.0
    seen = Counter(s for r in results for s in r)
    return seen["lb-slow"] / sum(seen.values())


@pytest.mark.anyio
async def test_least_request_avoids_a_slow_endpoint(
    fleet: Fleet, ca: LocalCA, tmp_path: Path
) -> None:
    rr = await _slow_share(fleet, ca, tmp_path / "rr", "ROUND_ROBIN")
    lr = await _slow_share(fleet, ca, tmp_path / "lr", "LEAST_REQUEST")
    assert 0.2 <= rr <= 0.45, rr  # strict rotation: about a third
    assert lr < rr * 0.75, (lr, rr)


@pytest.mark.anyio
async def test_consistent_hash_by_header_sticks(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    dr = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lb, namespace: default}
spec:
  host: lb
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""
    config = write_config(
        tmp_path,
        fleet.service_entry("lb"),
        fleet.workload_entries("lb-a", "lb-b", "lb-slow", service="lb"),
        dr,
    )
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            picks = {
                user: {
                    server_of(await client.get("http://lb:8080/", headers={"x-user": user}))
                    for _ in range(5)
                }
                for user in ("ann", "bob", "cid", "dan", "eve", "fay")
            }
    assert all(len(servers) == 1 for servers in picks.values()), picks
    assert len({s for servers in picks.values() for s in servers}) >= 2


# -- CORS ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cors_preflight_and_actual_request(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}]
      allowMethods: [GET, POST]
      maxAge: 24h
    route: [{destination: {host: backend}}]
"""
    config = write_config(tmp_path, *backend_config(fleet, vs))
    origin = {"origin": "https://app.example.com"}
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            pre = await client.options(
                "http://backend:8080/", headers={**origin, "access-control-request-method": "POST"}
            )
            actual = await client.get("http://backend:8080/", headers=origin)
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == "https://app.example.com"
    assert sum(len(b.received) for b in fleet.backends.values()) == 1


@pytest.mark.anyio
async def test_fault_applies_to_cors_preflights(fleet: Fleet, ca: LocalCA, tmp_path: Path) -> None:
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    corsPolicy: {allowOrigins: [{exact: "https://app.example.com"}], allowMethods: [GET]}
    route: [{destination: {host: backend}}]
"""
    config = write_config(tmp_path, *backend_config(fleet, vs))
    headers = {"origin": "https://app.example.com", "access-control-request-method": "GET"}
    with frontend_mesh(config, ca) as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            r = await client.options("http://backend:8080/", headers=headers)
    assert r.status_code == 503 and r.text == "fault filter abort"
    assert "access-control-allow-origin" not in r.headers
