"""Envoy's outlier detection (consecutive errors) as Istio configures it, sans I/O.

One :class:`OutlierDetector` per upstream cluster, shared by every request of
the process (thread-safe, one lock). The transports report each attempt's
:class:`~inmesh.resilience.outcome.Outcome` with :meth:`OutlierDetector.report`;
the detector flips ``host.healthy`` when it ejects or brings back a host, and
the load balancer simply skips unhealthy hosts (or uses all of them in panic
mode, see :attr:`OutlierConfig.min_health_percent`).

Confirmed in source
-------------------

Istio, ``pilot/pkg/networking/core/cluster_traffic_policy.go`` (istio/istio
86c9f01f, Aug 2026), ``applyOutlierDetection``:

* outlier detection exists only when the DestinationRule has the block;
  success-rate detection is switched off (``enforcing_success_rate: 0``);
* ``consecutive5xxErrors`` -> ``consecutive_5xx`` (enforced 100% when > 0,
  0 disables it); unset leaves Envoy's default: 5, enforced;
* ``consecutiveGatewayErrors`` -> ``consecutive_gateway_failure`` (enforced
  when > 0); unset leaves Envoy's ``enforcing_consecutive_gateway_failure``
  default of 0, so gateway detection is off;
* ``consecutiveErrors`` (deprecated) is not translated at all;
* ``interval`` / ``baseEjectionTime`` are passed when set (Envoy defaults
  10s / 30s); ``maxEjectionPercent`` only when > 0 (Envoy default 10);
* ``splitExternalLocalOriginErrors`` -> same; ``consecutiveLocalOriginFailures``
  only when > 0 (else Envoy's default 5, enforced 100%);
* ``minHealthPercent`` always becomes the cluster's ``healthy_panic_threshold``
  (unset = 0 = panic mode off);
* ``outlierDetectionHttpErrorCodes`` -> an HTTP protocol options error matcher
  on ``:status`` (``applyOutlierDetectionErrorCodes``).

Envoy, ``source/common/upstream/outlier_detection_impl.{h,cc}``:

* ``putHttpResponseCode``: a 5xx increments the 5xx counter; 502/503/504 also
  increment the gateway counter, other 5xx reset it; anything else resets
  both. A detection fires when a counter becomes *equal* to its threshold.
* ``putResultNoLocalExternalSplit``: without split mode local failures become
  HTTP codes: connection failure 503, timeout 504 (``resultToHttpCode``; the
  router passes its timeout response code, 504).
* ``putResultWithLocalExternalSplit``: in split mode local failures feed only
  the local-origin counter and a successful connection resets it.
* ``onConsecutiveErrorWorker``: a detection on an already ejected host is
  dropped (its counter is *not* reset); otherwise ``ejectHost`` runs and the
  counter that fired is reset whether or not the host was ejected.
* ``ejectHost``: see the max ejection percent rule below; on ejection
  ``num_ejections`` += 1 and the back-off multiplier grows while
  ``multiplier * base < max_ejection_time + base``.
* ``checkHostForUneject`` / ``onIntervalTimer``: on every interval tick a host
  ejected for ``min(base * multiplier, max_ejection_time)`` (no jitter: Istio
  leaves ``max_ejection_time_jitter`` at 0) comes back and all its counters
  are reset; healthy hosts whose last un-ejection is at least one interval old
  get their multiplier decremented once per tick.
* ``DetectorConfig``: ``max_ejection_time`` defaults to
  ``max(300s, base_ejection_time)``; defaults 5 / 5 (not enforced) / 5 for
  5xx / gateway / local origin, 10s interval, 30s base, 10%.

Envoy router (``source/common/router/router.cc``, ``upstream_request.cc``):
every upstream reset reports ``LocalOriginConnectFailed`` (503 when not split),
except circuit-breaker overflow, which is never reported (envoy#25487); a
per-try or global timeout reports ``LocalOriginTimeout`` with code 504; a
stream that got a connection first reports ``LocalOriginConnectSuccess``
(``onPoolReady``); a response with ``grpc-status`` in its headers (gRPC
requests) is reported as ``grpcToHttpStatus(grpc-status)``
(``source/common/grpc/status.cc``).

The max ejection percent rule
-----------------------------

inmesh follows current Envoy (the rule came with Envoy 1.28, release notes
v1.28.0, behind ``envoy.reloadable_features.check_mep_on_first_eject``;
envoy#33657 removed the guard in 2024; ``ejectHost`` above is that code, and
Istio at 86c9f01f builds against the Envoy 1.37 API generation
(``go.mod``: go-control-plane/envoy v1.37.1), so this is what a sidecar runs in
Aug 2026): a host may be ejected
only if ``100 * (ejected_now + 1) / hosts <= max_ejection_percent`` (capped
at 100). Istio never sets ``always_eject_one_host``, so with the default 10%
a cluster of fewer than ten hosts never ejects anything. Older Envoy compared
``100 * ejected_now / hosts < max`` and so always allowed one ejection.
Example: three hosts, ``maxEjectionPercent: 50``: the first ejection gives
33% (allowed), a second would give 67% (refused, counted in
``ejections_overflow``).

Modelling choices
-----------------

* Timer: Envoy's interval timer starts with the detector. Here ticks are at
  ``created + k * interval`` and are applied lazily (:meth:`~OutlierDetector.
  maybe_sweep`, also called by :meth:`~OutlierDetector.report` and
  :meth:`~OutlierDetector.set_hosts`); missed ticks are applied in closed form,
  per watched host, at their own tick times. Un-ejection therefore happens at
  the first tick at or after the ejection time has elapsed.
* Split mode: Envoy resets the local-origin counter when a stream gets its
  connection. Failures that happen after that (``RESET``,
  ``RESET_BEFORE_REQUEST``, ``PER_TRY_TIMEOUT``, ``REFUSED_STREAM``) therefore
  count as one connect success followed by one local failure, so with
  ``consecutiveLocalOriginFailures`` > 1 only connect failures and connect
  timeouts can eject in split mode. This is Envoy's real behaviour and is kept.
* ``outlierDetectionHttpErrorCodes``: reproduced from Envoy's router outlier
  test (``OverwriteCodeBasedOnMatcher``): a listed status counts as itself when
  it is a 5xx and as 500 otherwise; an unlisted status counts as 200. How the
  newest router combines the matcher with gRPC statuses and with split mode is
  **unconfirmed**; here the matcher wins and the result feeds the 5xx/gateway
  counters in both modes.
* Reports for hosts not given to :meth:`~OutlierDetector.set_hosts` are
  ignored (Envoy drops results for hosts removed from the cluster).
* Not modelled: success-rate and failure-percentage detection (Istio disables
  them), ejection jitter (0 in Istio), active health checks, the
  ``ForcesSupportUnhealthyEndpoints`` override of the panic threshold.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from inmesh.resilience.outcome import Failure, Outcome

if TYPE_CHECKING:
    from inmesh._clock import Clock
    from inmesh.config.resources.destination_rule import OutlierDetection

__all__ = [
    "DEFAULT_BASE_EJECTION_TIME",
    "DEFAULT_CONSECUTIVE_5XX",
    "DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES",
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_EJECTION_PERCENT",
    "DEFAULT_MAX_EJECTION_TIME",
    "EjectionType",
    "HostLike",
    "HostOutlierState",
    "OutlierConfig",
    "OutlierDetector",
    "OutlierStats",
    "grpc_to_http_status",
]

DEFAULT_CONSECUTIVE_5XX = 5
DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES = 5
DEFAULT_INTERVAL = 10.0
DEFAULT_BASE_EJECTION_TIME = 30.0
DEFAULT_MAX_EJECTION_PERCENT = 10
DEFAULT_MAX_EJECTION_TIME = 300.0

_EPS = 1e-9

# Envoy Grpc::Utility::grpcToHttpStatus; anything else (invalid) -> 500.
_GRPC_TO_HTTP: dict[int, int] = {
    0: 200,  # OK
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}

# Failures that happen after the stream got its connection (Envoy reported
# LocalOriginConnectSuccess for them first).
_AFTER_CONNECT = frozenset(
    {Failure.RESET_BEFORE_REQUEST, Failure.RESET, Failure.PER_TRY_TIMEOUT, Failure.REFUSED_STREAM}
)


def grpc_to_http_status(grpc_status: int) -> int:
    """The HTTP status Envoy's outlier detection sees for a ``grpc-status``."""
    return _GRPC_TO_HTTP.get(grpc_status, 500)


