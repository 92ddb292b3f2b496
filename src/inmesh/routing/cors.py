"""VirtualService ``corsPolicy``, sans I/O: Envoy's CORS filter as Istio configures it.

Translation (istio/istio ``pilot/pkg/networking/core/route/route.go``,
``TranslateCORSPolicy``): ``allowOrigins`` become Envoy string matchers
(exact, prefix, or RE2 regex matched against the whole origin; an empty
match is dropped); only when ``allowOrigins`` is empty is the deprecated
``allowOrigin`` list used, as exact matches. ``allowMethods``,
``allowHeaders`` and ``exposeHeaders`` are joined with ``,``; ``maxAge``
becomes its whole seconds (``MaxAge.GetSeconds()``); ``allowCredentials`` is
passed as is; ``unmatchedPreflights: IGNORE`` sets
``forward_not_matching_preflights: false``, anything else ``true``
(``FORWARD``). The filter is always enabled (100 %), never shadowed, and
``allow_private_network_access`` is never set.

Envoy's filter (envoyproxy/envoy
``source/extensions/filters/http/cors/cors_filter.cc``):

* A request without ``Origin`` (or with an empty one) is left alone.
* The origin is allowed when a matcher matches it, or matches ``*`` (so a
  literal ``*`` allows every origin).
* A **preflight** is ``OPTIONS`` with a non-empty
  ``Access-Control-Request-Method``. Envoy answers it itself, 200 with no
  body (details ``cors_response``), when the origin is allowed, or when it is
  not and unmatched preflights are not forwarded (``IGNORE``). The reply has
  ``Access-Control-Allow-Origin`` (the request's origin, only when allowed),
  ``-Allow-Credentials: true`` (when configured), ``-Allow-Methods`` (the
  request's ``Access-Control-Request-Method`` when configured as exactly
  ``*``), ``-Allow-Headers`` (the request's ``Access-Control-Request-Headers``,
  possibly empty, when exactly ``*``) and ``-Max-Age``. The reply then runs
  through the filter's own ``encodeHeaders`` like any response, which for an
  allowed origin also adds ``-Expose-Headers``. A preflight from another
  origin with ``FORWARD`` goes upstream untouched.
* Any other request from an allowed origin goes upstream; the response gets
  ``Access-Control-Allow-Origin`` (the origin), ``-Allow-Credentials: true``
  when configured and ``-Expose-Headers`` when configured, each **replacing**
  a header of that name from the upstream (``setInline``). From another
  origin nothing is added.
* Envoy adds no ``Vary: Origin``.

Istio puts the CORS filter after the fault filter, so route faults apply to
preflights too (see :mod:`inmesh.routing.fault`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from inmesh.config.resources.virtual_service import CorsPolicy, UnmatchedPreflights
from inmesh.routing.match import StringPredicate, compile_string_match

__all__ = ["CompiledCors", "CorsResult"]

Headers = tuple[tuple[str, str], ...]

_ALLOW_ORIGIN = "access-control-allow-origin"
_ALLOW_CREDENTIALS = "access-control-allow-credentials"
_ALLOW_METHODS = "access-control-allow-methods"
_ALLOW_HEADERS = "access-control-allow-headers"
_MAX_AGE = "access-control-max-age"
_EXPOSE_HEADERS = "access-control-expose-headers"


@dataclass(frozen=True, slots=True)
class CorsResult:
    """What the CORS filter does to one request."""

    preflight_response: tuple[int, Headers] | None = None
    """Answer locally with ``(status, headers)`` and an empty body."""
    response_headers: Headers = ()
    """Headers to set on the upstream's response, replacing any of the same name."""
    forward: bool = True
    """Whether the request goes on upstream (``False`` exactly when answered locally)."""


@dataclass(frozen=True, slots=True)
class CompiledCors:
    """A route's CORS policy as Envoy receives it, ready to evaluate per request."""

    origins: tuple[StringPredicate, ...]
    allow_all_origins: bool
    """A matcher matches ``*``: every origin is allowed."""
    allow_methods: str
    """Joined with ``,``; empty: no header; ``*``: echo the requested method."""
    allow_headers: str
    """Joined with ``,``; empty: no header; ``*``: echo the requested headers."""
    expose_headers: str
    max_age: str | None
    allow_credentials: bool
    forward_unmatched_preflights: bool
    actual_headers: Headers
    """Added to responses for an allowed origin, after ``Access-Control-Allow-Origin``."""

    @classmethod
    def compile(cls, policy: CorsPolicy) -> CompiledCors:
        origins: list[StringPredicate]
        if policy.allow_origins:
            origins = [compile_string_match(m) for m in policy.allow_origins if not m.is_empty]
        else:
            origins = [o.__eq__ for o in policy.allow_origin]
        credentials = bool(policy.allow_credentials)
        expose = ",".join(policy.expose_headers)
        actual: list[tuple[str, str]] = []
        if credentials:
            actual.append((_ALLOW_CREDENTIALS, "true"))
        if expose:
            actual.append((_EXPOSE_HEADERS, expose))
        max_age = None
        if policy.max_age is not None:
            max_age = str(round(policy.max_age.seconds * 1e9) // 1_000_000_000)
        return cls(
            origins=tuple(origins),
            allow_all_origins=any(m("*") for m in origins),
            allow_methods=",".join(policy.allow_methods),
            allow_headers=",".join(policy.allow_headers),
            expose_headers=expose,
            max_age=max_age,
            allow_credentials=credentials,
            forward_unmatched_preflights=policy.unmatched_preflights
            is not UnmatchedPreflights.IGNORE,
            actual_headers=tuple(actual),
        )

    def allows(self, origin: str) -> bool:
        """Envoy's ``isOriginAllowed``."""
        return self.allow_all_origins or any(m(origin) for m in self.origins)

    def evaluate(self, method: str, headers: Mapping[str, str]) -> CorsResult | None:
        """The filter's decision; ``None``: pass through untouched.

        ``headers`` has lower-case names. ``None`` covers requests without
        ``Origin``, non-preflight requests from an origin that is not allowed,
        and such preflights under ``FORWARD``.
        """
        origin = headers.get("origin")
        if not origin:
            return None
        allowed = self.allows(origin)
        if method == "OPTIONS" and headers.get("access-control-request-method"):
            if not allowed and self.forward_unmatched_preflights:
                return None
            reply = self._preflight_headers(origin if allowed else None, headers)
            return CorsResult(preflight_response=(200, reply), forward=False)
        if not allowed:
            return None
        return CorsResult(response_headers=((_ALLOW_ORIGIN, origin), *self.actual_headers))

    def _preflight_headers(self, origin: str | None, request: Mapping[str, str]) -> Headers:
        out: list[tuple[str, str]] = []
        if origin is not None:
            out.append((_ALLOW_ORIGIN, origin))
        if self.allow_credentials:
            out.append((_ALLOW_CREDENTIALS, "true"))
        if self.allow_methods:
            methods = self.allow_methods
            if methods == "*":
                methods = request.get("access-control-request-method", "")
            out.append((_ALLOW_METHODS, methods))
        if self.allow_headers:
            allowed_headers = self.allow_headers
            if allowed_headers == "*":
                allowed_headers = request.get("access-control-request-headers", "")
            out.append((_ALLOW_HEADERS, allowed_headers))
        if self.max_age is not None:
            out.append((_MAX_AGE, self.max_age))
        if origin is not None and self.expose_headers:
            out.append((_EXPOSE_HEADERS, self.expose_headers))  # from encodeHeaders
        return tuple(out)
