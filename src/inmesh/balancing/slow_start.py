"""Slow start (``warmup`` / ``warmupDurationSecs``): new hosts ramp up their weight.

Envoy's slow start mode (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/slow_start,
envoyproxy/envoy ``load_balancer_impl.cc`` ``applySlowStartFactor``), which
Istio programs for ROUND_ROBIN and LEAST_REQUEST only (``warmup{duration,
minimumPercent, aggression}``, or the deprecated ``warmupDurationSecs`` with
the defaults): while a host is younger than the window its weight is::

    weight * max(min_weight_percent, time_factor ** (1 / aggression))
    time_factor = max(age, 1ms) / window

``minimumPercent`` defaults to 10 and ``aggression`` to 1.0 (linear). The
documentation notes that slow start "is not very effective" when all
endpoints are new, "as all endpoints end up getting same amount of
requests": every host is scaled by the same factor. inmesh therefore only
turns the weighted path on when the hosts' ages differ (a host joined an
existing set) and the newest is still inside its window; a host set whose
hosts all appeared together (the first configuration) balances as if slow
start were off, which gives the same proportions without the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from inmesh.config.resources.destination_rule import LoadBalancerSettings

__all__ = ["SlowStart"]


@dataclass(frozen=True, slots=True)
class SlowStart:
    """A slow start window (seconds), the minimum weight fraction and the aggression."""

    window: float
    min_weight: float = 0.1
    aggression: float = 1.0

    @classmethod
    def from_settings(cls, settings: LoadBalancerSettings | None) -> SlowStart | None:
        """``warmup`` (wins) or ``warmupDurationSecs``; ``None`` when neither sets a window."""
        if settings is None:
            return None
        warmup = settings.warmup
        if warmup is not None and warmup.duration is not None:
            window = warmup.duration.seconds
            minimum = 10.0 if warmup.minimum_percent is None else warmup.minimum_percent
            aggression = warmup.aggression if warmup.aggression and warmup.aggression > 0 else 1.0
            return cls(window, minimum / 100.0, aggression) if window > 0 else None
        legacy = settings.warmup_duration_secs
        if legacy is not None and legacy.seconds > 0:
            return cls(legacy.seconds)
        return None

    def factor(self, age: float) -> float:
        """The weight multiplier of a host ``age`` seconds old (1.0 once out of the window)."""
        if age >= self.window:
            return 1.0
        time_factor = max(age, 0.001) / self.window
        if self.aggression != 1.0:
            time_factor **= 1.0 / self.aggression
        return max(self.min_weight, time_factor)