class HostLike(Protocol):
    """What the detector needs from a host: a mutable ``healthy`` flag."""

    healthy: bool


H = TypeVar("H", bound=HostLike)


class EjectionType(str, enum.Enum):
    """Why a host was ejected (Envoy's ``OutlierEjectionType``, consecutive kinds)."""

    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"


def _threshold(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _seconds(duration: object, default: float) -> float:
    seconds = getattr(duration, "seconds", None)
    return float(seconds) if seconds is not None else default


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """The outlier detection Envoy runs for one cluster, after Istio's translation.

    Thresholds are ``None`` when that detection is off (0 or not enforced).
    Times are in seconds. ``max_ejection_time`` ``None`` means Envoy's default,
    ``max(300s, base_ejection_time)`` (Istio never sets it).
    ``http_error_codes``: ``outlierDetectionHttpErrorCodes`` (empty: 5xx rule).
    ``min_health_percent`` is the panic threshold for the load balancer (0:
    never panic; ejected hosts are then never used).
    """

    consecutive_5xx: int | None = DEFAULT_CONSECUTIVE_5XX
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool = False
    interval: float = DEFAULT_INTERVAL
    base_ejection_time: float = DEFAULT_BASE_EJECTION_TIME
    max_ejection_percent: int = DEFAULT_MAX_EJECTION_PERCENT
    min_health_percent: int = 0
    max_ejection_time: float | None = None
    http_error_codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"outlier detection interval must be > 0, got {self.interval!r}")
        if self.base_ejection_time < 0:
            raise ValueError("base_ejection_time must be >= 0")
        if self.max_ejection_time is not None and self.max_ejection_time < self.base_ejection_time:
            # Envoy refuses such a cluster (DetectorImpl::create).
            raise ValueError("max_ejection_time cannot be smaller than base_ejection_time")

    @property
    def effective_max_ejection_time(self) -> float:
        if self.max_ejection_time is not None:
            return self.max_ejection_time
        return max(DEFAULT_MAX_EJECTION_TIME, self.base_ejection_time)

    @classmethod
    def from_settings(cls, od: OutlierDetection) -> OutlierConfig:
        """Istio's ``applyOutlierDetection`` on top of Envoy's defaults."""
        c5 = od.consecutive_5xx_errors
        consecutive_5xx = DEFAULT_CONSECUTIVE_5XX if c5 is None else _threshold(c5)
        split = bool(od.split_external_local_origin_errors)
        local: int | None = None
        if split:
            local = _threshold(od.consecutive_local_origin_failures)
            if local is None:
                local = DEFAULT_CONSECUTIVE_LOCAL_ORIGIN_FAILURES
        mep = od.max_ejection_percent
        if mep is None or mep <= 0:
            mep = DEFAULT_MAX_EJECTION_PERCENT
        mhp = od.min_health_percent
        codes = getattr(od, "outlier_detection_http_error_codes", ()) or ()
        return cls(
            consecutive_5xx=consecutive_5xx,
            consecutive_gateway_errors=_threshold(od.consecutive_gateway_errors),
            consecutive_local_origin_failures=local,
            split_external_local_origin_errors=split,
            interval=_seconds(od.interval, DEFAULT_INTERVAL),
            base_ejection_time=_seconds(od.base_ejection_time, DEFAULT_BASE_EJECTION_TIME),
            max_ejection_percent=mep,
            min_health_percent=mhp if mhp is not None and mhp > 0 else 0,
            http_error_codes=frozenset(int(c) for c in codes),
        )


