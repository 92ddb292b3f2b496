"""One RBAC engine (the rules of one action and mode) with an index of its rules.

Envoy keeps the policies of an RBAC filter in a ``std::map`` keyed by policy
id and reports the *first* match in that (byte-wise) order as the effective
policy (envoyproxy/envoy ``source/extensions/filters/common/rbac/engine_impl.cc``,
``checkPolicyMatch``). :meth:`Engine.first_match` returns the same rule, but
only evaluates the rules that could match the request:

* rules whose every principal names exact peer principals are looked up by
  the peer's principal;
* else rules whose every principal names exact namespaces are looked up by
  the namespaces the peer's URI SAN carries (``/ns/<x>/``);
* else rules whose every permission names exact methods are looked up by the
  method;
* the other rules are always evaluated.

Per-request work is therefore proportional to the rules that share the
request's principal, namespace or method (plus the unindexed ones), not to
the number of rules.

Private module: :mod:`inmesh.policy.authz` is the API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._authz_match import DIM_METHOD, DIM_NAMESPACE, DIM_PRINCIPAL, CompiledRule

if TYPE_CHECKING:
    from .authz import AuthzRequest

__all__ = ["CANDIDATE_CACHE_SIZE", "Engine"]

CANDIDATE_CACHE_SIZE = 4096
"""Per engine: how many (peer, method) candidate lists are remembered."""

_Bucket = dict[str, tuple[int, ...]]


class Engine:
    """The rules of one RBAC engine, sorted by policy id, indexed."""

    __slots__ = ("_always", "_by_method", "_by_namespace", "_by_principal", "first_match", "rules")

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(sorted(rules, key=lambda r: r.policy_id))
        by_principal: dict[str, list[int]] = {}
        by_namespace: dict[str, list[int]] = {}
        by_method: dict[str, list[int]] = {}
        always: list[int] = []
        for i, rule in enumerate(self.rules):
            for dim, bucket in (
                (DIM_PRINCIPAL, by_principal),
                (DIM_NAMESPACE, by_namespace),
                (DIM_METHOD, by_method),
            ):
                keys = rule.keys.get(dim)
                if keys is not None:
                    for k in keys:
                        bucket.setdefault(k, []).append(i)
                    break
            else:
                always.append(i)
        self._by_principal: _Bucket = {k: tuple(v) for k, v in by_principal.items()}
        self._by_namespace: _Bucket = {k: tuple(v) for k, v in by_namespace.items()}
        self._by_method: _Bucket = {k: tuple(v) for k, v in by_method.items()}
        self._always: tuple[int, ...] = tuple(always)
        self.first_match: Callable[[AuthzRequest], CompiledRule | None] = self._matcher()
        """The matching rule with the smallest policy id (as Envoy reports it), or ``None``."""

    def __len__(self) -> int:
        return len(self.rules)

    def candidates(self, r: AuthzRequest) -> list[int]:
        """Indexes (ascending, so in policy-id order) of the rules that could match ``r``."""
        found: set[int] = set(self._always)
        if r._principal is not None:
            found.update(self._by_principal.get(r._principal, ()))
        if r._uri is not None:
            for ns in r._namespaces():
                found.update(self._by_namespace.get(ns, ()))
        found.update(self._by_method.get(r.method, ()))
        return sorted(found)

    def _matcher(self) -> Callable[[AuthzRequest], CompiledRule | None]:
        """``first_match``, specialised for the indexes this engine has."""
        rules = self.rules

        def as_rules(ix: tuple[int, ...]) -> tuple[CompiledRule, ...]:
            return tuple(rules[i] for i in ix)

        always = as_rules(self._always)
        by_p = {k: as_rules(v) for k, v in self._by_principal.items()}
        by_ns = {k: as_rules(v) for k, v in self._by_namespace.items()}
        by_m = {k: as_rules(v) for k, v in self._by_method.items()}
        order = {id(rule): i for i, rule in enumerate(rules)}

        def scan(group: Sequence[CompiledRule], r: AuthzRequest) -> CompiledRule | None:
            for rule in group:
                if rule.matches(r):
                    return rule
            return None

        if not (by_p or by_ns or by_m):
            if not always:
                return lambda r: None
            return lambda r: scan(always, r)

        if by_p and not by_ns and not by_m and not always:
            # The common shape: every rule names its callers' principals.
            def by_principal_only(r: AuthzRequest) -> CompiledRule | None:
                hit = by_p.get(r._principal)  # type: ignore[arg-type]
                if hit is not None:
                    for rule in hit:
                        if rule.matches(r):
                            return rule
                return None

            return by_principal_only

        # Which rules can match depends only on the peer and the method: remember the
        # merged candidate list per (peer, method) -- a bounded cache, not state that
        # changes any answer.
        memo: dict[object, tuple[CompiledRule, ...]] = {}

        def candidates_of(r: AuthzRequest) -> tuple[CompiledRule, ...]:
            pool: set[CompiledRule] = set(always)
            if r._principal is not None:
                pool.update(by_p.get(r._principal, ()))
            if r._uri is not None:
                for ns in r._namespaces():
                    pool.update(by_ns.get(ns, ()))
            pool.update(by_m.get(r.method, ()))
            return tuple(sorted(pool, key=lambda rule: order[id(rule)]))

        def first_match(r: AuthzRequest) -> CompiledRule | None:
            key = (r._uri, r.method) if by_m else r._uri
            group = memo.get(key)
            if group is None:
                group = candidates_of(r)
                if len(memo) >= CANDIDATE_CACHE_SIZE:
                    memo.clear()
                memo[key] = group
            for rule in group:
                if rule.matches(r):
                    return rule
            return None

        return first_match
