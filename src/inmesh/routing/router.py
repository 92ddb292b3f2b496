"""Outbound HTTP route selection, sans I/O: what a sidecar's RDS config decides.

Compile once per (snapshot, workload), route per request::

    table = RouteTable.compile(snapshot, workload)
    decision = table.route(attrs, "reviews.default.svc.cluster.local")
    if isinstance(decision, NoRoute): local reply 404, flag NR
    elif decision.kind is RouteKind.ROUTE: dest = decision.pick(rng) ...

Which VirtualServices apply (istio-semantics.md §1.1): ``gateways`` absent or
containing ``mesh``, ``hosts`` present (delegates are not merged yet) and
``exportTo`` visible from the workload's namespace (default ``*``). Short
hosts are relative to the VirtualService's namespace. Several
VirtualServices for the same host are concatenated oldest first (creation
timestamp, then load order); a host picks the most specific entry (exact,
then the longest wildcard). Routes after the first catch-all are dropped, as
Istio does. Decisions are precomputed: :meth:`RouteTable.route` allocates
nothing for configured hosts.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from inmesh._clock import Random
from inmesh._re2 import compile_re2
from inmesh.config.resources._common import Duration, Resource
from inmesh.config.resources.virtual_service import (
    Destination,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRoute,
    RedirectPortSelection,
    VirtualServiceSpec,
)
from inmesh.config.snapshot import ConfigSnapshot
from inmesh.model import Workload

from .match import CompiledMatch, RequestAttrs, compile_match

__all__ = [
    "DEFAULT_ROUTE_NAME",
    "ORIGINAL_PATH_HEADER",
    "HeaderMutation",
    "NoRoute",
    "RandomSource",
    "RouteDecision",
    "RouteKind",
    "RouteTable",
    "WeightedDestination",
    "expand_host",
    "split_host_port",
]

ORIGINAL_PATH_HEADER = "x-envoy-original-path"
DEFAULT_ROUTE_NAME = "default"
_DEFAULT_PORTS = {"http": 80, "https": 443}


RandomSource = Random
"""The random source weighted picks take (:class:`inmesh._clock.Random`)."""


class RouteKind(str, Enum):
    ROUTE = "route"
    REDIRECT = "redirect"
    DIRECT_RESPONSE = "directResponse"


def expand_host(host: str, namespace: str, domain_suffix: str = "cluster.local") -> str:
    """``reviews`` in namespace ``foo`` -> ``reviews.foo.svc.cluster.local``; FQDNs lower-cased."""
    h = host.strip().lower().rstrip(".")
    if "." not in h and h != "*":
        return f"{h}.{namespace}.svc.{domain_suffix}"
    return h


# ---------------------------------------------------------------------------
# Header operations


@dataclass(frozen=True, slots=True)
class HeaderMutation:
    """Envoy header operations, applied as remove, then set, then add (names lower-case).

    Pseudo-headers and ``host`` never appear here; ``host``/``:authority``
    in request ``set``/``add`` become :attr:`RouteDecision` authority rewrites.
    """

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.set or self.add or self.remove)

    def then(self, other: HeaderMutation) -> HeaderMutation:
        """``self`` followed by ``other`` (``other`` wins on a conflicting ``set``)."""
        if other.is_empty:
            return self
        if self.is_empty:
            return other
        names = {k for k, _ in other.set}
        return HeaderMutation(
            set=tuple(p for p in self.set if p[0] not in names) + other.set,
            add=self.add + other.add,
            remove=self.remove + tuple(r for r in other.remove if r not in self.remove),
        )

    def apply(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Apply to a header list (names compared case-insensitively)."""
        drop = set(self.remove) | {k for k, _ in self.set}
        out = [(k, v) for k, v in headers if k.lower() not in drop]
        out.extend(self.set)
        out.extend(self.add)
        return out


_EMPTY_MUTATION = HeaderMutation()


