"""DestinationRuleIndex: which rule applies (push_context.go) and the per-cluster merge (util.go)."""

from __future__ import annotations

from pathlib import Path

from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import SimpleLB, TLSMode
from inmesh.config.snapshot import ConfigOptions, build_snapshot
from inmesh.discovery.registry import Endpoint, Port, Service
from inmesh.model import Workload
from inmesh.upstream.policy import DestinationRuleIndex, EffectivePolicy

HOST = "reviews.default.svc.cluster.local"
REVIEWS = Service(HOST, "default", (Port(9080, "http"),))
REMOTE = Service("ratings.prod.svc.cluster.local", "prod", (Port(9080, "http"),))
EXTERNAL = Service("api.example.com", "default", (Port(443, "https"),))
WILD_SVC = Service("*.example.com", "default", (Port(443, "https"),))
CLIENT = Workload("frontend", namespace="default", labels={"app": "frontend"})
OTHER = Workload("other", namespace="other", labels={"app": "other"})


def dr(
    name: str,
    body: str,
    ns: str = "default",
    ts: str | None = None,
) -> str:
    meta = f"  name: {name}\n  namespace: {ns}\n"
    if ts:
        meta += f"  creationTimestamp: '{ts}'\n"
    return (
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata:\n{meta}spec:\n{body}"
    )


def index(
    *docs: str, wl: Workload = CLIENT, options: ConfigOptions | None = None
) -> DestinationRuleIndex:
    return DestinationRuleIndex.compile(build_snapshot("".join(docs), options=options), wl)


def source(idx: DestinationRuleIndex, svc: Service = REVIEWS) -> str:
    rule = idx.rule_for(svc)
    return "" if rule is None else f"{rule.namespace}/{rule.name}"


def subsets(idx: DestinationRuleIndex, svc: Service = REVIEWS) -> list[str | None]:
    rule = idx.rule_for(svc)
    assert rule is not None
    return [s.name for s in rule.spec.subsets]


def lb(name: str) -> str:
    return f"    loadBalancer: {{simple: {name}}}\n"


def pol(idx: DestinationRuleIndex, port: int = 9080, subset: str | None = None) -> EffectivePolicy:
    eff = idx.policy(REVIEWS, port, subset)
    assert eff is not None
    return eff


def simple(eff: EffectivePolicy) -> SimpleLB | None:
    return eff.load_balancer.simple if eff.load_balancer is not None else None


# ---------------------------------------------------------------------------
# Which rule applies: namespaces


def test_no_rule() -> None:
    idx = index(dr("x", "  host: other\n"))
    assert idx.rule_for(REVIEWS) is None
    eff = pol(idx)
    assert eff == EffectivePolicy(None, None, None, None, None, None, None)
    assert eff.source == ""


def test_client_namespace_beats_service_and_root() -> None:
    idx = index(
        dr("root", f"  host: {HOST}\n", ns="istio-system"),
        dr("svc", f"  host: {HOST}\n", ns="prod"),
        dr("client", "  host: ratings.prod.svc.cluster.local\n", ns="default"),
    )
    assert source(idx, REMOTE) == "default/client"


def test_service_namespace_beats_root() -> None:
    idx = index(
        dr("root", "  host: ratings.prod.svc.cluster.local\n", ns="istio-system"),
        dr("svc", "  host: ratings\n", ns="prod"),
    )
    assert source(idx, REMOTE) == "prod/svc"


def test_root_namespace_is_last() -> None:
    idx = index(dr("root", "  host: ratings.prod.svc.cluster.local\n", ns="istio-system"))
    assert source(idx, REMOTE) == "istio-system/root"


def test_client_namespace_wildcard_beats_exact_in_service_namespace() -> None:
    idx = index(
        dr("svc", "  host: ratings\n", ns="prod"),
        dr("client", "  host: '*.svc.cluster.local'\n"),
    )
    assert source(idx, REMOTE) == "default/client"


def test_short_host_expands_in_rule_namespace() -> None:
    idx = index(dr("r", "  host: reviews\n", ns="prod"))
    assert idx.rule_for(REVIEWS) is None
    rule = index(dr("r", "  host: reviews\n")).rule_for(REVIEWS)
    assert rule is not None and rule.spec.host == HOST


