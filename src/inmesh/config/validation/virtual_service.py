"""VirtualService checks, after Istio's own.

Two gates decide whether Istio takes a VirtualService, and both are
reproduced here as errors:

- the validating webhook / ``istioctl validate``: istio/istio
  ``pkg/config/validation/validation.go`` (``ValidateVirtualService``,
  ``validateGatewayNames``, ``validateTLSRoute``, ``validateTCPRoute``,
  ``validateHTTPRouteDestinations``, ``validateDestination``,
  ``validateCORSPolicy``, ``validateHTTPFaultInjection``,
  ``validateHTTPRedirect``, ``validateHTTPDirectResponse``,
  ``validateHTTPMirrors``, ``validateHTTPRewrite``, ``validateExportTo``,
  ``validateMetadata``), ``pkg/config/validation/virtualservice.go``
  (``validateHTTPRoute``, ``validateHTTPRouteConflict``,
  ``validateHTTPRouteMatchRequest``, ``validateAuthorityRewrite``),
  ``header_value_validator.go`` and ``pkg/config/validation/agent/validation.go``
  (``ValidateHTTPRetry``, ``ValidateDuration``, ``ValidateWildcardDomain``,
  ``ValidateFQDN``, ``ValidatePort``, ``ValidateIPSubnet``);
- the CRD schema the Kubernetes API server applies first (required fields,
  integer ranges). Comments say "(CRD)" where a rule exists only there.

Istio's warnings stay warnings (legacy gateway names, an abort without an
error type, SNI hosts that are IPs, large direct responses, unreachable rules).
Hints Istio does not give are warnings too; their comments say "inmesh hint".
Unreachable-rule warnings use a stricter "covers" relation than Istio's
prefix heuristic, so they do not fire for rules that differ in source labels,
regexes or methods.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._schema import Reporter
from .._yaml import Path
from ..resources._common import Percent, StringMatch
from ..resources.virtual_service import (
    MESH_GATEWAY,
    CorsPolicy,
    Destination,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    RouteDestination,
    TCPRoute,
    TLSMatchAttributes,
    TLSRoute,
    VirtualServiceSpec,
)
from ._common import (
    check_duration,
    check_export_to,
    check_labels,
    check_port,
    check_regex,
    fqdn_problem,
    go_atoi,
    ip_subnet_problem,
    is_dns1123_label,
    is_ip,
    wildcard_domain_problem,
)

__all__ = ["validate_virtual_service"]

# -- header grammar -------------------------------------------------------------
_HEADER_NAME_RE = re.compile(r"[-!#$%&'*+.^_`|~A-Za-z0-9]+")  # RFC 7230 tchar
_BAD_HEADER_VALUE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_JWT_CLAIM_PREFIX = "@request.auth.claims"

# -- annotations (validateMetadata and constants.go) --------------------------
_DRY_RUN = "istio.io/dry-run"
_ALWAYS_REJECT = "internal.istio.io/webhook-always-reject"
_INTERNAL = ("internal.istio.io/parents", "internal.istio.io/parent-namespace")
_ROUTE_SEMANTICS = "internal.istio.io/route-semantics"

# -- value sets ---------------------------------------------------------------
_RETRY_ON = (
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "envoy-ratelimited", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
)  # fmt: skip
# Go's net/http StatusText: the codes Istio accepts as retryOn tokens.
_GO_HTTP_CODES = frozenset(
    (
        *(100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226),
        *(300, 301, 302, 303, 304, 305, 307, 308, *range(400, 419)),
        *(421, 422, 423, 424, 425, 426, 428, 429, 431, 451, *range(500, 509), 510, 511),
    )
)
_GRPC_STATUS = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)  # fmt: skip
_CORS_METHODS = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "*",
)
_REDIRECT_CODES_APPLIED = (301, 302, 303, 307, 308)  # route.go ApplyRedirect
_KB = 1024
_MB = 1024 * _KB
_INT32 = (-(2**31), 2**31 - 1)


def validate_virtual_service(resource: Any, rep: Reporter) -> None:
    """Istio's ``ValidateVirtualService`` plus the CRD rules, on a parsed VirtualService."""
    spec: VirtualServiceSpec = resource.spec
    namespace: str = resource.metadata.namespace
    gw_semantics = _check_annotations(resource.metadata.annotations, rep)

    if not spec.hosts:  # a delegate VirtualService
        for field, what in (("gateways", "gateways"), ("tls", "tls routes"), ("tcp", "tcp routes")):
            if getattr(spec, field):
                rep.error(
                    ("spec", field),
                    f"a delegate VirtualService (one without hosts) cannot have {what}",
                    f"remove {field}, or give the VirtualService hosts",
                )
    to_gateway = bool(spec.gateways) and MESH_GATEWAY not in spec.gateways
    if spec.gateways:
        _check_gateway_names(spec.gateways, ("spec", "gateways"), rep, gw_semantics)
    if not to_gateway:
        _check_claim_routes(spec, rep)
    elif spec.hosts:  # inmesh hint: the rules only reach the named gateways
        rep.warn(
            ("spec", "gateways"),
            "this VirtualService is bound only to gateways, so it does not apply to the "
            "mesh and has no effect in inmesh",
            "add 'mesh' to gateways to apply the rules to calls between workloads too",
        )
    _check_hosts(spec, namespace, to_gateway, rep)

    if not (spec.http or spec.tls or spec.tcp):
        rep.error(
            ("spec",),
            "a VirtualService needs http, tls or tcp routes",
            "add an http route, e.g. http: [{route: [{destination: {host: <service>}}]}]",
        )
    for i, route in enumerate(spec.http):
        _check_http_route(route, ("spec", "http", i), rep, not spec.hosts, gw_semantics)
    for i, tls in enumerate(spec.tls):
        _check_tls_route(tls, ("spec", "tls", i), spec, to_gateway, gw_semantics, rep)
    for i, tcp in enumerate(spec.tcp):
        _check_tcp_route(tcp, ("spec", "tcp", i), gw_semantics, rep)
    check_export_to(spec.export_to, namespace, rep, kind="VirtualService")
    _check_unreachable_http(spec.http, rep)
    _check_unreachable_l4(spec.tls, "tls", rep)
    _check_unreachable_l4(spec.tcp, "tcp", rep)


