"""Route retry policy and per-request retry state, sans I/O (istio-semantics.md §1.5, §6.4).

:class:`RetryPolicy` is what Istio writes into the Envoy route for a
``VirtualService`` ``retries`` block; :class:`RetryState` is Envoy's
per-request retry state machine. The transport drives it::

    state = RetryState(policy, clock=clock, rng=rng, deadline=deadline_at)
    while True:
        host = balancer.pick(avoid=state.avoid, ...); state.record_host(host)
        outcome = ...send attempt number state.attempt (x-envoy-attempt-count)...
        decision = state.on_outcome(outcome, replayable=..., budget_ok=admission_cb)
        if not decision.retry:
            break        # decision.exhausted -> flag URX, decision.overflow -> flag UO
        sleep(decision.backoff)

Nothing here sleeps, reads the time or draws random numbers except through
the injected :class:`~inmesh._clock.Clock` and :class:`~inmesh._clock.Random`.

Confirmed in source (istio/istio 86c9f01f, Envoy main as stored in the index):

* Istio translation, ``pilot/pkg/networking/core/route/retry/retry.go``
  (``ConvertPolicy``, ``parseRetryOn``): no ``retries`` block gives the
  default policy (2 retries, ``connect-failure,refused-stream,unavailable,
  cancelled,retriable-status-codes``, ``host_selection_retry_max_attempts``
  5, ``previous_hosts`` predicate unless the destination uses consistent
  hashing); ``attempts <= 0`` (an unset ``attempts`` is 0 in proto) gives
  no policy; ``retryOn`` is split on ``,``, trimmed, and every part that
  ``strconv.Atoi`` reads as a code Go's ``http.StatusText`` knows becomes a
  retriable status code, with ``retriable-status-codes`` appended when
  missing; a set ``retryOn`` replaces the default tokens;
  ``retryIgnorePreviousHosts`` (when set) decides the predicate even for
  consistent-hash destinations; ``backoff`` becomes ``base_interval``.
* Envoy ``source/common/router/retry_state_impl.cc``
  (``wouldRetryFromHeaders``, ``wouldRetryFromReset``, ``shouldRetry``) and
  ``source/common/router/router.cc`` (``maybeRetryReset``,
  ``onPerTryTimeoutCommon``):

  - a response with ``x-envoy-ratelimited`` is retried only under
    ``envoy-ratelimited`` and by no other token;
  - ``5xx``: status 500-599; ``gateway-error``: 502-504; ``retriable-4xx``:
    409; ``retriable-status-codes``: the configured codes; gRPC tokens:
    ``grpc-status`` in the response *headers* (1 cancelled, 4
    deadline-exceeded, 8 resource-exhausted, 13 internal, 14 unavailable);
  - resets, in Envoy's order: overflow never; a connect failure or connect
    timeout under ``connect-failure``; any reset under
    ``reset-before-request`` if no request byte was sent yet (Envoy keeps a
    per-request sticky "upstream request started" flag, ORed in on each
    reset); any reset under ``reset``, ``5xx`` or ``gateway-error``;
    HTTP/2 REFUSED_STREAM under ``refused-stream``;
  - a per-try timeout is handled as a local reset
    (``maybeRetryReset(LocalReset)``), so it is retried under ``reset``,
    ``5xx`` and ``gateway-error`` (and ``reset-before-request`` only if no
    request byte had been sent; inferred as sent for a per-try timeout);
  - ``shouldRetry``: no retry wanted -> no; retries used up -> no, flag
    ``URX``; otherwise one retry is consumed, *then* the cluster's retry
    circuit breaker is asked -> no, flag ``UO``; otherwise retry after a
    back-off.
* Back-off: Envoy ``source/common/common/backoff_strategy.cc``
  (``JitteredExponentialBackOffStrategy``), created per request by
  ``RetryStateImpl`` with base 25 ms (runtime
  ``upstream.base_retry_backoff_ms``) or the route's ``base_interval`` and
  max 10 x base. The *interval* starts at base and doubles while it is
  below ``max / 2`` (integer ms), else becomes max; the wait is
  ``random() % interval`` ms. So the cap applies to the interval before
  jitter: retry n waits uniformly in ``[0, min(2**(n-1) * base, max))``,
  i.e. 0-24, 0-49, 0-99, 0-199, then 0-249 ms for base 25 ms. (The Envoy
  docs still describe the older strategy, ``[0, (2**n - 1) * base)``
  capped after jitter; the code is what runs.)

Decisions of inmesh:

* ``retriable-headers`` and ``http3-post-connect-failure`` are accepted and
  never match (Istio cannot configure header matchers; no HTTP/3).
* The retry is refused when ``clock.now() + backoff >= deadline`` (the
  route timeout would fire during the back-off, and Envoy answers 504
  ``UT`` then); this check runs *before* the admission callback so a
  refused retry never holds a circuit-breaker slot. Envoy would report
  ``UO`` if both the budget and the deadline refuse; inmesh reports the
  deadline.
* ``retry_remote_localities`` is carried but the ``previous_priorities``
  retry priority is not implemented here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inmesh._clock import Clock, Random
from inmesh.resilience.outcome import Failure, Outcome

if TYPE_CHECKING:
    from inmesh.config.resources.virtual_service import HTTPRetry

__all__ = [
    "DEFAULT_BASE_INTERVAL",
    "DEFAULT_RETRY_ON",
    "RETRY_ON_TOKENS",
    "RetryDecision",
    "RetryPolicy",
    "RetryState",
    "parse_retry_on",
]

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
"""Istio's retryOn when a route has no ``retries`` block (retry.go ``defaultRetryOn``)."""
DEFAULT_NUM_RETRIES = 2
DEFAULT_HOST_SELECTION_MAX_ATTEMPTS = 5
DEFAULT_BASE_INTERVAL = 0.025
"""Envoy's default back-off base (runtime ``upstream.base_retry_backoff_ms``: 25)."""