def test_custom_root_namespace_from_snapshot_options() -> None:
    opts = ConfigOptions(root_namespace="mesh-root")
    idx = index(dr("r", f"  host: {HOST}\n", ns="mesh-root"), wl=OTHER, options=opts)
    assert source(idx) == "mesh-root/r"


# ---------------------------------------------------------------------------
# exportTo


def test_export_private_only_own_namespace() -> None:
    doc = dr("r", f"  host: {HOST}\n  exportTo: ['.']\n")
    assert source(index(doc)) == "default/r"
    assert source(index(doc, wl=OTHER)) == ""


def test_export_to_named_namespace() -> None:
    doc = dr("r", f"  host: {HOST}\n  exportTo: [other]\n")
    assert source(index(doc, wl=OTHER)) == "default/r"
    assert source(index(doc, wl=Workload("x", namespace="third"))) == ""
    # not exported to its own namespace: not namespace-local either
    assert source(index(doc)) == ""


def test_export_to_own_and_other() -> None:
    doc = dr("r", f"  host: {HOST}\n  exportTo: ['.', other]\n")
    assert source(index(doc)) == "default/r"
    assert source(index(doc, wl=OTHER)) == "default/r"


def test_export_star_and_default_visible_everywhere() -> None:
    for body in (f"  host: {HOST}\n", f"  host: {HOST}\n  exportTo: ['*']\n"):
        assert source(index(dr("r", body), wl=OTHER)) == "default/r"


def test_private_service_rule_falls_back_to_root() -> None:
    idx = index(
        dr("svc", f"  host: {HOST}\n  exportTo: ['.']\n"),
        dr("root", f"  host: {HOST}\n", ns="istio-system"),
        wl=OTHER,
    )
    assert source(idx) == "istio-system/root"


def test_unexported_most_specific_host_hides_wildcard_of_same_namespace() -> None:
    # getExportedDestinationRuleFromNamespace filters after the host match: no fallback
    idx = index(
        dr("exact", f"  host: {HOST}\n  exportTo: [third]\n"),
        dr("wild", "  host: '*.svc.cluster.local'\n"),
        dr("root", f"  host: {HOST}\n", ns="istio-system"),
        wl=OTHER,
    )
    assert source(idx) == "istio-system/root"


def test_root_client_uses_root_local_rule_first() -> None:
    root_wl = Workload("gw", namespace="istio-system")
    idx = index(
        dr("local", f"  host: {HOST}\n  exportTo: ['.']\n", ns="istio-system"),
        dr("svc", f"  host: {HOST}\n"),
        wl=root_wl,
    )
    assert source(idx) == "istio-system/local"


def test_root_client_public_root_rule_after_service_namespace() -> None:
    root_wl = Workload("gw", namespace="istio-system")
    idx = index(
        dr("public", f"  host: {HOST}\n", ns="istio-system"),
        dr("svc", f"  host: {HOST}\n"),
        wl=root_wl,
    )
    assert source(idx) == "default/svc"


# ---------------------------------------------------------------------------
# Host specificity


def test_exact_beats_wildcard() -> None:
    idx = index(
        dr("a-wild", "  host: '*.default.svc.cluster.local'\n"),
        dr("b-exact", f"  host: {HOST}\n"),
    )
    assert source(idx) == "default/b-exact"


def test_longest_wildcard_wins() -> None:
    idx = index(
        dr("all", "  host: '*'\n"),
        dr("short", "  host: '*.cluster.local'\n"),
        dr("long", "  host: '*.default.svc.cluster.local'\n"),
    )
    assert source(idx) == "default/long"
    assert source(idx, EXTERNAL) == "default/all"


def test_wildcard_service_only_matches_wildcard_rules() -> None:
    idx = index(
        dr("exact", "  host: api.example.com\n"),
        dr("wild", "  host: '*.example.com'\n"),
        dr("wider", "  host: '*.com'\n"),
    )
    assert source(idx, WILD_SVC) == "default/wild"
    assert source(idx, EXTERNAL) == "default/exact"
    idx = index(dr("exact", "  host: api.example.com\n"), dr("wider", "  host: '*.com'\n"))
    assert source(idx, WILD_SVC) == "default/wider"


# ---------------------------------------------------------------------------
# workloadSelector

