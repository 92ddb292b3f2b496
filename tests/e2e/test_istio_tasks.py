"""Istio's documented task flows, re-enacted with real processes over real mTLS.

Every workload is a ``python -m inmesh.cli.serve`` process on an ephemeral
port of 127.0.0.1 with a certificate issued by a throw-away CA (``inmesh ca
init`` / ``inmesh cert issue``); the calling workload is this test process: an
httpx client on ``mesh.transport()`` / ``mesh.async_transport()`` of a
``Mesh`` whose identity is a workload certificate directory. ServiceEntries and
WorkloadEntries written into a temporary directory point Istio's service names
at the processes; the VirtualServices, DestinationRules, AuthorizationPolicies
and PeerAuthentications are the tasks' own (delays and timeouts shortened).
Each test asserts what the task's page on istio.io says the user observes:

* Request routing: ``end-user: jason`` sees reviews v2, everyone else v1.
* Traffic shifting: all v1, then about 50 % v3, then only v3 (each step a
  rewrite of the YAML the mesh watches).
* Request timeouts: a 0.5 s route timeout on a 2 s backend answers 504
  ``upstream request timeout`` (flag ``UT``) after about 0.5 s.
* Fault injection: jason's ratings calls are delayed (0.5 s instead of the
  task's 7 s), then aborted with HTTP 500 ``fault filter abort``; other users
  are untouched.
* Circuit breaking: ``maxConnections: 1``, ``http1MaxPendingRequests: 1``,
  ``maxRequestsPerConnection: 1``; fortio-like concurrent callers see 200s
  and 503 ``UO`` overflows, more overflows with three callers than with two.
  (The page's "almost all requests made it through" with two callers is not
  reproduced: an xfail test documents it.)
* Mirroring: v1 answers, v2 gets a copy of every request with ``-shadow``
  appended to the Host.
* HTTP authorization: allow-nothing denies everyone with 403 ``RBAC: access
  denied``; an ALLOW GET policy for one service account lets exactly its GETs
  through.
* Mutual TLS migration: PERMISSIVE serves a plaintext client and an mTLS
  client; after STRICT (namespace-wide, then mesh-wide) the plaintext client's
  connection is reset and the mTLS client is still served.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

import inmesh
from inmesh.outbound.replies import REQUEST_INFO_KEY, RequestInfo

from ..outbound import AsyncWorkers
from ..outbound.fleet import write_config
from ._procs import Pki, Processes, Workload, apply, delete

pytestmark = [pytest.mark.e2e]

TIMEOUT = 0.5
"""The request-timeouts task's route timeout."""
DELAY = 0.5
"""The fault-injection task's delay (7 s on istio.io)."""

REVIEWS = "http://reviews:9080/reviews/0"
RATINGS = "http://ratings:9080/ratings/0"
HTTPBIN = "http://httpbin:8000"
PRODUCTPAGE = "http://productpage:9080/productpage"

# -- the task's resources ------------------------------------------------------------


def destination_rule(host: str, *subsets: str, traffic_policy: str = "") -> str:
    """Istio's ``destination-rule-all.yaml`` shape: one subset per version label."""
    subset_lines = "".join(f"  - {{name: {s}, labels: {{version: {s}}}}}\n" for s in subsets)
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}
{traffic_policy}  subsets:
{subset_lines}"""


def virtual_service(host: str, http: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}]
  http:
{http}"""


def weighted(host: str, weights: dict[str, int]) -> str:
    """``virtual-service-all-v1.yaml``, ``-reviews-50-v3.yaml``, ``-reviews-v3.yaml``."""
    lines = "".join(
        f"    - destination: {{host: {host}, subset: {subset}}}\n      weight: {weight}\n"
        for subset, weight in weights.items()
    )
    return virtual_service(host, "  - route:\n" + lines)


def jason_route(host: str, subset: str, extra: str = "") -> str:
    """``end-user: jason`` first (with ``extra`` route fields), then everyone else to v1."""
    return virtual_service(
        host,
        f"""  - match:
    - headers:
        end-user: {{exact: jason}}
{extra}    route:
    - destination: {{host: {host}, subset: {subset}}}
  - route:
    - destination: {{host: {host}, subset: v1}}
""",
    )


