"""Time and randomness, injected.

Everything in inmesh that expires, waits, ejects, jitters or picks takes a
:class:`Clock` and a :class:`Random` so that tests can pass fakes and run in
microseconds. The real ones are module-level singletons without state.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["MONOTONIC", "Clock", "MonotonicClock", "Random"]


class Clock(Protocol):
    """A monotonic clock in seconds."""

    def now(self) -> float: ...


class Random(Protocol):
    """The part of :class:`random.Random` inmesh uses."""

    def random(self) -> float: ...

    def randrange(self, start: int, stop: int = ..., step: int = ...) -> int: ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic`."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()


MONOTONIC = MonotonicClock()