def _split_ops(ops: HeaderOperations | None, *, request: bool) -> tuple[HeaderMutation, str | None]:
    """Compile one HeaderOperations; also returns the authority rewrite it asks for."""
    if ops is None:
        return _EMPTY_MUTATION, None
    authority_set: str | None = None
    authority_add: str | None = None
    sets: list[tuple[str, str]] = []
    adds: list[tuple[str, str]] = []
    for k, v in ops.set.items():
        name = k.lower()
        if request and name in ("host", ":authority"):
            authority_set = v
        elif not name.startswith(":") and name != "host":
            sets.append((name, v))
    for k, v in ops.add.items():
        name = k.lower()
        if request and name in ("host", ":authority"):
            authority_add = v
        elif not name.startswith(":") and name != "host":
            adds.append((name, v))
    removes = tuple(
        n for n in (r.lower() for r in ops.remove) if not n.startswith(":") and n != "host"
    )
    authority = authority_set if authority_set is not None else authority_add
    return HeaderMutation(tuple(sets), tuple(adds), removes), authority


def _headers(h: Headers | None) -> tuple[HeaderMutation, HeaderMutation, str | None]:
    if h is None:
        return _EMPTY_MUTATION, _EMPTY_MUTATION, None
    req, authority = _split_ops(h.request, request=True)
    resp, _ = _split_ops(h.response, request=False)
    return req, resp, authority


# ---------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True, slots=True)
class WeightedDestination:
    """One destination of a route; headers are route-level then destination-level ops."""

    host: str
    subset: str | None = None
    port: int | None = None
    weight: int = 1
    request_headers: HeaderMutation = _EMPTY_MUTATION
    response_headers: HeaderMutation = _EMPTY_MUTATION
    authority: str | None = None
    """Host rewrite for this destination (``rewrite.authority`` or a ``host`` header op)."""


@dataclass(frozen=True, slots=True)
class _RegexRewrite:
    pattern: re.Pattern[str]
    template: Callable[[re.Match[str]], str]