SEL = "  workloadSelector:\n    matchLabels: {app: frontend}\n"


def test_selector_rule_for_matching_workload_only() -> None:
    docs = (
        dr("all", f"  host: {HOST}\n" + "  subsets: [{name: all}]\n"),
        dr("fe", f"  host: {HOST}\n" + SEL + "  subsets: [{name: fe}]\n"),
    )
    assert source(index(*docs)) == "default/fe"
    other_default = Workload("x", namespace="default", labels={"app": "x"})
    assert source(index(*docs, wl=other_default)) == "default/all"


def test_unmatched_selector_only_rules_hide_other_namespaces() -> None:
    # SidecarScope.DestinationRule returns nothing; step 1 already matched the host
    idx = index(
        dr("fe", "  host: ratings.prod.svc.cluster.local\n" + SEL),
        dr("svc", "  host: ratings\n", ns="prod"),
        wl=Workload("x", namespace="default", labels={"app": "x"}),
    )
    assert idx.rule_for(REMOTE) is None


def test_selector_rule_is_never_exported() -> None:
    idx = index(
        dr("fe", "  host: ratings\n" + SEL, ns="prod"),
        dr("root", "  host: ratings.prod.svc.cluster.local\n", ns="istio-system"),
    )
    assert source(idx, REMOTE) == "istio-system/root"


def test_selector_subset_of_workload_labels() -> None:
    sel = "  workloadSelector:\n    matchLabels: {app: frontend, version: v2}\n"
    doc = dr("fe", f"  host: {HOST}\n" + sel)
    assert index(doc).rule_for(REVIEWS) is None
    wl = Workload("f", labels={"app": "frontend", "version": "v2", "extra": "y"})
    assert source(index(doc, wl=wl)) == "default/fe"


def test_catch_all_with_default_export_not_merged_into_selector_rule() -> None:
    # exportTo {} is no superset of the selector rule's {"."}: kept apart
    idx = index(
        dr("all", f"  host: {HOST}\n" + "  subsets: [{name: all}]\n"),
        dr("fe", f"  host: {HOST}\n" + SEL + "  subsets: [{name: fe}]\n"),
    )
    assert subsets(idx) == ["fe"]


def test_catch_all_exported_to_own_and_more_merges_into_selector_rule() -> None:
    # {".", other} is a superset of {"."}: merged into the selector rule and kept separately
    docs = (
        dr("all", f"  host: {HOST}\n  exportTo: ['.', other]\n" + "  subsets: [{name: all}]\n"),
        dr("fe", f"  host: {HOST}\n" + SEL + "  subsets: [{name: fe}]\n"),
    )
    idx = index(*docs)
    assert source(idx) == "default/fe"
    assert subsets(idx) == ["fe", "all"]
    assert pol(idx).merged_from == ("default/fe", "default/all")
    assert subsets(index(*docs, wl=OTHER)) == ["all"]


# ---------------------------------------------------------------------------
# Several rules for one host in one namespace


def test_merge_unions_subsets_and_oldest_policy_wins() -> None:
    idx = index(
        dr("new", f"  host: {HOST}\n  trafficPolicy:\n" + lb("RANDOM") + "  subsets: [{name: v2}]\n",
           ts="2024-02-01T00:00:00Z"),
        dr("old", f"  host: {HOST}\n  trafficPolicy:\n" + lb("ROUND_ROBIN") + "  subsets: [{name: v1}]\n",
           ts="2024-01-01T00:00:00Z"),
    )  # fmt: skip
    assert source(idx) == "default/old"
    assert subsets(idx) == ["v1", "v2"]
    eff = pol(idx, subset="v2")
    assert simple(eff) is SimpleLB.ROUND_ROBIN
    assert eff.merged_from == ("default/old", "default/new")


def test_merge_whole_policy_no_block_merge() -> None:
    idx = index(
        dr("a", f"  host: {HOST}\n  trafficPolicy:\n" + lb("RANDOM")),
        dr("b", f"  host: {HOST}\n  trafficPolicy:\n    tls: {{mode: DISABLE}}\n"),
    )
    eff = pol(idx)
    assert simple(eff) is SimpleLB.RANDOM and eff.tls is None


