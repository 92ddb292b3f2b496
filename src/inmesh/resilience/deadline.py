"""Request deadlines and their propagation from inbound to outbound calls (beyond Istio).

A sidecar does not carry a caller's deadline to the calls the app makes
while serving it; inmesh can, because it runs in the app's process. The
inbound side reads the caller's deadline from the request headers
(:meth:`Deadline.from_headers`) and opens a :func:`deadline_scope`; outbound
transports read :func:`current_deadline` and bound their route timeout with
it (:func:`earliest`), and may send the remaining time upstream
(:meth:`Deadline.header_value` in ``x-envoy-expected-rq-timeout-ms``).

The scope is a :mod:`contextvars` variable, so it follows the code that
serves the request: threads started with a copied context, asyncio tasks and
trio tasks all inherit it.

Header semantics confirmed in Envoy source:

* ``grpc-timeout`` (``source/common/grpc/common.cc`` ``getGrpcTimeout``,
  gRPC ``doc/PROTOCOL-HTTP2.md``): ``TimeoutValue TimeoutUnit``, the value
  at most 8 ASCII digits, the unit one of ``H`` hours, ``M`` minutes, ``S``
  seconds, ``m`` milliseconds, ``u`` microseconds, ``n`` nanoseconds;
  anything else is ignored.
* ``x-envoy-expected-rq-timeout-ms`` (``source/common/router/router.cc``
  ``FilterUtility::finalTimeout``): an unsigned integer of milliseconds.
* In both, Envoy treats a value of 0 as "no timeout" (a 0 global timeout is
  disabled), so inmesh ignores 0 too; :meth:`Deadline.header_value` returns
  ``"0"`` only for an expired deadline, which a caller should not send.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from inmesh._clock import MONOTONIC, Clock

__all__ = [
    "EXPECTED_TIMEOUT_HEADER",
    "GRPC_TIMEOUT_HEADER",
    "Deadline",
    "current_deadline",
    "deadline_scope",
    "earliest",
    "parse_expected_timeout",
    "parse_grpc_timeout",
]

EXPECTED_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
GRPC_TIMEOUT_HEADER = "grpc-timeout"

_GRPC_UNITS = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


def _digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def parse_grpc_timeout(value: str) -> float | None:
    """Seconds in a ``grpc-timeout`` value; ``None`` if invalid or zero."""
    value = value.strip()
    if len(value) < 2:
        return None
    number, unit = value[:-1], value[-1]
    if unit not in _GRPC_UNITS or len(number) > 8 or not _digits(number):
        return None
    seconds = int(number) * _GRPC_UNITS[unit]
    return seconds if seconds > 0 else None


def parse_expected_timeout(value: str) -> float | None:
    """Seconds in an ``x-envoy-expected-rq-timeout-ms`` value; ``None`` if invalid or zero."""
    value = value.strip()
    if not _digits(value):
        return None
    ms = int(value)
    return ms / 1000.0 if ms > 0 else None


@dataclass(frozen=True, slots=True, order=True)
class Deadline:
    """An absolute point on the (monotonic) clock after which a request is useless."""

    at: float

    @classmethod
    def after(cls, seconds: float, clock: Clock) -> Deadline:
        return cls(clock.now() + seconds)

    def remaining(self, clock: Clock) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - clock.now())

    def expired(self, clock: Clock) -> bool:
        return clock.now() >= self.at

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float) -> Deadline | None:
        """The deadline a caller announced: ``x-envoy-expected-rq-timeout-ms``
        and ``grpc-timeout`` relative to ``now``; the smaller wins; invalid
        or zero values are ignored. Header names match case-insensitively."""
        timeouts: list[float] = []
        for name, value in headers.items():
            key = name.lower()
            if key == EXPECTED_TIMEOUT_HEADER:
                parsed = parse_expected_timeout(value)
            elif key == GRPC_TIMEOUT_HEADER:
                parsed = parse_grpc_timeout(value)
            else:
                continue
            if parsed is not None:
                timeouts.append(parsed)
        if not timeouts:
            return None
        return cls(now + min(timeouts))

    def header_value(self, clock: Clock) -> str:
        """Whole milliseconds remaining (rounded down, ``>= 0``) for
        ``x-envoy-expected-rq-timeout-ms``."""
        return str(max(0, math.floor(self.remaining(clock) * 1000.0)))


def earliest(*deadlines: Deadline | None) -> Deadline | None:
    """The soonest of the given deadlines, ignoring ``None``."""
    best: Deadline | None = None
    for d in deadlines:
        if d is not None and (best is None or d.at < best.at):
            best = d
    return best


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "inmesh_deadline", default=None
)


def current_deadline() -> Deadline | None:
    """The deadline of the request being served in this context, if any."""
    return _CURRENT.get()


@contextmanager
def deadline_scope(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """Run the block under ``deadline``; nested scopes only narrow (the
    earliest of the enclosing and the new deadline applies). Yields the
    deadline in force."""
    effective = earliest(_CURRENT.get(), deadline)
    token = _CURRENT.set(effective)
    try:
        yield effective
    finally:
        _CURRENT.reset(token)


_DEADLINE_HEADERS = (b"x-envoy-expected-rq-timeout-ms", b"grpc-timeout")


def inbound_deadline(
    headers: Iterable[tuple[bytes, bytes]], clock: Clock = MONOTONIC
) -> Deadline | None:
    """The deadline an incoming request carries (raw ASGI-style headers), if any.

    Cheap when neither ``x-envoy-expected-rq-timeout-ms`` nor ``grpc-timeout``
    is present (one pass over the names).
    """
    found: dict[str, str] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in _DEADLINE_HEADERS:
            if found is None:
                found = {}
            found[lower.decode("latin-1")] = value.decode("latin-1")
    if found is None:
        return None
    return Deadline.from_headers(found, clock.now())
