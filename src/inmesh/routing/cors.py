"""VirtualService ``corsPolicy``, sans I/O: Envoy's CORS filter as Istio configures it.

Istio's ``translateCORSPolicy`` (istio/istio
``pilot/pkg/networking/core/route/route.go``) fills Envoy's ``CorsPolicy``:
``allowOrigins`` as string matchers (the deprecated ``allowOrigin`` as exact
matches), ``allowMethods``, ``allowHeaders`` and ``exposeHeaders`` joined with
``,``, ``maxAge`` as whole seconds, ``allowCredentials``, and
``unmatchedPreflights: IGNORE`` as ``forward_not_matching_preflights: false``
(``FORWARD``, the default, forwards them).

Envoy's filter (``source/extensions/filters/http/cors/cors_filter.cc``):

* A request without ``Origin`` is not a CORS request: untouched.
* The origin is allowed when a matcher matches it, or matches ``*`` (so an
  exact ``*`` allows every origin).
* A **preflight** is ``OPTIONS`` with ``Origin`` and a non-empty
  ``Access-Control-Request-Method``. Allowed: Envoy answers it itself, 200
  with ``Access-Control-Allow-Origin`` (the request's origin), and, when
  configured, ``-Allow-Credentials: true``, ``-Allow-Methods``,
  ``-Allow-Headers`` and ``-Max-Age``; the upstream never sees it. Not
  allowed: forwarded upstream (``FORWARD``), or with ``IGNORE`` answered 200
  without any CORS header.
* An **actual** request from an allowed origin goes upstream; the response
  gets ``Access-Control-Allow-Origin`` (the origin),
  ``-Allow-Credentials: true`` when configured, and ``-Expose-Headers``.
  From another origin it passes untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from inmesh.config.resources.virtual_service import CorsPolicy, UnmatchedPreflights
from inmesh.routing.match import StringPredicate, compile_string_match

__all__ = ["CompiledCors", "CorsResult"]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CorsResult:
    """What the CORS filter does to one request."""

    preflight_response: tuple[int, Headers] | None = None
    """Answer locally with ``(status, headers)``; the request does not go upstream."""
    response_headers: Headers = ()
    """Headers to add to the upstream's response."""
    forward: bool = True


@dataclass(frozen=True, slots=True)
class CompiledCors:
    """A route's CORS policy, ready to evaluate per request."""

    origins: tuple[StringPredicate, ...]
    preflight_headers: Headers
    actual_headers: Headers
    forward_unmatched_preflights: bool

    @classmethod
    def compile(cls, policy: CorsPolicy) -> CompiledCors:
        origins = [compile_string_match(m) for m in policy.allow_origins]
        origins.extend(o.__eq__ for o in policy.allow_origin)
        credentials: Headers = (
            (("access-control-allow-credentials", "true"),) if policy.allow_credentials else ()
        )
        pre: list[tuple[str, str]] = list(credentials)
        if policy.allow_methods:
            pre.append(("access-control-allow-methods", ",".join(policy.allow_methods)))
        if policy.allow_headers:
            pre.append(("access-control-allow-headers", ",".join(policy.allow_headers)))
        if policy.max_age is not None:
            pre.append(("access-control-max-age", str(int(policy.max_age.seconds))))
        actual: list[tuple[str, str]] = list(credentials)
        if policy.expose_headers:
            actual.append(("access-control-expose-headers", ",".join(policy.expose_headers)))
        return cls(
            origins=tuple(origins),
            preflight_headers=tuple(pre),
            actual_headers=tuple(actual),
            forward_unmatched_preflights=policy.unmatched_preflights
            is not UnmatchedPreflights.IGNORE,
        )

    def allows(self, origin: str) -> bool:
        return any(m("*") or m(origin) for m in self.origins)

    def evaluate(self, method: str, headers: Mapping[str, str]) -> CorsResult | None:
        """``None``: not a CORS request, or an actual request from another origin (untouched).

        ``headers`` has lower-case names.
        """
        origin = headers.get("origin")
        if not origin:
            return None
        allowed = self.allows(origin)
        if method == "OPTIONS" and headers.get("access-control-request-method"):
            if allowed:
                return CorsResult(
                    preflight_response=(
                        200,
                        (("access-control-allow-origin", origin), *self.preflight_headers),
                    ),
                    forward=False,
                )
            if self.forward_unmatched_preflights:
                return None
            return CorsResult(preflight_response=(200, ()), forward=False)
        if not allowed:
            return None
        return CorsResult(
            response_headers=(("access-control-allow-origin", origin), *self.actual_headers)
        )
