"""CORS decisions: Envoy's filter as Istio configures it, without I/O."""

from __future__ import annotations

import pytest

from inmesh.config.resources._common import Duration, StringMatch
from inmesh.config.resources.virtual_service import CorsPolicy, UnmatchedPreflights
from inmesh.routing.cors import CompiledCors, CorsResult

APP = "https://app.example.com"
EVIL = "https://evil.example"
ORIGIN = "access-control-allow-origin"
CREDENTIALS = "access-control-allow-credentials"
METHODS = "access-control-allow-methods"
HEADERS = "access-control-allow-headers"
MAX_AGE = "access-control-max-age"
EXPOSE = "access-control-expose-headers"


def cors(**kw: object) -> CompiledCors:
    kw.setdefault("allow_origins", (StringMatch(exact=APP),))
    return CompiledCors.compile(CorsPolicy(**kw))  # type: ignore[arg-type]


def preflight(origin: str = APP, method: str = "POST", **extra: str) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method, **extra}


FULL = {
    "allow_methods": ("GET", "POST"),
    "allow_headers": ("x-a", "x-b"),
    "expose_headers": ("x-total", "x-page"),
    "max_age": Duration(86400.0),
    "allow_credentials": True,
}


# -- origins ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "origin", "allowed"),
    [
        (StringMatch(exact=APP), APP, True),
        (StringMatch(exact=APP), APP + ":8443", False),
        (StringMatch(exact=APP), APP.upper(), False),  # case-sensitive
        (StringMatch(prefix="https://dev-"), "https://dev-1.example.com", True),
        (StringMatch(prefix="https://dev-"), "http://dev-1.example.com", False),
        (StringMatch(regex=r"https://.*\.example\.org"), "https://a.example.org", True),
        (StringMatch(regex=r"https://.*\.example\.org"), "https://a.example.org.evil", False),
        (StringMatch(regex=r"example\.org"), "https://example.org", False),  # whole value
        (StringMatch(exact="*"), "https://anything", True),  # matches "*": all origins
        (StringMatch(regex=".*"), "null", True),
        (StringMatch(prefix="*"), "https://anything", True),
    ],
)
def test_origin_matching(match: StringMatch, origin: str, allowed: bool) -> None:
    assert cors(allow_origins=(match,)).allows(origin) is allowed


def test_several_matchers_any_allows() -> None:
    c = cors(allow_origins=(StringMatch(exact=APP), StringMatch(prefix="https://dev-")))
    assert c.allows(APP) and c.allows("https://dev-x") and not c.allows(EVIL)


def test_deprecated_allow_origin_is_exact_and_only_without_allow_origins() -> None:
    legacy = cors(allow_origins=(), allow_origin=("https://old.example",))
    assert legacy.allows("https://old.example")
    assert not legacy.allows("https://old.example.com") and not legacy.allows(APP)
    both = cors(allow_origin=("https://old.example",))  # allowOrigins set: allowOrigin ignored
    assert both.allows(APP) and not both.allows("https://old.example")


def test_empty_string_match_is_dropped() -> None:
    assert not cors(allow_origins=(StringMatch(),)).allows(APP)


def test_no_origins_allows_nothing() -> None:
    c = cors(allow_origins=())
    assert not c.allows(APP)
    assert c.evaluate("GET", {"origin": APP}) is None


# -- not CORS ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),
        ("GET", {"origin": ""}),
        ("OPTIONS", {"access-control-request-method": "POST"}),
        ("OPTIONS", {"origin": "", "access-control-request-method": "POST"}),
    ],
)
def test_not_cors_without_origin(method: str, headers: dict[str, str]) -> None:
    assert cors(**FULL).evaluate(method, headers) is None


# -- preflights --------------------------------------------------------------------


def test_matched_preflight_is_answered_locally() -> None:
    result = cors(**FULL).evaluate("OPTIONS", preflight())
    assert result == CorsResult(
        preflight_response=(
            200,
            (
                (ORIGIN, APP),
                (CREDENTIALS, "true"),
                (METHODS, "GET,POST"),
                (HEADERS, "x-a,x-b"),
                (MAX_AGE, "86400"),
                (EXPOSE, "x-total,x-page"),  # added by the filter's encodeHeaders
            ),
        ),
        response_headers=(),
        forward=False,
    )


def test_minimal_matched_preflight_only_echoes_origin() -> None:
    result = cors().evaluate("OPTIONS", preflight())
    assert result == CorsResult(preflight_response=(200, ((ORIGIN, APP),)), forward=False)


@pytest.mark.parametrize(
    "unmatched", [None, UnmatchedPreflights.UNSPECIFIED, UnmatchedPreflights.FORWARD]
)
def test_unmatched_preflight_forwarded_untouched(unmatched: UnmatchedPreflights | None) -> None:
    c = cors(unmatched_preflights=unmatched, **FULL)
    assert c.evaluate("OPTIONS", preflight(EVIL)) is None