@dataclass(frozen=True, slots=True)
class OutlierStats:
    """Counters (since creation) and gauges, named after Envoy's ``outlier_detection.*``.

    ``ejections_total`` counts enforced ejections of every kind
    (``ejections_enforced_total``); ``ejections_overflow`` counts ejections
    refused by ``max_ejection_percent``; ``ejected_now`` is
    ``ejections_active``; ``reports_ignored`` counts OVERFLOW outcomes and
    reports for unknown hosts.
    """

    ejections_total: int
    ejections_consecutive_5xx: int
    ejections_consecutive_gateway_failure: int
    ejections_consecutive_local_origin_failure: int
    ejections_overflow: int
    ejected_now: int
    hosts: int
    reports_ignored: int


@dataclass(frozen=True, slots=True)
class HostOutlierState:
    """A snapshot of one host's detector state (for admin output and tests)."""

    consecutive_5xx: int
    consecutive_gateway_errors: int
    consecutive_local_origin_failures: int
    ejected: bool
    ejections: int
    ejection_multiplier: int
    ejected_until: float | None


class _State:
    __slots__ = (
        "backoff",
        "c5xx",
        "ejected",
        "ejected_at",
        "gateway",
        "host",
        "last_unejected_at",
        "local",
        "num_ejections",
    )

    def __init__(self, host: HostLike) -> None:
        self.host = host
        self.c5xx = 0
        self.gateway = 0
        self.local = 0
        self.ejected = False
        self.ejected_at = 0.0
        self.num_ejections = 0
        self.backoff = 0
        self.last_unejected_at: float | None = None