RETRY_ON_TOKENS = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
"""The tokens Istio validation accepts (pkg/config/validation/agent/validation.go)."""

_GRPC_TOKENS: tuple[tuple[int, str], ...] = (
    (1, "cancelled"),
    (4, "deadline-exceeded"),
    (8, "resource-exhausted"),
    (14, "unavailable"),
    (13, "internal"),
)

# Codes for which Go's net/http StatusText is non-empty (Go 1.22+ status.go);
# Istio's parseRetryOn only turns these integers into retriable status codes.
_GO_STATUS_CODES = frozenset(
    {100, 101, 102, 103}
    | set(range(200, 209))
    | {226}
    | {300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 419))
    | {421, 422, 423, 424, 425, 426, 428, 429, 431, 451}
    | set(range(500, 509))
    | {510, 511}
)

# Failures that mean no request byte reached the wire on that attempt.
_NOTHING_SENT = frozenset(
    {
        Failure.CONNECT_FAILURE,
        Failure.CONNECT_TIMEOUT,
        Failure.RESET_BEFORE_REQUEST,
        Failure.OVERFLOW,
    }
)
_CONNECT_FAILURES = frozenset({Failure.CONNECT_FAILURE, Failure.CONNECT_TIMEOUT})


def _go_atoi(text: str) -> int | None:
    """``strconv.Atoi``: optional sign, then ASCII digits only."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    return int(text)


def parse_retry_on(retry_on: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Split ``retryOn`` as Istio does: (tokens, status codes), in order.

    ``retriable-status-codes`` is appended when codes were found and the
    token is missing.
    """
    tokens: list[str] = []
    codes: list[int] = []
    for raw in retry_on.split(","):
        part = raw.strip()
        if not part:
            continue
        code = _go_atoi(part)
        if code is not None and code in _GO_STATUS_CODES:
            codes.append(code)
        else:
            tokens.append(part)
    if codes and "retriable-status-codes" not in tokens:
        tokens.append("retriable-status-codes")
    return tuple(tokens), tuple(codes)


