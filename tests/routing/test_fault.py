"""Fault injection decisions: Istio's translation and Envoy's draws, without I/O."""

from __future__ import annotations

import random

import pytest

from inmesh.config.resources._common import Duration, Percent
from inmesh.config.resources.virtual_service import FaultAbort, FaultDelay, HTTPFaultInjection
from inmesh.routing.fault import (
    FAULT_ABORT_BODY,
    GRPC_STATUS_CODES,
    MILLION,
    CompiledFault,
    FaultDecision,
    http_to_grpc_status,
    is_grpc_content_type,
)


class Draws:
    """A Random whose randrange returns queued values and records its calls."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.calls: list[tuple[int, ...]] = []

    def random(self) -> float:
        raise AssertionError("faults draw integers")

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        self.calls.append((start,) if stop is None else (start, stop))
        return self.values.pop(0)


def delay(pct: float | None = None, percent: int | None = None, ms: float = 200) -> FaultDelay:
    return FaultDelay(
        fixed_delay=Duration(ms / 1000),
        percentage=Percent(pct) if pct is not None else None,
        percent=percent,
    )


def abort(status: int = 503, pct: float | None = None, grpc: str | None = None) -> FaultAbort:
    return FaultAbort(
        http_status=None if grpc else status,
        grpc_status=grpc,
        percentage=Percent(pct) if pct is not None else None,
    )


def compiled(d: FaultDelay | None = None, a: FaultAbort | None = None) -> CompiledFault:
    c = CompiledFault.compile(HTTPFaultInjection(delay=d, abort=a))
    assert c is not None
    return c


# -- compile: what can fire ----------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        HTTPFaultInjection(),
        HTTPFaultInjection(delay=delay(), abort=abort()),  # percentages unset: 0 %
        HTTPFaultInjection(delay=delay(pct=0), abort=abort(pct=0)),
        HTTPFaultInjection(delay=delay(percent=0)),
        HTTPFaultInjection(abort=abort(pct=0.00009)),  # below one part per million
        HTTPFaultInjection(
            delay=FaultDelay(exponential_delay=Duration(1.0), percentage=Percent(100))
        ),
        HTTPFaultInjection(abort=FaultAbort(http2_error="CANCEL", percentage=Percent(100))),
        HTTPFaultInjection(abort=FaultAbort(percentage=Percent(100))),  # no error type
        HTTPFaultInjection(delay=delay(pct=100, ms=0.5)),  # truncates to 0 ms: no delay
    ],
)
def test_nothing_can_fire(fault: HTTPFaultInjection) -> None:
    assert CompiledFault.compile(fault) is None


@pytest.mark.parametrize(
    ("pct", "ppm"),
    [
        (100, MILLION),
        (50, 500_000),
        (0.0001, 1),  # the finest share validation accepts
        (0.00019, 1),  # truncated, not rounded
        (0.57, 5_699),  # uint32(0.57 * 10000) = uint32(5699.999999999999)
        (12.3456, 123_455),  # likewise: 123455.99999999999
        (4.35, 43_500),
        (99.9999, 999_999),
        (150, MILLION),  # refused by validation; clamped
    ],
)
def test_percentage_is_parts_per_million_truncated(pct: float, ppm: int) -> None:
    assert compiled(a=abort(pct=pct)).abort_ppm == ppm
    assert compiled(d=delay(pct=pct)).delay_ppm == ppm


@pytest.mark.parametrize(
    ("pct", "percent", "ppm"),
    [
        (None, 30, 300_000),  # deprecated integer percent, out of a hundred
        (None, 100, MILLION),
        (None, 250, MILLION),  # numerator above the denominator: always
        (None, -1, MILLION),  # Go's uint32(int32(-1)) wraps: always
        (10, 90, 100_000),  # percentage wins
        (0, 90, 0),  # even when it is 0
    ],
)
def test_deprecated_integer_percent_for_delay(pct: float | None, percent: int, ppm: int) -> None:
    c = CompiledFault.compile(HTTPFaultInjection(delay=delay(pct=pct, percent=percent)))
    assert (c.delay_ppm if c is not None else 0) == ppm


@pytest.mark.parametrize(("ms", "seconds"), [(200, 0.2), (1005, 1.005), (1.9, 0.001)])
def test_delay_is_whole_milliseconds(ms: float, seconds: float) -> None:
    assert compiled(d=delay(pct=100, ms=ms)).delay == seconds


def test_abort_only_and_delay_only_compile() -> None:
    assert compiled(a=abort(404, pct=5)) == CompiledFault(None, 0, 404, None, 50_000)
    assert compiled(d=delay(pct=5), a=abort(pct=0)) == CompiledFault(0.2, 50_000, None, None, 0)


# -- decide: draws ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pct", "draw", "fires"),
    [
        (50, 499_999, True),
        (50, 500_000, False),
        (0.0001, 0, True),
        (0.0001, 1, False),
        (99.9999, 999_998, True),
        (99.9999, 999_999, False),
    ],
)
def test_draw_boundary(pct: float, draw: int, fires: bool) -> None:
    rng = Draws(draw)
    decision = compiled(a=abort(pct=pct)).decide(rng)
    assert decision == (FaultDecision(abort_status=503) if fires else None)
    assert rng.calls == [(MILLION,)]


@pytest.mark.parametrize(
    ("draws", "expected"),
    [
        ((0, 0), FaultDecision(0.2, 500)),
        ((0, 999_999), FaultDecision(delay=0.2)),
        ((999_999, 0), FaultDecision(abort_status=500)),
        ((999_999, 999_999), None),
    ],
)
def test_delay_then_abort_independent_draws(
    draws: tuple[int, int], expected: FaultDecision | None
) -> None:
    c = compiled(d=delay(pct=50), a=abort(500, pct=50))
    rng = Draws(*draws)
    assert c.decide(rng) == expected
    assert rng.calls == [(MILLION,), (MILLION,)]  # both drawn, delay first


def test_only_configured_faults_draw() -> None:
    rng = Draws(0)
    assert compiled(d=delay(pct=1)).decide(rng) == FaultDecision(delay=0.2)
    assert compiled(a=abort(pct=1)).decide(Draws(0)) == FaultDecision(abort_status=503)
    assert len(rng.calls) == 1


def test_full_percentages_do_not_draw() -> None:
    c = compiled(d=delay(pct=100), a=abort(pct=100))
    assert c.decide(Draws()) == FaultDecision(0.2, 503)


def test_independent_shares_over_many_draws() -> None:
    c = compiled(d=delay(pct=30), a=abort(pct=20))
    rng = random.Random(7)
    decisions = [c.decide(rng) for _ in range(50_000)]
    delayed = sum(d is not None and d.delay is not None for d in decisions)
    aborted = sum(d is not None and d.aborts for d in decisions)
    both = sum(d is not None and d.flags == ("DI", "FI") for d in decisions)
    assert 14_300 < delayed < 15_700
    assert 9_400 < aborted < 10_600
    assert 2_700 < both < 3_300  # 0.3 * 0.2: independent


# -- gRPC aborts and replies -----------------------------------------------------


def test_grpc_abort_is_http_200_with_grpc_status() -> None:
    c = compiled(a=abort(grpc="UNAVAILABLE", pct=100))
    assert (c.abort_status, c.grpc_status) == (200, 14)
    decision = c.decide(Draws())
    assert decision == FaultDecision(abort_status=200, grpc_status=14)
    assert decision is not None and decision.flags == ("FI",)


def test_grpc_status_table() -> None:
    assert GRPC_STATUS_CODES["OK"] == 0
    assert GRPC_STATUS_CODES["NOT_FOUND"] == 5
    assert GRPC_STATUS_CODES["UNAUTHENTICATED"] == 16
    assert len(GRPC_STATUS_CODES) == 17


@pytest.mark.parametrize(
    ("decision", "flags"),
    [
        (FaultDecision(), ()),
        (FaultDecision(delay=1.0), ("DI",)),
        (FaultDecision(abort_status=503), ("FI",)),
        (FaultDecision(1.0, 200, 14), ("DI", "FI")),
    ],
)
def test_flags(decision: FaultDecision, flags: tuple[str, ...]) -> None:
    assert decision.flags == flags


@pytest.mark.parametrize(
    ("decision", "grpc_request", "reply"),
    [
        (
            FaultDecision(abort_status=503),
            False,
            (503, (("content-type", "text/plain"),), FAULT_ABORT_BODY),
        ),
        (  # a gRPC abort of a plain HTTP request: the status is 200, no grpc-status
            FaultDecision(abort_status=200, grpc_status=14),
            False,
            (200, (("content-type", "text/plain"),), FAULT_ABORT_BODY),
        ),
        (
            FaultDecision(abort_status=200, grpc_status=14),
            True,
            (
                200,
                (
                    ("content-type", "application/grpc"),
                    ("grpc-status", "14"),
                    ("grpc-message", "fault filter abort"),
                ),
                "",
            ),
        ),
        (  # an HTTP abort of a gRPC request: status mapped (404 -> UNIMPLEMENTED)
            FaultDecision(abort_status=404),
            True,
            (
                200,
                (
                    ("content-type", "application/grpc"),
                    ("grpc-status", "12"),
                    ("grpc-message", "fault filter abort"),
                ),
                "",
            ),
        ),
        (FaultDecision(delay=0.1), True, None),
    ],
)
def test_abort_reply_shape(
    decision: FaultDecision,
    grpc_request: bool,
    reply: tuple[int, tuple[tuple[str, str], ...], str] | None,
) -> None:
    assert decision.abort_reply(grpc_request=grpc_request) == reply


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, 13),
        (401, 16),
        (403, 7),
        (404, 12),
        (429, 14),
        (502, 14),
        (503, 14),
        (504, 14),
        (500, 2),
    ],
)
def test_http_to_grpc_status(status: int, code: int) -> None:
    assert http_to_grpc_status(status) == code


@pytest.mark.parametrize(
    ("content_type", "grpc"),
    [
        ("application/grpc", True),
        ("application/grpc+proto", True),
        ("application/grpc-web", False),
        ("application/grpc-web+proto", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_is_grpc_content_type(content_type: str | None, grpc: bool) -> None:
    assert is_grpc_content_type(content_type) is grpc