ALLOW_NOTHING = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
"""

PRODUCTPAGE_VIEWER = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector:
    matchLabels: {app: productpage}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
"""

STRICT_FOO = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls: {mode: STRICT}
"""

STRICT_MESH = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"""

# -- the processes -----------------------------------------------------------------------


class Spec(NamedTuple):
    """One workload: its namespace, service account, ``app`` (also the service's host name)
    and ``version`` labels, and the service port."""

    namespace: str
    service_account: str
    app: str
    version: str
    port: int

    @property
    def labels(self) -> dict[str, str]:
        return {"app": self.app, "version": self.version}


WORKLOADS = {
    "reviews-v1": Spec("default", "bookinfo-reviews", "reviews", "v1", 9080),
    "reviews-v2": Spec("default", "bookinfo-reviews", "reviews", "v2", 9080),
    "reviews-v3": Spec("default", "bookinfo-reviews", "reviews", "v3", 9080),
    "ratings-v1": Spec("default", "bookinfo-ratings", "ratings", "v1", 9080),
    "productpage-v1": Spec("default", "bookinfo-productpage", "productpage", "v1", 9080),
    "httpbin-v1": Spec("default", "httpbin", "httpbin", "v1", 8000),
    "httpbin-v2": Spec("default", "httpbin", "httpbin", "v2", 8000),
    "httpbin-foo": Spec("foo", "httpbin", "httpbin", "v1", 8000),
}
CLIENTS = [("default", "bookinfo-productpage"), ("default", "bookinfo-reviews")]
CLIENTS += [("default", "sleep"), ("default", "other"), ("bar", "sleep")]


@dataclass
class World:
    """The running workloads, their CA, and the configuration directories."""

    root: Path
    pki: Pki
    procs: Processes
    authz_config: Path
    """productpage's configuration (the authorization task changes it)."""
    foo_config: Path
    """httpbin.foo's configuration (the mTLS migration task changes it)."""

    def __getitem__(self, name: str) -> Workload:
        return self.procs[name]

    def registry(self) -> list[str]:
        """ServiceEntries and WorkloadEntries pointing the services at the processes."""
        docs: dict[tuple[str, str], str] = {}
        entries = []
        for name, (ns, sa, host, _version, port) in WORKLOADS.items():
            docs[(ns, host)] = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: {ns}}}
