"""Which DestinationRule applies to a destination, and the traffic policy of each cluster.

Sans I/O. Compile once per (snapshot, workload), look up per request::

    rules = DestinationRuleIndex.compile(snapshot, workload)
    eff = rules.policy(service, port=8080, subset="v1")
    if eff is None: local reply 503, flag NC (Istio builds no cluster for the subset)
    labels = eff.subset.labels if eff.subset is not None else {}
    eps = rules.select_endpoints(registry.endpoints(service, 8080), labels)

Everything below was read in istio/istio (master, commit 86c9f01f); paths are
relative to that repository.

Indexing (``pilot/pkg/model/push_context.go``: ``setDestinationRules``,
``sortConfigBySelectorAndCreationTime``)
    Rules are sorted with ``workloadSelector`` rules first, then by
    ``creationTimestamp`` (a missing one is Go's zero time: oldest), then by
    name, then by namespace. ``host`` is expanded in the rule's namespace
    (``ResolveShortnameToFQDN``: no dot -> ``<host>.<ns>.svc.<domain>``; ``*``
    and IP addresses are kept). A rule with a selector is treated as
    ``exportTo: ["."]`` whatever it says. Three indexes are built per
    namespace: *namespace-local* (``exportTo`` empty, or containing ``*``,
    ``.`` or the rule's own namespace), *exported* (all but the private-only
    rules, i.e. ``exportTo`` exactly ``["."]`` or ``[<own ns>]``; the mesh's
    ``defaultDestinationRuleExportTo`` is taken to be ``*``, Istio's default)
    and *root-local* (private-only rules of the root namespace).

Merging several rules for one host in one index (``pilot/pkg/model/destination_rule.go``:
``mergeDestinationRule``, with ``ENABLE_ENHANCED_DESTINATIONRULE_MERGE`` on, its default)
    An incoming rule is merged into an existing entry when their
    ``exportTo`` sets are equal, or the incoming set is a superset of the
    entry's non-empty set; but not when both have selectors and they differ.
    Merging appends the subsets whose names are new (a duplicate name keeps
    the first subset) and adopts the incoming top-level ``trafficPolicy``
    only if the entry has none: the whole policy of the first (oldest) rule
    wins, blocks are not merged. ``host``, ``exportTo`` and the selector stay
    the first rule's. Whether the incoming rule is ALSO kept as an entry of
    its own is decided by the last entry looked at: not kept after equal
    ``exportTo`` or after a merge with no or equal selectors. Consequences
    (tested): a catch-all with ``exportTo`` unset is not merged into selector
    rules (``{}`` is no superset of ``{"."}``); with ``[".", x]`` it is
    merged into them and kept; with exactly ``["."]`` it is merged into the
    selector rule and NOT kept, so unselected workloads of that namespace
    get no rule; a rule exported to a superset of a narrower one is folded
    into it and invisible to the extra namespaces.
    Backend-policy merging (rules synthesized from Gateway API policies) is
    not modelled: inmesh has no such rules.

Lookup (``push_context.go``: ``destinationRule``, ``getExportedDestinationRuleFromNamespace``;
``pilot/pkg/model/config.go``: ``MostSpecificHostMatch``; ``pkg/config/host/names.go``: ``MoreSpecific``)
    For a client in namespace C and a service owned by namespace S:
    (1) C's namespace-local index (when C is the root namespace: the
    root-local index instead); (2) S's exported index; (3) the root
    namespace's exported index. In each, the most specific host wins (the
    exact host, else the longest wildcard suffix, ties alphabetical; a
    wildcard service host only matches wildcard rules); steps (2) and (3)
    then keep the entries whose ``exportTo`` is empty, has ``*`` or names C,
    and fall through when none is left, without trying a less specific
    host. Step (1) never falls through once the host matched.
    From the entries found, ``pilot/pkg/model/sidecar.go``
    (``SidecarScope.DestinationRule``) returns the first selector rule of
    the client's namespace whose ``matchLabels`` are a subset of the
    workload's labels, else the LAST entry without a selector, else none;
    so a workload not selected by a namespace's selector-only rules gets no
    rule, even if another namespace has one.

Per-cluster policy (``pilot/pkg/networking/core/cluster_builder.go``:
``applyDestinationRule``, ``buildSubsetCluster``; ``pilot/pkg/networking/util/util.go``:
``GetPortLevelTrafficPolicy``, ``MergeSubsetTrafficPolicy``;
``destination_rule.go``: ``MergeTrafficPolicy``, ``ShallowCopyTrafficPolicy``;
``pilot/pkg/networking/core/cluster_traffic_policy.go``: ``selectTrafficPolicyComponents``)
    Service cluster: the first ``portLevelSettings`` entry for the port
    replaces the policy with ONLY that entry's loadBalancer,
    connectionPool, outlierDetection and tls (omitted ones are unset), so
    the top-level ``tunnel``, ``proxyProtocol`` and ``retryBudget`` are
    dropped too. Subset cluster: that result, then the subset's policy
    (itself port-selected the same way): each of the four blocks it sets
    replaces the block; when the subset had a port entry all four are
    replaced, unset ones included. ``tunnel``, ``proxyProtocol`` and
    ``retryBudget`` replace only when the subset's (port-selected) policy
    sets them. Without a top-level policy the subset's is used as is.
    ``retryBudget`` is read from this merged policy (``applyConnectionPool``
    -> ``applyRetryBudget``), like the other blocks.
    Subset endpoints (``pilot/pkg/xds/endpoints/endpoint_builder.go``:
    ``getSubSetLabels``; ``pkg/config/labels/instance.go``: ``SubsetOf``):
    endpoints whose labels include all the subset's labels; none: all.

Left out: the mesh-wide ``defaultTrafficPolicy`` (``applyDefaultTrafficPolicy``)
and ``defaultDestinationRuleExportTo`` (inmesh has no MeshConfig), Sidecar
resources (every registry service is visible), inbound clusters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from inmesh.config.resources._common import Resource
from inmesh.config.resources.destination_rule import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    DestinationRuleSpec,
    LoadBalancerSettings,
    OutlierDetection,
    ProxyProtocol,
    RetryBudget,
    Subset,
    TrafficPolicy,
    TunnelSettings,
)
from inmesh.config.snapshot import ConfigSnapshot
from inmesh.discovery.registry import Endpoint, Service
from inmesh.errors import Diagnostic, Severity
from inmesh.model import Workload
from inmesh.routing.router import expand_host

__all__ = ["DestinationRuleIndex", "EffectivePolicy"]

_CACHE_SIZE = 8192
_MISS: Any = object()
_PUBLIC = "*"
_PRIVATE = "."

DestinationRule = Resource[DestinationRuleSpec]


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """The traffic policy for one cluster (service, port, subset) after Istio's merge rules.

    Blocks left ``None`` take Istio's defaults (LEAST_REQUEST, no ejection,
    auto mTLS, the default circuit-breaker limits).
    """

    rule: DestinationRule | None
    """The (merged) DestinationRule that applied; ``None``: none did."""
    subset: Subset | None
    """The subset, when the destination named one (and the rule defines it)."""
    load_balancer: LoadBalancerSettings | None
    connection_pool: ConnectionPoolSettings | None
    outlier_detection: OutlierDetection | None
    tls: ClientTLSSettings | None
    retry_budget: RetryBudget | None
    """From the merged policy; dropped by a matching top-level port entry (which has none)."""
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    merged_from: tuple[str, ...] = ()
    """``namespace/name`` of every rule merged into :attr:`rule`, the first one first."""

    @property
    def source(self) -> str:
        """``namespace/name`` of the rule, or ``""`` (for logs and errors)."""
        r = self.rule
        return f"{r.namespace}/{r.name}" if r is not None else ""


# ---------------------------------------------------------------------------
# Compilation


@dataclass(slots=True)
class _Entry:
    """One consolidated rule (``ConsolidatedDestRule``), mutable while compiling."""

    rule: DestinationRule
    export_to: frozenset[str]
    sources: list[str]


@dataclass(slots=True)
class _Bucket:
    """``consolidatedDestRules``: merged rules of one index of one namespace, by host."""

    specific: dict[str, list[_Entry]] = dataclasses.field(default_factory=dict)
    wildcard: dict[str, list[_Entry]] = dataclasses.field(default_factory=dict)

    def merge(self, rule: DestinationRule, host: str, export_to: frozenset[str]) -> None:
        """Istio's ``mergeDestinationRule`` (enhanced merge), step for step."""
        table = self.wildcard if host.startswith("*") else self.specific
        entries = table.get(host)
        name = f"{rule.namespace}/{rule.name}"
        if entries is None:
            table[host] = [_Entry(rule, export_to, [name])]
            return
        spec = rule.spec
        append = True
        for entry in entries:
            if export_to == entry.export_to:
                append = False
            elif entry.export_to and export_to >= entry.export_to:
                append = True
            else:
                append = True
                continue
            existing = entry.rule.spec
            both_without = spec.workload_selector is None and existing.workload_selector is None
            both_with = (
                spec.workload_selector is not None and existing.workload_selector is not None
            )
            if both_with and _selector(existing) != _selector(spec):
                append = True
                continue
            if both_without or both_with:
                append = False
            names = {s.name for s in existing.subsets}
            added = tuple(s for s in spec.subsets if s.name not in names)
            policy = existing.traffic_policy
            if policy is None and spec.traffic_policy is not None:
                policy = spec.traffic_policy
            if added or policy is not existing.traffic_policy:
                merged = dataclasses.replace(
                    existing, subsets=existing.subsets + added, traffic_policy=policy
                )
                entry.rule = dataclasses.replace(entry.rule, spec=merged)
            entry.sources.append(name)
        if append:
            entries.append(_Entry(rule, export_to, [name]))

    def freeze(self) -> _FrozenBucket:
        def conv(d: dict[str, list[_Entry]]) -> dict[str, tuple[_Rule, ...]]:
            return {
                h: tuple(_Rule(e.rule, e.export_to, tuple(e.sources)) for e in lst)
                for h, lst in d.items()
            }

        wild = conv(self.wildcard)
        order = tuple(sorted(wild, key=lambda h: (-len(h), h)))
        return _FrozenBucket(conv(self.specific), wild, order)