@dataclass(frozen=True, slots=True, eq=False)
class RouteDecision:
    """The route a request took: where it goes and what changes on the way.

    ``timeout``, ``retries``, ``fault``, ``mirrors`` and ``route`` (the whole
    HTTPRoute, for CORS and the rest) are passed through untouched.
    """

    host: str
    """The VirtualService host that matched (the requested FQDN for the default route)."""
    name: str
    kind: RouteKind
    destinations: tuple[WeightedDestination, ...] = ()
    is_default: bool = False
    route: HTTPRoute | None = None
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    match: CompiledMatch | None = None
    rewrite_uri: str | None = None
    mirror_targets: tuple[tuple[WeightedDestination, float], ...] = ()
    """``(destination, share 0-1)`` per mirror (``mirror`` first, then ``mirrors``),
    hosts expanded in the VirtualService's namespace; shares of 0 are left out."""
    _regex_rewrite: _RegexRewrite | None = None
    _cumulative: tuple[int, ...] = field(default=(), repr=False)

    # -- destinations ------------------------------------------------------
    @property
    def total_weight(self) -> int:
        return self._cumulative[-1] if self._cumulative else 0

    def pick(self, rng: RandomSource) -> WeightedDestination:
        """Choose a destination by weight: uniform in [0, sum) (one destination: no draw)."""
        dests = self.destinations
        if len(dests) == 1:
            return dests[0]
        if not dests:
            raise ValueError(f"route {self.name!r} is a {self.kind.value}, it has no destinations")
        r = rng.randrange(self._cumulative[-1])
        return dests[bisect.bisect_right(self._cumulative, r)]

    # -- rewrite -----------------------------------------------------------
    @property
    def rewrites_path(self) -> bool:
        return self.rewrite_uri is not None or self._regex_rewrite is not None

    def rewrite_path(self, path: str) -> str | None:
        """The upstream path (without query) or ``None`` when unchanged.

        When it changes, send the original path in :data:`ORIGINAL_PATH_HEADER`.
        """
        if self.rewrite_uri is not None:
            n = self.match.matched_prefix_len(path) if self.match else (1 if path[:1] == "/" else 0)
            return self.rewrite_uri + path[n:]
        rr = self._regex_rewrite
        if rr is not None:
            return rr.pattern.sub(rr.template, path)
        return None

    # -- pass-through ------------------------------------------------------
    @property
    def timeout(self) -> Duration | None:
        return self.route.timeout if self.route else None

    @property
    def retries(self) -> HTTPRetry | None:
        return self.route.retries if self.route else None

    @property
    def fault(self) -> HTTPFaultInjection | None:
        return self.route.fault if self.route else None

    @property
    def mirrors(self) -> tuple[HTTPMirrorPolicy, ...]:
        """``mirrors`` plus the legacy ``mirror`` (hosts as written, not expanded)."""
        r = self.route
        if r is None:
            return ()
        return r.mirrors

    @property
    def mirror(self) -> Destination | None:
        return self.route.mirror if self.route else None

    # -- redirect ----------------------------------------------------------
    @property
    def redirect_code(self) -> int:
        return (self.redirect.redirect_code if self.redirect else None) or 301

    def redirect_location(self, attrs: RequestAttrs) -> str:
        """The ``Location`` of a redirect for this request (ports 80/443 omitted)."""
        rd = self.redirect
        if rd is None:
            raise ValueError(f"route {self.name!r} is not a redirect")
        scheme = rd.scheme or attrs.scheme
        if rd.authority:
            host, port = split_host_port(rd.authority)
        else:
            host, port = split_host_port(attrs.authority)
            if rd.scheme and rd.scheme != attrs.scheme:
                port = None
        if rd.port:
            port = rd.port
        elif rd.derive_port is RedirectPortSelection.FROM_REQUEST_PORT:
            port = attrs.port
        elif rd.derive_port is RedirectPortSelection.FROM_PROTOCOL_DEFAULT:
            port = None
        if port is not None and _DEFAULT_PORTS.get(scheme) == port:
            port = None
        netloc = host if port is None else f"{host}:{port}"
        if rd.uri:
            path = rd.uri
        elif rd.prefix_rewrite is not None:
            n = self.match.matched_prefix_len(attrs.path) if self.match else 0
            path = rd.prefix_rewrite + attrs.path[n:]
        else:
            path = attrs.path
        if attrs.query and "?" not in path:
            path = f"{path}?{attrs.query}"
        return f"{scheme}://{netloc}{path}"


def split_host_port(authority: str) -> tuple[str, int | None]:
    """``backend:8080`` -> ``("backend", 8080)``; ``[::1]:80`` keeps its brackets; no port: ``None``."""
    if authority.startswith("["):
        end = authority.find("]")
        rest = authority[end + 1 :]
        host = authority[: end + 1]
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return host, None
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return authority, None


@dataclass(frozen=True, slots=True)
class NoRoute:
    """A VirtualService exists for the host but no route matched: Envoy 404 ``NR``."""

    host: str
    status: int = 404
    response_flags: str = "NR"
    response_code_details: str = "route_not_found"


# ---------------------------------------------------------------------------
# Compilation


def _regex_rewrite(match: str, rewrite: str) -> _RegexRewrite:
    pattern = compile_re2(match)
    parts: list[str | int] = []
    buf: list[str] = []
    i = 0
    while i < len(rewrite):
        c = rewrite[i]
        if c == "\\" and i + 1 < len(rewrite):
            d = rewrite[i + 1]
            if d.isdigit():
                parts.append("".join(buf))
                buf = []
                parts.append(int(d))
            else:
                buf.append(d)
            i += 2
            continue
        buf.append(c)
        i += 1
    parts.append("".join(buf))
    frozen = tuple(parts)

    def template(m: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else (m.group(p) or "") for p in frozen)

    return _RegexRewrite(pattern, template)


def _route_name(route: HTTPRoute, match: CompiledMatch | None) -> str:
    name = route.name or ""
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    return name


