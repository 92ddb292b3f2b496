from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from inmesh.balancing import Host
from inmesh.discovery.registry import Endpoint


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


class ScriptedRandom:
    """``random()`` returns the scripted values in order; ``randrange`` returns its start."""

    def __init__(self, values: Sequence[float] = ()) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return 0 if stop is None else start


def make_hosts(
    n: int,
    *,
    weights: Sequence[int] | None = None,
    localities: Sequence[str] | None = None,
    labels: Sequence[dict[str, str]] | None = None,
    created: float = 0.0,
    base: int = 0,
) -> list[Host]:
    out = []
    for i in range(n):
        ep = Endpoint(
            f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}",
            8080,
            weight=weights[i] if weights else 1,
            locality=localities[i] if localities else "",
            labels=labels[i] if labels else {},
        )
        out.append(Host(ep, created))
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
