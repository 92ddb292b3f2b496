"""RetryPolicy (Istio translation, retryOn matrix) and RetryState (limits, back-off, hosts)."""

from __future__ import annotations

import random

import pytest

from inmesh.config.resources._common import Duration
from inmesh.config.resources.virtual_service import HTTPRetry
from inmesh.resilience.budget import RetryAdmission
from inmesh.resilience.outcome import Failure, Outcome
from inmesh.resilience.retry import (
    RETRY_ON_TOKENS,
    RetryPolicy,
    RetryState,
    parse_retry_on,
)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class MaxRandom:
    """randrange always returns the largest value (stop - 1)."""

    def random(self) -> float:
        return 0.999999

    def randrange(self, start: int, stop: int = 0, step: int = 1) -> int:
        return stop - 1


def R(status: int, **kw: object) -> Outcome:
    return Outcome.response(status, **kw)  # type: ignore[arg-type]


def F(failure: Failure) -> Outcome:
    return Outcome.failed(failure)


def policy(
    *tokens: str, codes: tuple[int, ...] = (), num_retries: int = 3, **kw: object
) -> RetryPolicy:
    return RetryPolicy(
        num_retries=num_retries,
        retry_on=frozenset(tokens),
        retriable_status_codes=frozenset(codes),
        **kw,  # type: ignore[arg-type]
    )


def state(p: RetryPolicy | None, *, deadline: float | None = None, seed: int = 1) -> RetryState:
    return RetryState(p, clock=FakeClock(), rng=random.Random(seed), deadline=deadline)


# -- Istio translation (retry.go ConvertPolicy) ------------------------------------------


DEFAULT_TOKENS = {
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
}


def test_no_retries_block_is_istio_default() -> None:
    p = RetryPolicy.from_route(None)
    assert p is not None
    assert p.num_retries == 2
    assert p.retry_on == DEFAULT_TOKENS
    assert p.retriable_status_codes == frozenset()
    assert p.previous_hosts is True
    assert p.host_selection_max_attempts == 5
    assert p.per_try_timeout is None
    assert p.base_interval == pytest.approx(0.025)
    assert p.max_interval == pytest.approx(0.25)
    assert p.retry_remote_localities is False
    assert p == RetryPolicy.istio_default()


def test_default_with_consistent_hash_has_no_previous_hosts() -> None:
    p = RetryPolicy.from_route(None, consistent_hash=True)
    assert p is not None
    assert p.previous_hosts is False
    assert p.num_retries == 2


@pytest.mark.parametrize("attempts", [0, -1, None])
def test_attempts_zero_or_unset_disables_retries(attempts: int | None) -> None:
    assert RetryPolicy.from_route(HTTPRetry(attempts=attempts)) is None


def test_attempts_only_keeps_default_retry_on() -> None:
    p = RetryPolicy.from_route(HTTPRetry(attempts=5))
    assert p is not None
    assert p.num_retries == 5
    assert p.retry_on == DEFAULT_TOKENS
    assert p.previous_hosts is True


def test_retry_on_replaces_defaults_and_extracts_status_codes() -> None:
    p = RetryPolicy.from_route(HTTPRetry(attempts=3, retry_on="5xx, 503 ,retriable-4xx,429"))
    assert p is not None
    assert p.retry_on == {"5xx", "retriable-4xx", "retriable-status-codes"}
    assert p.retriable_status_codes == {503, 429}


@pytest.mark.parametrize(
    ("retry_on", "tokens", "codes"),
    [
        ("503", ("retriable-status-codes",), (503,)),
        ("retriable-status-codes,503", ("retriable-status-codes",), (503,)),
        ("gateway-error,,connect-failure", ("gateway-error", "connect-failure"), ()),
        ("999", ("999",), ()),  # not a status Go knows: kept as a (useless) token
        ("306", ("306",), ()),  # Go's StatusText("306") is empty
        ("+503", ("retriable-status-codes",), (503,)),  # strconv.Atoi accepts a sign
        ("5_03", ("5_03",), ()),  # but not Python's underscores
        ("425,reset", ("reset", "retriable-status-codes"), (425,)),
        ("", (), ()),
    ],
)
def test_parse_retry_on(retry_on: str, tokens: tuple[str, ...], codes: tuple[int, ...]) -> None:
    assert parse_retry_on(retry_on) == (tokens, codes)


