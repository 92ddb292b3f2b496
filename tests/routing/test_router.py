from __future__ import annotations

import random
import timeit

from inmesh.config.snapshot import build_snapshot
from inmesh.model import Workload
from inmesh.routing import NoRoute, RequestAttrs, RouteDecision, RouteKind, RouteTable

WL = Workload("frontend", namespace="default", labels={"app": "frontend", "version": "v1"})
REVIEWS = "reviews.default.svc.cluster.local"


def table(yaml_text: str, wl: Workload = WL) -> RouteTable:
    return RouteTable.compile(build_snapshot(yaml_text), wl)


def vs(name: str, body: str, ns: str = "default", ts: str | None = None) -> str:
    meta = f"  name: {name}\n  namespace: {ns}\n"
    if ts:
        meta += f"  creationTimestamp: '{ts}'\n"
    return f"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n{meta}spec:\n{body}"


def decide(t: RouteTable, target: str = "/", host: str = REVIEWS, **kw: object) -> RouteDecision:
    d = t.route(RequestAttrs.build(target=target, **kw), host)  # type: ignore[arg-type]
    assert isinstance(d, RouteDecision), d
    return d


BOOKINFO = vs(
    "reviews",
    """  hosts: [reviews]
  http:
  - name: jason
    match:
    - name: user
      headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - name: api
    match:
    - uri: {prefix: /api}
    - uri: {regex: '/v[0-9]+/.*'}
    - queryParams: {debug: {exact: ""}}
    route:
    - destination: {host: reviews, subset: v3}
  - route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: never}
""",
)


def test_header_routing_and_catch_all() -> None:
    t = table(BOOKINFO)
    d = decide(t, headers={"end-user": "jason"})
    assert (d.name, d.pick(random.Random(0)).subset) == ("jason.user", "v2")
    assert d.destinations[0].host == REVIEWS
    d = decide(t, headers={"end-user": "bob"})
    assert d.pick(random.Random(0)).subset == "v1"
    assert d.kind is RouteKind.ROUTE and not d.is_default


def test_prefix_regex_query() -> None:
    t = table(BOOKINFO)
    assert decide(t, "/api/x").destinations[0].subset == "v3"
    assert decide(t, "/v2/x").destinations[0].subset == "v3"
    assert decide(t, "/vx/x").destinations[0].subset == "v1"
    assert decide(t, "/p?debug").destinations[0].subset == "v3"
    assert decide(t, "/p?debug=1").destinations[0].subset == "v1"


def test_first_match_wins_and_later_catch_all_dropped() -> None:
    t = table(BOOKINFO)
    # jason on /api goes to the first rule
    assert decide(t, "/api", headers={"end-user": "jason"}).destinations[0].subset == "v2"
    subsets = {decide(t, p).destinations[0].subset for p in ("/", "/x", "/y?z")}
    assert subsets == {"v1"}


def test_no_vs_default_and_no_match() -> None:
    t = table(BOOKINFO)
    d = decide(t, host="ratings.default.svc.cluster.local")
    assert d.is_default and d.name == "default"
    assert d.destinations[0].host == "ratings.default.svc.cluster.local"
    t2 = table(
        vs(
            "r",
            "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {exact: /only}\n    route:\n    - destination: {host: reviews}\n",
        )
    )
    nr = t2.route(RequestAttrs.build(target="/other"), REVIEWS)
    assert isinstance(nr, NoRoute) and (nr.status, nr.response_flags) == (404, "NR")


def test_source_labels() -> None:
    text = vs(
        "r",
        """  hosts: [reviews]
  http:
  - match:
    - sourceLabels: {app: frontend}
    route:
    - destination: {host: reviews, subset: fe}
  - route:
    - destination: {host: reviews, subset: other}
""",
    )
    assert decide(table(text)).destinations[0].subset == "fe"
    other = Workload("batch", labels={"app": "batch"})
    assert decide(table(text, other)).destinations[0].subset == "other"


def test_merge_two_virtual_services_oldest_first() -> None:
    newer = vs(
        "b",
        "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /b}\n    route:\n    - destination: {host: reviews, subset: b}\n",
        ts="2024-02-01T00:00:00Z",
    )
    older = vs(
        "a",
        "  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - match:\n    - uri: {prefix: /}\n    route:\n    - destination: {host: reviews, subset: a}\n",
        ts="2024-01-01T00:00:00Z",
    )
    t = table(newer + older)
    assert decide(t, "/b").destinations[0].subset == "a"  # older VS first
    t = table(newer + older.replace("prefix: /}", "prefix: /a}"))
    assert decide(t, "/b").destinations[0].subset == "b"
    assert decide(t, "/a").destinations[0].subset == "a"