class OutlierDetector(Generic[H]):
    """Per cluster. Process-wide, thread-safe (a lock), O(1) per report.

    Call :meth:`set_hosts` with every host of the cluster (all subsets and
    priorities: Envoy's percentage is over all of them) and again on each
    reload; :meth:`report` after every attempt; :meth:`maybe_sweep` on the
    pick path (a cheap time check) so hosts come back without traffic to them.
    """

    __slots__ = (
        "_anchor",
        "_clock",
        "_ejected_count",
        "_lock",
        "_n_5xx",
        "_n_gateway",
        "_n_ignored",
        "_n_local",
        "_n_overflow",
        "_next_index",
        "_next_tick_at",
        "_states",
        "_watch",
        "config",
    )

    def __init__(self, config: OutlierConfig, *, clock: Clock, hosts: Iterable[H] = ()) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[int, _State] = {}
        self._watch: dict[int, _State] = {}  # ejected, or multiplier still > 0
        self._ejected_count = 0
        self._n_5xx = 0
        self._n_gateway = 0
        self._n_local = 0
        self._n_overflow = 0
        self._n_ignored = 0
        self._anchor = clock.now()
        self._next_index = 1
        self._next_tick_at = self._anchor + config.interval
        for host in hosts:
            self._states[id(host)] = _State(host)

    # ------------------------------------------------------------------ hosts

    def set_hosts(self, hosts: Sequence[H]) -> None:
        """Replace the cluster's hosts: hosts still present (same object) keep
        their counters and ejection; others are forgotten."""
        with self._lock:
            self._sweep_locked(self._clock.now())
            old = self._states
            new: dict[int, _State] = {}
            for host in hosts:
                key = id(host)
                st = old.get(key)
                new[key] = st if st is not None and st.host is host else _State(host)
            self._states = new
            self._watch = {k: s for k, s in self._watch.items() if new.get(k) is s}
            self._ejected_count = sum(1 for s in self._watch.values() if s.ejected)

    @property
    def hosts(self) -> list[H]:
        with self._lock:
            return cast("list[H]", [s.host for s in self._states.values()])

    # ---------------------------------------------------------------- reports

    def report(self, host: H, outcome: Outcome) -> None:
        """Feed one attempt's outcome for ``host``; may eject it right away."""
        if outcome.failure is Failure.OVERFLOW:
            with self._lock:
                self._n_ignored += 1
            return
        with self._lock:
            now = self._clock.now()
            self._sweep_locked(now)
            st = self._states.get(id(host))
            if st is None or st.host is not host:
                self._n_ignored += 1
                return
            failure = outcome.failure
            if not self.config.split_external_local_origin_errors:
                if failure is None:
                    self._put_code(st, self._response_code(outcome), now)
                elif failure is Failure.PER_TRY_TIMEOUT:
                    self._put_code(st, 504, now)
                else:
                    self._put_code(st, 503, now)
                return
            if failure is None:
                st.local = 0  # the stream got a connection
                self._put_code(st, self._response_code(outcome), now)
                return
            if failure in _AFTER_CONNECT:
                st.local = 0  # onPoolReady came first
            st.local += 1
            if st.local == self.config.consecutive_local_origin_failures:
                self._on_consecutive(st, EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE, now)

    def _response_code(self, outcome: Outcome) -> int:
        status = outcome.status if outcome.status is not None else 200
        codes = self.config.http_error_codes
        if codes:
            if status in codes:
                return status if 500 <= status < 600 else 500
            return 200
        if outcome.grpc_status is not None:
            return grpc_to_http_status(outcome.grpc_status)
        return status

    def _put_code(self, st: _State, code: int, now: float) -> None:
        cfg = self.config
        if 500 <= code < 600:
            gateway_fired = False
            if 502 <= code <= 504:
                st.gateway += 1
                gateway_fired = st.gateway == cfg.consecutive_gateway_errors
            else:
                st.gateway = 0
            st.c5xx += 1
            c5xx_fired = st.c5xx == cfg.consecutive_5xx
            # Envoy posts the gateway detection first, then the 5xx one.
            if gateway_fired:
                self._on_consecutive(st, EjectionType.CONSECUTIVE_GATEWAY_FAILURE, now)
            if c5xx_fired:
                self._on_consecutive(st, EjectionType.CONSECUTIVE_5XX, now)
        else:
            st.c5xx = 0
            st.gateway = 0

    def _on_consecutive(self, st: _State, kind: EjectionType, now: float) -> None:
        if st.ejected:
            return  # Envoy drops it without resetting the counter
        self._eject(st, kind, now)
        if kind is EjectionType.CONSECUTIVE_5XX:
            st.c5xx = 0
        elif kind is EjectionType.CONSECUTIVE_GATEWAY_FAILURE:
            st.gateway = 0
        else:
            st.local = 0

    def _eject(self, st: _State, kind: EjectionType, now: float) -> None:
        cfg = self.config
        max_percent = min(100, cfg.max_ejection_percent)
        ejected_percent = 100.0 * (self._ejected_count + 1) / len(self._states)
        if ejected_percent > max_percent:
            self._n_overflow += 1
            return
        st.ejected = True
        st.ejected_at = now
        st.num_ejections += 1
        base = cfg.base_ejection_time
        if st.backoff * base < cfg.effective_max_ejection_time + base:
            st.backoff += 1
        st.host.healthy = False
        self._ejected_count += 1
        self._watch[id(st.host)] = st
        if kind is EjectionType.CONSECUTIVE_5XX:
            self._n_5xx += 1
        elif kind is EjectionType.CONSECUTIVE_GATEWAY_FAILURE:
            self._n_gateway += 1
        else:
            self._n_local += 1

    # ------------------------------------------------------------------ timer

    @property
    def next_sweep_at(self) -> float:
        """Clock time of the next interval tick not yet applied."""
        return self._next_tick_at

    def maybe_sweep(self) -> None:
        """Apply due interval ticks; a lock-free time check when none is due."""
        if self._clock.now() < self._next_tick_at:
            return
        self.sweep()

    def sweep(self) -> None:
        """Apply every interval tick up to now: hosts whose ejection time has
        elapsed at a tick come back (``healthy = True``, counters reset) and
        healthy hosts' ejection multipliers decrease once per tick."""
        with self._lock:
            self._sweep_locked(self._clock.now())

    def _tick_time(self, index: int) -> float:
        return self._anchor + index * self.config.interval

    def _first_tick_at_or_after(self, t: float) -> int:
        return math.ceil((t - self._anchor) / self.config.interval - _EPS)

    def _sweep_locked(self, now: float) -> None:
        if now < self._next_tick_at:
            return
        interval = self.config.interval
        last = math.floor((now - self._anchor) / interval + _EPS)
        first = self._next_index
        if last < first:
            return
        self._next_index = last + 1
        self._next_tick_at = self._tick_time(last + 1)
        if not self._watch:
            return
        cfg = self.config
        max_time = cfg.effective_max_ejection_time
        done: list[int] = []
        for key, st in self._watch.items():
            start = first
            if st.ejected:
                deadline = st.ejected_at + min(cfg.base_ejection_time * st.backoff, max_time)
                u = max(first, self._first_tick_at_or_after(deadline))
                if u > last:
                    continue
                st.ejected = False
                st.c5xx = st.gateway = st.local = 0
                st.last_unejected_at = self._tick_time(u)
                st.host.healthy = True
                self._ejected_count -= 1
                start = u + 1
            if st.backoff > 0 and st.last_unejected_at is not None:
                eligible = self._first_tick_at_or_after(st.last_unejected_at + interval)
                ticks = last - max(start, eligible) + 1
                if ticks > 0:
                    st.backoff = max(0, st.backoff - ticks)
            if st.backoff == 0:
                done.append(key)
        for key in done:
            del self._watch[key]

    # ------------------------------------------------------------ inspection

    def ejected(self) -> list[H]:
        """The hosts ejected right now."""
        with self._lock:
            self._sweep_locked(self._clock.now())
            return cast("list[H]", [s.host for s in self._watch.values() if s.ejected])

    def is_ejected(self, host: H) -> bool:
        with self._lock:
            self._sweep_locked(self._clock.now())
            st = self._states.get(id(host))
            return st is not None and st.host is host and st.ejected

    def host_state(self, host: H) -> HostOutlierState | None:
        """A snapshot of ``host``'s counters and ejection, ``None`` if unknown."""
        with self._lock:
            self._sweep_locked(self._clock.now())
            st = self._states.get(id(host))
            if st is None or st.host is not host:
                return None
            until = None
            if st.ejected:
                span = min(
                    self.config.base_ejection_time * st.backoff,
                    self.config.effective_max_ejection_time,
                )
                until = st.ejected_at + span
            return HostOutlierState(
                consecutive_5xx=st.c5xx,
                consecutive_gateway_errors=st.gateway,
                consecutive_local_origin_failures=st.local,
                ejected=st.ejected,
                ejections=st.num_ejections,
                ejection_multiplier=st.backoff,
                ejected_until=until,
            )

    def stats(self) -> OutlierStats:
        with self._lock:
            self._sweep_locked(self._clock.now())
            return OutlierStats(
                ejections_total=self._n_5xx + self._n_gateway + self._n_local,
                ejections_consecutive_5xx=self._n_5xx,
                ejections_consecutive_gateway_failure=self._n_gateway,
                ejections_consecutive_local_origin_failure=self._n_local,
                ejections_overflow=self._n_overflow,
                ejected_now=self._ejected_count,
                hosts=len(self._states),
                reports_ignored=self._n_ignored,
            )