def _check_annotations(annotations: Mapping[str, str], rep: Reporter) -> bool:
    """``validateMetadata``; returns whether Gateway API route semantics are asked for."""
    path: Path = ("metadata", "annotations")
    if _DRY_RUN in annotations:
        rep.error(
            (*path, _DRY_RUN),
            f"VirtualService does not support the {_DRY_RUN} annotation",
            "remove it; only AuthorizationPolicy has a dry-run mode",
        )
    for key in (_ALWAYS_REJECT, *_INTERNAL):
        if key in annotations:
            rep.error((*path, key), f"the {key} annotation is internal to Istio", "remove it")
    return annotations.get(_ROUTE_SEMANTICS) == "gateway"


# ---------------------------------------------------------------------------
# Names: hosts, gateways, labels, subnets


def _gateway_host_problem(domain: str, sni: bool) -> str | None:
    """``agent.ValidateWildcardDomainForVirtualServiceBoundToGateway``."""
    if sni and domain.startswith("outbound_") and len(domain) <= 255:
        parts = domain.split("_")
        form = "it should look like outbound_.<port>_._.<hostname>"
        if len(parts) < 4:
            return form
        if not re.search("[0-9]", parts[1].strip(".")) or not re.search(
            "[a-zA-Z]", parts[3].strip(".")
        ):
            return form
        return None
    return wildcard_domain_problem(domain)


def _host_matches(a: str, b: str) -> bool:
    """``host.Name.Matches``: whether two (wildcard) hosts overlap."""
    if a.startswith("*") and b.startswith("*"):
        short, long_ = sorted((a[1:], b[1:]), key=len)
        return long_.endswith(short)
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def _host_subset_of(a: str, b: str) -> bool:
    """``host.Name.SubsetOf``: every name ``a`` covers is covered by ``b``."""
    if a.startswith("*"):
        return b.startswith("*") and len(a) >= len(b) and a[1:].endswith(b[1:])
    return a.endswith(b[1:]) if b.startswith("*") else a == b


def _check_hosts(spec: VirtualServiceSpec, namespace: str, to_gateway: bool, rep: Reporter) -> None:
    sni = any(m.sni_hosts for t in spec.tls for m in t.match)
    all_valid = True
    for i, host in enumerate(spec.hosts):
        path: Path = ("spec", "hosts", i)
        problem = _gateway_host_problem(host, sni) if to_gateway else wildcard_domain_problem(host)
        if problem and not is_ip(host):
            all_valid = False
            rep.error(
                path,
                f"host {host!r} is not a valid domain name: {problem}",
                "use a service name (reviews), an FQDN (reviews.prod.svc.cluster.local) or a "
                "wildcard such as *.example.com",
            )
        elif host == "*" and not to_gateway:
            all_valid = False
            rep.error(
                path,
                "host '*' is not allowed in a VirtualService bound to the mesh",
                "name the services, or use a wildcard domain such as *.example.com",
            )
    if not all_valid:
        return
    for j, b in enumerate(spec.hosts):
        for a in spec.hosts[:j]:
            if _host_matches(a, b):
                rep.error(
                    ("spec", "hosts", j),
                    f"hosts {a!r} and {b!r} overlap; the hosts of one VirtualService must not",
                    "remove one of them, or move it to another VirtualService",
                )
                break
        else:
            fqdn = f"{b}.{namespace}.svc.cluster.local"
            if "." not in b and b != "*" and fqdn in spec.hosts:
                # inmesh hint: short names are expanded with the namespace.
                rep.warn(
                    ("spec", "hosts", j),
                    f"host {b!r} means {fqdn!r} here, which is also listed",
                    "list the service once",
                )


def _check_gateway_names(
    names: Sequence[str], path: Path, rep: Reporter, gw_semantics: bool
) -> None:
    """``validateGatewayNames``. Istio stops at the first name without '/'; later
    names are still looked at here, but only warned about (inmesh hint)."""

    def report(p: Path, message: str, fix: str) -> None:
        if checked:
            rep.error(p, message, fix)
        else:
            rep.warn(p, message + " (Istio stops checking after the first name without '/')", fix)

    checked = True
    for i, name in enumerate(names):
        p: Path = (*path, i)
        ns, slash, gw = name.partition("/")
        fix = "write <namespace>/<gateway name>, or mesh for the sidecars"
        if not slash:
            if "." in name:
                parts = name.split(".")
                rep.warn(
                    p,
                    f"gateway {name!r} uses the legacy <name>.<namespace> form",
                    f"write it as {parts[1]}/{parts[0]}",
                )
            problem = fqdn_problem(name)
            if problem:
                report(p, f"gateway {name!r} is not a valid name: {problem}", fix)
            checked = False
            continue
        if not ns or not gw:
            report(p, f"gateway {name!r} has an empty namespace or name", fix)
        elif not is_dns1123_label(ns):
            report(p, f"namespace {ns!r} of gateway {name!r} is not a DNS label", fix)
        elif not is_dns1123_label(gw) and not gw_semantics:
            report(p, f"gateway name {gw!r} is not a DNS label (no wildcards)", fix)