def _bytes_sent(outcome: Outcome) -> bool:
    return outcome.failure not in _NOTHING_SENT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """An Envoy route retry policy as Istio configures it."""

    num_retries: int
    """Maximum retries; a request makes at most ``1 + num_retries`` attempts."""
    retry_on: frozenset[str]
    """Envoy ``retry_on`` tokens (unknown tokens are kept and never match)."""
    retriable_status_codes: frozenset[int] = frozenset()
    per_try_timeout: float | None = None
    """Seconds per attempt until response headers; ``None``: bounded by the route timeout."""
    previous_hosts: bool = True
    """The ``previous_hosts`` retry host predicate: avoid hosts already tried."""
    host_selection_max_attempts: int = DEFAULT_HOST_SELECTION_MAX_ATTEMPTS
    base_interval: float = DEFAULT_BASE_INTERVAL
    max_interval: float = DEFAULT_BASE_INTERVAL * 10
    retry_remote_localities: bool = False

    @classmethod
    def istio_default(cls, *, consistent_hash: bool = False) -> RetryPolicy:
        """The policy of a route without a ``retries`` block."""
        tokens, codes = parse_retry_on(DEFAULT_RETRY_ON)
        return cls(
            num_retries=DEFAULT_NUM_RETRIES,
            retry_on=frozenset(tokens),
            retriable_status_codes=frozenset(codes),
            previous_hosts=not consistent_hash,
        )

    @classmethod
    def from_route(
        cls, retries: HTTPRetry | None, *, consistent_hash: bool = False
    ) -> RetryPolicy | None:
        """Istio's ``ConvertPolicy``: ``None`` block -> default policy;
        ``attempts`` unset or ``<= 0`` -> ``None`` (no retries)."""
        if retries is None:
            return cls.istio_default(consistent_hash=consistent_hash)
        if retries.attempts is None or retries.attempts <= 0:
            return None
        tokens, codes = parse_retry_on(retries.retry_on or DEFAULT_RETRY_ON)
        previous_hosts = not consistent_hash
        if retries.retry_ignore_previous_hosts is not None:
            previous_hosts = retries.retry_ignore_previous_hosts
        per_try: float | None = None
        if retries.per_try_timeout is not None and retries.per_try_timeout.seconds > 0:
            per_try = retries.per_try_timeout.seconds
        base = DEFAULT_BASE_INTERVAL
        if retries.backoff is not None and retries.backoff.seconds > 0:
            base = retries.backoff.seconds
        return cls(
            num_retries=retries.attempts,
            retry_on=frozenset(tokens),
            retriable_status_codes=frozenset(codes),
            per_try_timeout=per_try,
            previous_hosts=previous_hosts,
            base_interval=base,
            max_interval=base * 10,
            retry_remote_localities=bool(retries.retry_remote_localities),
        )

    def match(self, outcome: Outcome, *, request_bytes_sent: bool | None = None) -> str | None:
        """The ``retry_on`` token that makes ``outcome`` retriable, or ``None``.

        ``request_bytes_sent``: whether any request byte of this request has
        reached the upstream (on this or an earlier reset attempt); ``None``
        infers it from this outcome alone (no bytes for connect failures,
        connect timeouts, resets before request and overflow).
        """
        on = self.retry_on
        failure = outcome.failure
        if failure is None:
            return self._match_response(outcome)
        if failure is Failure.OVERFLOW:
            return None
        if failure in _CONNECT_FAILURES and "connect-failure" in on:
            return "connect-failure"
        started = _bytes_sent(outcome) if request_bytes_sent is None else request_bytes_sent
        if not started and "reset-before-request" in on:
            return "reset-before-request"
        for token in ("reset", "5xx", "gateway-error"):
            if token in on:
                return token
        if failure is Failure.REFUSED_STREAM and "refused-stream" in on:
            return "refused-stream"
        return None

    def _match_response(self, outcome: Outcome) -> str | None:
        on = self.retry_on
        if outcome.ratelimited:
            return "envoy-ratelimited" if "envoy-ratelimited" in on else None
        status = outcome.status
        if status is not None:
            if "5xx" in on and 500 <= status <= 599:
                return "5xx"
            if "gateway-error" in on and 502 <= status <= 504:
                return "gateway-error"
            if "retriable-4xx" in on and status == 409:
                return "retriable-4xx"
            if "retriable-status-codes" in on and status in self.retriable_status_codes:
                return "retriable-status-codes"
        grpc = outcome.grpc_status
        if grpc is not None:
            for code, token in _GRPC_TOKENS:
                if grpc == code and token in on:
                    return token
        return None

    def should_retry(self, outcome: Outcome, *, request_bytes_sent: bool | None = None) -> bool:
        """Whether ``retry_on`` covers ``outcome`` (before limits, budget and deadline)."""
        return self.match(outcome, request_bytes_sent=request_bytes_sent) is not None


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after one attempt.

    * ``retry``: make another attempt after ``backoff`` seconds.
    * ``reason``: the matching ``retry_on`` token when retrying, else why
      not: ``no-policy``, ``not-retriable``, ``not-replayable``,
      ``response-started``, ``retry-limit-exceeded``, ``overflow`` or
      ``deadline``.
    * ``exhausted``: a retry was wanted but ``num_retries`` were used up
      (flag ``URX``; return the last response, or the local reset reply).
    * ``overflow``: a retry was wanted but the retry circuit breaker or
      budget refused it (flag ``UO``; the current failure is returned).
    * ``deadline_exceeded``: a retry was wanted but the route timeout would
      expire during the back-off (Envoy answers 504 ``UT`` when it fires).
    """

    retry: bool
    backoff: float = 0.0
    reason: str = ""
    exhausted: bool = False
    overflow: bool = False
    deadline_exceeded: bool = False


_NO_POLICY = RetryDecision(False, reason="no-policy")
_NOT_RETRIABLE = RetryDecision(False, reason="not-retriable")
_NOT_REPLAYABLE = RetryDecision(False, reason="not-replayable")
_RESPONSE_STARTED = RetryDecision(False, reason="response-started")
_EXHAUSTED = RetryDecision(False, reason="retry-limit-exceeded", exhausted=True)
_OVERFLOW = RetryDecision(False, reason="overflow", overflow=True)


class RetryState:
    """Envoy's per-request retry state: one per request, driven by the transport.

    ``policy`` ``None`` (retries disabled) never retries and never flags.
    ``deadline`` is the absolute clock time at which the route timeout
    fires, or ``None``.
    """

    __slots__ = (
        "_clock",
        "_max_ms",
        "_next_ms",
        "_remaining",
        "_rng",
        "_started",
        "attempt",
        "deadline",
        "policy",
        "tried",
    )

    def __init__(
        self,
        policy: RetryPolicy | None,
        *,
        clock: Clock,
        rng: Random,
        deadline: float | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._rng = rng
        self.deadline = deadline
        self.attempt = 1
        """The current attempt number, 1-based (``x-envoy-attempt-count``)."""
        self.tried: set[Hashable] = set()
        """Hosts attempted so far."""
        self._started = False
        self._remaining = 0 if policy is None else policy.num_retries
        self._next_ms = 0  # the back-off interval, from the policy at the first retry
        self._max_ms = 1

    @property
    def retries_used(self) -> int:
        return self.attempt - 1

    @property
    def avoid(self) -> frozenset[Hashable]:
        """Hosts the balancer should avoid (empty without ``previous_hosts``)."""
        if self.policy is None or not self.policy.previous_hosts or not self.tried:
            return frozenset()
        return frozenset(self.tried)

    @property
    def host_selection_max_attempts(self) -> int:
        return 1 if self.policy is None else self.policy.host_selection_max_attempts

    def record_host(self, host: Hashable) -> None:
        """Note the host picked for the current attempt."""
        self.tried.add(host)

    def should_select_another(self, host: Hashable) -> bool:
        """The ``previous_hosts`` predicate: reject ``host`` if already tried."""
        return self.policy is not None and self.policy.previous_hosts and host in self.tried

    def attempt_timeout(self) -> float | None:
        """Seconds the current attempt may wait for response headers: the
        per-try timeout bounded by the route deadline; ``None``: unbounded."""
        limit = None if self.policy is None else self.policy.per_try_timeout
        if self.deadline is not None:
            left = max(0.0, self.deadline - self._clock.now())
            limit = left if limit is None else min(limit, left)
        return limit

    def _next_backoff(self) -> float:
        if not self._next_ms:  # the first retry: most requests never get here
            policy = self.policy
            assert policy is not None
            self._next_ms = max(1, round(policy.base_interval * 1000))
            self._max_ms = max(self._next_ms, round(policy.max_interval * 1000))
        interval = self._next_ms
        if self._next_ms < self._max_ms // 2:
            self._next_ms *= 2
        else:
            self._next_ms = self._max_ms
        return self._rng.randrange(0, interval) / 1000.0

    def on_outcome(
        self,
        outcome: Outcome,
        *,
        replayable: bool = True,
        budget_ok: bool | Callable[[], bool] = True,
        request_bytes_sent: bool | None = None,
        response_started: bool = False,
    ) -> RetryDecision:
        """Decide after an attempt; on ``retry`` the attempt number advances.

        * ``replayable``: the request body can be sent again (else no retry,
          as Envoy when the body overflowed its retry buffer).
        * ``budget_ok``: the cluster retry admission; a callable (such as
          ``lambda: admission.try_acquire(active)``) is called only when a
          retry is otherwise decided, so a slot is taken only for a real
          retry (release it when that attempt ends).
        * ``request_bytes_sent``: whether this attempt wrote request bytes;
          ``None`` infers it from the outcome. Sticky across reset attempts.
        * ``response_started``: bytes were already passed to the caller.
        """
        policy = self.policy
        if outcome.failure is not None:
            sent = _bytes_sent(outcome) if request_bytes_sent is None else request_bytes_sent
            self._started = self._started or sent
        if policy is None:
            return _NO_POLICY
        if response_started:
            return _RESPONSE_STARTED
        if not replayable:
            return _NOT_REPLAYABLE
        token = policy.match(outcome, request_bytes_sent=self._started)
        if token is None:
            return _NOT_RETRIABLE
        if self._remaining <= 0:
            return _EXHAUSTED
        self._remaining -= 1
        backoff = self._next_backoff()
        if self.deadline is not None and self._clock.now() + backoff >= self.deadline:
            return RetryDecision(False, backoff, "deadline", deadline_exceeded=True)
        admitted = budget_ok() if callable(budget_ok) else budget_ok
        if not admitted:
            return _OVERFLOW
        self.attempt += 1
        return RetryDecision(True, backoff, token)