def test_unmatched_preflight_ignore_answers_without_allow_origin() -> None:
    c = cors(unmatched_preflights=UnmatchedPreflights.IGNORE, **FULL)
    result = c.evaluate("OPTIONS", preflight(EVIL))
    assert result == CorsResult(
        preflight_response=(
            200,
            (
                (CREDENTIALS, "true"),
                (METHODS, "GET,POST"),
                (HEADERS, "x-a,x-b"),
                (MAX_AGE, "86400"),
            ),  # no allow-origin, and no expose-headers (origin not latched)
        ),
        forward=False,
    )
    bare = cors(unmatched_preflights=UnmatchedPreflights.IGNORE)
    assert bare.evaluate("OPTIONS", preflight(EVIL)) == CorsResult(
        preflight_response=(200, ()), forward=False
    )


def test_ignore_still_forwards_non_preflights() -> None:
    c = cors(unmatched_preflights=UnmatchedPreflights.IGNORE)
    assert c.evaluate("GET", {"origin": EVIL}) is None
    assert c.evaluate("OPTIONS", {"origin": EVIL}) is None


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("OPTIONS", {"origin": APP}),  # no Access-Control-Request-Method
        ("OPTIONS", {"origin": APP, "access-control-request-method": ""}),
        ("POST", preflight()),  # not OPTIONS
        ("options", preflight()),  # the method is compared as sent
    ],
)
def test_not_a_preflight_is_an_actual_request(method: str, headers: dict[str, str]) -> None:
    assert cors().evaluate(method, headers) == CorsResult(response_headers=((ORIGIN, APP),))


@pytest.mark.parametrize(
    ("allow_methods", "requested", "sent"),
    [
        (("*",), "PATCH", "PATCH"),  # exactly "*": echo the requested method
        (("GET", "*"), "PATCH", "GET,*"),  # not exactly "*": sent as joined
        (("PUT",), "PATCH", "PUT"),  # not checked against the request
    ],
)
def test_allow_methods(allow_methods: tuple[str, ...], requested: str, sent: str) -> None:
    result = cors(allow_methods=allow_methods).evaluate("OPTIONS", preflight(method=requested))
    assert result is not None and result.preflight_response is not None
    assert dict(result.preflight_response[1])[METHODS] == sent


@pytest.mark.parametrize(
    ("allow_headers", "requested", "sent"),
    [
        (("*",), "x-token,content-type", "x-token,content-type"),
        (("*",), None, ""),  # echoed even when the request names none
        (("x-a",), "x-b", "x-a"),
        ((), "x-b", None),
    ],
)
def test_allow_headers(
    allow_headers: tuple[str, ...], requested: str | None, sent: str | None
) -> None:
    extra = {"access-control-request-headers": requested} if requested is not None else {}
    result = cors(allow_headers=allow_headers).evaluate("OPTIONS", preflight(**extra))
    assert result is not None and result.preflight_response is not None
    assert dict(result.preflight_response[1]).get(HEADERS) == sent


@pytest.mark.parametrize(
    ("max_age", "sent"),
    [
        (Duration(86400.0), "86400"),
        (Duration(1.5), "1"),  # whole seconds (validation refuses fractions)
        (Duration(0.2), "0"),
        (None, None),
    ],
)
def test_max_age_whole_seconds(max_age: Duration | None, sent: str | None) -> None:
    result = cors(max_age=max_age).evaluate("OPTIONS", preflight())
    assert result is not None and result.preflight_response is not None
    assert dict(result.preflight_response[1]).get(MAX_AGE) == sent


# -- actual requests -----------------------------------------------------------------


def test_actual_request_headers() -> None:
    result = cors(**FULL).evaluate("GET", {"origin": APP})
    assert result == CorsResult(
        response_headers=(
            (ORIGIN, APP),
            (CREDENTIALS, "true"),
            (EXPOSE, "x-total,x-page"),
        ),
        forward=True,
    )


def test_actual_request_from_other_origin_untouched() -> None:
    assert cors(**FULL).evaluate("GET", {"origin": EVIL}) is None


@pytest.mark.parametrize(("credentials", "sent"), [(True, "true"), (False, None), (None, None)])
def test_credentials(credentials: bool | None, sent: str | None) -> None:
    c = cors(allow_credentials=credentials)
    actual = c.evaluate("GET", {"origin": APP})
    pre = c.evaluate("OPTIONS", preflight())
    assert actual is not None and pre is not None and pre.preflight_response is not None
    assert dict(actual.response_headers).get(CREDENTIALS) == sent
    assert dict(pre.preflight_response[1]).get(CREDENTIALS) == sent


def test_star_origin_echoes_the_request_origin() -> None:
    c = cors(allow_origins=(StringMatch(exact="*"),), allow_credentials=True)
    result = c.evaluate("GET", {"origin": "https://x.test"})
    assert result is not None
    assert result.response_headers == ((ORIGIN, "https://x.test"), (CREDENTIALS, "true"))