def _check_int32(value: int | None, path: Path, rep: Reporter) -> bool:
    if value is not None and not _INT32[0] <= value <= _INT32[1]:
        rep.error(path, f"{value} does not fit in a 32-bit integer")
        return False
    return True


# ---------------------------------------------------------------------------
# Matches


def _is_claim(name: str) -> bool:
    """``jwt.ToRoutingClaim(name).Match``: @request.auth.claims.x or ...claims[x]."""
    if not name.lower().startswith(_JWT_CLAIM_PREFIX):
        return False
    rest = name[len(_JWT_CLAIM_PREFIX) :]
    return (rest.startswith(".") and len(rest) > 1) or (
        rest.startswith("[") and rest.endswith("]") and len(rest) > 2
    )


def _check_claim_routes(spec: VirtualServiceSpec, rep: Reporter) -> None:
    for i, route in enumerate(spec.http):
        for j, match in enumerate(route.match):
            for field in ("headers", "withoutHeaders"):
                values = match.headers if field == "headers" else match.without_headers
                for key in values:
                    if _is_claim(key):
                        rep.error(
                            ("spec", "http", i, "match", j, field, key),
                            f"routing on JWT claims ({key}) is only supported for gateways",
                            "match on a header set by the caller instead, or bind the "
                            "VirtualService to an ingress gateway",
                        )


def _check_string_match(
    sm: StringMatch, path: Path, rep: Reporter, *, empty_prefix_ok: bool = False
) -> None:
    """``validateStringMatch`` (and ``validateStringMatchRegexp`` for uri)."""
    if sm.prefix == "" and not empty_prefix_ok:
        rep.error(
            (*path, "prefix"),
            "an empty prefix is not allowed here",
            "give a prefix, or use {} to match any value",
        )
    if sm.regex == "*":
        rep.error(
            (*path, "regex"),
            "regex '*' is not a valid RE2 regex (only withoutHeaders reads it as 'present')",
            "use {} to match any value, or regex '.*'",
        )
    elif sm.regex is not None:
        check_regex(sm.regex, (*path, "regex"), rep)


def _check_header_name(name: str, path: Path, rep: Reporter) -> None:
    """``ValidateHTTPHeaderNameOrJwtClaimRoute``."""
    if not name:
        rep.error(path, "header name is empty", "name the header")
    elif not (_is_claim(name) or name in _PSEUDO_HEADERS or _HEADER_NAME_RE.fullmatch(name)):
        rep.error(
            path,
            f"{name!r} is not a valid header name",
            "use letters, digits and - (e.g. x-user-id)",
        )
    elif name != name.lower() and not _is_claim(name):
        # inmesh hint: Istio documents lower-case keys; Envoy lower-cases them anyway.
        rep.warn(path, f"header name {name!r} is not lower case", f"write {name.lower()!r}")


def _check_match(m: HTTPMatchRequest, path: Path, rep: Reporter) -> None:
    """``validateHTTPRouteMatchRequest`` for one match, plus inmesh hints."""
    for name, sm in m.headers.items():
        _check_header_name(name, (*path, "headers", name), rep)
        _check_string_match(sm, (*path, "headers", name), rep)
    for name, sm in m.without_headers.items():
        _check_header_name(name, (*path, "withoutHeaders", name), rep)
        if sm.regex != "*":  # '*' is Istio's "header present", not a regex
            _check_string_match(sm, (*path, "withoutHeaders", name), rep)
    for field in ("uri", "scheme", "method", "authority"):
        sm = getattr(m, field)
        if sm is None:
            continue
        _check_string_match(sm, (*path, field), rep, empty_prefix_ok=field == "uri")
        if sm.is_empty:  # inmesh hint
            rep.warn(
                (*path, field),
                f"an empty {field} match ({{}}) matches every request",
                "write exact, prefix or regex, or remove it",
            )
    for name, sm in m.query_params.items():
        _check_string_match(sm, (*path, "queryParams", name), rep)
    if m.port:  # 0 means unset
        check_port(m.port, (*path, "port"), rep)
    check_labels(m.source_labels, (*path, "sourceLabels"), rep)
    _check_gateway_names(m.gateways, (*path, "gateways"), rep, False)
    if m.source_namespace and not is_dns1123_label(m.source_namespace):
        rep.error(
            (*path, "sourceNamespace"),
            f"sourceNamespace {m.source_namespace!r} is not a namespace name",
            "use a DNS label such as 'frontend'",
        )
    if m.is_empty:
        # inmesh hint: the API says a match cannot be empty; Istio treats it as a catch-all.
        rep.warn(
            path,
            "an empty match matches every request",
            "remove the match list to make a catch-all rule, or add conditions",
        )


# ---------------------------------------------------------------------------
# HTTP routes


def _check_http_route(
    r: HTTPRoute, path: Path, rep: Reporter, delegate_vs: bool, gw_semantics: bool
) -> None:
    """``validateHTTPRoute``."""
    _check_route_conflicts(r, path, rep, delegate_vs)
    for j, m in enumerate(r.match):
        _check_match(m, (*path, "match", j), rep)
    _check_header_ops(r.headers, (*path, "headers"), rep)
    if r.cors_policy is not None:
        _check_cors(r.cors_policy, (*path, "corsPolicy"), rep)
    if r.fault is not None:
        _check_fault(r.fault, (*path, "fault"), rep)
    _check_mirroring(r, path, rep)
    _check_redirect(r, path, rep)
    if r.direct_response is not None:
        dr = r.direct_response
        body = dr.body.content if dr.body is not None else b""
        if len(body) > _MB:
            rep.error(
                (*path, "directResponse", "body"),
                f"the direct response body is {len(body)} bytes; Istio allows at most 1MB",
                "serve large bodies from a service",
            )
        elif len(body) > 100 * _KB:
            rep.warn(
                (*path, "directResponse", "body"),
                "large direct responses may impact control plane performance",
                "keep direct response bodies under 100KB",
            )
        _check_http_status(dr.status or 0, (*path, "directResponse", "status"), rep)
    if r.retries is not None:
        _check_retries(r.retries, (*path, "retries"), rep)
    _check_rewrite(r, path, rep)
    _check_authority_rewrite(r, path, rep)
    _check_destinations(r.route, (*path, "route"), rep, gw_semantics)
    if r.timeout is not None:
        check_duration(r.timeout, (*path, "timeout"), rep, what="timeout")
    if r.delegate is not None and not r.delegate.name:  # inmesh hint
        rep.warn((*path, "delegate"), "delegate names no VirtualService", "set delegate.name")


