"""Fault injection decisions: Istio's translation and Envoy's draws, without I/O."""

from __future__ import annotations

import random

import pytest

from inmesh.config.resources._common import Duration, Percent
from inmesh.config.resources.virtual_service import FaultAbort, FaultDelay, HTTPFaultInjection
from inmesh.routing.fault import GRPC_STATUS_CODES, CompiledFault, FaultDecision


class Fixed:
    """A Random whose randrange returns queued values."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def random(self) -> float:
        raise AssertionError("faults draw integers")

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return self.values.pop(0)


def delay(pct: float | None = None, percent: int | None = None, ms: int = 200) -> FaultDelay:
    return FaultDelay(
        fixed_delay=Duration.of(ms / 1000),
        percentage=Percent(pct) if pct is not None else None,
        percent=percent,
    )


def abort(status: int = 503, pct: float | None = None, grpc: str | None = None) -> FaultAbort:
    return FaultAbort(
        http_status=None if grpc else status,
        grpc_status=grpc,
        percentage=Percent(pct) if pct is not None else None,
    )


def test_unset_percentages_never_fire() -> None:
    assert CompiledFault.compile(HTTPFaultInjection(delay=delay(), abort=abort())) is None


@pytest.mark.parametrize(
    ("pct", "ppm"), [(100, 1_000_000), (50, 500_000), (0.0001, 1), (0.00009, 0)]
)
def test_percentage_is_parts_per_million(pct: float, ppm: int) -> None:
    compiled = CompiledFault.compile(HTTPFaultInjection(abort=abort(pct=pct)))
    if ppm == 0:
        assert compiled is None
    else:
        assert compiled is not None and compiled.abort_ppm == ppm


def test_draw_boundary() -> None:
    compiled = CompiledFault.compile(HTTPFaultInjection(abort=abort(pct=50)))
    assert compiled is not None
    assert compiled.decide(Fixed(499_999)) == FaultDecision(abort_status=503)
    assert compiled.decide(Fixed(500_000)) is None


def test_deprecated_integer_percent_for_delay() -> None:
    compiled = CompiledFault.compile(HTTPFaultInjection(delay=delay(percent=30)))
    assert compiled is not None and compiled.delay_ppm == 300_000
    both = CompiledFault.compile(HTTPFaultInjection(delay=delay(pct=10, percent=90)))
    assert both is not None and both.delay_ppm == 100_000  # percentage wins


def test_delay_then_abort_independent_draws() -> None:
    compiled = CompiledFault.compile(
        HTTPFaultInjection(delay=delay(pct=50), abort=abort(500, pct=50))
    )
    assert compiled is not None
    assert compiled.decide(Fixed(0, 0)) == FaultDecision(0.2, 500)
    assert compiled.decide(Fixed(0, 999_999)) == FaultDecision(delay=0.2)
    assert compiled.decide(Fixed(999_999, 0)) == FaultDecision(abort_status=500)
    assert compiled.decide(Fixed(999_999, 999_999)) is None
    assert FaultDecision(0.2, 500).flags == ("DI", "FI")


def test_full_percentages_do_not_draw() -> None:
    compiled = CompiledFault.compile(HTTPFaultInjection(delay=delay(pct=100), abort=abort(pct=100)))
    assert compiled is not None
    assert compiled.decide(Fixed()) == FaultDecision(0.2, 503)


def test_grpc_abort() -> None:
    compiled = CompiledFault.compile(HTTPFaultInjection(abort=abort(grpc="UNAVAILABLE", pct=100)))
    assert compiled is not None
    decision = compiled.decide(random.Random(0))
    assert decision == FaultDecision(grpc_status=14)
    assert decision is not None and decision.aborts and decision.flags == ("FI",)
    assert GRPC_STATUS_CODES["OK"] == 0 and GRPC_STATUS_CODES["UNAUTHENTICATED"] == 16


def test_share_over_many_draws() -> None:
    compiled = CompiledFault.compile(HTTPFaultInjection(abort=abort(pct=10)))
    assert compiled is not None
    rng = random.Random(5)
    hits = sum(compiled.decide(rng) is not None for _ in range(100_000))
    assert 9_500 < hits < 10_500