def _decisions_for_route(
    route: HTTPRoute, host: str, ns: str, suffix: str, workload: Workload | None
) -> tuple[tuple[CompiledMatch | None, RouteDecision], ...] | None:
    """``(match, decision)`` per applicable match; ``None`` if the route cannot apply."""
    if route.delegate is not None and not (route.route or route.redirect or route.direct_response):
        return None  # delegation is not merged yet
    matches: list[CompiledMatch | None]
    if route.match:
        matches = [m for m in (compile_match(x, workload) for x in route.match) if m is not None]
        if not matches:
            return None
    else:
        matches = [None]
    if route.redirect is not None:
        kind = RouteKind.REDIRECT
        code = route.redirect.redirect_code
        if code is not None and code not in (301, 302, 303, 307, 308):
            return None
    elif route.direct_response is not None:
        kind = RouteKind.DIRECT_RESPONSE
    else:
        kind = RouteKind.ROUTE
    dests: list[WeightedDestination] = []
    cumulative: list[int] = []
    rewrite_uri: str | None = None
    regex_rewrite: _RegexRewrite | None = None
    if kind is RouteKind.ROUTE:
        if not route.route:
            return None
        route_req, route_resp, route_auth = _headers(route.headers)
        rw = route.rewrite
        if rw is not None and rw.authority:
            route_auth = rw.authority
        if rw is not None and rw.uri is not None:
            rewrite_uri = rw.uri
        elif rw is not None and rw.uri_regex_rewrite is not None:
            rr = rw.uri_regex_rewrite
            if rr.match is not None and rr.rewrite is not None:
                regex_rewrite = _regex_rewrite(rr.match, rr.rewrite)
        several = len(route.route) > 1
        total = 0
        for rd in route.route:
            weight = (rd.weight or 0) if several else 1
            if several and weight <= 0:
                continue
            d = rd.destination or Destination()
            req, resp, auth = _headers(rd.headers)
            total += weight
            cumulative.append(total)
            dests.append(
                WeightedDestination(
                    host=expand_host(d.host or "", ns, suffix),
                    subset=d.subset,
                    port=d.port.number if d.port is not None else None,
                    weight=weight,
                    request_headers=route_req.then(req),
                    response_headers=route_resp.then(resp),
                    authority=route_auth if route_auth is not None else auth,
                )
            )
        if not dests:
            return None
    mirror_targets: list[tuple[WeightedDestination, float]] = []
    if kind is RouteKind.ROUTE:
        candidates: list[tuple[Destination, float]] = []
        if route.mirror is not None:
            candidates.append((route.mirror, route.mirror_share))
        for mp in route.mirrors:
            if mp.destination is not None:
                share = 1.0 if mp.percentage is None else mp.percentage.fraction
                candidates.append((mp.destination, share))
        for md, share in candidates:
            if share > 0.0 and md.host:
                mirror_targets.append(
                    (
                        WeightedDestination(
                            host=expand_host(md.host, ns, suffix),
                            subset=md.subset,
                            port=md.port.number if md.port is not None else None,
                        ),
                        min(share, 1.0),
                    )
                )
    out = []
    for m in matches:
        out.append(
            (
                m,
                RouteDecision(
                    host=host,
                    name=_route_name(route, m),
                    kind=kind,
                    destinations=tuple(dests),
                    route=route,
                    redirect=route.redirect,
                    direct_response=route.direct_response,
                    match=m,
                    rewrite_uri=rewrite_uri,
                    mirror_targets=tuple(mirror_targets),
                    _regex_rewrite=regex_rewrite,
                    _cumulative=tuple(cumulative),
                ),
            )
        )
    return tuple(out)


def _exported_to(spec: VirtualServiceSpec, vs_ns: str, ns: str) -> bool:
    export = spec.export_to
    if not export:
        return True
    return any(e in ("*", ns) or (e == "." and vs_ns == ns) for e in export)


_Entry = tuple[tuple[CompiledMatch | None, RouteDecision], ...]


