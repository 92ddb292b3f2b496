"""RetryAdmission: max_retries circuit breaker and retry budget."""

from __future__ import annotations

import threading

import pytest

from inmesh.config.resources._common import Duration
from inmesh.config.resources.destination_rule import RetryBudget
from inmesh.resilience.budget import DEFAULT_MAX_RETRIES, RetryAdmission


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def test_istio_default_is_effectively_unlimited() -> None:
    adm = RetryAdmission.from_policy(None, None)
    assert not adm.uses_budget
    assert adm.max_retries == DEFAULT_MAX_RETRIES == 2**32 - 1
    assert all(adm.try_acquire(0) for _ in range(1000))
    assert adm.outstanding == 1000


@pytest.mark.parametrize("value", [0, -3])
def test_max_retries_zero_or_negative_means_default(value: int) -> None:
    assert RetryAdmission.from_policy(value, None).max_retries == DEFAULT_MAX_RETRIES


def test_max_retries_limits_concurrent_retries() -> None:
    adm = RetryAdmission.from_policy(2, None)
    assert adm.try_acquire(100)
    assert adm.try_acquire(100)
    assert not adm.try_acquire(100)
    assert adm.outstanding == 2
    adm.release()
    assert adm.outstanding == 1
    assert adm.try_acquire(100)
    assert not adm.try_acquire(0)


def test_release_never_goes_negative() -> None:
    adm = RetryAdmission(max_retries=1)
    adm.release()
    assert adm.outstanding == 0
    assert adm.try_acquire()
    assert not adm.try_acquire()


def test_budget_defaults() -> None:
    adm = RetryAdmission.from_policy(None, RetryBudget())
    assert adm.uses_budget
    assert adm.budget_percent == 20.0
    assert adm.min_retry_concurrency == 3
    assert adm.budget_interval == 0.0
    zero = RetryAdmission.from_policy(None, RetryBudget(min_retry_concurrency=0))
    assert zero.min_retry_concurrency == 3


@pytest.mark.parametrize(
    ("active", "limit"),
    [(0, 3), (1, 3), (10, 3), (19, 3), (20, 4), (24, 4), (25, 5), (100, 20), (1000, 200)],
)
def test_budget_limit_is_percent_of_active_with_min_concurrency(active: int, limit: int) -> None:
    adm = RetryAdmission(budget_percent=20.0, min_retry_concurrency=3)
    assert adm.limit(active) == limit


def test_budget_percent_zero_leaves_min_concurrency() -> None:
    adm = RetryAdmission.from_policy(None, RetryBudget(percent=0.0, min_retry_concurrency=7))
    assert adm.limit(10_000) == 7


def test_budget_replaces_max_retries() -> None:
    adm = RetryAdmission.from_policy(1, RetryBudget(percent=50.0, min_retry_concurrency=1))
    assert adm.max_retries == 1
    assert [adm.try_acquire(10) for _ in range(6)] == [True] * 5 + [False]
    # fewer active requests: the limit shrinks, outstanding retries stay
    assert not adm.try_acquire(2)
    assert adm.outstanding == 5
    for _ in range(5):
        adm.release()
    assert adm.try_acquire(2)


def test_budget_acquire_uses_current_active_requests() -> None:
    adm = RetryAdmission(budget_percent=10.0, min_retry_concurrency=1)
    assert adm.try_acquire(5)  # limit 1
    assert not adm.try_acquire(5)
    assert adm.try_acquire(20)  # limit 2
    assert not adm.try_acquire(20)


def test_budget_interval_counts_requests_in_window() -> None:
    clock = FakeClock(1000.0)
    adm = RetryAdmission.from_policy(
        None,
        RetryBudget(percent=20.0, min_retry_concurrency=3, budget_interval=Duration.of(10)),
        clock=clock,
    )
    assert adm.budget_interval == 10.0
    assert adm.limit(10_000) == 3  # active requests are not used with a window
    for _ in range(50):
        adm.note_request()
    assert adm.limit() == 10
    clock.t += 5
    for _ in range(50):
        adm.note_request()
    assert adm.limit() == 20
    clock.t += 6  # the first 50 are older than 10 s now
    assert adm.limit() == 10
    clock.t += 10
    assert adm.limit() == 3
    for _ in range(100):
        adm.note_request()
    assert adm.limit() == 20


def test_note_request_is_noop_without_window() -> None:
    adm = RetryAdmission(budget_percent=20.0)
    adm.note_request()
    assert adm.limit(0) == 3
    RetryAdmission(max_retries=3).note_request()


def test_thread_safety_smoke() -> None:
    limit = 5
    adm = RetryAdmission(max_retries=limit)
    lock = threading.Lock()
    held = 0
    peak = 0
    admitted = 0

    def worker() -> None:
        nonlocal held, peak, admitted
        for _ in range(3000):
            if adm.try_acquire(0):
                with lock:
                    held += 1
                    admitted += 1
                    peak = max(peak, held)
                with lock:
                    held -= 1
                adm.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert adm.outstanding == 0
    assert 0 < peak <= limit
    assert admitted > 0


def test_thread_safety_budget_never_exceeds_limit() -> None:
    adm = RetryAdmission(budget_percent=20.0, min_retry_concurrency=3)
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        ok = adm.try_acquire(50)  # limit 10
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 10
    assert adm.outstanding == 10
