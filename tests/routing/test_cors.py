"""CORS decisions: Envoy's filter as Istio configures it, without I/O."""

from __future__ import annotations

from inmesh.config.resources._common import Duration, StringMatch
from inmesh.config.resources.virtual_service import CorsPolicy, UnmatchedPreflights
from inmesh.routing.cors import CompiledCors, CorsResult

APP = "https://app.example.com"


def cors(**kw: object) -> CompiledCors:
    kw.setdefault("allow_origins", (StringMatch(exact=APP),))
    return CompiledCors.compile(CorsPolicy(**kw))  # type: ignore[arg-type]


def preflight(origin: str = APP) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": "POST"}


def test_not_cors_without_origin() -> None:
    assert cors().evaluate("GET", {}) is None
    assert cors().evaluate("OPTIONS", {"access-control-request-method": "POST"}) is None


def test_matched_preflight_is_answered_locally() -> None:
    c = cors(
        allow_methods=("GET", "POST"),
        allow_headers=("x-a", "x-b"),
        max_age=Duration.of(86400),
        allow_credentials=True,
    )
    result = c.evaluate("OPTIONS", preflight())
    assert result is not None and not result.forward
    assert result.preflight_response == (
        200,
        (
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET,POST"),
            ("access-control-allow-headers", "x-a,x-b"),
            ("access-control-max-age", "86400"),
        ),
    )


def test_options_without_request_method_is_an_actual_request() -> None:
    result = cors().evaluate("OPTIONS", {"origin": APP})
    assert result == CorsResult(response_headers=(("access-control-allow-origin", APP),))


def test_unmatched_preflight_forward_or_ignore() -> None:
    assert cors().evaluate("OPTIONS", preflight("https://evil.example")) is None
    ignore = cors(unmatched_preflights=UnmatchedPreflights.IGNORE)
    result = ignore.evaluate("OPTIONS", preflight("https://evil.example"))
    assert result == CorsResult(preflight_response=(200, ()), forward=False)


def test_actual_request_headers() -> None:
    c = cors(expose_headers=("x-total", "x-page"), allow_credentials=True)
    result = c.evaluate("GET", {"origin": APP})
    assert result is not None and result.forward and result.preflight_response is None
    assert result.response_headers == (
        ("access-control-allow-origin", APP),
        ("access-control-allow-credentials", "true"),
        ("access-control-expose-headers", "x-total,x-page"),
    )
    assert c.evaluate("GET", {"origin": "https://other.example"}) is None


def test_origin_matchers() -> None:
    c = cors(
        allow_origins=(
            StringMatch(prefix="https://dev-"),
            StringMatch(regex=r"https://.*\.example\.org"),
        )
    )
    assert c.allows("https://dev-1.example.com")
    assert c.allows("https://a.example.org")
    assert not c.allows("https://a.example.org.evil")
    assert not c.allows(APP)


def test_star_and_deprecated_allow_origin() -> None:
    assert cors(allow_origins=(StringMatch(exact="*"),)).allows("https://anything")
    legacy = cors(allow_origins=(), allow_origin=("https://old.example",))
    assert legacy.allows("https://old.example") and not legacy.allows(APP)