@dataclass(frozen=True, slots=True)
class _Rule:
    rule: DestinationRule
    export_to: frozenset[str]
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _FrozenBucket:
    specific: Mapping[str, tuple[_Rule, ...]]
    wildcard: Mapping[str, tuple[_Rule, ...]]
    wildcard_order: tuple[str, ...]
    """Wildcard hosts, most specific first (``host.MoreSpecific``: longest, then alphabetical)."""

    def most_specific(self, host: str) -> tuple[_Rule, ...] | None:
        """``MostSpecificHostMatch``: the exact host, else the most specific wildcard."""
        if host.startswith("*"):
            found = self.wildcard.get(host)
            needle = host[1:]
        else:
            found = self.specific.get(host)
            needle = host
        if found is not None:
            return found
        for h in self.wildcard_order:
            if needle.endswith(h[1:]):
                return self.wildcard[h]
        return None


_EMPTY_BUCKET = _FrozenBucket({}, {}, ())


def _selector(spec: DestinationRuleSpec) -> Mapping[str, str]:
    sel = spec.workload_selector
    return sel.match_labels if sel is not None else {}


def _resolve_host(host: str, namespace: str, domain_suffix: str) -> str:
    """``ResolveShortnameToFQDN``: like :func:`expand_host`, but IPv6 literals are kept."""
    h = host.strip()
    if ":" in h:
        return h.lower()
    return expand_host(h, namespace, domain_suffix)