spec:
  hosts: [{host}.{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  workloadSelector:
    labels: {{app: {host}}}
"""
            entries.append(
                f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {ns}}}
spec:
  address: 127.0.0.1
  ports: {{http: {self[name].port}}}
  labels: {json.dumps(WORKLOADS[name].labels)}
  serviceAccount: {sa}
"""
            )
        return [*docs.values(), *entries]

    def client_config(self, name: str, *docs: str) -> Path:
        """A directory for one calling workload: the registry plus ``docs``."""
        return write_config(self.root / "clients" / name, *self.registry(), *docs)

    @contextlib.contextmanager
    def client(
        self,
        config: Path,
        service_account: str,
        *,
        namespace: str = "default",
        app: str | None = None,
        watch: bool = False,
    ) -> Iterator[inmesh.Mesh]:
        """The calling workload's mesh, its identity the certificate directory of its SA."""
        workload = inmesh.Workload(
            app or service_account,
            namespace=namespace,
            service_account=service_account,
            labels={"app": app or service_account, "version": "v1"},
        )
        cert_dir = self.pki.cert_dir(namespace, service_account)
        with inmesh.Mesh(config, workload=workload, cert_dir=cert_dir, watch=watch) as mesh:
            yield mesh


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("istio-tasks")
    pki = Pki(root)
    pki.issue(*CLIENTS, *((w.namespace, w.service_account) for w in WORKLOADS.values()))
    server_config = root / "server"
    server_config.mkdir()
    authz_config = root / "productpage-config"
    authz_config.mkdir()
    foo_config = root / "foo-config"
    foo_config.mkdir()
    procs = Processes(root)
    try:
        for name, w in WORKLOADS.items():
            config = {"productpage-v1": authz_config, "httpbin-foo": foo_config}.get(
                name, server_config
            )
            procs.start(
                name,
                config=config,
                cert_dir=pki.cert_dir(w.namespace, w.service_account),
                service_account=w.service_account,
                labels=w.labels,
                namespace=w.namespace,
            )
        procs.wait_ready()
        yield World(root, pki, procs, authz_config, foo_config)
    finally:
        procs.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- helpers -----------------------------------------------------------------------------


def info_of(response: httpx.Response) -> RequestInfo:
    info = response.extensions[REQUEST_INFO_KEY]
    assert isinstance(info, RequestInfo)
    return info


def marker() -> str:
    """A query parameter that tells this test's requests apart in the workloads' logs."""
    return f"t={uuid.uuid4().hex[:12]}"


def served_by(responses: list[httpx.Response]) -> Counter[str]:
    assert all(r.status_code == 200 for r in responses), [r.status_code for r in responses]
    return Counter(r.json()["server"] for r in responses)


def change_config(mesh: inmesh.Mesh, change: Callable[[], object], timeout: float = 5.0) -> None:
    """Make ``change`` to the files the mesh watches and wait until it is in force."""
    before = mesh.snapshot.version
    change()
    deadline = time.monotonic() + timeout
    while mesh.snapshot.version == before:
        assert time.monotonic() < deadline, "the configuration change was not applied"
        time.sleep(0.02)
    assert mesh.config_store.last_error is None, mesh.config_store.last_error


def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
    """Poll ``check`` until true (a workload applies its watched files within a second);
    returns the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not seen after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def spiffe(namespace: str, sa: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{sa}"


# -- 1. request routing ----------------------------------------------------------------------


def test_request_routing_by_end_user_header(world: World) -> None:
    """istio.io "Request Routing": apply ``virtual-service-all-v1.yaml``, then route user
    jason (header ``end-user: jason``) to reviews v2 and everyone else to v1."""
    config = world.client_config("routing", destination_rule("reviews", "v1", "v2", "v3"))
    apply(config, "vs.yaml", weighted("reviews", {"v1": 100}))
    with (
        world.client(config, "bookinfo-productpage", app="productpage", watch=True) as mesh,
        httpx.Client(transport=mesh.transport()) as client,
    ):
        everyone = [client.get(REVIEWS, headers={"end-user": "jason"}) for _ in range(5)]
        everyone += [client.get(REVIEWS) for _ in range(5)]
        change_config(mesh, lambda: apply(config, "vs.yaml", jason_route("reviews", "v2")))
        jason = [client.get(REVIEWS, headers={"end-user": "jason"}) for _ in range(10)]
        anonymous = [client.get(REVIEWS) for _ in range(10)]
        others = [client.get(REVIEWS, headers={"end-user": "mike"}) for _ in range(10)]
    assert served_by(everyone) == {"reviews-v1": 10}
    assert served_by(jason) == {"reviews-v2": 10}
    assert served_by(anonymous) == {"reviews-v1": 10}
    assert served_by(others) == {"reviews-v1": 10}
    # Over mutual TLS: the server saw the caller's SPIFFE ID, and the caller's mesh the route.
    assert {r.json()["peer"] for r in jason + anonymous} == {
        spiffe("default", "bookinfo-productpage")
    }
    assert {info_of(r).cluster for r in jason} == {
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    }


# -- 2. traffic shifting -------------------------------------------------------------------


def test_traffic_shifting(world: World) -> None:
    """istio.io "Traffic Shifting": all to v1, then 50 % to v3 ("red stars about half of the
    time"), then 100 % to v3 ("always red stars")."""
    config = world.client_config("shifting", destination_rule("reviews", "v1", "v2", "v3"))
    apply(config, "vs.yaml", weighted("reviews", {"v1": 100}))
    n = 300
    with (
        world.client(config, "bookinfo-productpage", app="productpage", watch=True) as mesh,
        httpx.Client(transport=mesh.transport()) as client,
    ):
        all_v1 = served_by([client.get(REVIEWS) for _ in range(20)])
        change_config(
            mesh, lambda: apply(config, "vs.yaml", weighted("reviews", {"v1": 50, "v3": 50}))
        )
        half = served_by([client.get(REVIEWS) for _ in range(n)])
        change_config(mesh, lambda: apply(config, "vs.yaml", weighted("reviews", {"v3": 100})))
        all_v3 = served_by([client.get(REVIEWS) for _ in range(30)])
    assert all_v1 == {"reviews-v1": 20}
    assert set(half) == {"reviews-v1", "reviews-v3"}, half
    # 300 draws of a fair coin: 150 +- 30 is more than 3.4 standard deviations.
    assert abs(half["reviews-v3"] - n / 2) <= 30, half
    assert all_v3 == {"reviews-v3": 30}


# -- 3. request timeouts ----------------------------------------------------------------------

TIMEOUT_VS = virtual_service(
    "reviews",
    f"""  - route:
    - destination: {{host: reviews, subset: v2}}
    timeout: {TIMEOUT}s
""",
)


def check_timeout(slow: httpx.Response, elapsed: float, fast: httpx.Response) -> None:
    assert slow.status_code == 504
    assert slow.text == "upstream request timeout"
    assert info_of(slow).flags == "UT"
    assert TIMEOUT - 0.02 <= elapsed < TIMEOUT + 1.0, elapsed  # not the backend's 2 s
    assert fast.status_code == 200 and fast.json()["server"] == "reviews-v2"


def test_request_timeout(world: World) -> None:
    """istio.io "Request Timeouts": with ``timeout: 0.5s`` on the reviews route and a 2 s
    slow backend, the call fails after about half a second instead of waiting 2 s."""
    config = world.client_config(
        "timeout", destination_rule("reviews", "v1", "v2", "v3"), TIMEOUT_VS
    )
    with (
        world.client(config, "bookinfo-productpage", app="productpage") as mesh,
        httpx.Client(transport=mesh.transport()) as client,
    ):
        start = time.monotonic()
        slow = client.get(f"{REVIEWS}?sleep=2")
        elapsed = time.monotonic() - start
        fast = client.get(REVIEWS)
    check_timeout(slow, elapsed, fast)


@pytest.mark.anyio
async def test_request_timeout_async(world: World) -> None:
    """The same with the async transport."""
    config = world.client_config(
        "timeout-async", destination_rule("reviews", "v1", "v2", "v3"), TIMEOUT_VS
    )
    with world.client(config, "bookinfo-productpage", app="productpage") as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            start = time.monotonic()
            slow = await client.get(f"{REVIEWS}?sleep=2")
            elapsed = time.monotonic() - start
            fast = await client.get(REVIEWS)
    check_timeout(slow, elapsed, fast)


# -- 4. fault injection ----------------------------------------------------------------------


def test_fault_injection_delay(world: World) -> None:
    """istio.io "Fault Injection", delay: ``ratings-test-delay`` delays jason's calls to
    ratings (``fixedDelay``, 100 %) before they are forwarded; other users are not delayed."""
    delay = f"""    fault:
      delay:
        percentage: {{value: 100.0}}
        fixedDelay: {DELAY}s
"""
    config = world.client_config(
        "fault-delay", destination_rule("ratings", "v1"), jason_route("ratings", "v1", delay)
    )
    tag = marker()
    with (
        world.client(config, "bookinfo-reviews", app="reviews") as mesh,
        httpx.Client(transport=mesh.transport()) as client,
    ):
        jason = []
        for i in range(2):
            sent = time.time()
            start = time.monotonic()
            r = client.get(f"{RATINGS}?{tag}&user=jason&i={i}", headers={"end-user": "jason"})
            jason.append((r, time.monotonic() - start, sent))
        others = []
        for _ in range(5):
            start = time.monotonic()
            r = client.get(f"{RATINGS}?{tag}&user=mike", headers={"end-user": "mike"})
            others.append((r, time.monotonic() - start))
    received = {r["query"]: r["at"] for r in world["ratings-v1"].requests(tag)}
    for r, elapsed, sent in jason:
        assert r.status_code == 200 and r.json()["server"] == "ratings-v1"
        assert "DI" in info_of(r).response_flags
        assert elapsed >= DELAY - 0.01, elapsed
        assert elapsed < DELAY + 1.0, elapsed
        # delayed before forwarding: the backend got it only after the delay
        assert received[r.json()["query"]] - sent >= DELAY - 0.05
    for r, elapsed in others:
        assert r.status_code == 200 and info_of(r).flags == "-"
        assert elapsed < DELAY - 0.1, elapsed


def test_fault_injection_abort(world: World) -> None:
    """istio.io "Fault Injection", abort: ``ratings-test-abort`` answers jason's calls with
    HTTP 500 ("Ratings service is currently unavailable"); other users are served."""
    abort = """    fault:
      abort:
        percentage: {value: 100.0}
        httpStatus: 500
"""
    config = world.client_config(
        "fault-abort", destination_rule("ratings", "v1"), jason_route("ratings", "v1", abort)
    )
    tag = marker()
    with (
        world.client(config, "bookinfo-reviews", app="reviews") as mesh,
        httpx.Client(transport=mesh.transport()) as client,
    ):
        start = time.monotonic()
        jason = [
            client.get(f"{RATINGS}?{tag}&user=jason", headers={"end-user": "jason"})
            for _ in range(5)
        ]
        elapsed = time.monotonic() - start
        others = [
            client.get(f"{RATINGS}?{tag}&user=mike", headers={"end-user": "mike"}) for _ in range(5)
        ]
    for r in jason:
        assert r.status_code == 500
        assert r.text == "fault filter abort"
        assert info_of(r).flags == "FI"
    assert elapsed < 1.0, elapsed
    assert served_by(others) == {"ratings-v1": 5}
    # the aborted requests never left the caller
    assert {r["query"] for r in world["ratings-v1"].requests(tag)} == {f"{tag}&user=mike"}


# -- 5. circuit breaking ----------------------------------------------------------------------

CIRCUIT_BREAKER = destination_rule(
    "httpbin",
    "v1",
    "v2",
    traffic_policy="""  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
""",
)
OVERFLOW = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


async def fortio(world: World, name: str, *runs: tuple[int, int]) -> list[Counter[int]]:
    """``fortio load -c C -qps 0 -n N http://httpbin:8000/get`` for each ``(C, N)`` of ``runs``
    (C callers sending back to back, N requests in all), through one client mesh with the
    task's DestinationRule, after one ``fortio load -curl`` that must succeed. Returns the
    status codes of each run; every 503 must be Envoy's overflow reply."""
    config = world.client_config(name, CIRCUIT_BREAKER)
    results: list[list[httpx.Response]] = []
    with world.client(config, "sleep", app="fortio") as mesh:
        async with httpx.AsyncClient(transport=mesh.async_transport()) as client:
            single = await client.get(f"{HTTPBIN}/get")
            assert single.status_code == 200, single.text

            for callers, total in runs:

                async def caller(n: int = total // callers) -> list[httpx.Response]:
                    return [await client.get(f"{HTTPBIN}/get") for _ in range(n)]

                done = await AsyncWorkers.run([caller] * callers)
                results.append([r for rs in done for r in rs])
    counts = []
    for responses in results:
        for r in responses:
            if r.status_code == 503:
                assert r.text == OVERFLOW
                assert r.headers["x-envoy-overloaded"] == "true"
                assert info_of(r).flags == "UO"
            else:
                assert r.status_code == 200, (r.status_code, r.text)
        counts.append(Counter(r.status_code for r in responses))
    return counts


@pytest.mark.anyio
async def test_circuit_breaking(world: World) -> None:
    """istio.io "Circuit Breaking": with the task's DestinationRule a single call succeeds;
    ``fortio -c 2 -n 20`` and ``-c 3 -n 30`` trip the breaker: 200s and 503 overflows
    (flag ``UO``, ``x-envoy-overloaded: true``), a larger share of 503s with three callers."""
    two, three = await fortio(world, "circuit-breaking", (2, 20), (3, 30))
    print(f"circuit breaking: -c 2 -n 20: {dict(two)}, -c 3 -n 30: {dict(three)}")
    assert two[200] > 0 and two[503] > 0, two
    assert three[200] > 0 and three[503] > 0, three
    assert three[503] / 30 > two[503] / 20, (two, three)


@pytest.mark.xfail(
    strict=True,
    reason="inmesh refuses every request that arrives while another one waits for its new "
    "connection (maxRequestsPerConnection 1: every request opens one; a Python TLS handshake "
    "takes ~15 ms here and a refusal ~0.1 ms), so with two back-to-back callers the second "
    "caller's 10 requests all overflow during the first caller's first handshake: 10/20 "
    "succeed on every run, where istio.io shows 19/20 (or 17/20) 'almost all requests made "
    "it through'",
)
@pytest.mark.anyio
async def test_circuit_breaking_two_connections_mostly_succeed(world: World) -> None:
    """istio.io "Circuit Breaking", ``fortio -c 2 -qps 0 -n 20``: "It's interesting to see that
    almost all requests made it through! The istio-proxy does allow for some leeway."
    (``Code 200 : 19 (95.0 %)``; other versions of the page show 17, 85 %)."""
    (two,) = await fortio(world, "circuit-breaking-two", (2, 20))
    assert two[200] >= 15, two


# -- 6. mirroring --------------------------------------------------------------------------


def test_mirroring(world: World) -> None:
    """istio.io "Mirroring": all traffic to httpbin v1, then mirror 100 % to v2. The caller
    only ever sees v1's answers; v2 receives the copies, with ``-shadow`` on the Host."""
    mirror = virtual_service(
        "httpbin",
        """  - route:
    - destination: {host: httpbin, subset: v1}
      weight: 100
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 100.0}
""",
    )
    config = world.client_config("mirroring", destination_rule("httpbin", "v1", "v2"))
    apply(config, "vs.yaml", weighted("httpbin", {"v1": 100}))
    tag = marker()
    v1, v2 = world["httpbin-v1"], world["httpbin-v2"]
    with (
        world.client(config, "sleep", watch=True) as mesh,
        httpx.Client(transport=mesh.transport()) as client,
    ):
        before = [client.get(f"{HTTPBIN}/headers?{tag}&phase=1") for _ in range(3)]
        change_config(mesh, lambda: apply(config, "vs.yaml", mirror))
        mirrored = [client.get(f"{HTTPBIN}/headers?{tag}&phase=2&i={i}") for i in range(5)]
        eventually(lambda: len(v2.requests(tag)) >= 5, "the mirrored copies at v2")
        time.sleep(0.3)  # no more than one copy each
    assert served_by(before) == {"httpbin-v1": 3}
    assert served_by(mirrored) == {"httpbin-v1": 5}
    assert [r["host"] for r in v1.requests(tag)] == ["httpbin:8000"] * 8
    shadows = v2.requests(tag)
    assert sorted(r["query"] for r in shadows) == [f"{tag}&phase=2&i={i}" for i in range(5)]
    assert {r["host"] for r in shadows} == {"httpbin-shadow:8000"}
    assert {r["peer"] for r in shadows} == {spiffe("default", "sleep")}  # over mTLS too
    assert {info_of(r).mirrored for r in mirrored} == {1}


# -- 7. HTTP authorization ---------------------------------------------------------------------


def test_authorization_for_http_traffic(world: World) -> None:
    """istio.io "Authorization for HTTP traffic": ``allow-nothing`` denies every request with
    403 ``RBAC: access denied``; then an ALLOW policy for GET from the ``sleep`` service
    account lets exactly those requests through."""
    config = world.client_config("authz")
    with (
        world.client(config, "sleep") as sleep_mesh,
        world.client(config, "other") as other_mesh,
        httpx.Client(transport=sleep_mesh.transport()) as sleep,
        httpx.Client(transport=other_mesh.transport()) as other,
    ):
        assert sleep.get(PRODUCTPAGE).status_code == 200  # no policy yet: allowed

        apply(world.authz_config, "allow-nothing.yaml", ALLOW_NOTHING)
        eventually(lambda: sleep.get(PRODUCTPAGE).status_code == 403, "allow-nothing")
        denied = [sleep.get(PRODUCTPAGE), sleep.post(PRODUCTPAGE, content=b"x")]
        denied += [other.get(PRODUCTPAGE), other.post(PRODUCTPAGE, content=b"x")]

        apply(world.authz_config, "productpage-viewer.yaml", PRODUCTPAGE_VIEWER)
        eventually(lambda: sleep.get(PRODUCTPAGE).status_code == 200, "productpage-viewer")
        get = sleep.get(PRODUCTPAGE)
        post = sleep.post(PRODUCTPAGE, content=b"x")
        other_get = other.get(PRODUCTPAGE)
    for r in [*denied, post, other_get]:
        assert r.status_code == 403
        assert r.text == "RBAC: access denied"
    assert get.status_code == 200
    assert get.json()["server"] == "productpage-v1"
    assert get.json()["peer"] == spiffe("default", "sleep")


# -- 8. mutual TLS migration ---------------------------------------------------------------------


def plaintext_get(port: int) -> httpx.Response:
    """``sleep.legacy`` (no sidecar): plain HTTP on a new connection."""
    with httpx.Client() as legacy:
        return legacy.get(f"http://127.0.0.1:{port}/ip", headers={"host": "httpbin.foo:8000"})


def plaintext_refused(port: int, query: str) -> str:
    """What a plaintext client sees from a STRICT workload: ``"reset"`` (curl's exit code 56,
    as on istio.io), ``"closed"`` (EOF without a response), or ``"served"``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /ip?{query} HTTP/1.1\r\nHost: httpbin.foo:8000\r\n\r\n".encode())
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return "reset"
    return "served" if data else "closed"


def test_mutual_tls_migration(world: World) -> None:
    """istio.io "Mutual TLS Migration": under the default PERMISSIVE mode httpbin.foo serves
    ``sleep.bar`` (mTLS) and ``sleep.legacy`` (plaintext). After a STRICT
    PeerAuthentication in namespace foo the legacy client's connection is reset
    ("000 ... command terminated with exit code 56") and sleep.bar still gets 200; the same
    with the mesh-wide policy in istio-system; removing it lets the legacy client in again."""
    httpbin = world["httpbin-foo"]
    config = world.client_config("mtls-migration")
    url = "http://httpbin.foo:8000/ip"
    tag = marker()

    def legacy_served() -> bool:
        return plaintext_refused(httpbin.port, "poll") == "served"

    with world.client(config, "sleep", namespace="bar") as mesh:

        def under_strict() -> tuple[list[str], list[httpx.Response]]:
            refusals = [plaintext_refused(httpbin.port, tag) for _ in range(3)]
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                plaintext_get(httpbin.port)
            with httpx.Client(transport=mesh.transport()) as bar:  # new connections
                return refusals, [bar.get(url) for _ in range(3)]

        with httpx.Client(transport=mesh.transport()) as bar:
            mtls_before = bar.get(url)
        legacy_before = plaintext_get(httpbin.port)

        # Lock down to mutual TLS by namespace.
        apply(world.foo_config, "peer-authentication.yaml", STRICT_FOO)
        eventually(lambda: not legacy_served(), "STRICT in namespace foo")
        namespace_strict = under_strict()

        # Lock down mutual TLS for the entire mesh (without the namespace policy).
        delete(world.foo_config, "peer-authentication.yaml")
        eventually(legacy_served, "PERMISSIVE again")
        apply(world.foo_config, "mesh-wide.yaml", STRICT_MESH)
        eventually(lambda: not legacy_served(), "STRICT mesh-wide")
        mesh_strict = under_strict()

        # Clean up: PERMISSIVE again.
        delete(world.foo_config, "mesh-wide.yaml")
        eventually(legacy_served, "PERMISSIVE after the clean-up")
        legacy_after = plaintext_get(httpbin.port)

    assert mtls_before.status_code == 200
    assert mtls_before.json()["peer"] == spiffe("bar", "sleep")
    assert legacy_before.status_code == 200
    assert legacy_before.json()["peer"] is None
    for refusals, mtls in (namespace_strict, mesh_strict):
        assert refusals == ["reset"] * 3, refusals
        for r in mtls:
            assert r.status_code == 200
            assert r.json()["peer"] == spiffe("bar", "sleep")
            assert r.json()["server"] == "httpbin-foo"
    assert httpbin.requests(tag) == []  # the refused requests never reached the app
    assert legacy_after.status_code == 200
