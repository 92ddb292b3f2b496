from __future__ import annotations

import pytest

from inmesh.balancing.locality import (
    LocalityPlan,
    choose_priority,
    effective_locality_weight,
    failover_label_priority,
    level_health,
    locality_lb_priority,
    locality_matches,
    plan_localities,
    priority_loads,
    split_locality,
)
from inmesh.config.resources.destination_rule import (
    LocalityDistribute,
    LocalityFailover,
    LocalityLoadBalancerSetting,
)

from .conftest import make_hosts

LOCAL = "r1/z1/s1"


def test_split_locality() -> None:
    assert split_locality("r/z/s") == ("r", "z", "s")
    assert split_locality("r") == ("r", "", "")
    assert split_locality("") == ("", "", "")


@pytest.mark.parametrize(
    ("endpoint", "priority"),
    [("r1/z1/s1", 0), ("r1/z1/s2", 1), ("r1/z2/s1", 2), ("r2/z1/s1", 3), ("", 3)],
)
def test_lb_priority(endpoint: str, priority: int) -> None:
    assert locality_lb_priority(LOCAL, endpoint) == priority


@pytest.mark.parametrize(
    ("locality", "rule", "match"),
    [
        ("r1/z1/s1", "r1/z1/s1", True),
        ("r1/z1/s1", "r1/z1/*", True),
        ("r1/z1/s1", "r1/*", True),
        ("r1/z1/s1", "r1", True),
        ("r1/z1/s1", "*", True),
        ("r1/z1/s1", "r1/z2/*", False),
        ("r1/z1/s1", "r2/*", False),
        ("r1/z1/s1", "r1/z1/s2", False),
    ],
)
def test_locality_matches(locality: str, rule: str, match: bool) -> None:
    assert locality_matches(locality, rule) is match


def test_failover_label_priority() -> None:
    keys = ["topology.istio.io/network", "region", "zone"]
    me = {"topology.istio.io/network": "n1", "region": "r1", "zone": "z1"}
    assert failover_label_priority(dict(me), me, keys) == 0
    assert failover_label_priority({**me, "zone": "z2"}, me, keys) == 1
    assert failover_label_priority({**me, "region": "r2"}, me, keys) == 2
    assert failover_label_priority({"region": "r1"}, me, keys) == 3
    # key=value overrides this process's value
    assert failover_label_priority({"env": "prod"}, {}, ["env=prod"]) == 0
    assert failover_label_priority({"env": "dev"}, {"env": "dev"}, ["env=prod"]) == 1


def test_level_health() -> None:
    assert level_health(10, 10) == 100
    assert level_health(8, 10) == 100  # 112 capped
    assert level_health(5, 10) == 70
    assert level_health(1, 3) == 46
    assert level_health(0, 10) == 0
    assert level_health(0, 0) == 0


def test_loads_all_healthy_go_to_first_level() -> None:
    assert priority_loads([4, 4, 4], [4, 4, 4], 50) == ((100, 0, 0), (False, False, False))


def test_loads_spill_over() -> None:
    # P0 half healthy: 70% stays, 30% spills to P1
    assert priority_loads([2, 4], [4, 4], 0)[0] == (70, 30)
    # P0 dead: everything to P1
    assert priority_loads([0, 4], [4, 4], 0)[0] == (0, 100)
    # P0 35%, P1 35%, P2 healthy: 35/35/30
    assert priority_loads([1, 1, 4], [4, 4, 4], 0)[0] == (35, 35, 30)


def test_loads_rounding_remainder_goes_to_first_healthy_level() -> None:
    # healths 46 + 46 = 92 -> 50 + 50 = 100 (46*100//92 = 50)
    loads, _ = priority_loads([1, 1], [3, 3], 0)
    assert sum(loads) == 100
    assert loads == (50, 50)
    loads, _ = priority_loads([1, 1, 0], [3, 7, 5], 0)
    assert sum(loads) == 100 and loads[2] == 0


def test_panic_single_level() -> None:
    loads, panic = priority_loads([1], [4], 50)
    assert loads == (100,) and panic == (True,)
    loads, panic = priority_loads([1], [4], 0)
    assert loads == (100,) and panic == (False,)


def test_no_panic_when_total_health_is_full() -> None:
    # P0 only 25% healthy but P1 makes up the rest: no level in panic
    loads, panic = priority_loads([1, 4], [4, 4], 50)
    assert loads == (35, 65) and panic == (False, False)


def test_total_panic_uses_host_counts() -> None:
    loads, panic = priority_loads([1, 1], [4, 12], 50)
    assert panic == (True, True)
    assert loads == (25, 75)


def test_panic_disabled_and_nothing_healthy() -> None:
    assert priority_loads([0, 0], [3, 3], 0) == ((100, 0), (False, False))


def test_choose_priority() -> None:
    loads = (70, 30, 0)
    assert choose_priority(1, loads) == 0
    assert choose_priority(70, loads) == 0
    assert choose_priority(71, loads) == 1
    assert choose_priority(100, loads) == 1


def test_effective_locality_weight() -> None:
    assert effective_locality_weight(10, 10, 10) == 10
    assert effective_locality_weight(10, 8, 10) == 10  # overprovisioned
    assert effective_locality_weight(10, 5, 10) == pytest.approx(7.0)
    assert effective_locality_weight(10, 0, 10) == 0