def _created(rule: DestinationRule) -> float:
    """Seconds since the epoch; a missing or unreadable timestamp is Go's zero time (oldest)."""
    ts = rule.metadata.creation_timestamp
    if not ts:
        return float("-inf")
    text = str(ts).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return float("-inf")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _sort_key(rule: DestinationRule) -> tuple[int, float, str, str]:
    """``sortConfigBySelectorAndCreationTime``."""
    has_selector = rule.spec.workload_selector is not None
    return (0 if has_selector else 1, _created(rule), rule.name, rule.namespace)


def _labels_subset(want: Mapping[str, str], have: Mapping[str, str]) -> bool:
    """``labels.Instance.SubsetOf``: every ``want`` entry is in ``have`` (empty: true)."""
    if not want:
        return True
    if len(have) < len(want):
        return False
    return all(have.get(k, _MISS) == v for k, v in want.items())


# ---------------------------------------------------------------------------
# Policy merge


@dataclass(frozen=True, slots=True)
class _Blocks:
    """A traffic policy without port-level settings (Istio's shallow copies)."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


def _port_level(policy: TrafficPolicy | None, port: int) -> tuple[_Blocks | None, bool]:
    """``GetPortLevelTrafficPolicy``: the first entry for ``port`` (only its four blocks), else all."""
    if policy is None:
        return None, False
    for p in policy.port_level_settings:
        if p.port is not None and p.port.number == port:
            return (
                _Blocks(
                    load_balancer=p.load_balancer,
                    connection_pool=p.connection_pool,
                    outlier_detection=p.outlier_detection,
                    tls=p.tls,
                ),
                True,
            )
    return (
        _Blocks(
            load_balancer=policy.load_balancer,
            connection_pool=policy.connection_pool,
            outlier_detection=policy.outlier_detection,
            tls=policy.tls,
            tunnel=policy.tunnel,
            proxy_protocol=policy.proxy_protocol,
            retry_budget=policy.retry_budget,
        ),
        False,
    )


def _merge_subset(
    top: TrafficPolicy | None, sub: TrafficPolicy | None, port: int
) -> _Blocks | None:
    """``MergeSubsetTrafficPolicy`` + ``MergeTrafficPolicy``."""
    original, _ = _port_level(top, port)
    if sub is None:
        return original
    override, has_port = _port_level(sub, port)
    if original is None or override is None:
        return override

    def pick(name: str, four: bool) -> Any:
        value = getattr(override, name)
        if value is not None or (four and has_port):
            return value
        return getattr(original, name)

    return _Blocks(
        load_balancer=pick("load_balancer", True),
        connection_pool=pick("connection_pool", True),
        outlier_detection=pick("outlier_detection", True),
        tls=pick("tls", True),
        tunnel=pick("tunnel", False),
        proxy_protocol=pick("proxy_protocol", False),
        retry_budget=pick("retry_budget", False),
    )


_NO_BLOCKS = _Blocks()


# ---------------------------------------------------------------------------
# The index


class DestinationRuleIndex:
    """Compiled once per (snapshot, workload); lookups are memoized dict hits. Immutable, thread-safe."""

    __slots__ = (
        "_cache_policy",
        "_cache_rule",
        "_exported",
        "_labels",
        "_local",
        "_namespace",
        "_root",
        "_root_local",
    )

    def __init__(
        self,
        *,
        namespace: str,
        labels: Mapping[str, str],
        root_namespace: str,
        local: Mapping[str, _FrozenBucket],
        exported: Mapping[str, _FrozenBucket],
        root_local: _FrozenBucket,
    ) -> None:
        self._namespace = namespace
        self._labels = dict(labels)
        self._root = root_namespace
        self._local = local
        self._exported = exported
        self._root_local = root_local
        self._cache_rule: dict[tuple[str, str], _Rule | None] = {}
        self._cache_policy: dict[tuple[str, str, int, str | None], EffectivePolicy | None] = {}

    @classmethod
    def compile(
        cls,
        snapshot: ConfigSnapshot,
        workload: Workload,
        *,
        root_namespace: str | None = None,
        domain_suffix: str | None = None,
    ) -> DestinationRuleIndex:
        """Index the snapshot's DestinationRules as Istio's push context does.

        ``root_namespace`` and ``domain_suffix`` default to the snapshot's
        options (``istio-system`` and ``cluster.local`` unless configured).
        """
        root = root_namespace if root_namespace is not None else snapshot.options.root_namespace
        suffix = domain_suffix if domain_suffix is not None else snapshot.options.domain_suffix
        rules = [
            r
            for r in snapshot.of_kind("DestinationRule")
            if isinstance(r.spec, DestinationRuleSpec)
        ]
        rules.sort(key=_sort_key)
        local: dict[str, _Bucket] = {}
        exported: dict[str, _Bucket] = {}
        root_local = _Bucket()
        for original in rules:
            spec = original.spec
            if not spec.host:
                continue
            ns = original.namespace
            host = _resolve_host(spec.host, ns, suffix)
            rule = dataclasses.replace(original, spec=dataclasses.replace(spec, host=host))
            export = (
                frozenset(spec.export_to)
                if spec.workload_selector is None
                else frozenset((_PRIVATE,))
            )
            if not export or _PUBLIC in export or _PRIVATE in export or ns in export:
                local.setdefault(ns, _Bucket()).merge(rule, host, export)
            private_only = len(export) == 1 and (_PRIVATE in export or ns in export)
            if not private_only:
                exported.setdefault(ns, _Bucket()).merge(rule, host, export)
            elif ns == root:
                root_local.merge(rule, host, export)
        return cls(
            namespace=workload.namespace,
            labels=workload.labels,
            root_namespace=root,
            local={k: v.freeze() for k, v in local.items()},
            exported={k: v.freeze() for k, v in exported.items()},
            root_local=root_local.freeze(),
        )

    # -- lookups ---------------------------------------------------------------

    def _candidates(self, service: Service) -> tuple[_Rule, ...]:
        """``PushContext.destinationRule``: the consolidated rules for the service's host."""
        host = service.hostname
        client = self._namespace
        if client != self._root:
            found = self._local.get(client, _EMPTY_BUCKET).most_specific(host)
        else:
            found = self._root_local.most_specific(host)
        if found is not None:
            return found
        for owner in (service.namespace, self._root):
            if not owner:
                continue
            found = self._exported.get(owner, _EMPTY_BUCKET).most_specific(host)
            if found is None:
                continue
            visible = tuple(
                r
                for r in found
                if not r.export_to or _PUBLIC in r.export_to or client in r.export_to
            )
            if visible:
                return visible
        return ()

    def _select(self, service: Service) -> _Rule | None:
        """``SidecarScope.DestinationRule``: a matching selector rule, else the last catch-all."""
        key = service.key
        hit = self._cache_rule.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        catch_all: _Rule | None = None
        chosen: _Rule | None = None
        for r in self._candidates(service):
            selector = r.rule.spec.workload_selector
            if selector is None:
                catch_all = r
            elif r.rule.namespace == self._namespace and _labels_subset(
                selector.match_labels, self._labels
            ):
                chosen = r
                break
        result = chosen if chosen is not None else catch_all
        if len(self._cache_rule) >= _CACHE_SIZE:
            self._cache_rule.clear()
        self._cache_rule[key] = result
        return result

    def rule_for(self, service: Service) -> DestinationRule | None:
        """The (merged) rule a client in the workload's namespace uses for ``service``.

        Lookup order: the client namespace's rules, then the service
        namespace's rules exported to the client, then the root namespace's
        rules exported to it; the most specific host in each step;
        ``workloadSelector`` rules only for matching workloads of their
        namespace. The returned rule's ``host`` is the expanded FQDN; when
        several rules were merged, it is the first one with the others'
        new subsets (and their policy if it had none).
        """
        r = self._select(service)
        return r.rule if r is not None else None

    def policy(self, service: Service, port: int, subset: str | None) -> EffectivePolicy | None:
        """The effective policy of cluster ``outbound|port|subset|host``.

        ``None`` when ``subset`` is named but the applicable rule (if any)
        does not define it: Istio builds no such cluster, so the caller
        replies 503 ``NC``.
        """
        key = (service.namespace, service.hostname, port, subset or None)
        hit = self._cache_policy.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        result = self._policy(service, port, subset or None)
        if len(self._cache_policy) >= _CACHE_SIZE:
            self._cache_policy.clear()
        self._cache_policy[key] = result
        return result

    def _policy(self, service: Service, port: int, subset: str | None) -> EffectivePolicy | None:
        r = self._select(service)
        if r is None:
            if subset is not None:
                return None
            return EffectivePolicy(None, None, None, None, None, None, None)
        spec = r.rule.spec
        found: Subset | None = None
        if subset is not None:
            found = spec.subset(subset)
            if found is None:
                return None
            blocks = _merge_subset(spec.traffic_policy, found.traffic_policy, port)
        else:
            blocks, _ = _port_level(spec.traffic_policy, port)
        b = blocks if blocks is not None else _NO_BLOCKS
        return EffectivePolicy(
            rule=r.rule,
            subset=found,
            load_balancer=b.load_balancer,
            connection_pool=b.connection_pool,
            outlier_detection=b.outlier_detection,
            tls=b.tls,
            retry_budget=b.retry_budget,
            tunnel=b.tunnel,
            proxy_protocol=b.proxy_protocol,
            merged_from=r.sources,
        )

    def subset_labels(self, service: Service, subset: str) -> Mapping[str, str] | None:
        """The labels of ``subset`` in the rule for ``service`` (``{}``: every endpoint).

        ``None`` when no applicable rule defines the subset.
        """
        rule = self.rule_for(service)
        if rule is None:
            return None
        found = rule.spec.subset(subset)
        return found.labels if found is not None else None

    @staticmethod
    def select_endpoints(
        endpoints: Sequence[Endpoint], labels: Mapping[str, str]
    ) -> tuple[Endpoint, ...]:
        """Endpoints whose labels are a superset of ``labels`` (empty labels: all)."""
        if not labels:
            return tuple(endpoints)
        items = tuple(labels.items())
        return tuple(ep for ep in endpoints if all(ep.labels.get(k, _MISS) == v for k, v in items))

    def __repr__(self) -> str:
        n = sum(
            len(v)
            for b in (*self._local.values(), *self._exported.values(), self._root_local)
            for v in (*b.specific.values(), *b.wildcard.values())
        )
        return f"<DestinationRuleIndex ns={self._namespace} {n} indexed entries>"