def test_merge_adopts_policy_when_first_has_none() -> None:
    idx = index(
        dr("a", f"  host: {HOST}\n" + "  subsets: [{name: v1}]\n"),
        dr("b", f"  host: {HOST}\n  trafficPolicy:\n" + lb("RANDOM")),
    )
    assert source(idx) == "default/a"
    assert simple(pol(idx)) is SimpleLB.RANDOM


def test_merge_duplicate_subset_first_kept() -> None:
    idx = index(
        dr("a", f"  host: {HOST}\n" + "  subsets: [{name: v1, labels: {version: a}}]\n"),
        dr("b", f"  host: {HOST}\n" + "  subsets: [{name: v1, labels: {version: b}}]\n"),
    )
    assert subsets(idx) == ["v1"]
    assert idx.subset_labels(REVIEWS, "v1") == {"version": "a"}


def test_missing_timestamp_counts_as_oldest() -> None:
    idx = index(
        dr("a-stamped", f"  host: {HOST}\n", ts="2020-01-01T00:00:00Z"),
        dr("z-unstamped", f"  host: {HOST}\n"),
    )
    assert source(idx) == "default/z-unstamped"


def test_different_export_not_merged_last_catch_all_wins() -> None:
    docs = (
        dr("a", f"  host: {HOST}\n  exportTo: ['.']\n" + "  subsets: [{name: a}]\n"),
        dr("b", f"  host: {HOST}\n  exportTo: ['*']\n" + "  subsets: [{name: b}]\n"),
    )
    assert subsets(index(*docs)) == ["b"]
    assert subsets(index(*docs, wl=OTHER)) == ["b"]


def test_superset_export_merged_into_narrower_rule() -> None:
    # Istio quirk: b ({other, third}) is merged into a ({other}) and not kept separately,
    # so "third" never sees it.
    docs = (
        dr("a", f"  host: {HOST}\n  exportTo: [other]\n" + "  subsets: [{name: a}]\n"),
        dr("b", f"  host: {HOST}\n  exportTo: [other, third]\n" + "  subsets: [{name: b}]\n"),
    )
    assert subsets(index(*docs, wl=OTHER)) == ["a", "b"]
    assert index(*docs, wl=Workload("t", namespace="third")).rule_for(REVIEWS) is None


# ---------------------------------------------------------------------------
# Port-level settings

TOP = (
    "  trafficPolicy:\n"
    "    loadBalancer: {simple: RANDOM}\n"
    "    connectionPool: {tcp: {maxConnections: 10}}\n"
    "    outlierDetection: {consecutive5xxErrors: 7}\n"
    "    tls: {mode: ISTIO_MUTUAL}\n"
    "    retryBudget: {percent: 50}\n"
)


def test_top_level_policy() -> None:
    eff = pol(index(dr("r", f"  host: {HOST}\n" + TOP)))
    assert simple(eff) is SimpleLB.RANDOM
    assert eff.connection_pool is not None and eff.connection_pool.tcp is not None
    assert eff.connection_pool.tcp.max_connections == 10
    assert eff.outlier_detection is not None and eff.outlier_detection.consecutive_5xx_errors == 7
    assert eff.tls is not None and eff.tls.mode is TLSMode.ISTIO_MUTUAL
    assert eff.retry_budget is not None and eff.retry_budget.percent == 50
    assert eff.subset is None and eff.source == "default/r"


def test_port_entry_replaces_all_blocks() -> None:
    body = (
        TOP
        + "    portLevelSettings:\n    - port: {number: 9080}\n      loadBalancer: {simple: ROUND_ROBIN}\n"
    )
    idx = index(dr("r", f"  host: {HOST}\n" + body))
    eff = pol(idx)
    assert simple(eff) is SimpleLB.ROUND_ROBIN
    # omitted in the port entry: not inherited from the top level
    assert eff.tls is None and eff.connection_pool is None and eff.outlier_detection is None
    # shadowCopyPortTrafficPolicy has no retryBudget
    assert eff.retry_budget is None
    assert simple(pol(idx, port=9090)) is SimpleLB.RANDOM


def test_first_port_entry_wins() -> None:
    body = (
        "  trafficPolicy:\n    portLevelSettings:\n"
        "    - port: {number: 9080}\n      loadBalancer: {simple: RANDOM}\n"
        "    - port: {number: 9080}\n      loadBalancer: {simple: ROUND_ROBIN}\n"
    )
    assert simple(pol(index(dr("r", f"  host: {HOST}\n" + body)))) is SimpleLB.RANDOM