def test_per_try_timeout_backoff_and_hosts() -> None:
    p = RetryPolicy.from_route(
        HTTPRetry(
            attempts=4,
            per_try_timeout=Duration.of(2.5),
            backoff=Duration.of(0.1),
            retry_ignore_previous_hosts=False,
            retry_remote_localities=True,
        )
    )
    assert p is not None
    assert p.per_try_timeout == pytest.approx(2.5)
    assert p.base_interval == pytest.approx(0.1)
    assert p.max_interval == pytest.approx(1.0)
    assert p.previous_hosts is False
    assert p.retry_remote_localities is True
    assert p.host_selection_max_attempts == 5


def test_explicit_previous_hosts_wins_over_consistent_hash() -> None:
    p = RetryPolicy.from_route(
        HTTPRetry(attempts=1, retry_ignore_previous_hosts=True), consistent_hash=True
    )
    assert p is not None and p.previous_hosts is True
    q = RetryPolicy.from_route(HTTPRetry(attempts=1), consistent_hash=True)
    assert q is not None and q.previous_hosts is False


# -- retryOn matrix (retry_state_impl.cc wouldRetryFromHeaders / wouldRetryFromReset) ----

OUTCOMES: dict[str, Outcome] = {
    "200": R(200),
    "404": R(404),
    "409": R(409),
    "429": R(429),
    "500": R(500),
    "501": R(501),
    "502": R(502),
    "503": R(503),
    "504": R(504),
    "599": R(599),
    "503-ratelimited": R(503, ratelimited=True),
    "429-ratelimited": R(429, ratelimited=True),
    "grpc-cancelled": R(200, grpc_status=1),
    "grpc-deadline-exceeded": R(200, grpc_status=4),
    "grpc-resource-exhausted": R(200, grpc_status=8),
    "grpc-internal": R(200, grpc_status=13),
    "grpc-unavailable": R(200, grpc_status=14),
    "grpc-not-found": R(200, grpc_status=5),
    "grpc-ok": R(200, grpc_status=0),
    "connect-failure": F(Failure.CONNECT_FAILURE),
    "connect-timeout": F(Failure.CONNECT_TIMEOUT),
    "reset-before-request": F(Failure.RESET_BEFORE_REQUEST),
    "reset": F(Failure.RESET),
    "per-try-timeout": F(Failure.PER_TRY_TIMEOUT),
    "refused-stream": F(Failure.REFUSED_STREAM),
    "overflow": F(Failure.OVERFLOW),
}

ALL_FAILURES = {
    "connect-failure",
    "connect-timeout",
    "reset-before-request",
    "reset",
    "per-try-timeout",
    "refused-stream",
}

MATRIX: dict[str, set[str]] = {
    "5xx": {"500", "501", "502", "503", "504", "599"} | ALL_FAILURES,
    "gateway-error": {"502", "503", "504"} | ALL_FAILURES,
    "reset": set(ALL_FAILURES),
    "reset-before-request": {"connect-failure", "connect-timeout", "reset-before-request"},
    "connect-failure": {"connect-failure", "connect-timeout"},
    "retriable-4xx": {"409"},
    "retriable-status-codes": {"429"},  # codes = {429}
    "refused-stream": {"refused-stream"},
    "envoy-ratelimited": {"503-ratelimited", "429-ratelimited"},
    "cancelled": {"grpc-cancelled"},
    "deadline-exceeded": {"grpc-deadline-exceeded"},
    "internal": {"grpc-internal"},
    "resource-exhausted": {"grpc-resource-exhausted"},
    "unavailable": {"grpc-unavailable"},
    "retriable-headers": set(),
    "http3-post-connect-failure": set(),
}


def test_matrix_covers_every_accepted_token() -> None:
    assert set(MATRIX) == RETRY_ON_TOKENS


@pytest.mark.parametrize(
    ("token", "name", "expected"),
    [(t, n, n in MATRIX[t]) for t in sorted(MATRIX) for n in OUTCOMES],
)
def test_retry_on_matrix(token: str, name: str, expected: bool) -> None:
    p = policy(token, codes=(429,))
    assert p.should_retry(OUTCOMES[name]) is expected
    assert (p.match(OUTCOMES[name]) == token) is expected


def test_every_token_together_still_never_retries_overflow_or_success() -> None:
    p = policy(*RETRY_ON_TOKENS, codes=(200, 429))
    assert not p.should_retry(F(Failure.OVERFLOW))
    assert p.should_retry(R(200))  # only because 200 is listed as retriable
    assert not policy(*(RETRY_ON_TOKENS - {"retriable-status-codes"})).should_retry(R(200))