def _check_route_conflicts(r: HTTPRoute, path: Path, rep: Reporter, delegate_vs: bool) -> None:
    """``validateHTTPRouteConflict``: one action per route."""
    if r.delegate is not None and not delegate_vs:  # a root route
        for field, present in (("redirect", r.redirect is not None), ("route", bool(r.route))):
            if present:
                rep.error(
                    (*path, field),
                    f"a route with delegate cannot also have {field}",
                    f"remove {field}, or remove delegate",
                )
        if r.direct_response is not None:  # inmesh hint: Istio does not check this pair
            rep.warn(
                (*path, "directResponse"),
                "a route with delegate should not also have directResponse",
                "remove directResponse, or remove delegate",
            )
        return
    if r.delegate is not None:
        rep.error(
            (*path, "delegate"),
            "a route of a delegate VirtualService cannot delegate again",
            "Istio supports one level of delegation: route to destinations here",
        )
    if r.redirect is not None or r.direct_response is not None:
        action = "redirect" if r.redirect is not None else "directResponse"
        others = {
            "route": bool(r.route),
            "fault": r.fault is not None,
            "rewrite": r.rewrite is not None,
            "directResponse": action == "redirect" and r.direct_response is not None,
        }
        for field, present in others.items():
            if present:
                rep.error(
                    (*path, field),
                    f"a route with {action} cannot also have {field}",
                    f"remove {field}, or move it to a rule of its own",
                )
    elif not r.route:
        rep.error(
            path,
            "the rule has no action",
            "add route (destinations), redirect or directResponse"
            + ("" if delegate_vs else ", or delegate"),
        )
    if r.mirror is not None and r.mirrors:
        rep.error(
            (*path, "mirrors"),
            "a route cannot have both mirror and mirrors",
            "move mirror into mirrors: [{destination: ..., percentage: ...}]",
        )


def _check_header_ops(headers: Headers | None, path: Path, rep: Reporter) -> None:
    if headers is None:
        return
    for side, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        entries: list[tuple[str, str | int, str, str]] = [
            (op, name, name, value)
            for op, values in (("set", ops.set), ("add", ops.add))
            for name, value in values.items()
        ]
        entries += [("remove", k, name, "") for k, name in enumerate(ops.remove)]
        for op, key, name, value in entries:
            p: Path = (*path, side, op, key)
            authority_ok = side == "request" and op != "remove"
            _check_header_op_name(name, p, rep, authority_ok=authority_ok)
            problem = _header_value_problem(value)
            if problem:
                rep.error(
                    p,
                    f"header value {value!r} is invalid: {problem}",
                    "write %% for a literal '%', or a complete %VARIABLE% expression",
                )


def _check_header_op_name(name: str, path: Path, rep: Reporter, *, authority_ok: bool) -> None:
    """``ValidateHTTPHeaderWithAuthorityOperationName`` / ``ValidateHTTPHeaderOperationName``."""
    lower = name.lower()
    if not name:
        rep.error(path, "header name is empty", "name the header")
    elif authority_ok and lower in ("host", ":authority"):
        return  # an authority rewrite, checked by _check_authority_rewrite
    elif lower == "host":
        rep.error(path, "the Host header cannot be changed here", "use rewrite.authority")
    elif name.startswith(":"):
        rep.error(
            path,
            f"pseudo-header {name!r} cannot be changed",
            "use rewrite.uri for the path and rewrite.authority for the authority",
        )


def _header_value_problem(value: str) -> str | None:
    """``ValidateHTTPHeaderValue``: no control characters, well-formed %VAR% syntax
    (a port of Envoy's header_parser.cc state machine, as Istio does)."""
    if _BAD_HEADER_VALUE_RE.search(value):
        return "it contains control characters"
    state, i, n = "text", 0, len(value)
    while i < n:
        ch = value[i]
        if state == "text":
            if ch == "%":
                if i + 1 == n:
                    return "it ends with an unescaped '%'"
                if value[i + 1] == "%":
                    i += 1
                else:
                    state = "name"
        elif state == "name":
            state = {"%": "text", "(": "args"}.get(ch, "name")
        elif state == "args":
            state = "arg?" if ch == "[" else ("args" if ch == " " else "arg")
        elif state == "arg?":
            if ch != " ":
                if ch != '"':
                    return "expected '\"' in the argument list"
                state = "arg"
        elif state == "arg":
            if ch == "\\":
                if i + 1 == n:
                    return "it ends inside an escape"
                i += 1
            elif ch in ')"':
                state = "end" if ch == ")" else "next"
        elif state == "next":
            if ch not in ", ]":
                return "expected ',' or ']' in the argument list"
            state = {",": "arg?", "]": "close", " ": "next"}[ch]
        elif state == "close":
            if ch not in ") ":
                return "expected ')' after the argument list"
            state = "end" if ch == ")" else "close"
        elif ch != " ":  # state == "end"
            if ch != "%":
                return "expected '%' to close the variable"
            state = "text"
        i += 1
    return None if state == "text" else "it has an unterminated %VARIABLE% expression"


