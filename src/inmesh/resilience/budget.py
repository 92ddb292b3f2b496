"""Cluster retry admission: Envoy's ``max_retries`` circuit breaker or retry budget.

One :class:`RetryAdmission` per upstream cluster, shared by every request of
the process (thread-safe, O(1)). A retry takes a slot with
:meth:`RetryAdmission.try_acquire` just before its back-off starts and gives
it back with :meth:`RetryAdmission.release` when that retry attempt ends, on
every path. A refused retry is not made: the current failure is returned
with flag ``UO`` (istio-semantics.md §1.5, §2.5).

Confirmed in source:

* Istio ``pilot/pkg/networking/core/cluster_traffic_policy.go``
  (``applyConnectionPool``, ``applyRetryBudget``; istio/istio 86c9f01f):
  every cluster gets ``max_retries`` 2^32-1 unless ``http.maxRetries > 0``
  (0 cannot be expressed); a ``trafficPolicy.retryBudget`` adds Envoy's
  ``retry_budget`` with ``budget_percent`` 20 unless ``percent`` is set,
  ``min_retry_concurrency`` 3 unless set ``> 0``, and ``budget_interval``
  passed through (unset means 0). The budget applies with or without a
  ``connectionPool`` block (an empty one is substituted).
* Envoy ``source/common/upstream/resource_manager_impl.h``
  (``RetryBudgetImpl``): with a budget, ``max_retries`` is ignored and a
  retry may start while the outstanding retries are below
  ``max(uint64(percent / 100 * N), min_retry_concurrency)``. With
  ``budget_interval`` 0, N = active requests + pending requests of the
  cluster; otherwise N = upstream requests started during the last
  ``budget_interval``, counted in 10 slots (Envoy counts every increment of
  the cluster's request resource, so retries too). Without a budget a retry
  may start while outstanding retries are below ``max_retries``.
* Envoy ``source/common/router/retry_state_impl.cc`` (``shouldRetry``,
  ``resetRetry``): the slot is taken when the retry is scheduled and given
  back when the retry fires or the request ends.

inmesh's window is its own simple design (10 buckets keyed by absolute slot
number) with the same meaning as Envoy's; the window is only kept when
``budget_interval > 0``, and then :meth:`RetryAdmission.note_request` must be
called for every upstream request (attempt) sent to the cluster.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from inmesh._clock import MONOTONIC, Clock

if TYPE_CHECKING:
    from inmesh.config.resources.destination_rule import RetryBudget

__all__ = ["DEFAULT_MAX_RETRIES", "RetryAdmission"]

DEFAULT_MAX_RETRIES = 2**32 - 1
"""Istio's ``max_retries`` on every cluster (effectively unlimited)."""
DEFAULT_BUDGET_PERCENT = 20.0
DEFAULT_MIN_RETRY_CONCURRENCY = 3
_WINDOWS = 10


class RetryAdmission:
    """Envoy's ``max_retries`` circuit breaker, or the retry budget when one is
    set (the budget then replaces ``max_retries``)."""

    __slots__ = (
        "_buckets",
        "_clock",
        "_lock",
        "_outstanding",
        "_slot",
        "_slot_ids",
        "budget_interval",
        "budget_percent",
        "max_retries",
        "min_retry_concurrency",
    )

    def __init__(
        self,
        *,
        max_retries: int | None = None,
        budget_percent: float | None = None,
        min_retry_concurrency: int = DEFAULT_MIN_RETRY_CONCURRENCY,
        budget_interval: float = 0.0,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.max_retries = DEFAULT_MAX_RETRIES if max_retries is None else max(0, max_retries)
        self.budget_percent = budget_percent
        """``None``: no budget, ``max_retries`` applies."""
        self.min_retry_concurrency = max(0, min_retry_concurrency)
        self.budget_interval = max(0.0, budget_interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._outstanding = 0
        self._slot = self.budget_interval / _WINDOWS
        self._buckets = [0] * _WINDOWS
        self._slot_ids = [-1] * _WINDOWS

    @classmethod
    def from_policy(
        cls,
        max_retries: int | None,
        budget: RetryBudget | None,
        *,
        clock: Clock = MONOTONIC,
    ) -> RetryAdmission:
        """From DR ``connectionPool.http.maxRetries`` and ``trafficPolicy.retryBudget``
        with Istio's defaults (``maxRetries`` unset or ``<= 0``: 2^32-1)."""
        limit = max_retries if max_retries is not None and max_retries > 0 else None
        if budget is None:
            return cls(max_retries=limit, clock=clock)
        percent = DEFAULT_BUDGET_PERCENT if budget.percent is None else budget.percent
        concurrency = budget.min_retry_concurrency or DEFAULT_MIN_RETRY_CONCURRENCY
        interval = budget.budget_interval.seconds if budget.budget_interval is not None else 0.0
        return cls(
            max_retries=limit,
            budget_percent=percent,
            min_retry_concurrency=concurrency,
            budget_interval=interval,
            clock=clock,
        )

    @property
    def uses_budget(self) -> bool:
        return self.budget_percent is not None

    @property
    def outstanding(self) -> int:
        """Retries admitted and not yet released."""
        return self._outstanding

    def _window_sum(self, now: float) -> int:
        current = int(now // self._slot)
        total = 0
        for i in range(_WINDOWS):
            if current - self._slot_ids[i] < _WINDOWS:
                total += self._buckets[i]
        return total

    def _limit(self, active_requests: int) -> int:
        if self.budget_percent is None:
            return self.max_retries
        if self.budget_interval > 0:
            base = self._window_sum(self._clock.now())
        else:
            base = max(0, active_requests)
        return max(int(self.budget_percent / 100.0 * base), self.min_retry_concurrency)

    def limit(self, active_requests: int = 0) -> int:
        """How many retries may be outstanding now.

        ``active_requests``: the cluster's active plus pending upstream
        requests (used by a budget with ``budget_interval`` 0 only).
        """
        with self._lock:
            return self._limit(active_requests)

    def note_request(self) -> None:
        """Count one upstream request started (only kept with ``budget_interval > 0``)."""
        if self.budget_percent is None or self.budget_interval <= 0:
            return
        slot_id = int(self._clock.now() // self._slot)
        i = slot_id % _WINDOWS
        with self._lock:
            if self._slot_ids[i] != slot_id:
                self._slot_ids[i] = slot_id
                self._buckets[i] = 0
            self._buckets[i] += 1

    def try_acquire(self, active_requests: int = 0) -> bool:
        """Admit one retry (counted as outstanding) or refuse it (flag ``UO``)."""
        with self._lock:
            if self._outstanding >= self._limit(active_requests):
                return False
            self._outstanding += 1
            return True

    def release(self) -> None:
        """The admitted retry attempt finished (any path)."""
        with self._lock:
            if self._outstanding > 0:
                self._outstanding -= 1