def ignored_traffic_policies(
    resources: Sequence[Resource[Any]], domain_suffix: str = "cluster.local"
) -> list[Diagnostic]:
    """Warnings for DestinationRules whose top-level ``trafficPolicy`` Istio's merge drops.

    Several DestinationRules for one host (same namespace, both without a
    workload selector, same ``exportTo``) are merged: the subsets of the later
    ones are added, but only the first rule's ``trafficPolicy`` stays
    (``mergeDestinationRule``; first by creation time, then name). A later
    rule's policy silently does nothing; this says so, naming both rules.
    """
    rules = [
        r
        for r in resources
        if r.kind == "DestinationRule"
        and isinstance(r.spec, DestinationRuleSpec)
        and r.spec.host
        and r.spec.workload_selector is None
    ]
    rules.sort(key=_sort_key)
    first_with_policy: dict[tuple[str, str, frozenset[str]], Resource[Any]] = {}
    out: list[Diagnostic] = []
    for rule in rules:
        spec = rule.spec
        key = (
            rule.namespace,
            _resolve_host(spec.host, rule.namespace, domain_suffix),
            frozenset(spec.export_to),
        )
        if spec.traffic_policy is None:
            continue
        first = first_with_policy.get(key)
        if first is None:
            first_with_policy[key] = rule
            continue
        out.append(
            Diagnostic(
                Severity.WARNING,
                f"ignored: DestinationRule {first.namespace}/{first.name} "
                f"(at {first.source}) is for the same host {key[1]} and comes first; Istio "
                "merges the subsets of such rules but keeps only the first one's trafficPolicy",
                f"move these settings into {first.namespace}/{first.name}'s trafficPolicy "
                "(or into subsets[].trafficPolicy)",
                file=rule.source.file,
                line=rule.source.line,
                kind=rule.kind,
                namespace=rule.namespace,
                name=rule.name,
                path="spec.trafficPolicy",
            )
        )
    return out