def _check_authority_rewrite(r: HTTPRoute, path: Path, rep: Reporter) -> None:
    """``validateAuthorityRewrite``: the authority may be rewritten in one place only."""
    sources: list[tuple[Path, str]] = []
    if r.rewrite is not None and r.rewrite.authority:
        sources.append(((*path, "rewrite", "authority"), r.rewrite.authority))
    ops = r.headers.request if r.headers is not None else None
    for op in ("set", "add"):
        for name, value in (getattr(ops, op) if ops is not None else {}).items():
            if name.lower() in ("host", ":authority"):
                sources.append(((*path, "headers", "request", op, name), value))
    current = ""
    for p, value in sources:
        if current:
            rep.error(
                p,
                f"the authority is set twice: already {current!r}, now {value!r}",
                "keep one of rewrite.authority and a host/:authority header operation",
            )
        current = current or value


def _check_destination(d: Destination, path: Path, rep: Reporter) -> None:
    """``validateDestination``."""
    host = d.host or ""
    problem = "'*' is not a service" if host == "*" else wildcard_domain_problem(host)
    if problem and is_ip(host):
        problem = "an IP address is not a service host (a ServiceEntry can give it a name)"
    if problem:
        rep.error(
            (*path, "host"),
            f"destination host {host!r} is invalid: {problem}",
            "name a service, e.g. reviews or reviews.prod.svc.cluster.local",
        )
    if d.subset and not is_dns1123_label(d.subset):
        rep.error(
            (*path, "subset"),
            f"subset name {d.subset!r} is not a DNS label",
            "use the name of a DestinationRule subset: letters, digits and '-'",
        )
    if d.port is not None and not 1 <= (d.port.number or 0) <= 65535:
        rep.error(
            (*path, "port", "number"),
            f"port {d.port.number or 0} is out of range",
            "use a port from 1 to 65535",
        )


def _check_destinations(
    routes: Sequence[HTTPRouteDestination | RouteDestination],
    path: Path,
    rep: Reporter,
    gw_semantics: bool,
) -> None:
    """``validateHTTPRouteDestinations`` / ``validateRouteDestinations``."""
    total = 0
    for k, rd in enumerate(routes):
        p: Path = (*path, k)
        if isinstance(rd, HTTPRouteDestination):
            _check_header_ops(rd.headers, (*p, "headers"), rep)
        if rd.destination is not None and not gw_semantics:
            _check_destination(rd.destination, (*p, "destination"), rep)
        weight = rd.weight or 0
        if _check_int32(weight, (*p, "weight"), rep) and weight < 0:
            rep.error((*p, "weight"), f"weight {weight} is negative", "use 0 or more")
        total += weight
    if len(routes) > 1 and total == 0:
        rep.error(
            path,
            "total destination weight = 0: with several destinations, at least one needs "
            "a positive weight",
            "give the destinations relative weights, e.g. 90 and 10",
        )


def _check_percentage(p: Percent | None, path: Path, rep: Reporter, *, fine: bool) -> None:
    """0-100; with ``fine``, Istio's ``validatePercentage`` (0 or at least 0.0001)."""
    if p is None:
        return
    v = p.value
    if v < 0 or v > 100 or (fine and 0 < v < 0.0001):
        rep.error(
            (*path, "value"),
            f"percentage {v:g} is out of range",
            "use 0, or a value from 0.0001 to 100" if fine else "use a value from 0 to 100",
        )


def _check_mirroring(r: HTTPRoute, path: Path, rep: Reporter) -> None:
    if r.mirror_percent is not None and r.mirror_percent_proto is not None:
        rep.error(
            (*path, "mirror_percent"),
            "mirrorPercent is written twice (as mirrorPercent and mirror_percent)",
            "keep one, or better, use mirrorPercentage",
        )
    for key, value in (
        ("mirrorPercent", r.mirror_percent),
        ("mirror_percent", r.mirror_percent_proto),
    ):
        if value is not None and not 0 <= value <= 100:
            rep.error((*path, key), f"{key} {value} is out of range", "use 0 to 100")
    _check_percentage(r.mirror_percentage, (*path, "mirrorPercentage"), rep, fine=False)
    legacy = r.mirror_percent is not None or r.mirror_percent_proto is not None
    if legacy and r.mirror_percentage is not None:  # inmesh hint
        rep.warn(
            (*path, "mirrorPercent"),
            "mirrorPercent is ignored because mirrorPercentage is set",
            "remove mirrorPercent",
        )
    if (legacy or r.mirror_percentage is not None) and r.mirror is None:  # inmesh hint
        rep.warn(
            (*path, "mirrorPercentage" if r.mirror_percentage is not None else "mirrorPercent"),
            "a mirror percentage without mirror has no effect",
            "set mirror, or give each entry of mirrors its own percentage",
        )
    if r.mirror is not None:
        _check_destination(r.mirror, (*path, "mirror"), rep)
    for k, mp in enumerate(r.mirrors):
        if mp.destination is not None:
            _check_destination(mp.destination, (*path, "mirrors", k, "destination"), rep)
        _check_percentage(mp.percentage, (*path, "mirrors", k, "percentage"), rep, fine=False)


