"""OutlierDetector: Envoy's consecutive-error outlier detection as Istio sets it up."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import pytest

from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import OutlierDetection
from inmesh.resilience.outcome import Failure, Outcome
from inmesh.resilience.outlier import (
    OutlierConfig,
    OutlierDetector,
    grpc_to_http_status,
)


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


@dataclass(eq=False)
class Host:
    name: str
    healthy: bool = True


OK = Outcome.response(200)
E500 = Outcome.response(500)
E502 = Outcome.response(502)
E503 = Outcome.response(503)
E504 = Outcome.response(504)
E404 = Outcome.response(404)


def failed(f: Failure) -> Outcome:
    return Outcome.failed(f)


def seed_config() -> OutlierConfig:
    # /work/shared/seeds/configs/05-destinationrule-circuit-breaking.yaml
    return OutlierConfig.from_settings(
        OutlierDetection(
            consecutive_5xx_errors=5,
            interval=Duration.of(10),
            base_ejection_time=Duration.of(30),
            max_ejection_percent=50,
        )
    )


def make(
    n: int = 3, config: OutlierConfig | None = None, t: float = 0.0
) -> tuple[OutlierDetector[Host], list[Host], FakeClock]:
    clock = FakeClock(t)
    hosts = [Host(f"h{i}") for i in range(n)]
    det: OutlierDetector[Host] = OutlierDetector(
        config or OutlierConfig(max_ejection_percent=100), clock=clock, hosts=hosts
    )
    return det, hosts, clock


def feed(det: OutlierDetector[Host], host: Host, outcome: Outcome, times: int) -> None:
    for _ in range(times):
        det.report(host, outcome)


# --------------------------------------------------------------------------- config


def test_from_settings_empty_block_uses_istio_and_envoy_defaults() -> None:
    cfg = OutlierConfig.from_settings(OutlierDetection())
    assert cfg.consecutive_5xx == 5
    assert cfg.consecutive_gateway_errors is None  # Envoy does not enforce it by default
    assert cfg.consecutive_local_origin_failures is None
    assert cfg.split_external_local_origin_errors is False
    assert cfg.interval == 10.0
    assert cfg.base_ejection_time == 30.0
    assert cfg.max_ejection_percent == 10
    assert cfg.min_health_percent == 0
    assert cfg.effective_max_ejection_time == 300.0
    assert cfg.http_error_codes == frozenset()


def test_from_settings_seed_destination_rule() -> None:
    cfg = seed_config()
    assert (cfg.consecutive_5xx, cfg.interval, cfg.base_ejection_time) == (5, 10.0, 30.0)
    assert cfg.max_ejection_percent == 50


def test_from_settings_translation_details() -> None:
    cfg = OutlierConfig.from_settings(
        OutlierDetection(
            consecutive_errors=2,  # deprecated: Istio ignores it
            consecutive_5xx_errors=0,  # 0 disables it
            consecutive_gateway_errors=3,
            interval=Duration.parse("250ms"),
            base_ejection_time=Duration.of(400),
            min_health_percent=40,
            outlier_detection_http_error_codes=(404, 503),
        )
    )
    assert cfg.consecutive_5xx is None
    assert cfg.consecutive_gateway_errors == 3
    assert cfg.interval == 0.25
    assert cfg.effective_max_ejection_time == 400.0  # max(300s, base)
    assert cfg.min_health_percent == 40
    assert cfg.http_error_codes == {404, 503}
    assert (
        OutlierConfig.from_settings(
            OutlierDetection(consecutive_gateway_errors=0)
        ).consecutive_gateway_errors
        is None
    )
    assert (
        OutlierConfig.from_settings(OutlierDetection(max_ejection_percent=0)).max_ejection_percent
        == 10
    )


def test_from_settings_split_mode_local_origin_threshold() -> None:
    split = OutlierConfig.from_settings(OutlierDetection(split_external_local_origin_errors=True))
    assert split.split_external_local_origin_errors
    assert split.consecutive_local_origin_failures == 5  # Envoy default, enforced
    split2 = OutlierConfig.from_settings(
        OutlierDetection(
            split_external_local_origin_errors=True, consecutive_local_origin_failures=2
        )
    )
    assert split2.consecutive_local_origin_failures == 2
    # Without split mode Istio does not pass it on.
    plain = OutlierConfig.from_settings(OutlierDetection(consecutive_local_origin_failures=2))
    assert plain.consecutive_local_origin_failures is None


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="interval"):
        OutlierConfig(interval=0)
    with pytest.raises(ValueError, match="max_ejection_time"):
        OutlierConfig(base_ejection_time=60, max_ejection_time=30)


# ------------------------------------------------------------- the seed scenario


def test_seed_one_of_three_failing_is_ejected_and_comes_back() -> None:
    det, (bad, a, b), clock = make(config=seed_config())
    clock.t = 1.0
    feed(det, bad, E500, 4)
    assert bad.healthy
    det.report(a, OK)
    det.report(b, OK)
    det.report(bad, E500)  # 5th consecutive 5xx: ejected at once, not at the interval
    assert not bad.healthy and a.healthy and b.healthy
    assert det.ejected() == [bad]
    st = det.host_state(bad)
    assert st is not None and st.ejected_until == 31.0 and st.ejection_multiplier == 1
    # Un-ejection happens at the first interval tick after 30s: ticks at 10, 20, 30, 40.
    clock.t = 39.9
    det.maybe_sweep()
    assert not bad.healthy
    clock.t = 40.0
    det.maybe_sweep()
    assert bad.healthy and det.ejected() == []
    s = det.stats()
    assert (s.ejections_total, s.ejections_consecutive_5xx, s.ejected_now) == (1, 1, 0)


def test_seed_two_of_three_failing_respects_max_ejection_percent_50() -> None:
    det, (bad1, bad2, good), clock = make(config=seed_config())
    feed(det, bad1, E500, 5)
    feed(det, bad2, E500, 5)
    assert not bad1.healthy
    assert bad2.healthy  # (1 + 1) / 3 = 67% > 50%
    assert good.healthy
    assert det.stats().ejections_overflow == 1
    # The counter that fired is reset even though the ejection was refused.
    st = det.host_state(bad2)
    assert st is not None and st.consecutive_5xx == 0
    feed(det, bad2, E500, 4)
    assert det.stats().ejections_overflow == 1
    det.report(bad2, E500)
    assert det.stats().ejections_overflow == 2 and bad2.healthy
    # Once bad1 is back, bad2 can go.
    clock.t = 30.0
    det.maybe_sweep()
    assert bad1.healthy
    feed(det, bad2, E500, 5)
    assert not bad2.healthy


# ---------------------------------------------------------------------- counting


def test_success_resets_consecutive_5xx() -> None:
    det, (h, *_), _ = make()
    feed(det, h, E500, 4)
    det.report(h, OK)
    feed(det, h, E503, 4)
    assert h.healthy
    det.report(h, E404)  # any non-5xx resets too
    feed(det, h, E500, 4)
    assert h.healthy
    det.report(h, E500)
    assert not h.healthy


def test_threshold_is_configurable_and_zero_disables() -> None:
    det, (h, *_), _ = make(config=OutlierConfig(consecutive_5xx=2, max_ejection_percent=100))
    feed(det, h, E500, 2)
    assert not h.healthy
    det2, (h2, *_), _ = make(
        config=OutlierConfig.from_settings(
            OutlierDetection(consecutive_5xx_errors=0, max_ejection_percent=100)
        )
    )
    feed(det2, h2, E500, 50)
    assert h2.healthy


def test_non_split_local_failures_count_as_5xx() -> None:
    for failure in Failure:
        if failure is Failure.OVERFLOW:
            continue
        det, (h, *_), _ = make()
        feed(det, h, E500, 2)
        feed(det, h, failed(failure), 3)
        assert not h.healthy, failure


def test_gateway_errors() -> None:
    cfg = OutlierConfig(
        consecutive_5xx=None, consecutive_gateway_errors=3, max_ejection_percent=100
    )
    det, (h, g, k), _ = make(config=cfg)
    det.report(h, E502)
    det.report(h, E503)
    det.report(h, E500)  # a non-gateway 5xx resets the gateway counter
    det.report(h, E504)
    det.report(h, E502)
    assert h.healthy
    det.report(h, E503)
    assert not h.healthy
    # Non-split mode: connect failures are 503 and timeouts 504, both gateway errors.
    det.report(g, failed(Failure.CONNECT_FAILURE))
    det.report(g, failed(Failure.PER_TRY_TIMEOUT))
    det.report(g, failed(Failure.RESET))
    assert not g.healthy
    feed(det, k, E500, 20)  # plain 500s never trip the gateway detector
    assert k.healthy
    s = det.stats()
    assert s.ejections_consecutive_gateway_failure == 2 and s.ejections_consecutive_5xx == 0


def test_gateway_and_5xx_fire_together_gateway_first() -> None:
    cfg = OutlierConfig(consecutive_5xx=5, consecutive_gateway_errors=3, max_ejection_percent=100)
    det, (h, *_), _ = make(config=cfg)
    for o in (E500, E500, E502, E502, E502):
        det.report(h, o)
    assert not h.healthy
    s = det.stats()
    assert s.ejections_consecutive_gateway_failure == 1 and s.ejections_consecutive_5xx == 0
    st = det.host_state(h)
    # The 5xx detection hit an ejected host: dropped, its counter not reset.
    assert st is not None and st.consecutive_5xx == 5 and st.consecutive_gateway_errors == 0


def test_split_mode_counts_local_origin_failures_separately() -> None:
    cfg = OutlierConfig(
        consecutive_5xx=5,
        consecutive_local_origin_failures=3,
        split_external_local_origin_errors=True,
        max_ejection_percent=100,
    )
    det, (h, g, k), _ = make(config=cfg)
    feed(det, h, failed(Failure.CONNECT_FAILURE), 2)
    feed(det, h, E500, 4)  # 5xx counted apart; a response also resets the local counter
    st = det.host_state(h)
    assert st is not None
    assert (st.consecutive_5xx, st.consecutive_local_origin_failures) == (4, 0)
    feed(det, h, failed(Failure.CONNECT_TIMEOUT), 2)
    assert h.healthy
    det.report(h, failed(Failure.CONNECT_FAILURE))
    assert not h.healthy
    assert det.stats().ejections_consecutive_local_origin_failure == 1
    # External errors still eject through consecutive_5xx.
    feed(det, g, E500, 5)
    assert not g.healthy
    # Failures after the connection was obtained are preceded by a connect
    # success in Envoy, so they never add up beyond one.
    feed(det, k, failed(Failure.RESET), 10)
    feed(det, k, failed(Failure.PER_TRY_TIMEOUT), 10)
    assert k.healthy
    st = det.host_state(k)
    assert st is not None and st.consecutive_local_origin_failures == 1 and st.consecutive_5xx == 0


def test_split_mode_threshold_one_ejects_on_reset() -> None:
    cfg = OutlierConfig(
        consecutive_local_origin_failures=1,
        split_external_local_origin_errors=True,
        max_ejection_percent=100,
    )
    det, (h, *_), _ = make(config=cfg)
    det.report(h, failed(Failure.RESET))
    assert not h.healthy


def test_overflow_outcomes_are_ignored_entirely() -> None:
    det, (h, *_), _ = make()
    feed(det, h, E500, 4)
    feed(det, h, failed(Failure.OVERFLOW), 20)  # neither an error nor a success
    st = det.host_state(h)
    assert st is not None and st.consecutive_5xx == 4 and h.healthy
    det.report(h, E500)
    assert not h.healthy
    assert det.stats().reports_ignored == 20


def test_grpc_status_is_mapped_like_envoy() -> None:
    assert grpc_to_http_status(0) == 200
    assert grpc_to_http_status(14) == 503
    assert grpc_to_http_status(4) == 504
    assert grpc_to_http_status(13) == 500
    assert grpc_to_http_status(5) == 404
    assert grpc_to_http_status(99) == 500
    det, (h, g, _), _ = make()
    feed(det, h, Outcome.response(200, grpc_status=14), 5)
    assert not h.healthy
    feed(det, g, Outcome.response(200, grpc_status=13), 4)
    det.report(g, Outcome.response(200, grpc_status=0))
    st = det.host_state(g)
    assert st is not None and st.consecutive_5xx == 0


def test_http_error_codes_replace_the_5xx_rule() -> None:
    cfg = OutlierConfig(http_error_codes=frozenset({404}), max_ejection_percent=100)
    det, (h, g, _), _ = make(config=cfg)
    feed(det, h, E404, 5)  # listed: counts as an error (as 500)
    assert not h.healthy
    feed(det, g, E500, 4)
    det.report(g, E503)  # unlisted: counts as success
    feed(det, g, E500, 4)
    assert g.healthy


# ------------------------------------------------------------ max ejection percent


def test_default_10_percent_ejects_nothing_with_three_hosts() -> None:
    det, hosts, _ = make(config=OutlierConfig())
    for h in hosts:
        feed(det, h, E500, 5)
    assert all(h.healthy for h in hosts)
    assert det.stats().ejections_overflow == 3


def test_default_10_percent_ejects_one_of_ten() -> None:
    det, hosts, _ = make(10, config=OutlierConfig())
    feed(det, hosts[0], E500, 5)
    feed(det, hosts[1], E500, 5)
    assert [h.healthy for h in hosts[:2]] == [False, True]


def test_max_ejection_percent_100_can_eject_all() -> None:
    det, hosts, _ = make()
    for h in hosts:
        feed(det, h, E500, 5)
    assert not any(h.healthy for h in hosts)
    assert det.stats().ejected_now == 3


def test_max_ejection_percent_boundary_is_inclusive() -> None:
    det, hosts, _ = make(4, config=OutlierConfig(max_ejection_percent=50))
    for h in hosts:
        feed(det, h, E500, 5)
    assert sum(not h.healthy for h in hosts) == 2  # 50% <= 50%


# ---------------------------------------------------------------- ejection time


def test_ejection_time_grows_with_multiplier_and_is_capped() -> None:
    det, (h, *_), clock = make()
    spans: list[float] = []
    multipliers: list[int] = []
    for _ in range(13):
        feed(det, h, E500, 5)
        st = det.host_state(h)
        assert st is not None and st.ejected and st.ejected_until is not None
        spans.append(st.ejected_until - clock.t)
        multipliers.append(st.ejection_multiplier)
        clock.t = st.ejected_until  # ticks every 10s: the deadline is on a tick here
        det.maybe_sweep()
        assert h.healthy
    assert spans == [30.0 * k for k in range(1, 11)] + [300.0] * 3
    assert multipliers == [*range(1, 12), 11, 11]
    assert det.stats().ejections_total == 13


def test_multiplier_decreases_on_healthy_ticks() -> None:
    det, (h, *_), clock = make()
    for _ in range(3):
        feed(det, h, E500, 5)
        st = det.host_state(h)
        assert st is not None and st.ejected_until is not None
        clock.t = st.ejected_until
        det.maybe_sweep()
    st = det.host_state(h)
    assert st is not None and st.ejection_multiplier == 3  # unejected at t=180
    assert clock.t == 180.0
    clock.t = 189.0
    det.maybe_sweep()
    assert det.host_state(h).ejection_multiplier == 3  # type: ignore[union-attr]
    clock.t = 190.0  # one interval after un-ejection
    det.maybe_sweep()
    assert det.host_state(h).ejection_multiplier == 2  # type: ignore[union-attr]
    clock.t = 200.0
    det.maybe_sweep()
    assert det.host_state(h).ejection_multiplier == 1  # type: ignore[union-attr]
    # Next ejection lasts base * 2.
    feed(det, h, E500, 5)
    st = det.host_state(h)
    assert st is not None and st.ejection_multiplier == 2 and st.ejected_until == 260.0


def test_lazy_sweep_catches_up_missed_ticks_in_one_call() -> None:
    det, (h, *_), clock = make()
    for _ in range(4):
        feed(det, h, E500, 5)
        st = det.host_state(h)
        assert st is not None and st.ejected_until is not None
        clock.t = st.ejected_until
        det.maybe_sweep()
    feed(det, h, E500, 5)  # multiplier 5: 150s
    assert not h.healthy
    clock.t += 10_000.0  # a long quiet time: one call applies every tick
    det.maybe_sweep()
    st = det.host_state(h)
    assert st is not None and h.healthy and st.ejection_multiplier == 0
    assert det.next_sweep_at > clock.t


def test_unejection_granularity_is_the_interval() -> None:
    cfg = OutlierConfig(interval=10, base_ejection_time=5, max_ejection_percent=100)
    det, (h, *_), clock = make(config=cfg)
    clock.t = 12.0
    feed(det, h, E500, 5)  # eligible at 17, next tick at 20
    clock.t = 19.0
    det.maybe_sweep()
    assert not h.healthy
    clock.t = 20.0
    det.maybe_sweep()
    assert h.healthy


def test_ticks_are_anchored_at_creation() -> None:
    det, (h, *_), clock = make(config=seed_config(), t=3.0)  # ticks at 13, 23, 33, ...
    feed(det, h, E500, 5)  # eligible at 33
    clock.t = 32.9
    det.sweep()
    assert not h.healthy
    assert det.next_sweep_at == 33.0
    clock.t = 33.0
    det.sweep()
    assert h.healthy


def test_unejection_resets_counters_and_reports_while_ejected_do_not_reset() -> None:
    det, (h, *_), clock = make()
    feed(det, h, E500, 5)
    feed(det, h, E500, 7)  # in-flight failures after the ejection
    st = det.host_state(h)
    assert st is not None and st.consecutive_5xx == 7 and st.ejections == 1
    clock.t = 30.0
    det.maybe_sweep()
    st = det.host_state(h)
    assert st is not None and h.healthy and st.consecutive_5xx == 0
    feed(det, h, E500, 4)
    assert h.healthy


def test_report_applies_due_ticks_first() -> None:
    det, (h, *_), clock = make()
    feed(det, h, E500, 5)
    clock.t = 30.0
    det.report(h, E500)  # the tick at 30 un-ejects before this report is counted
    st = det.host_state(h)
    assert st is not None and h.healthy and st.consecutive_5xx == 1


def test_maybe_sweep_is_a_noop_between_ticks() -> None:
    det, (h, *_), clock = make()
    feed(det, h, E500, 5)
    clock.t = 9.99
    det.maybe_sweep()
    assert det.next_sweep_at == 10.0 and not h.healthy


# ------------------------------------------------------------------------ reload


def test_set_hosts_keeps_state_of_remaining_hosts() -> None:
    det, (a, b, c), clock = make(config=seed_config())
    feed(det, a, E500, 5)
    feed(det, b, E500, 3)
    d = Host("d")
    det.set_hosts([a, b, d])
    assert not a.healthy
    assert det.ejected() == [a]
    st = det.host_state(b)
    assert st is not None and st.consecutive_5xx == 3
    assert det.host_state(c) is None
    assert det.host_state(d) is not None
    det.report(c, E500)  # removed host: ignored
    assert det.stats().reports_ignored == 1
    clock.t = 30.0
    det.maybe_sweep()
    assert a.healthy


def test_set_hosts_dropping_an_ejected_host_frees_the_budget() -> None:
    det, (a, b, c), _ = make(config=seed_config())
    feed(det, a, E500, 5)
    feed(det, b, E500, 5)
    assert b.healthy  # refused: 67% > 50%
    det.set_hosts([b, c, Host("d")])
    assert det.stats().ejected_now == 0
    feed(det, b, E500, 5)
    assert not b.healthy


def test_same_endpoint_new_object_starts_fresh() -> None:
    det, (a, b, c), _ = make()
    feed(det, a, E500, 4)
    a2 = Host("h0")
    det.set_hosts([a2, b, c])
    det.report(a2, E500)
    assert a2.healthy


# ------------------------------------------------------------------ concurrency


def test_thread_safety_smoke() -> None:
    clock = FakeClock()
    hosts = [Host(f"h{i}") for i in range(10)]
    det: OutlierDetector[Host] = OutlierDetector(
        OutlierConfig(max_ejection_percent=50), clock=clock, hosts=hosts
    )
    outcomes = [OK, E500, E503, failed(Failure.RESET), failed(Failure.OVERFLOW)]
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(2000):
                h = rng.choice(hosts)
                det.report(h, rng.choices(outcomes, weights=[1, 6, 2, 1, 1])[0])
                if rng.random() < 0.01:
                    clock.t += 1.0
                det.maybe_sweep()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = det.stats()
    assert s.ejected_now == sum(not h.healthy for h in hosts) == len(det.ejected())
    assert s.ejected_now <= 5
    assert s.ejections_total > 0