# ---------------------------------------------------------------------------
# plans

LOCS = ["r1/z1/s1", "r1/z1/s2", "r1/z2/s1", "r2/z1/s1", "r3/z1/s1"]


def _levels(plan: LocalityPlan) -> list[list[str]]:
    return [sorted({h.locality for g in level for h in g.hosts}) for level in plan.levels]


def test_plan_without_outlier_detection_is_flat() -> None:
    hosts = make_hosts(5, localities=LOCS)
    plan = plan_localities(hosts, None, local_locality=LOCAL)
    assert _levels(plan) == [sorted(LOCS)] and not plan.weighted


def test_plan_default_failover_priorities() -> None:
    hosts = make_hosts(5, localities=LOCS)
    plan = plan_localities(hosts, None, local_locality=LOCAL, outlier_detection=True)
    assert _levels(plan) == [["r1/z1/s1"], ["r1/z1/s2"], ["r1/z2/s1"], ["r2/z1/s1", "r3/z1/s1"]]
    assert not plan.weighted  # mesh default: no failover list, no locality weighting


def test_plan_priorities_are_compacted() -> None:
    hosts = make_hosts(2, localities=["r1/z2/s1", "r2/z1/s1"])
    plan = plan_localities(hosts, None, local_locality=LOCAL, outlier_detection=True)
    assert _levels(plan) == [["r1/z2/s1"], ["r2/z1/s1"]]


def test_plan_failover_region() -> None:
    hosts = make_hosts(5, localities=LOCS)
    setting = LocalityLoadBalancerSetting(failover=(LocalityFailover(from_="r1", to="r3"),))
    plan = plan_localities(hosts, setting, local_locality=LOCAL, outlier_detection=True)
    assert _levels(plan)[-2:] == [["r3/z1/s1"], ["r2/z1/s1"]]
    assert plan.weighted


def test_plan_disabled() -> None:
    hosts = make_hosts(5, localities=LOCS)
    setting = LocalityLoadBalancerSetting(enabled=False)
    plan = plan_localities(hosts, setting, local_locality=LOCAL, outlier_detection=True)
    assert len(plan.levels) == 1


def test_plan_distribute() -> None:
    hosts = make_hosts(
        6,
        localities=["r1/z1/s1", "r1/z2/a", "r1/z2/b", "r1/z2/b", "r1/z2/b", "r2/z1/s1"],
    )
    setting = LocalityLoadBalancerSetting(
        distribute=(
            LocalityDistribute(from_="r9/*", to={"r2/*": 100}),
            LocalityDistribute(from_="r1/z1/*", to={"r1/z1/*": 80, "r1/z2/*": 20}),
        )
    )
    # distribute applies without outlier detection too
    plan = plan_localities(hosts, setting, local_locality=LOCAL)
    assert plan.weighted and len(plan.levels) == 1
    weights = {g.locality: g.weight for g in plan.levels[0]}
    # r1/z2 shares 20 in proportion to host weight (1:3), rounded up; r2 gets nothing
    assert weights == {"r1/z1/s1": 80, "r1/z2/a": 5, "r1/z2/b": 15}


def test_plan_distribute_without_matching_rule_keeps_everything() -> None:
    hosts = make_hosts(2, localities=["r1/z1/s1", "r2/z1/s1"])
    setting = LocalityLoadBalancerSetting(
        distribute=(LocalityDistribute(from_="r9/*", to={"r2/*": 100}),)
    )
    plan = plan_localities(hosts, setting, local_locality=LOCAL)
    assert {g.locality: g.weight for g in plan.levels[0]} == {"r1/z1/s1": 1, "r2/z1/s1": 1}


def test_plan_failover_priority_labels() -> None:
    labels = [{"env": "a"}, {"env": "b"}, {"env": "a"}, {}]
    hosts = make_hosts(
        4, labels=labels, localities=["r1/z1/s1", "r1/z1/s1", "r2/z1/s1", "r1/z1/s1"]
    )
    setting = LocalityLoadBalancerSetting(failover_priority=("env",))
    plan = plan_localities(
        hosts, setting, local_locality=LOCAL, local_labels={"env": "a"}, outlier_detection=True
    )
    assert [
        [h.endpoint.labels.get("env") for g in lvl for h in g.hosts] for lvl in plan.levels
    ] == [
        ["a", "a"],
        ["b", None],
    ]
    # combined with failover: label rank * 5 + locality rank
    setting = LocalityLoadBalancerSetting(
        failover_priority=("env",), failover=(LocalityFailover(from_="r1", to="r2"),)
    )
    plan = plan_localities(
        hosts, setting, local_locality=LOCAL, local_labels={"env": "a"}, outlier_detection=True
    )
    assert [[h.locality for g in lvl for h in g.hosts] for lvl in plan.levels] == [
        ["r1/z1/s1"],
        ["r2/z1/s1"],
        ["r1/z1/s1", "r1/z1/s1"],
    ]
    # no labels on this process: Istio skips failoverPriority
    plan = plan_localities(hosts, setting, local_locality=LOCAL, outlier_detection=True)
    assert _levels(plan) == [["r1/z1/s1"], ["r2/z1/s1"]]
