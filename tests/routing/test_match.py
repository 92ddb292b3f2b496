from __future__ import annotations

import pytest

from inmesh.config.resources._common import StringMatch
from inmesh.config.resources.virtual_service import HTTPMatchRequest
from inmesh.model import Workload
from inmesh.routing import RequestAttrs, compile_match, parse_query

WL = Workload("frontend", namespace="shop", labels={"app": "frontend", "version": "v1"})


def req(target: str = "/", **kw: object) -> RequestAttrs:
    return RequestAttrs.build(target=target, **kw)  # type: ignore[arg-type]


S = StringMatch
CASES = [
    # (match, request, expected)
    (HTTPMatchRequest(uri=S(exact="/a")), req("/a?x=1"), True),
    (HTTPMatchRequest(uri=S(exact="/a")), req("/a/b"), False),
    (HTTPMatchRequest(uri=S(exact="/A"), ignore_uri_case=True), req("/a"), True),
    (HTTPMatchRequest(uri=S(prefix="/api")), req("/api/v1"), True),
    (HTTPMatchRequest(uri=S(prefix="/api")), req("/API/v1"), False),
    (HTTPMatchRequest(uri=S(prefix="/API"), ignore_uri_case=True), req("/api/v1"), True),
    (HTTPMatchRequest(uri=S(regex="/u/[0-9]+")), req("/u/42"), True),
    (HTTPMatchRequest(uri=S(regex="/u/[0-9]+")), req("/u/42/x"), False),  # full match
    (HTTPMatchRequest(uri=S(regex="/U/.*"), ignore_uri_case=True), req("/u/x"), False),
    (HTTPMatchRequest(scheme=S(exact="https")), req(scheme="https"), True),
    (HTTPMatchRequest(scheme=S(exact="https")), req(scheme="http"), False),
    (HTTPMatchRequest(method=S(exact="POST")), req(method="POST"), True),
    (HTTPMatchRequest(method=S(exact="POST")), req(method="post"), False),
    (HTTPMatchRequest(authority=S(prefix="reviews")), req(authority="reviews:9080"), True),
    (HTTPMatchRequest(authority=S(exact="reviews")), req(authority="reviews:9080"), False),
    (
        HTTPMatchRequest(headers={"end-user": S(exact="jason")}),
        req(headers={"End-User": "jason"}),
        True,
    ),
    (HTTPMatchRequest(headers={"end-user": S(exact="jason")}), req(), False),
    (HTTPMatchRequest(headers={"x": S()}), req(headers={"x": ""}), True),
    (HTTPMatchRequest(headers={"x": S()}), req(), False),
    (HTTPMatchRequest(headers={"x": S(regex="*")}), req(headers={"x": "1"}), True),
    (HTTPMatchRequest(headers={"x": S(regex="a|b")}), req(headers={"x": "ab"}), False),
    (HTTPMatchRequest(headers={"x": S(exact="a,b")}), req(headers=[("x", "a"), ("X", "b")]), True),
    (HTTPMatchRequest(without_headers={"x": S(exact="foo")}), req(), True),
    (HTTPMatchRequest(without_headers={"x": S(exact="foo")}), req(headers={"x": "foo"}), False),
    (HTTPMatchRequest(without_headers={"x": S(exact="")}), req(), False),  # missing = ""
    (HTTPMatchRequest(without_headers={"x": S()}), req(), True),
    (HTTPMatchRequest(without_headers={"x": S()}), req(headers={"x": "1"}), False),
    (HTTPMatchRequest(query_params={"k": S(exact="")}), req("/?k"), True),
    (HTTPMatchRequest(query_params={"k": S(exact="")}), req("/?k="), True),
    (HTTPMatchRequest(query_params={"k": S(exact="")}), req("/?k=1"), False),
    (HTTPMatchRequest(query_params={"k": S()}), req("/?k=1"), True),
    (HTTPMatchRequest(query_params={"k": S()}), req("/?j=1"), False),
    (HTTPMatchRequest(query_params={"k": S(regex="[0-9]+")}), req("/?k=12"), True),
    (HTTPMatchRequest(query_params={"k": S(regex="[0-9]+")}), req("/?k=12a"), False),
    (HTTPMatchRequest(query_params={"k": S(prefix="a")}), req("/?k=a%20b"), True),
    (HTTPMatchRequest(port=9080), req(port=9080), True),
    (HTTPMatchRequest(port=9080), req(port=80), False),
    (
        HTTPMatchRequest(uri=S(prefix="/a"), method=S(exact="GET"), headers={"x": S(exact="1")}),
        req("/a", headers={"x": "1"}),
        True,
    ),
    (
        HTTPMatchRequest(uri=S(prefix="/a"), method=S(exact="GET"), headers={"x": S(exact="1")}),
        req("/a", headers={"x": "2"}),
        False,
    ),
    (HTTPMatchRequest(headers={"uri": S(exact="/nope")}), req("/a"), True),  # ignored key
]


@pytest.mark.parametrize(("m", "attrs", "expected"), CASES)
def test_match_table(m: HTTPMatchRequest, attrs: RequestAttrs, expected: bool) -> None:
    compiled = compile_match(m, WL)
    assert compiled is not None
    assert compiled(attrs) is expected


@pytest.mark.parametrize(
    ("m", "applies"),
    [
        (HTTPMatchRequest(source_labels={"app": "frontend"}), True),
        (HTTPMatchRequest(source_labels={"app": "frontend", "version": "v2"}), False),
        (HTTPMatchRequest(source_namespace="shop"), True),
        (HTTPMatchRequest(source_namespace="other"), False),
        (HTTPMatchRequest(gateways=("mesh",)), True),
        (HTTPMatchRequest(gateways=("istio-system/gw",)), False),
        (HTTPMatchRequest(headers={"@request.auth.claims.sub": S(exact="a")}), False),
    ],
)
def test_compile_time_conditions(m: HTTPMatchRequest, applies: bool) -> None:
    assert (compile_match(m, WL) is not None) is applies


def test_source_labels_without_workload() -> None:
    assert compile_match(HTTPMatchRequest(source_labels={"app": "x"}), None) is None
    assert compile_match(HTTPMatchRequest(uri=S(prefix="/")), None) is not None


def test_parse_query() -> None:
    assert parse_query("a=1&b&c=&a=2&d%20e=f%2Fg") == {"a": "1", "b": "", "c": "", "d e": "f/g"}
    assert parse_query("") == {}


def test_request_attrs_build() -> None:
    a = RequestAttrs.build(target="/p?q=1", headers=[("A", "1"), ("a", "2")], port=80)
    assert (a.path, a.query, dict(a.params), dict(a.headers)) == (
        "/p",
        "q=1",
        {"q": "1"},
        {"a": "1,2"},
    )


def test_prefix_len_for_rewrite() -> None:
    m = compile_match(HTTPMatchRequest(uri=S(prefix="/api")), WL)
    assert m is not None and m.matched_prefix_len("/api/x") == 4
    e = compile_match(HTTPMatchRequest(uri=S(exact="/x")), WL)
    assert e is not None and e.matched_prefix_len("/x") == 2
