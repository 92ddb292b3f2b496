"""Priorities, locality weights and panic mode: the math Envoy applies before the algorithm.

**Which priorities (Istio).** istio/istio
``pilot/pkg/networking/core/loadbalancer/loadbalancer.go`` and the callers in
``endpoints/endpoint_builder.go`` / ``cluster_traffic_policy.go``:

* The DestinationRule's ``localityLbSetting`` wins over the mesh's; with
  ``enabled: false`` nothing is applied. Without one the mesh default applies,
  which is enabled with no distribute or failover (``GetLocalityLbSetting``).
* ``distribute`` (when one entry's ``from`` matches this process's locality;
  ``*`` wildcards per segment, ``util.LocalityMatch``) replaces the weights of
  the localities its ``to`` entries match, sharing each weight among the
  matched localities in proportion to their own weight (rounded up); the
  first ``to`` entry that matches a locality wins; endpoints in localities no
  entry matches get no traffic at all (``applyLocalityWeights``). It applies
  with or without outlier detection, and everything stays at priority 0.
* Otherwise, failover priorities apply only when the cluster has outlier
  detection (``enableFailover``: "Failover should only be enabled when there
  is an outlier detection, otherwise Envoy will never detect the hosts are
  unhealthy"). ``util.LbPriority``: same region/zone/subzone P0, same
  region+zone P1, same region P2, other P3; a ``failover{from, to}`` whose
  ``from`` is this process's region (first match) moves every other-region
  endpoint not in ``to`` to P4 (``applyLocalityFailover``).
  ``failoverPriority`` (label keys, or ``key=value`` to override the value
  compared) ranks endpoints first by how many leading labels match this
  process's labels (all match: 0; first mismatch at key j of n: n - j); with
  ``failover`` also set the two combine as ``label_priority * 5 +
  locality_priority`` (``applyFailoverPriorities``). Istio skips
  ``failoverPriority`` when the proxy has no labels. Priorities are then
  renumbered 0..N without gaps.
* Envoy's ``locality_weighted_lb_config`` is set when ``distribute`` is set, or
  when failover is enabled and ``failover`` / ``failoverPriority`` is set: then
  a locality is picked first (by weight: the sum of its endpoints' weights
  unless ``distribute`` says otherwise) and a host within it second.

**Priority load (Envoy).** envoyproxy/envoy
``source/extensions/load_balancing_policies/common/load_balancer_impl.cc``
``recalculatePerPriorityState`` / ``recalculatePerPriorityPanic``:
a level's health is ``min(100, 140 * healthy / total)`` (overprovisioning
factor 1.4, integer percent); the levels' healths, capped at 100 in total,
are handed out in priority order (``distributeLoad``) and any rounding
remainder goes to the first level with health. A level is in panic when its
healthy share is below the panic threshold (Envoy default 50%, Istio uses
``minHealthPercent``, default 0 = never, when the DestinationRule has
outlier detection), unless the total health is 100. When every level is in
panic the load follows the host counts instead. A level in panic balances
over all its hosts, healthy or not. With panic disabled and no healthy host
anywhere P0 gets 100% and the pick finds nothing (503 ``UH``).

**Locality weight (Envoy).** ``HostSetImpl::effectiveLocalityWeight``: a
locality's weight times ``min(1, 1.4 * healthy / total)``; a locality with no
healthy host gets none. (Consistent-hash balancers use the raw locality
weights over the healthy hosts, as ``thread_aware_lb_impl.cc`` does.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inmesh.config.resources.destination_rule import (
    LocalityDistribute,
    LocalityFailover,
    LocalityLoadBalancerSetting,
)

from ._host import Host

__all__ = [
    "DEFAULT_PANIC_THRESHOLD",
    "OVERPROVISIONING_FACTOR",
    "LocalityGroup",
    "LocalityPlan",
    "choose_priority",
    "effective_locality_weight",
    "failover_label_priority",
    "level_health",
    "locality_lb_priority",
    "locality_matches",
    "plan_localities",
    "priority_loads",
    "split_locality",
]

OVERPROVISIONING_FACTOR = 140
"""Envoy's default overprovisioning factor, in percent (1.4)."""
DEFAULT_PANIC_THRESHOLD = 50.0
"""Envoy's default ``healthy_panic_threshold``, in percent."""