def _check_redirect(r: HTTPRoute, path: Path, rep: Reporter) -> None:
    """``validateHTTPRedirect``."""
    rd = r.redirect
    if rd is None:
        return
    rp: Path = (*path, "redirect")
    if rd.uri and rd.prefix_rewrite:
        rep.error(rp, "a redirect can set uri or prefixRewrite, not both", "keep one")
    if rd.prefix_rewrite:
        for j, m in enumerate(r.match):
            if m.uri is not None and m.uri.prefix is None:
                rep.error(
                    (*path, "match", j, "uri"),
                    "redirect.prefixRewrite needs every uri match of the rule to be a prefix match",
                    "use uri: {prefix: ...}, or redirect.uri to replace the whole path",
                )
    has_port = rd.port is not None or rd.derive_port is not None
    if not (rd.uri or rd.prefix_rewrite or rd.authority or has_port or rd.scheme):
        rep.error(
            rp,
            "the redirect changes nothing",
            "set at least one of uri, prefixRewrite, authority, scheme, port or derivePort",
        )
    code = rd.redirect_code or 0
    if code and not 300 <= code <= 399:
        rep.error(
            (*rp, "redirectCode"),
            f"{code} is not a redirect code",
            "use a 3xx code such as 301 or 308",
        )
    elif code and code not in _REDIRECT_CODES_APPLIED:
        # inmesh hint: route.go ApplyRedirect drops the route for other codes.
        rep.warn(
            (*rp, "redirectCode"),
            f"Istio accepts redirectCode {code} but drops the route, as Envoy cannot send it",
            "use 301, 302, 303, 307 or 308",
        )
    if rd.scheme and rd.scheme not in ("http", "https"):
        rep.error((*rp, "scheme"), f"redirect scheme {rd.scheme!r} is invalid", "use http or https")
    if rd.port is not None and (rd.port < 0 or rd.port > 65535):
        rep.error((*rp, "port"), f"port {rd.port} is out of range", "use a port from 1 to 65535")


def _check_http_status(status: int, path: Path, rep: Reporter) -> None:
    """``validateHTTPStatus``: 200-600 (Istio lets 600 through; Envoy does not)."""
    if not 200 <= status <= 600:
        rep.error(path, f"HTTP status {status} is out of range", "use a status from 200 to 599")
    elif status == 600:  # inmesh hint
        rep.warn(
            path, "Istio accepts status 600, but Envoy refuses it", "use a status from 200 to 599"
        )


def _check_retries(retry: HTTPRetry, path: Path, rep: Reporter) -> None:
    """``agent.ValidateHTTPRetry``."""
    attempts = retry.attempts or 0
    _check_int32(attempts, (*path, "attempts"), rep)
    if attempts < 0:
        rep.error(
            (*path, "attempts"), f"attempts {attempts} is negative", "use 0 to turn retries off"
        )
    conflicting = [
        name
        for name, value in (
            ("perTryTimeout", retry.per_try_timeout),
            ("retryOn", retry.retry_on or None),
            ("retryRemoteLocalities", retry.retry_remote_localities),
        )
        if value is not None
    ]
    if attempts == 0 and conflicting:
        rep.error(
            (*path, "attempts"),
            f"attempts is {'unset' if retry.attempts is None else 0}, which turns retries off, "
            f"but {' and '.join(conflicting)} {'is' if len(conflicting) == 1 else 'are'} set",
            f"set attempts to the number of retries, or remove {' and '.join(conflicting)}",
        )
    elif retry.attempts is None:  # inmesh hint
        rep.warn(
            (*path, "attempts"),
            "retries without attempts turns retries off, including the mesh default of 2",
            "set attempts, or remove the retries block to keep the default",
        )
    if retry.per_try_timeout is not None:
        check_duration(retry.per_try_timeout, (*path, "perTryTimeout"), rep, what="perTryTimeout")
    for token in retry.retry_on_tokens:
        if token in _RETRY_ON or go_atoi(token) in _GO_HTTP_CODES:
            continue
        if token.strip() != token and token.strip():
            fix = "remove the spaces: write the conditions as 5xx,reset,503"
        else:
            close = difflib.get_close_matches(token.lower(), _RETRY_ON, n=1, cutoff=0.6)
            fix = (
                f"did you mean {close[0]!r}?"
                if close
                else ("use HTTP status codes or " + ", ".join(_RETRY_ON))
            )
        rep.error((*path, "retryOn"), f"{token!r} is not a valid retryOn condition", fix)
    if retry.backoff is not None:
        check_duration(retry.backoff, (*path, "backoff"), rep, what="backoff")


def _check_rewrite(r: HTTPRoute, path: Path, rep: Reporter) -> None:
    """``validateHTTPRewrite`` and ``validateURIRegexRewrite``."""
    rw = r.rewrite
    if rw is None:
        return
    rp: Path = (*path, "rewrite")
    if rw.uri and rw.uri_regex_rewrite is not None:
        rep.error(rp, "a rewrite can set uri or uriRegexRewrite, not both", "keep one")
    if not rw.uri and rw.uri_regex_rewrite is None and not rw.authority:
        rep.error(rp, "the rewrite changes nothing", "set uri, uriRegexRewrite or authority")
    rr = rw.uri_regex_rewrite
    if rr is not None:
        if not rr.match or not rr.rewrite:
            rep.error(
                (*rp, "uriRegexRewrite"),
                "uriRegexRewrite needs both match and rewrite",
                "e.g. {match: ^/v1/(.*), rewrite: /v2/\\1}",
            )
        else:
            check_regex(rr.match, (*rp, "uriRegexRewrite", "match"), rep)