def test_ratelimited_response_is_only_retried_by_envoy_ratelimited() -> None:
    everything_else = RETRY_ON_TOKENS - {"envoy-ratelimited"}
    p = policy(*everything_else, codes=(503, 429))
    assert not p.should_retry(R(503, ratelimited=True))
    assert not p.should_retry(R(429, ratelimited=True, grpc_status=14))
    assert policy("envoy-ratelimited").match(R(503, ratelimited=True)) == "envoy-ratelimited"


def test_status_codes_need_the_token() -> None:
    assert not policy("5xx", codes=(429,)).should_retry(R(429))


@pytest.mark.parametrize("token", sorted(RETRY_ON_TOKENS))
def test_per_try_timeout_only_under_5xx_gateway_error_reset(token: str) -> None:
    expected = token in {"5xx", "gateway-error", "reset"}
    assert policy(token).should_retry(F(Failure.PER_TRY_TIMEOUT)) is expected


def test_istio_default_does_not_retry_per_try_timeout_or_5xx() -> None:
    p = RetryPolicy.istio_default()
    assert not p.should_retry(F(Failure.PER_TRY_TIMEOUT))
    assert not p.should_retry(R(503))
    assert not p.should_retry(F(Failure.RESET))
    assert p.should_retry(F(Failure.CONNECT_FAILURE))
    assert p.should_retry(F(Failure.CONNECT_TIMEOUT))
    assert p.should_retry(F(Failure.REFUSED_STREAM))
    assert p.should_retry(R(200, grpc_status=14))
    assert p.should_retry(R(503, grpc_status=1))


def test_reset_before_request_follows_bytes_sent() -> None:
    p = policy("reset-before-request")
    assert p.should_retry(F(Failure.RESET), request_bytes_sent=False)
    assert not p.should_retry(F(Failure.CONNECT_FAILURE), request_bytes_sent=True)
    assert not p.should_retry(F(Failure.RESET_BEFORE_REQUEST), request_bytes_sent=True)


def test_connect_failure_token_wins_over_sticky_bytes_sent() -> None:
    assert policy("connect-failure").should_retry(
        F(Failure.CONNECT_FAILURE), request_bytes_sent=True
    )


def test_match_reports_envoy_order() -> None:
    p = policy("5xx", "gateway-error", "reset", "reset-before-request", "connect-failure")
    assert p.match(F(Failure.CONNECT_FAILURE)) == "connect-failure"
    assert p.match(F(Failure.RESET_BEFORE_REQUEST)) == "reset-before-request"
    assert p.match(F(Failure.RESET)) == "reset"
    assert p.match(R(503)) == "5xx"


# -- RetryState ------------------------------------------------------------------------


def test_retries_until_exhausted_flags_urx() -> None:
    s = state(policy("5xx", num_retries=2))
    assert s.attempt == 1
    d1 = s.on_outcome(R(503))
    assert d1.retry and d1.reason == "5xx" and not d1.exhausted
    assert s.attempt == 2
    d2 = s.on_outcome(F(Failure.RESET))
    assert d2.retry and s.attempt == 3
    d3 = s.on_outcome(R(500))
    assert not d3.retry
    assert d3.exhausted and d3.reason == "retry-limit-exceeded"
    assert not d3.overflow
    assert s.attempt == 3 and s.retries_used == 2


def test_success_after_retry_is_not_exhausted() -> None:
    s = state(policy("5xx", num_retries=1))
    assert s.on_outcome(R(503)).retry
    d = s.on_outcome(R(200))
    assert not d.retry and not d.exhausted and d.reason == "not-retriable"


def test_zero_retries_policy_flags_exhausted_on_first_retriable_failure() -> None:
    d = state(policy("5xx", num_retries=0)).on_outcome(R(503))
    assert not d.retry and d.exhausted


def test_no_policy_never_retries_or_flags() -> None:
    s = state(None)
    d = s.on_outcome(F(Failure.CONNECT_FAILURE))
    assert d == s.on_outcome(R(503))
    assert not d.retry and not d.exhausted and not d.overflow and d.reason == "no-policy"
    assert s.attempt_timeout() is None
    assert s.avoid == frozenset()


def test_not_replayable_or_response_started_never_retries() -> None:
    s = state(policy("5xx"))
    d = s.on_outcome(R(503), replayable=False)
    assert not d.retry and not d.exhausted and d.reason == "not-replayable"
    d = s.on_outcome(R(503), response_started=True)
    assert not d.retry and d.reason == "response-started"
    assert s.attempt == 1