# ---------------------------------------------------------------------------
# Pure math


def split_locality(locality: str) -> tuple[str, str, str]:
    """``"r/z/s"`` -> ``("r", "z", "s")``; missing parts are ``""``."""
    parts = locality.split("/", 2)
    while len(parts) < 3:
        parts.append("")
    return parts[0], parts[1], parts[2]


def locality_matches(locality: str, rule: str) -> bool:
    """Whether ``locality`` matches a ``distribute`` locality such as ``us-west/*``.

    Istio ``util.LocalityMatch``: the region must equal (or be ``*``); an
    empty or ``*`` zone / subzone matches anything.
    """
    region, zone, subzone = split_locality(locality)
    r_region, r_zone, r_subzone = split_locality(rule)
    return (
        (r_region in ("*", region))
        and (r_zone in ("", "*", zone))
        and (r_subzone in ("", "*", subzone))
    )


def locality_lb_priority(local: str, endpoint: str) -> int:
    """Istio ``util.LbPriority``: 0 same subzone, 1 same zone, 2 same region, 3 other."""
    region, zone, subzone = split_locality(local)
    e_region, e_zone, e_subzone = split_locality(endpoint)
    if region != e_region:
        return 3
    if zone != e_zone:
        return 2
    return 0 if subzone == e_subzone else 1


def failover_label_priority(
    endpoint_labels: Mapping[str, str],
    local_labels: Mapping[str, str],
    failover_priority: Sequence[str],
) -> int:
    """Istio ``applyFailoverPriorityPerLocality`` for one endpoint.

    ``failover_priority`` holds label keys or ``key=value`` (compare with that
    value instead of this process's). 0 when every label matches, else
    ``n - j`` for the first mismatching key ``j`` of ``n``. A label missing on
    both sides counts as equal (Go's empty map value).
    """
    n = len(failover_priority)
    for j, item in enumerate(failover_priority):
        key, eq, override = item.partition("=")
        wanted = override if eq else local_labels.get(key, "")
        if wanted != endpoint_labels.get(key, ""):
            return n - j
    return 0