def _check_cors(c: CorsPolicy, path: Path, rep: Reporter) -> None:
    """``validateCORSPolicy``."""
    for k, origin in enumerate(c.allow_origins):
        p: Path = (*path, "allowOrigins", k)
        if not (origin.exact or origin.prefix or origin.regex):
            rep.error(p, "an allowed origin needs a value", "e.g. {exact: https://example.com}")
        elif origin.regex is not None:
            check_regex(origin.regex, (*p, "regex"), rep)
    for k, method in enumerate(c.allow_methods):
        if method not in _CORS_METHODS:
            fix = (
                f"did you mean {method.upper()!r}?"
                if method.upper() in _CORS_METHODS
                else "use " + ", ".join(_CORS_METHODS)
            )
            rep.error((*path, "allowMethods", k), f"{method!r} is not a supported HTTP method", fix)
    for field, names in (("allowHeaders", c.allow_headers), ("exposeHeaders", c.expose_headers)):
        for k, name in enumerate(names):
            if name != "*" and not _HEADER_NAME_RE.fullmatch(name):
                rep.error(
                    (*path, field, k),
                    f"{name!r} is not a valid header name" if name else "header name is empty",
                    "use header names such as content-type, or '*'",
                )
    age = c.max_age
    if (
        age is not None
        and check_duration(age, (*path, "maxAge"), rep, what="maxAge")
        and round(age.seconds * 1e9) % 1_000_000_000  # CorsPolicy: seconds precision
    ):
        rep.error((*path, "maxAge"), f"maxAge {age} is not whole seconds", "round it to seconds")


def _check_fault(f: HTTPFaultInjection, path: Path, rep: Reporter) -> None:
    """``validateHTTPFaultInjection``."""
    if f.delay is None and f.abort is None:
        rep.error(path, "fault injection needs a delay, an abort or both", "add delay or abort")
    a = f.abort
    if a is not None:
        ap: Path = (*path, "abort")
        _check_percentage(a.percentage, (*ap, "percentage"), rep, fine=True)
        if a.grpc_status is not None and a.grpc_status not in _GRPC_STATUS:
            close = difflib.get_close_matches(a.grpc_status.upper(), _GRPC_STATUS, n=1, cutoff=0.6)
            rep.error(
                (*ap, "grpcStatus"),
                f"{a.grpc_status!r} is not a gRPC status name",
                f"did you mean {close[0]!r}?" if close else "use a name such as UNAVAILABLE",
            )
        elif a.http2_error is not None:
            rep.error(
                (*ap, "http2Error"),
                "HTTP/2 error fault injection is not supported",
                "abort with httpStatus or grpcStatus",
            )
        elif a.http_status is not None:
            _check_http_status(a.http_status, (*ap, "httpStatus"), rep)
        elif a.grpc_status is None:
            rep.warn(ap, "abort has no error type", "set httpStatus or grpcStatus")
        if a.percentage is None:  # inmesh hint
            rep.warn(
                ap,
                "abort has no percentage, so no request is aborted",
                "set percentage: {value: 100} to abort every request",
            )
    d = f.delay
    if d is not None:
        dp: Path = (*path, "delay")
        _check_percentage(d.percentage, (*dp, "percentage"), rep, fine=True)
        if d.fixed_delay is not None:
            check_duration(d.fixed_delay, (*dp, "fixedDelay"), rep, what="fixedDelay")
        elif d.exponential_delay is not None:
            check_duration(
                d.exponential_delay, (*dp, "exponentialDelay"), rep, what="exponentialDelay"
            )
            rep.error(
                (*dp, "exponentialDelay"), "exponentialDelay is not supported", "use fixedDelay"
            )
        else:  # inmesh hint: route.go TranslateFault drops such a delay
            rep.warn(dp, "delay without fixedDelay has no effect", "set fixedDelay, e.g. 5s")
        if d.percent is not None:
            if not _check_int32(d.percent, (*dp, "percent"), rep):
                pass
            elif d.percentage is not None:  # inmesh hint
                rep.warn((*dp, "percent"), "percent is ignored as percentage is set", "remove it")
            elif not 0 <= d.percent <= 100:  # inmesh hint
                rep.warn((*dp, "percent"), f"percent {d.percent} is out of range", "use 0 to 100")
        elif d.percentage is None:  # inmesh hint
            rep.warn(
                dp,
                "delay has no percentage, so no request is delayed",
                "set percentage: {value: 100} to delay every request",
            )


# ---------------------------------------------------------------------------
# TLS and TCP routes


def _check_l4_match(m: TLSMatchAttributes | L4MatchAttributes, path: Path, rep: Reporter) -> None:
    for k, subnet in enumerate(m.destination_subnets):
        problem = ip_subnet_problem(subnet)
        if problem:
            rep.error(
                (*path, "destinationSubnets", k),
                f"{subnet!r} is not {problem}",
                "write an IP or a CIDR block such as 10.0.0.0/16",
            )
    if m.port:  # 0 means unset
        check_port(m.port, (*path, "port"), rep)
    check_labels(m.source_labels, (*path, "sourceLabels"), rep)
    _check_gateway_names(m.gateways, (*path, "gateways"), rep, False)


def _check_tls_route(
    t: TLSRoute,
    path: Path,
    spec: VirtualServiceSpec,
    to_gateway: bool,
    gw_semantics: bool,
    rep: Reporter,
) -> None:
    """``validateTLSRoute``, ``validateTLSMatch`` and ``validateSniHost``."""
    if not t.match:
        rep.error(
            (*path, "match"),
            "a TLS route needs at least one match",
            "add match: [{sniHosts: [...]}]",
        )
    for j, m in enumerate(t.match):
        mp: Path = (*path, "match", j)
        if not m.sni_hosts:
            rep.error((*mp, "sniHosts"), "a TLS match needs at least one SNI host", "list sniHosts")
        for k, sni in enumerate(m.sni_hosts):
            sp: Path = (*mp, "sniHosts", k)
            problem = (
                _gateway_host_problem(sni, True) if to_gateway else wildcard_domain_problem(sni)
            )
            if problem:
                if is_ip(sni):
                    rep.warn(
                        sp,
                        f"SNI host {sni!r} is an IP address, which most clients do not send",
                        "use a host name",
                    )
                else:
                    rep.error(
                        sp,
                        f"SNI host {sni!r} is invalid: {problem}",
                        "use a (wildcard) domain name",
                    )
            elif not any(_host_subset_of(sni, h) for h in spec.hosts):
                rep.error(
                    sp,
                    f"SNI host {sni!r} is not covered by any host of the VirtualService",
                    "add it (or a wildcard covering it) to hosts",
                )
        _check_l4_match(m, mp, rep)
    if not t.route:
        rep.error(
            (*path, "route"), "a TLS route needs destinations", "add route: [{destination: ...}]"
        )
    _check_destinations(t.route, (*path, "route"), rep, gw_semantics)