# ---------------------------------------------------------------------------
# Subsets


def test_subset_block_replaces_whole_block() -> None:
    sub = (
        "  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy:\n"
        "      connectionPool: {http: {http2MaxRequests: 5}}\n"
    )
    eff = pol(index(dr("r", f"  host: {HOST}\n" + TOP + sub)), subset="v1")
    assert eff.connection_pool is not None
    assert eff.connection_pool.tcp is None  # no field-level merge
    assert eff.connection_pool.http is not None and eff.connection_pool.http.http2_max_requests == 5
    assert simple(eff) is SimpleLB.RANDOM and eff.tls is not None
    assert eff.retry_budget is not None and eff.retry_budget.percent == 50
    assert eff.subset is not None and eff.subset.name == "v1"


def test_subset_without_policy_uses_port_selected_top_level() -> None:
    body = TOP + "    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: DISABLE}\n"
    eff = pol(index(dr("r", f"  host: {HOST}\n" + body + "  subsets: [{name: v1}]\n")), subset="v1")
    assert eff.tls is not None and eff.tls.mode is TLSMode.DISABLE
    assert eff.load_balancer is None and eff.retry_budget is None


def test_subset_port_entry_replaces_four_blocks_keeps_retry_budget() -> None:
    sub = (
        "  subsets:\n  - name: v1\n    trafficPolicy:\n"
        "      retryBudget: {percent: 5}\n"
        "      portLevelSettings:\n      - port: {number: 9080}\n"
        "        outlierDetection: {consecutive5xxErrors: 2}\n"
    )
    idx = index(dr("r", f"  host: {HOST}\n" + TOP + sub))
    eff = pol(idx, subset="v1")
    assert eff.outlier_detection is not None and eff.outlier_detection.consecutive_5xx_errors == 2
    assert eff.load_balancer is None and eff.connection_pool is None and eff.tls is None
    # the subset's own retryBudget is dropped with its port entry; the parent's stays
    assert eff.retry_budget is not None and eff.retry_budget.percent == 50
    # on another port the subset's top-level blocks apply over the parent's
    eff = pol(idx, port=9090, subset="v1")
    assert eff.retry_budget is not None and eff.retry_budget.percent == 5
    assert simple(eff) is SimpleLB.RANDOM and eff.outlier_detection is not None
    assert eff.outlier_detection.consecutive_5xx_errors == 7


def test_subset_over_parent_port_entry() -> None:
    body = (
        TOP + "    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: DISABLE}\n"
        "  subsets:\n  - name: v1\n    trafficPolicy:\n      loadBalancer: {simple: LEAST_REQUEST}\n"
    )
    eff = pol(index(dr("r", f"  host: {HOST}\n" + body)), subset="v1")
    assert simple(eff) is SimpleLB.LEAST_REQUEST
    assert eff.tls is not None and eff.tls.mode is TLSMode.DISABLE
    assert eff.connection_pool is None and eff.retry_budget is None


def test_subset_policy_without_top_level() -> None:
    sub = (
        "  subsets:\n  - name: v1\n    trafficPolicy:\n"
        "      loadBalancer: {simple: RANDOM}\n      retryBudget: {minRetryConcurrency: 9}\n"
    )
    idx = index(dr("r", f"  host: {HOST}\n" + sub))
    eff = pol(idx, subset="v1")
    assert simple(eff) is SimpleLB.RANDOM
    assert eff.retry_budget is not None and eff.retry_budget.min_retry_concurrency == 9
    base = pol(idx)
    assert base.load_balancer is None and base.rule is not None


def test_subset_retry_budget_replaces_parent() -> None:
    sub = "  subsets:\n  - name: v1\n    trafficPolicy:\n      retryBudget: {budgetInterval: 2s}\n"
    eff = pol(index(dr("r", f"  host: {HOST}\n" + TOP + sub)), subset="v1")
    assert eff.retry_budget is not None
    assert eff.retry_budget.percent is None and eff.retry_budget.budget_interval == Duration.of(2)