def level_health(healthy: int, total: int) -> int:
    """A priority level's health percent: ``min(100, 1.4 * healthy / total)``, truncated."""
    if total <= 0:
        return 0
    return min(100, OVERPROVISIONING_FACTOR * healthy // total)


def priority_loads(
    healthy: Sequence[int], total: Sequence[int], panic_threshold: float
) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """The percent of traffic each priority level gets, and which levels are in panic.

    ``healthy[i]`` / ``total[i]``: host counts of level ``i``. Loads add up
    to 100 (see the module docstring for Envoy's rules).
    """
    n = len(total)
    if n == 0:
        return (), ()
    healths = [level_health(h, t) for h, t in zip(healthy, total, strict=True)]
    normalized = min(100, sum(healths))
    loads = [0] * n
    if normalized == 0:
        loads[0] = 100
    else:
        remaining = 100
        for i, health in enumerate(healths):
            loads[i] = min(remaining, health * 100 // normalized)
            remaining -= loads[i]
        if remaining:
            loads[next(i for i, h in enumerate(healths) if h > 0)] += remaining
    if panic_threshold <= 0 and normalized == 0:
        return tuple(loads), (False,) * n
    if normalized == 100:
        return tuple(loads), (False,) * n
    threshold = min(100.0, panic_threshold)
    panic = tuple(
        (100.0 * h / t if t else 0.0) < threshold for h, t in zip(healthy, total, strict=True)
    )
    if all(panic):
        count = sum(total)
        if count == 0:
            return (100,) + (0,) * (n - 1), panic
        loads = [100 * t // count for t in total]
        loads[next(i for i, t in enumerate(total) if t)] += 100 - sum(loads)
    return tuple(loads), panic


def choose_priority(point: int, loads: Sequence[int]) -> int:
    """Envoy ``choosePriority``: the level whose cumulative load first reaches ``point`` (1..100)."""
    acc = 0
    for i, load in enumerate(loads):
        acc += load
        if point <= acc:
            return i
    return 0


def effective_locality_weight(weight: float, healthy: int, total: int) -> float:
    """``weight * min(1, 1.4 * healthy / total)`` (0 without a healthy host)."""
    if healthy <= 0 or total <= 0:
        return 0.0
    return weight * min(1.0, OVERPROVISIONING_FACTOR * healthy / (100.0 * total))


# ---------------------------------------------------------------------------
# Plan: hosts grouped by priority and locality


@dataclass(frozen=True, slots=True)
class LocalityGroup:
    """The hosts of one locality at one priority, and the locality's weight."""

    locality: str
    hosts: tuple[Host, ...]
    weight: float


@dataclass(frozen=True, slots=True)
class LocalityPlan:
    """Hosts by priority level (P0 first), each level split by locality.

    ``weighted``: Envoy's ``locality_weighted_lb_config`` is on, so a pick
    chooses a locality by weight before a host.
    """

    levels: tuple[tuple[LocalityGroup, ...], ...]
    weighted: bool = False

    @classmethod
    def flat(cls, hosts: Sequence[Host]) -> LocalityPlan:
        """Everything at priority 0, no locality weighting."""
        return cls((_groups(hosts),) if hosts else ())


def _groups(hosts: Sequence[Host]) -> tuple[LocalityGroup, ...]:
    by_locality: dict[str, list[Host]] = {}
    for host in hosts:
        by_locality.setdefault(host.locality, []).append(host)
    return tuple(
        LocalityGroup(loc, tuple(members), float(sum(h.weight for h in members)))
        for loc, members in by_locality.items()
    )


def plan_localities(
    hosts: Sequence[Host],
    setting: LocalityLoadBalancerSetting | None,
    *,
    local_locality: str = "",
    local_labels: Mapping[str, str] | None = None,
    outlier_detection: bool = False,
) -> LocalityPlan:
    """Group ``hosts`` into priorities and localities the way Istio programs Envoy.

    ``setting`` is the DestinationRule's ``localityLbSetting`` (``None``: the
    mesh default, enabled with nothing configured).
    """
    if setting is None:
        setting = LocalityLoadBalancerSetting()
    if setting.enabled is False or not hosts:
        return LocalityPlan.flat(hosts)
    if setting.distribute:
        return _distribute(hosts, local_locality, setting.distribute)
    if not outlier_detection:
        return LocalityPlan.flat(hosts)
    labels = local_labels or {}
    use_labels = bool(setting.failover_priority) and bool(labels)
    ranks: list[int] = []
    for host in hosts:
        rank = 0
        if use_labels:
            rank = failover_label_priority(host.endpoint.labels, labels, setting.failover_priority)
            if setting.failover:
                rank = rank * 5 + _locality_rank(local_locality, host.locality, setting.failover)
        else:
            rank = _locality_rank(local_locality, host.locality, setting.failover)
        ranks.append(rank)
    levels = tuple(
        _groups([h for h, r in zip(hosts, ranks, strict=True) if r == rank])
        for rank in sorted(set(ranks))
    )
    weighted = bool(setting.failover) or bool(setting.failover_priority)
    return LocalityPlan(levels, weighted)


def _locality_rank(local: str, endpoint: str, failover: Sequence[LocalityFailover]) -> int:
    rank = locality_lb_priority(local, endpoint)
    if rank == 3:
        region = split_locality(local)[0]
        for rule in failover:
            if rule.from_ == region:
                if split_locality(endpoint)[0] != rule.to:
                    rank = 4
                break
    return rank


def _distribute(
    hosts: Sequence[Host], local: str, rules: Sequence[LocalityDistribute]
) -> LocalityPlan:
    groups = _groups(hosts)
    rule = next(
        (r for r in rules if r.from_ is not None and locality_matches(local, r.from_)), None
    )
    if rule is None:
        return LocalityPlan((groups,), weighted=True)
    unmatched = set(range(len(groups)))
    weights: dict[int, float] = {}
    for target, weight in rule.to.items():
        matched = [i for i in sorted(unmatched) if locality_matches(groups[i].locality, target)]
        unmatched.difference_update(matched)
        total = sum(groups[i].weight for i in matched)
        for i in matched:
            share = groups[i].weight * weight / total if total else 0.0
            weights[i] = float(math.ceil(share)) if share > 0 else groups[i].weight
    kept = tuple(
        LocalityGroup(g.locality, g.hosts, weights[i])
        for i, g in enumerate(groups)
        if i in weights and weights[i] > 0
    )
    return LocalityPlan((kept,) if kept else (), weighted=True)