def _check_tcp_route(t: TCPRoute, path: Path, gw_semantics: bool, rep: Reporter) -> None:
    """``validateTCPRoute`` and ``validateTCPMatch``."""
    for j, m in enumerate(t.match):
        _check_l4_match(m, (*path, "match", j), rep)
        if m.source_subnet and ip_subnet_problem(m.source_subnet):  # inmesh hint
            rep.warn(
                (*path, "match", j, "sourceSubnet"),
                f"sourceSubnet {m.source_subnet!r} is neither an IP address nor a CIDR block",
                "write an IP or a CIDR block such as 10.0.0.0/16",
            )
    if not t.route:
        rep.error(
            (*path, "route"), "a TCP route needs destinations", "add route: [{destination: ...}]"
        )
    _check_destinations(t.route, (*path, "route"), rep, gw_semantics)


# ---------------------------------------------------------------------------
# Unreachable rules (Istio: VirtualServiceUnreachableRule / IneffectiveMatch warnings)


def _sm_covers(a: StringMatch | None, b: StringMatch | None) -> bool:
    """Every value ``b`` accepts, ``a`` accepts too."""
    if a is None or a.is_empty:
        return True
    if b is None or b.is_empty:
        return False
    if a.exact is not None:
        return b.exact == a.exact
    if a.prefix is not None:
        return any(v is not None and v.startswith(a.prefix) for v in (b.exact, b.prefix))
    return b.regex == a.regex  # regexes are compared as written (running them could hang)


def _map_covers(a: Mapping[str, StringMatch], b: Mapping[str, StringMatch]) -> bool:
    return all(k in b and _sm_covers(v, b[k]) for k, v in a.items())


def _match_covers(a: HTTPMatchRequest, b: HTTPMatchRequest) -> bool:
    """Every request ``b`` matches, ``a`` matches too (so ``b`` after ``a`` is never used)."""
    au, bu = a.uri, b.uri
    uri_ok = au is None or au.is_empty or au.prefix in ("", "/")
    if not uri_ok and bool(a.ignore_uri_case) == bool(b.ignore_uri_case):
        uri_ok = _sm_covers(au, bu)
    return (
        uri_ok
        and (not a.port or a.port == b.port)
        and all(_sm_covers(getattr(a, f), getattr(b, f)) for f in ("scheme", "method", "authority"))
        and _map_covers(a.headers, b.headers)
        and _map_covers(a.query_params, b.query_params)
        and all(b.without_headers.get(k) == v for k, v in a.without_headers.items())
        and all(b.source_labels.get(k) == v for k, v in a.source_labels.items())
        and (not a.source_namespace or a.source_namespace == b.source_namespace)
        and (not a.gateways or (bool(b.gateways) and set(b.gateways) <= set(a.gateways)))
    )


_ANY = HTTPMatchRequest()


def _rule_name(routes: Sequence[Any], i: int) -> str:
    name = getattr(routes[i], "name", None)
    return f"{name!r} (#{i})" if name else f"#{i}"


def _check_unreachable_http(routes: Sequence[HTTPRoute], rep: Reporter) -> None:
    earlier: list[tuple[int, HTTPMatchRequest]] = []
    catch_all: int | None = None
    for i, r in enumerate(routes):
        path: Path = ("spec", "http", i)
        if catch_all is not None:
            rep.warn(
                path,
                f"rule {_rule_name(routes, i)} is never used: rule "
                f"{_rule_name(routes, catch_all)} before it matches every request",
                "move the catch-all rule last, or give it a match",
            )
            continue
        hits: list[int | None] = []
        for m in r.match:
            hits.append(next((j for j, a in earlier if _match_covers(a, m)), None))
            earlier.append((i, m))
        if r.match and all(h is not None for h in hits):
            rep.warn(
                path,
                f"rule {_rule_name(routes, i)} is never used: earlier rules match all its requests",
                "put the more specific rule first, or remove this one",
            )
        else:
            for k, h in enumerate(hits):
                if h is not None:
                    rep.warn(
                        (*path, "match", k),
                        f"this match is never used: rule {_rule_name(routes, h)} already "
                        "matches all its requests",
                        "put the more specific rule first, or remove this match",
                    )
        if not r.match or any(_match_covers(m, _ANY) for m in r.match):
            catch_all = i


def _check_unreachable_l4(routes: Iterable[TLSRoute | TCPRoute], field: str, rep: Reporter) -> None:
    seen: list[Any] = []
    catch_all: int | None = None
    for i, r in enumerate(routes):
        path: Path = ("spec", field, i)
        if catch_all is not None:
            rep.warn(
                path,
                f"rule #{i} is never used: rule #{catch_all} matches every connection",
                "move the rule without match last",
            )
            continue
        if not r.match:
            catch_all = i
            continue
        dups = [k for k, m in enumerate(r.match) if m in seen]
        seen.extend(r.match)
        if len(dups) == len(r.match):
            rep.warn(
                path, f"rule #{i} is never used: earlier rules have the same matches", "remove it"
            )
        else:
            for k in dups:
                rep.warn(
                    (*path, "match", k),
                    "this match is never used: an earlier rule has the same one",
                    "remove it",
                )