def test_overflow_outcome_never_retried() -> None:
    d = state(policy(*RETRY_ON_TOKENS)).on_outcome(F(Failure.OVERFLOW))
    assert not d.retry and not d.exhausted and d.reason == "not-retriable"


def test_budget_refusal_flags_uo() -> None:
    s = state(policy("5xx"))
    d = s.on_outcome(R(503), budget_ok=False)
    assert not d.retry and d.overflow and not d.exhausted and d.reason == "overflow"
    assert s.attempt == 1


def test_budget_callable_only_asked_for_real_retries() -> None:
    calls: list[int] = []

    def admit() -> bool:
        calls.append(1)
        return True

    s = state(policy("5xx", num_retries=1))
    assert not s.on_outcome(R(200), budget_ok=admit).retry
    assert calls == []
    assert s.on_outcome(R(503), budget_ok=admit).retry
    assert calls == [1]
    assert s.on_outcome(R(503), budget_ok=admit).exhausted
    assert calls == [1]


def test_budget_with_retry_admission() -> None:
    adm = RetryAdmission(max_retries=1)
    a = state(policy("5xx"))
    b = state(policy("5xx"))
    assert a.on_outcome(R(503), budget_ok=lambda: adm.try_acquire(10)).retry
    assert adm.outstanding == 1
    d = b.on_outcome(R(503), budget_ok=lambda: adm.try_acquire(10))
    assert d.overflow
    adm.release()
    assert b.on_outcome(R(503), budget_ok=lambda: adm.try_acquire(10)).retry


def test_deadline_prevents_retry() -> None:
    clock = FakeClock(100.0)
    s = RetryState(policy("5xx"), clock=clock, rng=MaxRandom(), deadline=100.020)
    d = s.on_outcome(R(503))  # back-off 24 ms > 20 ms left
    assert not d.retry and d.deadline_exceeded and d.reason == "deadline"
    assert not d.exhausted and not d.overflow
    assert d.backoff == pytest.approx(0.024)
    assert s.attempt == 1


def test_deadline_boundary_is_exclusive() -> None:
    clock = FakeClock(100.0)
    s = RetryState(policy("5xx"), clock=clock, rng=MaxRandom(), deadline=100.024)
    assert s.on_outcome(R(503)).deadline_exceeded
    s = RetryState(policy("5xx"), clock=clock, rng=MaxRandom(), deadline=100.025)
    assert s.on_outcome(R(503)).retry


def test_deadline_checked_before_budget() -> None:
    called: list[int] = []

    def admit() -> bool:
        called.append(1)
        return True

    clock = FakeClock(0.0)
    s = RetryState(policy("5xx"), clock=clock, rng=MaxRandom(), deadline=0.001)
    d = s.on_outcome(R(503), budget_ok=admit)
    assert d.deadline_exceeded and called == []


def test_far_deadline_allows_retry() -> None:
    s = RetryState(policy("5xx"), clock=FakeClock(0.0), rng=MaxRandom(), deadline=10.0)
    assert s.on_outcome(R(503)).retry


def test_attempt_timeout_bounded_by_deadline() -> None:
    clock = FakeClock(50.0)
    s = RetryState(policy("5xx", per_try_timeout=1.0), clock=clock, rng=MaxRandom(), deadline=50.4)
    assert s.attempt_timeout() == pytest.approx(0.4)
    s.deadline = None
    assert s.attempt_timeout() == pytest.approx(1.0)
    s2 = RetryState(policy("5xx"), clock=clock, rng=MaxRandom(), deadline=49.0)
    assert s2.attempt_timeout() == 0.0
    s2.deadline = None
    assert s2.attempt_timeout() is None


def test_reset_before_request_is_sticky_across_reset_attempts() -> None:
    # attempt 1 is refused after headers were written; attempt 2's reset
    # before request is then no longer "before request" for the request.
    s = state(policy("reset-before-request", "refused-stream"))
    assert s.on_outcome(F(Failure.REFUSED_STREAM)).reason == "refused-stream"
    d = s.on_outcome(F(Failure.RESET_BEFORE_REQUEST))
    assert not d.retry and d.reason == "not-retriable"


def test_response_retries_do_not_mark_request_started() -> None:
    # Envoy only ORs the started flag in on resets (router.cc maybeRetryReset).
    s = state(policy("reset-before-request", "retriable-status-codes", codes=(503,)))
    assert s.on_outcome(R(503)).retry
    assert s.on_outcome(F(Failure.RESET_BEFORE_REQUEST)).reason == "reset-before-request"
    assert not s.on_outcome(F(Failure.RESET)).retry


