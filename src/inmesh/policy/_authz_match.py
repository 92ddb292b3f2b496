"""Compile AuthorizationPolicy rules into predicates, as Istio's RBAC generator does.

One rule becomes what Istio makes of it for Envoy's RBAC filter
(istio/istio ``pilot/pkg/security/authz/model/model.go``, ``generator.go``):
a list of *permissions* (one per ``to`` entry, or one if there is none) and a
list of *principals* (one per ``from`` entry, or one), each an AND of the
fields set in that entry plus the rule's ``when`` conditions (destination.*,
connection.sni and experimental.* go to permissions, the rest to
principals). The rule matches when some permission and some principal do.

Each field or condition with ``values`` becomes an OR of value matchers and
with ``notValues`` a NOT of such an OR; both may be present.

Errors are handled like Istio's ``checkError``: a value Istio cannot
translate drops the whole rule in an ALLOW policy ("less likely to allow")
and only that value in DENY, AUDIT and CUSTOM policies ("more likely to
deny"); an unknown ``when`` key drops the rule whatever the action.

Private module: :mod:`inmesh.policy.authz` is the API.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inmesh.config.resources.authorization_policy import Condition, Operation, Rule, Source

if TYPE_CHECKING:
    from .authz import AuthzRequest

__all__ = [
    "FALSE",
    "TRUE",
    "CompiledRule",
    "SkipRuleError",
    "TrustDomainBundle",
    "compile_rule",
]


def TRUE(_r: AuthzRequest) -> bool:  # noqa: N802 - a constant predicate
    """Matches every request."""
    return True


def FALSE(_r: AuthzRequest) -> bool:  # noqa: N802 - a constant predicate
    """Matches no request (also: an attribute inmesh never has, e.g. JWT claims)."""
    return False


class SkipRuleError(Exception):
    """The rule cannot be translated and is dropped (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BadValueError(Exception):
    """One value cannot be translated (Istio's generator returns an error)."""


# Envoy's uri_template literal characters (RFC 3986 pchar without '*').
_TEMPLATE_LITERAL = r"a-zA-Z0-9\-._~%!$&'()+,;:@="
_TEMPLATE_GLOB = f"[{_TEMPLATE_LITERAL}]+"
_TEMPLATE_TEXT_GLOB = f"[{_TEMPLATE_LITERAL}/]*"
_TEMPLATE_OK = re.compile(r"/[\x21-\x7e]*")
_TEMPLATE_LITERAL_RE = re.compile(f"[{_TEMPLATE_LITERAL}]+")


# -- trust domain aliases (pilot/pkg/security/trustdomain/bundle.go) -----------------------


@dataclass(frozen=True, slots=True)
class TrustDomainBundle:
    """The mesh trust domain first, then its aliases."""

    trust_domains: tuple[str, ...]

    def replace_aliases(self, principals: Iterable[str]) -> tuple[str, ...]:
        """``ReplaceTrustDomainAliases``: one principal per trust domain of the bundle.

        Only principals of the form ``<td>/ns/<ns>/sa/<sa>`` whose trust domain
        is ``cluster.local`` (always "the local trust domain") or one of the
        bundle's are rewritten; ``*`` as trust domain and other shapes stay.
        """
        out: list[str] = []
        for principal in principals:
            parts = principal.split("/")
            if len(parts) != 5 or parts[0] == "*":
                out.append(principal)
                continue
            td = parts[0]
            if not (_td_in_list(td, self.trust_domains) or td == "cluster.local"):
                out.append(principal)
                continue
            seen: list[str] = []
            for alias in self.trust_domains:
                new = principal if _suffix_match(alias, td) else "/".join((alias, *parts[1:]))
                if new not in seen:
                    seen.append(new)
            out.extend(seen)
        return tuple(out)

    def expand(self, values: Iterable[str]) -> tuple[str, ...]:
        """``ExpandTrustDomainAliases``: a listed trust domain stands for all of them."""
        out: list[str] = []
        for v in values:
            for item in self.trust_domains if v in self.trust_domains else (v,):
                if item not in out:
                    out.append(item)
        return tuple(out)


def _prefix_match(a: str, pattern: str) -> bool:
    return pattern.endswith("*") and a.startswith(pattern[:-1])


def _suffix_match(a: str, pattern: str) -> bool:
    return pattern.startswith("*") and a.endswith(pattern[1:])


def _td_in_list(a: str, tds: Sequence[str]) -> bool:
    return any(
        s in (a, "*")
        or _prefix_match(a, s)
        or _prefix_match(s, a)
        or _suffix_match(a, s)
        or _suffix_match(s, a)
        for s in tds
    )


# -- combinators ------------------------------------------------------------------------------


def _and(preds: Sequence[Callable[[AuthzRequest], bool]]) -> Callable[[AuthzRequest], bool]:
    preds = [p for p in preds if p is not TRUE]
    if any(p is FALSE for p in preds):
        return FALSE
    if not preds:
        return TRUE
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda r: a(r) and b(r)
    items = tuple(preds)

    def all_of(r: AuthzRequest) -> bool:
        for p in items:  # noqa: SIM110 - a loop is faster than all() on a generator
            if not p(r):
                return False
        return True

    return all_of


def _or(preds: Sequence[Callable[[AuthzRequest], bool]]) -> Callable[[AuthzRequest], bool]:
    preds = [p for p in preds if p is not FALSE]
    if any(p is TRUE for p in preds):
        return TRUE
    if not preds:
        return FALSE
    if len(preds) == 1:
        return preds[0]
    items = tuple(preds)

    def any_of(r: AuthzRequest) -> bool:
        for p in items:  # noqa: SIM110 - a loop is faster than any() on a generator
            if p(r):
                return True
        return False

    return any_of


def _not(pred: Callable[[AuthzRequest], bool]) -> Callable[[AuthzRequest], bool]:
    if pred is TRUE:
        return FALSE
    if pred is FALSE:
        return TRUE
    return lambda r: not pred(r)


# -- string patterns (matcher/string.go, matcher/header.go) ----------------------------------


@dataclass(slots=True)
class _Patterns:
    """An OR of Istio string patterns, split by kind so that sets and tuples test them."""

    exact: set[str] = field(default_factory=set)
    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    presence: bool = False

    def add(self, value: str, *, presence_star: bool = True) -> None:
        """Istio's order: ``*`` alone, then ``*x`` (suffix), then ``x*`` (prefix), else exact."""
        if value == "*" and presence_star:
            self.presence = True
        elif value.startswith("*"):
            self.suffixes.append(value[1:])
        elif value.endswith("*"):
            self.prefixes.append(value[:-1])
        else:
            self.exact.add(value)

    def test(self) -> Callable[[str], bool]:
        """A function of the value (``presence`` here means: not empty)."""
        exact = frozenset(self.exact)
        pre = tuple(self.prefixes)
        suf = tuple(self.suffixes)
        if self.presence:
            return bool
        if not pre and not suf:
            return exact.__contains__
        if not exact and not suf:
            return lambda s: s.startswith(pre)
        if not exact and not pre:
            return lambda s: s.endswith(suf)
        return lambda s: s in exact or s.startswith(pre) or s.endswith(suf)


def _string_or(
    values: Iterable[str], get: Callable[[AuthzRequest], str]
) -> Callable[[AuthzRequest], bool]:
    """``StringMatcher`` OR: ``*`` is regex ``.+`` (non-empty)."""
    pats = _Patterns()
    for v in values:
        pats.add(v)
    test = pats.test()
    return lambda r: test(get(r))


def _principal_or(values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``StringMatcherWithPrefix(v, "spiffe://")`` against the peer's URI SAN."""
    pats = _Patterns()
    for v in values:
        pats.add(v)
    if pats.presence:
        return _has_peer
    test = pats.test()

    def principal(r: AuthzRequest) -> bool:
        p = r._principal
        return p is not None and test(p)

    return principal


def _has_peer(r: AuthzRequest) -> bool:
    return r._principal is not None


def _host_or(values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``HostMatcher`` on ``:authority``: case-insensitive; ``*`` = header present."""
    pats = _Patterns()
    for v in values:
        pats.add(v.lower())
    if pats.presence:
        return lambda r: bool(r.host)
    test = pats.test()
    return lambda r: bool(r.host) and test(r.host.lower())


def _method_or(values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``HeaderMatcher`` on ``:method``: case-sensitive; ``*`` = present (always)."""
    pats = _Patterns()
    for v in values:
        pats.add(v)
    if pats.presence:
        return TRUE
    test = pats.test()
    return lambda r: test(r.method)


def _header_or(name: str, values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``HeaderMatcher``: ``*`` = present (even empty); otherwise the joined value."""
    pats = _Patterns()
    for v in values:
        pats.add(v)
    if pats.presence:
        return lambda r: r.header(name) is not None
    test = pats.test()

    def header(r: AuthzRequest) -> bool:
        value = r.header(name)
        return value is not None and test(value)

    return header


def _template_regex(template: str) -> re.Pattern[str]:
    """Envoy's ``uri_template`` regex for an Istio path template (``{*}``, ``{**}``).

    Istio rewrites ``{*}`` to ``*`` and ``{**}`` to ``**``; Envoy then reads
    ``*`` as one non-empty segment and ``**`` as any text including ``/``,
    and every other piece up to a ``/`` as a literal of RFC 3986 pchars.
    """
    t = template.replace("{**}", "**").replace("{*}", "*")
    if not _TEMPLATE_OK.fullmatch(t):
        raise _BadValueError(f"invalid path template {template!r}")
    out: list[str] = []
    i = 0
    seen_text_glob = False
    previous_slash = False
    while i < len(t):
        if t[i] == "*":
            if seen_text_glob:
                raise _BadValueError(f"{{**}} must be the last operator in {template!r}")
            if t.startswith("**", i):
                out.append(_TEMPLATE_TEXT_GLOB)
                seen_text_glob = True
                i += 2
            else:
                out.append(_TEMPLATE_GLOB)
                i += 1
            previous_slash = False
        elif t[i] == "/":
            if previous_slash:
                raise _BadValueError(f"double slashes in path template {template!r}")
            out.append("/")
            previous_slash = True
            i += 1
        else:
            j = t.find("/", i)
            j = len(t) if j < 0 else j
            literal = t[i:j]
            if not _TEMPLATE_LITERAL_RE.fullmatch(literal):
                raise _BadValueError(f"invalid literal {literal!r} in path template {template!r}")
            out.append(re.escape(literal))
            previous_slash = False
            i = j
    return re.compile("".join(out))


def _path_or(values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``PathMatcher`` (``*`` = non-empty) or ``uri_template`` for ``{*}``/``{**}``."""
    pats = _Patterns()
    templates: list[str] = []
    for v in values:
        if "{*}" in v or "{**}" in v:
            templates.append(_template_regex(v).pattern)
        else:
            pats.add(v)
    plain = pats.test() if (pats.exact or pats.prefixes or pats.suffixes or pats.presence) else None
    if not templates:
        assert plain is not None
        test = plain
        return lambda r: test(r._path)
    tmpl = re.compile("|".join(f"(?:{t})" for t in templates)).fullmatch
    if plain is None:
        return lambda r: tmpl(r._path) is not None
    test2 = plain
    return lambda r: test2(r._path) or tmpl(r._path) is not None


# -- identity (principal) generators ----------------------------------------------------------


def _namespace_or(values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``srcNamespaceGenerator``: regex ``.*/ns/<ns>/.*`` on the URI SAN; ``*`` is ``.*``."""
    subs: list[str] = []
    globs: list[str] = []
    for v in values:
        if "*" in v:
            globs.append(".*/ns/" + ".*".join(re.escape(p) for p in v.split("*")) + "/.*")
        else:
            subs.append(f"/ns/{v}/")
    sub_t = tuple(subs)
    glob = re.compile("|".join(f"(?:{g})" for g in globs)).fullmatch if globs else None

    def namespace(r: AuthzRequest) -> bool:
        uri = r._uri
        if uri is None:
            return False
        for s in sub_t:
            if s in uri:
                return True
        return glob is not None and glob(uri) is not None

    return namespace


def _service_account_or(values: Iterable[str], policy_ns: str) -> Callable[[AuthzRequest], bool]:
    """``srcServiceAccountGenerator``: ``spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?``."""
    regexes = []
    for v in values:
        ns, sep, sa = v.partition("/")
        if not sep:
            ns, sa = policy_ns, v
        regexes.append(f"spiffe://.+/ns/{re.escape(ns)}/(?:.+/|)sa/{re.escape(sa)}(?:/.+)?")
    rx = re.compile("|".join(f"(?:{x})" for x in regexes)).fullmatch

    def service_account(r: AuthzRequest) -> bool:
        uri = r._uri
        return uri is not None and rx(uri) is not None

    return service_account


def _trust_domain_or(values: Iterable[str]) -> Callable[[AuthzRequest], bool]:
    """``srcTrustDomainGenerator``: URI prefix ``spiffe://<td>/``; ``*`` = any peer."""
    prefixes: list[str] = []
    regexes: list[str] = []
    for v in values:
        if v == "*":
            return _has_peer
        if "*" not in v:
            prefixes.append(f"spiffe://{v}/")
        else:
            head, tail = v.split("*", 1)
            regexes.append(f"spiffe://{re.escape(head)}[^/]*{re.escape(tail)}/.*")
    pre = tuple(prefixes)
    rx = re.compile("|".join(f"(?:{x})" for x in regexes)).fullmatch if regexes else None

    def trust_domain(r: AuthzRequest) -> bool:
        uri = r._uri
        if uri is None:
            return False
        return uri.startswith(pre) or (rx is not None and rx(uri) is not None)

    return trust_domain


# -- addresses and ports -------------------------------------------------------------------------


def _cidr(value: str) -> tuple[int, int, int]:
    """``AddrStrToCidrRange``: (version, network, mask); an IP alone is /32 or /128."""
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
        else:
            ip = ipaddress.ip_address(value)
            net = ipaddress.ip_network((ip, ip.max_prefixlen))
    except ValueError as exc:
        raise _BadValueError(f"invalid IP or CIDR {value!r}") from exc
    return net.version, int(net.network_address), int(net.netmask)


def _cidr_or(values: Sequence[tuple[int, int, int]], which: int) -> Callable[[AuthzRequest], bool]:
    nets = tuple(values)

    def cidr(r: AuthzRequest) -> bool:
        key = r._ip(which)
        if key is None:
            return False
        version, addr = key
        for v, net, mask in nets:  # noqa: SIM110 - faster than any() on a generator
            if v == version and addr & mask == net:
                return True
        return False

    return cidr


def _port(value: str) -> int:
    """``convertToPort``: a base-10 unsigned integer up to 65535."""
    if not value.isdigit() or not value.isascii() or int(value) > 65535:
        raise _BadValueError(f"invalid port {value!r}")
    return int(value)


# -- the model ------------------------------------------------------------------------------------

# Index dimensions.
DIM_PRINCIPAL = "principal"
DIM_NAMESPACE = "namespace"
DIM_METHOD = "method"


@dataclass(slots=True)
class _Alt:
    """One principal or permission: an AND of predicates, plus what can index it."""

    preds: list[Callable[[AuthzRequest], bool]] = field(default_factory=list)
    keys: dict[str, frozenset[str]] = field(default_factory=dict)

    def key(self, dim: str, values: Iterable[str]) -> None:
        new = frozenset(values)
        old = self.keys.get(dim)
        if old is None or len(new) < len(old):
            self.keys[dim] = new


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """One rule as Envoy's RBAC sees it: ``matches`` and the keys that index it."""

    policy_id: str
    matches: Callable[[AuthzRequest], bool]
    keys: dict[str, frozenset[str]]
    """Per index dimension: values one of which the request must have to match."""


class _Compiler:
    """Compiles the fields of one rule; owns the error policy of the action."""

    def __init__(
        self, *, allow: bool, policy_ns: str, bundle: TrustDomainBundle, notes: list[str], name: str
    ) -> None:
        self.allow = allow
        self.policy_ns = policy_ns
        self.bundle = bundle
        self.notes = notes
        self.name = name

    def _values(self, values: Sequence[str], convert: Callable[[str], object]) -> list[str]:
        """The values that translate; in ALLOW one bad value drops the rule."""
        good: list[str] = []
        for v in values:
            try:
                convert(v)
            except _BadValueError as exc:
                if self.allow:
                    raise SkipRuleError(str(exc)) from exc
                self.notes.append(f"{self.name}: ignored {exc}")
                continue
            good.append(v)
        return good

    def add(
        self,
        alt: _Alt,
        values: Sequence[str],
        not_values: Sequence[str],
        build: Callable[[Sequence[str]], Callable[[AuthzRequest], bool]],
        *,
        convert: Callable[[str], object] = str,
        index: tuple[str, Callable[[str], bool]] | None = None,
    ) -> None:
        """Add ``OR(values)`` and ``NOT(OR(not_values))`` to ``alt``."""
        good = self._values(values, convert)
        if good:
            alt.preds.append(build(good))
            if index is not None and all(index[1](v) for v in good):
                alt.key(index[0], good)
        excluded = self._values(not_values, convert)
        if excluded:
            alt.preds.append(_not(build(excluded)))

    def add_missing(self, alt: _Alt, values: Sequence[str], _not_values: Sequence[str]) -> None:
        """An attribute inmesh never has (JWT, Envoy metadata): values never, notValues always.

        (Envoy's metadata matcher fails on a missing value, so ``NOT(OR(...))``
        of ``notValues`` is always true and adds nothing.)
        """
        if values:
            alt.preds.append(FALSE)

    # -- Source / Operation fields --------------------------------------------------------

    def principals(self, alt: _Alt, values: Sequence[str], not_values: Sequence[str]) -> None:
        self.add(
            alt,
            self.bundle.replace_aliases(values) if values else (),
            self.bundle.replace_aliases(not_values) if not_values else (),
            _principal_or,
            index=(DIM_PRINCIPAL, _is_exact),
        )

    def namespaces(self, alt: _Alt, values: Sequence[str], not_values: Sequence[str]) -> None:
        self.add(
            alt,
            values,
            not_values,
            _namespace_or,
            index=(DIM_NAMESPACE, lambda v: "*" not in v and "/" not in v and v != ""),
        )

    def service_accounts(self, alt: _Alt, values: Sequence[str], not_values: Sequence[str]) -> None:
        ns = self.policy_ns
        self.add(alt, values, not_values, lambda vs: _service_account_or(vs, ns))

    def trust_domains(self, alt: _Alt, values: Sequence[str], not_values: Sequence[str]) -> None:
        self.add(
            alt,
            self.bundle.expand(values) if values else (),
            self.bundle.expand(not_values) if not_values else (),
            _trust_domain_or,
        )

    def ips(self, alt: _Alt, values: Sequence[str], not_values: Sequence[str], which: int) -> None:
        self.add(
            alt,
            values,
            not_values,
            lambda vs: _cidr_or([_cidr(v) for v in vs], which),
            convert=_cidr,
        )

    def source(self, alt: _Alt, s: Source) -> None:
        # model.go inserts each at the front; order does not change the result.
        self.principals(alt, s.principals, s.not_principals)
        self.add_missing(alt, s.request_principals, s.not_request_principals)
        self.service_accounts(alt, s.service_accounts, s.not_service_accounts)
        self.trust_domains(alt, s.trust_domains, s.not_trust_domains)
        self.namespaces(alt, s.namespaces, s.not_namespaces)
        self.ips(alt, s.remote_ip_blocks, s.not_remote_ip_blocks, REMOTE_IP)
        self.ips(alt, s.ip_blocks, s.not_ip_blocks, SOURCE_IP)

    def operation(self, alt: _Alt, o: Operation) -> None:
        self.add(alt, o.hosts, o.not_hosts, _host_or)
        self.add(alt, o.methods, o.not_methods, _method_or, index=(DIM_METHOD, _is_exact))
        self.add(alt, o.paths, o.not_paths, _path_or, convert=_check_path)
        self.add(alt, o.ports, o.not_ports, _ports_in, convert=_port)

    # -- when -------------------------------------------------------------------------------

    def condition(self, c: Condition, permission: _Alt, principal: _Alt) -> None:
        """Route one ``when`` condition like ``model.New`` does."""
        k = c.key or ""
        vals, nots = c.values, c.not_values
        if k == "destination.ip":
            self.ips(permission, vals, nots, DESTINATION_IP)
        elif k == "destination.port":
            self.add(permission, vals, nots, _ports_in, convert=_port)
        elif k == "connection.sni":
            self.add(permission, vals, nots, lambda vs: _string_or(vs, _sni))
        elif k.startswith("experimental.envoy.filters."):
            parts = k[len("experimental.") :].removesuffix("]").split("[", 1)
            if len(parts) != 2:
                self._bad_key(k)
                return
            self.add_missing(permission, vals, nots)
        elif k == "source.ip":
            self.ips(principal, vals, nots, SOURCE_IP)
        elif k == "remote.ip":
            self.ips(principal, vals, nots, REMOTE_IP)
        elif k == "source.namespace":
            self.namespaces(principal, vals, nots)
        elif k == "source.trustDomain":
            self.trust_domains(principal, vals, nots)
        elif k == "source.serviceAccount":
            self.service_accounts(principal, vals, nots)
        elif k == "source.principal":
            self.principals(principal, vals, nots)
        elif k in ("request.auth.principal", "request.auth.audiences", "request.auth.presenter"):
            self.add_missing(principal, vals, nots)
        elif k.startswith("request.headers"):
            name = _name_in_brackets(k[len("request.headers") :])
            if name is None:
                self._bad_key(k)
                return
            self.add(principal, vals, nots, lambda vs: _header_or(name.lower(), vs))
        elif k.startswith("request.auth.claims"):
            if not _claims_ok(k[len("request.auth.claims") :]):
                self._bad_key(k)
                return
            self.add_missing(principal, vals, nots)
        else:
            raise SkipRuleError(f"unknown attribute {k!r}")

    def _bad_key(self, key: str) -> None:
        if self.allow:
            raise SkipRuleError(f"invalid key {key!r}")
        self.notes.append(f"{self.name}: ignored condition with invalid key {key!r}")


SOURCE_IP = 0
REMOTE_IP = 1
DESTINATION_IP = 2


def _sni(r: AuthzRequest) -> str:
    return r.sni


def _is_exact(v: str) -> bool:
    return not (v.startswith("*") or v.endswith("*"))


def _check_path(v: str) -> None:
    if "{*}" in v or "{**}" in v:
        _template_regex(v)


def _ports_in(values: Sequence[str]) -> Callable[[AuthzRequest], bool]:
    ports = frozenset(_port(v) for v in values)
    return lambda r: r.destination_port in ports


def _name_in_brackets(s: str) -> str | None:
    """``extractNameInBrackets``: ``[name]`` -> ``name``."""
    if not (s.startswith("[") and s.endswith("]")) or len(s) < 2:
        return None
    return s[1:-1]


def _claims_ok(s: str) -> bool:
    """``extractNameInNestedBrackets`` succeeds (``[a]`` or ``[a][b]...``)."""
    if _name_in_brackets(s) is not None:
        return True
    return re.fullmatch(r"(\[[^\[\]]*\])+", s) is not None


def compile_rule(
    rule: Rule,
    policy_id: str,
    *,
    allow: bool,
    policy_ns: str,
    bundle: TrustDomainBundle,
    notes: list[str],
) -> CompiledRule:
    """Compile one rule; raises :class:`SkipRuleError` when Istio would drop it."""
    c = _Compiler(allow=allow, policy_ns=policy_ns, bundle=bundle, notes=notes, name=policy_id)
    base_permission = _Alt()
    base_principal = _Alt()
    for cond in rule.when:
        c.condition(cond, base_permission, base_principal)

    principals: list[_Alt] = []
    for item in rule.from_:
        alt = _Alt(list(base_principal.preds), dict(base_principal.keys))
        if item.source is not None:
            c.source(alt, item.source)
        principals.append(alt)
    if not rule.from_:
        principals.append(base_principal)

    permissions: list[_Alt] = []
    for target in rule.to:
        alt = _Alt(list(base_permission.preds), dict(base_permission.keys))
        if target.operation is not None:
            c.operation(alt, target.operation)
        permissions.append(alt)
    if not rule.to:
        permissions.append(base_permission)

    permission = _or([_and(a.preds) for a in permissions])
    principal = _or([_and(a.preds) for a in principals])
    matches = _and([permission, principal])
    keys: dict[str, frozenset[str]] = {}
    for alts in (principals, permissions):
        for dim in (DIM_PRINCIPAL, DIM_NAMESPACE, DIM_METHOD):
            if alts and all(dim in a.keys for a in alts):
                keys[dim] = frozenset().union(*(a.keys[dim] for a in alts))
    return CompiledRule(policy_id, matches, keys)


def never(policy_id: str) -> CompiledRule:
    """Istio's ``rbacPolicyMatchNever`` (a policy without rules)."""
    return CompiledRule(policy_id, FALSE, {})