def test_unknown_subset_is_none() -> None:
    idx = index(dr("r", f"  host: {HOST}\n" + "  subsets: [{name: v1}]\n"))
    assert idx.policy(REVIEWS, 9080, "v9") is None
    assert idx.policy(REVIEWS, 9080, "v1") is not None
    assert index().policy(REVIEWS, 9080, "v1") is None
    # an empty subset name is the service cluster
    assert idx.policy(REVIEWS, 9080, "") == idx.policy(REVIEWS, 9080, None)


def test_subset_labels() -> None:
    body = "  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: any\n"
    idx = index(dr("r", f"  host: {HOST}\n" + body))
    assert idx.subset_labels(REVIEWS, "v1") == {"version": "v1"}
    assert idx.subset_labels(REVIEWS, "any") == {}
    assert idx.subset_labels(REVIEWS, "nope") is None
    assert idx.subset_labels(REMOTE, "v1") is None


def test_memoized_and_source() -> None:
    idx = index(dr("r", f"  host: {HOST}\n" + TOP))
    first = idx.policy(REVIEWS, 9080, None)
    assert first is idx.policy(REVIEWS, 9080, None)
    assert first is not None and first.source == "default/r"
    assert first.merged_from == ("default/r",)
    assert idx.rule_for(REVIEWS) is idx.rule_for(REVIEWS)


# ---------------------------------------------------------------------------
# Endpoints


def ep(address: str, **labels: str) -> Endpoint:
    return Endpoint(address, 9080, labels=labels)


def test_select_endpoints() -> None:
    eps = (ep("10.0.0.1", version="v1", app="r"), ep("10.0.0.2", version="v2"), ep("10.0.0.3"))
    sel = DestinationRuleIndex.select_endpoints
    assert sel(eps, {"version": "v1"}) == (eps[0],)
    assert sel(eps, {"version": "v1", "app": "r"}) == (eps[0],)
    assert sel(eps, {"version": "v1", "app": "x"}) == ()
    assert sel(eps, {}) == eps
    assert sel(list(eps), {"zone": "a"}) == ()


def test_select_endpoints_with_subset_labels() -> None:
    body = "  subsets:\n  - name: v2\n    labels: {version: v2}\n"
    idx = index(dr("r", f"  host: {HOST}\n" + body))
    labels = idx.subset_labels(REVIEWS, "v2")
    assert labels is not None
    eps = (ep("10.0.0.1", version="v1"), ep("10.0.0.2", version="v2"))
    assert idx.select_endpoints(eps, labels) == (eps[1],)


def test_private_catch_all_swallowed_by_selector_rule() -> None:
    # equal exportTo {"."}, mixed selectors: merged into the selector rule, not kept apart
    docs = (
        dr("all", f"  host: {HOST}\n  exportTo: ['.']\n" + "  subsets: [{name: all}]\n"),
        dr("fe", f"  host: {HOST}\n" + SEL + "  subsets: [{name: fe}]\n"),
    )
    assert subsets(index(*docs)) == ["fe", "all"]
    assert index(*docs, wl=Workload("x", labels={"app": "x"})).rule_for(REVIEWS) is None


def test_selector_rules_with_same_labels_merge() -> None:
    idx = index(
        dr("a", f"  host: {HOST}\n" + SEL + "  subsets: [{name: a}]\n", ts="2024-01-01T00:00:00Z"),
        dr("b", f"  host: {HOST}\n" + SEL + "  subsets: [{name: b}]\n", ts="2024-01-02T00:00:00Z"),
    )
    assert source(idx) == "default/a" and subsets(idx) == ["a", "b"]


def test_a_second_rules_traffic_policy_is_reported_as_ignored(tmp_path: Path) -> None:
    from inmesh.config.load import load_paths
    from inmesh.errors import Severity

    (tmp_path / "a.yaml").write_text(
        """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-lb, namespace: default}
spec:
  host: backend.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-subsets, namespace: default}
spec:
  host: backend
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: other-ns, namespace: prod}
spec:
  host: backend.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""
    )
    warnings = [
        d for d in load_paths([tmp_path]).diagnostics if d.severity is Severity.WARNING
    ]
    assert [(d.name, d.path) for d in warnings] == [("backend-lb", "spec.trafficPolicy")]
    assert "DestinationRule default/backend (at " in warnings[0].message
    assert "keeps only the first one's trafficPolicy" in warnings[0].message