def test_wildcard_most_specific_and_gateway_and_export() -> None:
    text = (
        vs(
            "w",
            "  hosts: ['*.example.com']\n  http:\n  - route:\n    - destination: {host: wild.example.com}\n",
        )
        + vs(
            "e",
            "  hosts: [api.example.com]\n  http:\n  - route:\n    - destination: {host: exact.example.com}\n",
        )
        + vs(
            "g",
            "  hosts: [ratings]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: x}\n",
        )
        + vs(
            "p",
            "  hosts: [details.other.svc.cluster.local]\n  exportTo: ['.']\n  http:\n  - route:\n    - destination: {host: x}\n",
            ns="other",
        )
    )
    t = table(text)
    assert decide(t, host="api.example.com").destinations[0].host == "exact.example.com"
    assert decide(t, host="b.example.com").destinations[0].host == "wild.example.com"
    assert decide(t, host="ratings.default.svc.cluster.local").is_default
    assert decide(t, host="details.other.svc.cluster.local").is_default
    assert not decide(
        table(text, Workload("x", namespace="other")), host="details.other.svc.cluster.local"
    ).is_default


def test_weights_distribution() -> None:
    text = vs(
        "r",
        """  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
    - destination: {host: reviews, subset: v3}
      weight: 0
""",
    )
    d = decide(table(text))
    assert [x.subset for x in d.destinations] == ["v1", "v2"]
    rng = random.Random(1234)
    counts = {"v1": 0, "v2": 0}
    for _ in range(10_000):
        counts[d.pick(rng).subset or ""] += 1
    assert 8800 <= counts["v1"] <= 9200
    assert counts["v1"] + counts["v2"] == 10_000


def test_rewrite_and_headers() -> None:
    text = vs(
        "r",
        """  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /old}
    rewrite: {uri: /new}
    headers:
      request:
        set: {x-a: route, host: h.example}
        remove: [x-r]
      response:
        add: {x-resp: "1"}
    route:
    - destination: {host: reviews, port: {number: 9080}}
      headers:
        request:
          set: {x-a: dest}
          add: {x-b: "2"}
  - match:
    - uri: {regex: '/u/[0-9]+'}
    rewrite:
      uriRegexRewrite: {match: '^/u/([0-9]+)$', rewrite: '/users/\\1'}
      authority: users.example
    route:
    - destination: {host: reviews}
""",
    )
    t = table(text)
    d = decide(t, "/old/x?q=1")
    assert d.rewrite_path("/old/x") == "/new/x"
    dest = d.pick(random.Random(0))
    assert dest.port == 9080 and dest.authority == "h.example"
    assert dest.request_headers.set == (("x-a", "dest"),)
    assert dest.request_headers.add == (("x-b", "2"),)
    assert dest.request_headers.remove == ("x-r",)
    assert dest.response_headers.add == (("x-resp", "1"),)
    assert dest.request_headers.apply([("X-R", "1"), ("x-a", "0"), ("k", "v")]) == [
        ("k", "v"),
        ("x-a", "dest"),
        ("x-b", "2"),
    ]
    d = decide(t, "/u/42")
    assert d.rewrite_path("/u/42") == "/users/42"
    assert d.destinations[0].authority == "users.example"
    assert decide(table(BOOKINFO)).rewrite_path("/") is None


def test_redirect_and_direct_response() -> None:
    text = vs(
        "r",
        """  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /a}
    redirect: {uri: /b, authority: new.example, scheme: https}
  - match:
    - uri: {prefix: /old}
    redirect: {prefixRewrite: /new, port: 8443, redirectCode: 308}
  - match:
    - uri: {prefix: /req}
    redirect: {scheme: http, derivePort: FROM_REQUEST_PORT}
  - match:
    - uri: {prefix: /dr}
    directResponse: {status: 503, body: {string: down}}
""",
    )
    t = table(text)
    a = RequestAttrs.build(target="/a?x=1", authority="reviews:9080", port=9080)
    d = t.route(a, REVIEWS)
    assert isinstance(d, RouteDecision) and d.kind is RouteKind.REDIRECT
    assert (d.redirect_code, d.redirect_location(a)) == (301, "https://new.example/b?x=1")
    a = RequestAttrs.build(target="/old/p", authority="reviews:9080", port=9080)
    d = t.route(a, REVIEWS)
    assert isinstance(d, RouteDecision)
    assert (d.redirect_code, d.redirect_location(a)) == (308, "http://reviews:8443/new/p")
    a = RequestAttrs.build(target="/req", authority="reviews", port=80)
    d = t.route(a, REVIEWS)
    assert isinstance(d, RouteDecision) and d.redirect_location(a) == "http://reviews/req"
    d = decide(t, "/dr")
    assert d.kind is RouteKind.DIRECT_RESPONSE and d.direct_response is not None
    assert d.direct_response.status == 503 and d.direct_response.body is not None
    assert d.direct_response.body.content == b"down" and d.destinations == ()


def test_passthrough_objects() -> None:
    text = vs(
        "r",
        "  hosts: [reviews]\n  http:\n  - timeout: 2s\n    retries: {attempts: 3}\n    route:\n    - destination: {host: reviews}\n",
    )
    d = decide(table(text))
    assert d.timeout is not None and d.timeout.seconds == 2.0
    assert d.retries is not None and d.retries.attempts == 3 and d.fault is None


def test_route_is_fast() -> None:
    t = table(BOOKINFO)
    a = RequestAttrs.build(target="/x", headers={"end-user": "bob"})
    n = 20_000
    per_call = timeit.timeit(lambda: t.route(a, REVIEWS), number=n) / n
    assert per_call < 50e-6  # generous for CI; typically a few µs