@dataclass(frozen=True, slots=True, eq=False)
class _HostRoutes:
    host: str
    entries: _Entry
    sources: tuple[str, ...]

    def route(self, attrs: RequestAttrs) -> RouteDecision | NoRoute:
        for m, decision in self.entries:
            if m is None or m(attrs):
                return decision
        return NoRoute(self.host)


@dataclass(frozen=True, slots=True, eq=False)
class RouteTable:
    """Immutable per-workload routing table; safe to share between threads."""

    _exact: Mapping[str, _HostRoutes]
    _wildcards: tuple[
        tuple[str, _HostRoutes], ...
    ]  # (suffix incl. leading ".", routes), longest first
    _defaults: dict[str, RouteDecision] = field(default_factory=dict, repr=False)

    @classmethod
    def compile(
        cls,
        snapshot: ConfigSnapshot,
        workload: Workload | None,
        *,
        domain_suffix: str = "cluster.local",
    ) -> RouteTable:
        ns = workload.namespace if workload is not None else "default"
        resources: list[tuple[int, Resource[Any]]] = list(
            enumerate(snapshot.of_kind("VirtualService"))
        )
        resources.sort(key=lambda p: (p[1].metadata.creation_timestamp or "", p[0]))
        per_host: dict[str, list[tuple[Resource[Any], HTTPRoute]]] = {}
        for _, res in resources:
            spec = res.spec
            if not isinstance(spec, VirtualServiceSpec):
                continue
            if spec.is_delegate or not spec.applies_to_mesh:
                continue
            if not _exported_to(spec, res.namespace, ns):
                continue
            for h in dict.fromkeys(
                expand_host(h, res.namespace, domain_suffix) for h in spec.hosts
            ):
                lst = per_host.setdefault(h, [])
                lst.extend((res, r) for r in spec.http)
        exact: dict[str, _HostRoutes] = {}
        wild: list[tuple[str, _HostRoutes]] = []
        for host, routes in per_host.items():
            entries: list[tuple[CompiledMatch | None, RouteDecision]] = []
            sources: dict[str, None] = {}
            for res, route in routes:
                sources[f"{res.namespace}/{res.name}"] = None
                compiled = _decisions_for_route(route, host, res.namespace, domain_suffix, workload)
                if compiled is None:
                    continue
                entries.extend(compiled)
                if any(m is None or not m.checks for m, _ in compiled):
                    break  # catch-all: later routes are unreachable
            hr = _HostRoutes(host, tuple(entries), tuple(sources))
            if host.startswith("*"):
                wild.append((host[1:], hr))
            else:
                exact[host] = hr
        wild.sort(key=lambda p: -len(p[0]))
        return cls(exact, tuple(wild))

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host with routes (wildcards as ``*.suffix``)."""
        return tuple(self._exact) + tuple(f"*{s}" for s, _ in self._wildcards)

    def _lookup(self, host: str) -> _HostRoutes | None:
        hr = self._exact.get(host)
        if hr is not None:
            return hr
        for suffix, whr in self._wildcards:
            if host.endswith(suffix) or suffix == "":
                return whr
        return None

    def has_virtual_service(self, host_fqdn: str) -> bool:
        return self._lookup(host_fqdn.lower().rstrip(".")) is not None

    def route(self, attrs: RequestAttrs, host_fqdn: str) -> RouteDecision | NoRoute:
        """The first matching route for ``host_fqdn`` (a registry FQDN, no port).

        No VirtualService for the host: the default route to the host itself.
        """
        hr = self._exact.get(host_fqdn)
        if hr is None:
            host = host_fqdn.lower().rstrip(".")
            hr = self._lookup(host)
            if hr is None:
                return self._default(host)
        return hr.route(attrs)

    def _default(self, host: str) -> RouteDecision:
        d = self._defaults.get(host)
        if d is None:
            d = RouteDecision(
                host=host,
                name=DEFAULT_ROUTE_NAME,
                kind=RouteKind.ROUTE,
                destinations=(WeightedDestination(host=host),),
                is_default=True,
                _cumulative=(1,),
            )
            if len(self._defaults) < 4096:
                self._defaults[host] = d
        return d