def test_explicit_bytes_sent_on_outcome() -> None:
    s = state(policy("reset-before-request"))
    assert s.on_outcome(F(Failure.RESET), request_bytes_sent=False).retry
    assert not s.on_outcome(F(Failure.RESET_BEFORE_REQUEST), request_bytes_sent=True).retry


# -- back-off (backoff_strategy.cc JitteredExponentialBackOffStrategy) ------------------


def _backoffs(p: RetryPolicy, n: int, seed: int) -> list[float]:
    s = RetryState(p, clock=FakeClock(0.0), rng=random.Random(seed))
    out = []
    for _ in range(n):
        d = s.on_outcome(R(503))
        assert d.retry
        out.append(d.backoff)
    return out


ENVOY_BOUNDS_MS = [25, 50, 100, 200, 250, 250]  # interval doubles, capped at 10 x base
DOC_BOUNDS_MS = [25, 75, 175, 250, 250, 250]  # router_filter docs: (2^n - 1) * base, cap 250


def test_backoff_bounds_default_base() -> None:
    p = policy("5xx", num_retries=6)
    draws = [_backoffs(p, 6, seed) for seed in range(3000)]
    for n in range(6):
        values_ms = [round(d[n] * 1000, 6) for d in draws]
        assert all(v == int(v) for v in values_ms)  # whole milliseconds
        assert min(values_ms) == 0
        assert max(values_ms) == ENVOY_BOUNDS_MS[n] - 1
        assert max(values_ms) < DOC_BOUNDS_MS[n]
        assert max(values_ms) <= 250


def test_backoff_is_roughly_uniform() -> None:
    p = policy("5xx", num_retries=1)
    values = [_backoffs(p, 1, seed)[0] for seed in range(4000)]
    mean = sum(values) / len(values)
    assert mean == pytest.approx(0.012, abs=0.001)  # mean of 0..24 ms


@pytest.mark.parametrize(
    ("base", "max_interval", "intervals_ms"),
    [
        (0.1, 1.0, [100, 200, 400, 800, 1000, 1000]),
        (0.03, 0.3, [30, 60, 120, 240, 300, 300]),
        (0.001, 0.01, [1, 2, 4, 8, 10, 10]),
        (0.25, 0.25, [250, 250, 250, 250, 250, 250]),
    ],
)
def test_backoff_intervals_follow_envoy_doubling(
    base: float, max_interval: float, intervals_ms: list[int]
) -> None:
    p = policy("5xx", num_retries=6, base_interval=base, max_interval=max_interval)
    s = RetryState(p, clock=FakeClock(0.0), rng=MaxRandom())
    got = [round(s.on_outcome(R(503)).backoff * 1000) for _ in range(6)]
    assert got == [i - 1 for i in intervals_ms]


def test_backoff_from_route_backoff_field() -> None:
    p = RetryPolicy.from_route(HTTPRetry(attempts=3, retry_on="5xx", backoff=Duration.of(0.2)))
    assert p is not None
    s = RetryState(p, clock=FakeClock(0.0), rng=MaxRandom())
    assert [round(s.on_outcome(R(503)).backoff * 1000) for _ in range(3)] == [199, 399, 799]


def test_seeded_backoffs_are_reproducible() -> None:
    p = policy("5xx", num_retries=4)
    assert _backoffs(p, 4, 7) == _backoffs(p, 4, 7)


# -- hosts (previous_hosts predicate) ------------------------------------------------------


def test_previous_hosts_tracking() -> None:
    s = state(policy("5xx"))
    assert s.avoid == frozenset()
    s.record_host("10.0.0.1:80")
    assert s.on_outcome(R(503)).retry
    assert s.avoid == {"10.0.0.1:80"}
    assert s.should_select_another("10.0.0.1:80")
    assert not s.should_select_another("10.0.0.2:80")
    s.record_host("10.0.0.2:80")
    assert s.avoid == {"10.0.0.1:80", "10.0.0.2:80"}
    assert s.tried == {"10.0.0.1:80", "10.0.0.2:80"}
    assert s.host_selection_max_attempts == 5


def test_without_previous_hosts_nothing_is_avoided() -> None:
    s = state(policy("5xx", previous_hosts=False))
    s.record_host("a")
    assert s.tried == {"a"}
    assert s.avoid == frozenset()
    assert not s.should_select_another("a")
