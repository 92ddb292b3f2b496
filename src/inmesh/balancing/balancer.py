"""The load balancers: pick one upstream host per request attempt, as Envoy does.

:func:`build_balancer` turns a DestinationRule ``loadBalancer`` block into a
:class:`Balancer` over a host set (Istio ``applyLoadBalancer``,
istio/istio ``pilot/pkg/networking/core/cluster_traffic_policy.go``):

* unset, ``UNSPECIFIED``, ``LEAST_REQUEST`` and the deprecated ``LEAST_CONN``:
  :class:`LeastRequestBalancer` (Istio's ``defaultLBAlgorithm``).
  Equal weights: power of two choices (Envoy ``choice_count`` 2): two hosts
  drawn at random, with replacement, the one with fewer active requests wins,
  a tie goes to the first drawn (``unweightedHostPickNChoices``). Unequal
  weights (or slow start in progress): Envoy's EDF schedule with the weight
  ``w / (active + 1) ** 1.0`` recomputed for the picked host when it is
  re-added (``hostWeight`` / ``pickAndAdd``, ``active_request_bias`` 1.0).
  inmesh keeps Envoy's EDF rather than a weighted random over fresh weights:
  it costs O(log n) per pick instead of O(n) and reproduces Envoy's
  interleaving; the price, as in Envoy, is that a host's load is re-read
  only when it is picked.
* ``ROUND_ROBIN``: :class:`RoundRobinBalancer`; strict rotation from a random
  start when weights are equal, the EDF schedule with static weights
  otherwise (Envoy also starts the schedule at a random point).
* ``RANDOM``: :class:`RandomBalancer`, uniform over the candidate hosts.
  Envoy's random balancer ignores endpoint weights
  (``random_lb.cc``: ``hosts_to_use[random % size]``; the docs: "selects a
  random available host"); locality weights still apply.
* ``consistentHash``: :class:`RingHashBalancer` (``ringHash`` or none) or
  :class:`MaglevBalancer` (``maglev``), see :mod:`.consistent`. The
  priority level is chosen by the hash too, so a key sticks to a host while
  the host set is stable. A request without a key gets a random 64-bit key.
  ``uses_hash`` tells the driver that retries must not add the
  ``previous_hosts`` predicate (Istio leaves it out for consistent hashing).
* ``PASSTHROUGH`` is Envoy's ORIGINAL_DST: the driver connects to the address
  the caller asked for and should not need a balancer; if asked, inmesh
  balances at random. ``backendUtilization`` (ORCA weights) is not
  supported: least request is used.

Before the algorithm every pick goes through the priority / locality / panic
logic of :mod:`.locality`: the priority level is chosen by its load (random
point, or the hash), a level in panic balances over all its hosts, and with
locality weighting a locality is picked by an EDF schedule over the effective
locality weights before the host.

``pick(avoid=...)`` is the retry host predicate ``previous_hosts``: when the
pick is a host already tried the selection is redone, up to 5 more times
(Envoy ``host_selection_retry_max_attempts: 5``, ``chooseHost``'s loop), and
the last pick is returned if every attempt hit an avoided host. Consistent
hash balancers re-select by moving along the ring / perturbing the key, as
Envoy does.

Health: ``Host.healthy`` changes are noticed through
:func:`~._host.health_generation` at the next pick, which recomputes the
loads, panic flags and candidate lists; ring and Maglev tables are cached by
candidate set, so an ejection followed by its end does not rebuild them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Mapping, Sequence
from typing import ClassVar, Protocol

from inmesh._clock import Clock, Random
from inmesh.config.resources.destination_rule import (
    ConsistentHashLB,
    LoadBalancerSettings,
    SimpleLB,
)

from ._edf import Edf
from ._host import _GENERATION, Host
from .consistent import (
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_MAX_RING_SIZE,
    DEFAULT_MIN_RING_SIZE,
    MaglevTable,
    Ring,
    is_prime,
)
from .locality import (
    DEFAULT_PANIC_THRESHOLD,
    LocalityGroup,
    LocalityPlan,
    choose_priority,
    effective_locality_weight,
    plan_localities,
    priority_loads,
)
from .slow_start import SlowStart

__all__ = [
    "HOST_SELECTION_RETRIES",
    "Balancer",
    "LeastRequestBalancer",
    "MaglevBalancer",
    "RandomBalancer",
    "RingHashBalancer",
    "RoundRobinBalancer",
    "build_balancer",
]

_log = logging.getLogger("inmesh.balancing")

HOST_SELECTION_RETRIES = 5
"""Re-selections when a pick hits a host to avoid (Envoy ``host_selection_retry_max_attempts``)."""
_TABLE_CACHE = 8


class Balancer(Protocol):
    """Picks upstream hosts; built by :func:`build_balancer`."""

    @property
    def hosts(self) -> tuple[Host, ...]:
        """All hosts, healthy or not, in configuration order."""
        ...

    @property
    def uses_hash(self) -> bool:
        """Consistent hashing: retries must not avoid previous hosts."""
        ...

    def pick(self, hash_key: int | None = None, avoid: Container[Host] = ()) -> Host | None:
        """A host for one attempt, or ``None`` when no host may be used (503 ``UH``)."""
        ...


# ---------------------------------------------------------------------------
# Per-source pickers of the simple balancers


class _Picker(Protocol):
    def pick(self) -> Host | None: ...


class _Nothing:
    __slots__ = ()

    def pick(self) -> Host | None:
        return None


_NOTHING = _Nothing()


class _SlowStartClock:
    """Slow start shared by a balancer's pickers: the factor, and until when it matters."""

    __slots__ = ("clock", "config", "until")

    def __init__(self, config: SlowStart | None, hosts: Sequence[Host], clock: Clock) -> None:
        self.clock = clock
        self.config = config
        self.until = 0.0
        if config is not None and len({h.created for h in hosts}) > 1:
            until = max(h.created for h in hosts) + config.window
            if until > clock.now():
                self.until = until

    def active(self) -> bool:
        """Whether some host is still warming up (turns itself off for good afterwards)."""
        if not self.until:
            return False
        if self.clock.now() < self.until:
            return True
        self.until = 0.0
        return False

    def factor(self, host: Host) -> float:
        """The slow-start multiplier of ``host``'s weight now."""
        config = self.config
        if config is None or not self.until:
            return 1.0
        now = self.clock.now()
        if now >= self.until:
            self.until = 0.0
            return 1.0
        return config.factor(now - host.created)


class _RandomPicker:
    __slots__ = ("_hosts", "_n", "_random")

    def __init__(self, hosts: tuple[Host, ...], rng: Random) -> None:
        self._hosts = hosts
        self._n = len(hosts)
        self._random = rng.random

    def pick(self) -> Host | None:
        return self._hosts[int(self._random() * self._n)]


class _WeightedPicker:
    """Shared by round robin and least request: a fast unweighted path and EDF."""

    __slots__ = ("_edf", "_equal", "_hosts", "_n", "_rng", "_slow", "_weight")

    def __init__(self, hosts: tuple[Host, ...], rng: Random, slow: _SlowStartClock) -> None:
        self._hosts = hosts
        self._n = len(hosts)
        self._rng = rng
        self._slow = slow
        self._equal = len({h.weight for h in hosts}) <= 1
        self._edf: Edf | None = None
        self._weight: Callable[[int], float] = self._host_weight

    def _host_weight(self, index: int) -> float:
        raise NotImplementedError

    def _unweighted(self) -> Host:
        raise NotImplementedError

    def _schedule(self) -> Edf:
        edf = Edf([self._weight(i) for i in range(self._n)])
        for _ in range(self._rng.randrange(self._n)):  # Envoy starts at a random point
            edf.pick(self._weight)
        self._edf = edf
        return edf

    def pick(self) -> Host | None:
        if self._n == 1:
            return self._hosts[0]
        if self._equal and not self._slow.active():
            return self._unweighted()
        edf = self._edf or self._schedule()
        return self._hosts[edf.pick(self._weight)]


class _RoundRobinPicker(_WeightedPicker):
    __slots__ = ("_next",)

    def __init__(self, hosts: tuple[Host, ...], rng: Random, slow: _SlowStartClock) -> None:
        super().__init__(hosts, rng, slow)
        self._next = rng.randrange(len(hosts)) if hosts else 0

    def _host_weight(self, index: int) -> float:
        host = self._hosts[index]
        return host.weight * self._slow.factor(host)

    def _unweighted(self) -> Host:
        i = self._next
        self._next = i + 1
        return self._hosts[i % self._n]


class _LeastRequestPicker(_WeightedPicker):
    __slots__ = ()

    def _host_weight(self, index: int) -> float:
        host = self._hosts[index]
        return host.weight / (host.active + 1) * self._slow.factor(host)

    def _unweighted(self) -> Host:
        hosts, n, rnd = self._hosts, self._n, self._rng.random
        first = hosts[int(rnd() * n)]
        second = hosts[int(rnd() * n)]
        return second if second.active < first.active else first


class _LocalityPicker:
    """Envoy's locality-weighted step: an EDF over localities, then the locality's picker."""

    __slots__ = ("_edf", "_pickers", "_weights")

    def __init__(self, pickers: Sequence[_Picker], weights: Sequence[float], rng: Random) -> None:
        self._pickers = tuple(pickers)
        self._weights = tuple(weights)
        self._edf = Edf(self._weights)
        for _ in range(rng.randrange(len(self._weights))):
            self._edf.pick(self._weights.__getitem__)

    def pick(self) -> Host | None:
        return self._pickers[self._edf.pick(self._weights.__getitem__)].pick()


# ---------------------------------------------------------------------------
# Balancers


class _Base:
    """Priority levels, panic and health tracking shared by every balancer."""

    __slots__ = ("_clock", "_generation", "_loads", "_panic_threshold", "_plan", "_rng", "hosts")

    uses_hash: bool = False
    algorithm: ClassVar[str] = ""

    def __init__(
        self,
        hosts: Sequence[Host],
        plan: LocalityPlan,
        *,
        panic_threshold: float,
        clock: Clock,
        rng: Random,
    ) -> None:
        self.hosts = tuple(hosts)
        self._plan = plan
        self._panic_threshold = panic_threshold
        self._clock = clock
        self._rng = rng
        self._generation = -1
        self._loads: tuple[int, ...] = ()

    def _health(self) -> tuple[bool, ...]:
        """Recompute the priority loads; returns the per-level panic flags."""
        self._generation = _GENERATION[0]
        levels = self._plan.levels
        healthy = [sum(h.healthy for g in level for h in g.hosts) for level in levels]
        total = [sum(len(g.hosts) for g in level) for level in levels]
        self._loads, panic = priority_loads(healthy, total, self._panic_threshold)
        return panic

    def _level_index(self, point: int) -> int:
        return choose_priority(point, self._loads)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} hosts={len(self.hosts)} loads={self._loads}>"


class _SimpleBalancer(_Base):
    __slots__ = ("_levels", "_single", "_slow")

    def __init__(
        self,
        hosts: Sequence[Host],
        plan: LocalityPlan,
        *,
        panic_threshold: float,
        clock: Clock,
        rng: Random,
        slow_start: SlowStart | None = None,
    ) -> None:
        super().__init__(hosts, plan, panic_threshold=panic_threshold, clock=clock, rng=rng)
        self._slow = _SlowStartClock(slow_start, self.hosts, clock)
        self._levels: tuple[_Picker, ...] = ()
        self._single: _Picker | None = _NOTHING
        self._refresh()

    def _picker(self, hosts: tuple[Host, ...]) -> _Picker:
        raise NotImplementedError

    def _refresh(self) -> None:
        panic = self._health()
        levels: list[_Picker] = []
        for level, in_panic in zip(self._plan.levels, panic, strict=True):
            levels.append(self._build_level(level, in_panic))
        self._levels = tuple(levels)
        if not levels:
            self._single = _NOTHING
        elif 100 in self._loads:
            self._single = levels[self._loads.index(100)]
        else:
            self._single = None

    def _build_level(self, level: tuple[LocalityGroup, ...], in_panic: bool) -> _Picker:
        if in_panic:
            return self._picker(tuple(h for g in level for h in g.hosts))
        if not self._plan.weighted:
            healthy = tuple(h for g in level for h in g.hosts if h.healthy)
            return self._picker(healthy) if healthy else _NOTHING
        pickers: list[_Picker] = []
        weights: list[float] = []
        for group in level:
            healthy = tuple(h for h in group.hosts if h.healthy)
            weight = effective_locality_weight(group.weight, len(healthy), len(group.hosts))
            if weight > 0:
                pickers.append(self._picker(healthy))
                weights.append(weight)
        if not pickers:
            return _NOTHING
        if len(pickers) == 1:
            return pickers[0]
        return _LocalityPicker(pickers, weights, self._rng)

    def _choose(self) -> Host | None:
        single = self._single
        if single is not None:
            return single.pick()
        point = int(self._rng.random() * 100) + 1
        return self._levels[self._level_index(point)].pick()

    def pick(self, hash_key: int | None = None, avoid: Container[Host] = ()) -> Host | None:
        """A host (``hash_key`` is ignored), re-selected while it is in ``avoid``."""
        if self._generation != _GENERATION[0]:
            self._refresh()
        host = self._choose()
        if not avoid or host is None or host not in avoid:
            return host
        for _ in range(HOST_SELECTION_RETRIES):
            host = self._choose()
            if host is None or host not in avoid:
                return host
        return host


class LeastRequestBalancer(_SimpleBalancer):
    """LEAST_REQUEST: power of two choices, or EDF over ``w / (active + 1)``."""

    __slots__ = ()
    algorithm = "LEAST_REQUEST"

    def _picker(self, hosts: tuple[Host, ...]) -> _Picker:
        return _LeastRequestPicker(hosts, self._rng, self._slow)


class RoundRobinBalancer(_SimpleBalancer):
    """ROUND_ROBIN: rotation, or an EDF schedule when weights differ."""

    __slots__ = ()
    algorithm = "ROUND_ROBIN"

    def _picker(self, hosts: tuple[Host, ...]) -> _Picker:
        return _RoundRobinPicker(hosts, self._rng, self._slow)


class RandomBalancer(_SimpleBalancer):
    """RANDOM: uniform over the candidate hosts (endpoint weights ignored, as in Envoy)."""

    __slots__ = ()
    algorithm = "RANDOM"

    def _picker(self, hosts: tuple[Host, ...]) -> _Picker:
        return _RandomPicker(hosts, self._rng)


class _Table(Protocol):
    def lookup(self, key: int, attempt: int = 0) -> Host | None: ...


class _HashBalancer(_Base):
    __slots__ = ("_cache", "_tables")

    uses_hash = True

    def __init__(
        self,
        hosts: Sequence[Host],
        plan: LocalityPlan,
        *,
        panic_threshold: float,
        clock: Clock,
        rng: Random,
    ) -> None:
        super().__init__(hosts, plan, panic_threshold=panic_threshold, clock=clock, rng=rng)
        self._cache: dict[tuple[tuple[Host, ...], tuple[float, ...]], _Table] = {}
        self._tables: tuple[_Table | None, ...] = ()
        self._refresh()

    def _build(self, hosts: tuple[Host, ...], weights: tuple[float, ...]) -> _Table:
        raise NotImplementedError

    def _refresh(self) -> None:
        panic = self._health()
        tables: list[_Table | None] = []
        for level, in_panic in zip(self._plan.levels, panic, strict=True):
            hosts, weights = self._weights(level, in_panic)
            if not hosts:
                tables.append(None)
                continue
            key = (hosts, weights)
            table = self._cache.pop(key, None)
            if table is None:
                table = self._build(hosts, weights)
            self._cache[key] = table
            tables.append(table)
        while len(self._cache) > max(_TABLE_CACHE, len(tables)):
            del self._cache[next(iter(self._cache))]
        self._tables = tuple(tables)

    def _weights(
        self, level: tuple[LocalityGroup, ...], in_panic: bool
    ) -> tuple[tuple[Host, ...], tuple[float, ...]]:
        """Candidate hosts and their weights (Envoy ``normalizeWeights``)."""
        if not self._plan.weighted:
            hosts = tuple(h for g in level for h in g.hosts if in_panic or h.healthy)
            return hosts, tuple(float(h.weight) for h in hosts)
        out_hosts: list[Host] = []
        out_weights: list[float] = []
        total_locality = sum(g.weight for g in level) or 1.0
        for group in level:
            members = [h for h in group.hosts if in_panic or h.healthy]
            host_total = sum(h.weight for h in members)
            if group.weight <= 0 or not members:
                continue
            share = group.weight / total_locality
            for h in members:
                out_hosts.append(h)
                out_weights.append(h.weight * share / host_total)
        return tuple(out_hosts), tuple(out_weights)

    def pick(self, hash_key: int | None = None, avoid: Container[Host] = ()) -> Host | None:
        """The host owning ``hash_key`` (random when ``None``), moving on while it is in ``avoid``."""
        if self._generation != _GENERATION[0]:
            self._refresh()
        tables = self._tables
        if not tables:
            return None
        key = self._rng.randrange(0, 1 << 64) if hash_key is None else hash_key
        table = tables[0] if len(tables) == 1 else tables[self._level_index(key % 100 + 1)]
        if table is None:
            return None
        host = table.lookup(key)
        if not avoid or host is None:
            return host
        for attempt in range(1, HOST_SELECTION_RETRIES + 1):
            if host is None or host not in avoid:
                return host
            host = table.lookup(key, attempt)
        return host


class RingHashBalancer(_HashBalancer):
    """Consistent hashing on a ketama ring (``ringHash``, the default)."""

    __slots__ = ("_maximum", "_minimum")
    algorithm = "RING_HASH"

    def __init__(
        self,
        hosts: Sequence[Host],
        plan: LocalityPlan,
        *,
        panic_threshold: float,
        clock: Clock,
        rng: Random,
        minimum_ring_size: int = DEFAULT_MIN_RING_SIZE,
        maximum_ring_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        self._maximum = maximum_ring_size
        self._minimum = min(minimum_ring_size, maximum_ring_size)
        super().__init__(hosts, plan, panic_threshold=panic_threshold, clock=clock, rng=rng)

    def _build(self, hosts: tuple[Host, ...], weights: tuple[float, ...]) -> _Table:
        return Ring(hosts, weights, minimum_size=self._minimum, maximum_size=self._maximum)


class MaglevBalancer(_HashBalancer):
    """Consistent hashing with a Maglev table (``maglev``)."""

    __slots__ = ("_size",)
    algorithm = "MAGLEV"

    def __init__(
        self,
        hosts: Sequence[Host],
        plan: LocalityPlan,
        *,
        panic_threshold: float,
        clock: Clock,
        rng: Random,
        table_size: int = DEFAULT_MAGLEV_TABLE_SIZE,
    ) -> None:
        self._size = table_size
        super().__init__(hosts, plan, panic_threshold=panic_threshold, clock=clock, rng=rng)

    def _build(self, hosts: tuple[Host, ...], weights: tuple[float, ...]) -> _Table:
        return MaglevTable(hosts, weights, self._size)


# ---------------------------------------------------------------------------
# Factory


def _hash_balancer(
    ch: ConsistentHashLB,
    hosts: Sequence[Host],
    plan: LocalityPlan,
    panic_threshold: float,
    clock: Clock,
    rng: Random,
) -> Balancer:
    if ch.maglev is not None:
        size = ch.maglev.table_size or DEFAULT_MAGLEV_TABLE_SIZE
        if not is_prime(size):
            _log.warning(
                "maglev tableSize %d is not prime; using %d", size, DEFAULT_MAGLEV_TABLE_SIZE
            )
            size = DEFAULT_MAGLEV_TABLE_SIZE
        return MaglevBalancer(
            hosts, plan, panic_threshold=panic_threshold, clock=clock, rng=rng, table_size=size
        )
    minimum = (
        ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else ch.minimum_ring_size
    ) or DEFAULT_MIN_RING_SIZE
    return RingHashBalancer(
        hosts,
        plan,
        panic_threshold=panic_threshold,
        clock=clock,
        rng=rng,
        minimum_ring_size=minimum,
    )


def build_balancer(
    settings: LoadBalancerSettings | None,
    hosts: Sequence[Host],
    *,
    local_locality: str = "",
    outlier_detection: bool = False,
    clock: Clock,
    rng: Random,
    local_labels: Mapping[str, str] | None = None,
    panic_threshold: float | None = None,
) -> Balancer:
    """The balancer a DestinationRule ``loadBalancer`` block asks for, over ``hosts``.

    ``local_locality`` (``region/zone/subzone``) and ``local_labels`` describe
    this process, for locality failover and ``failoverPriority``;
    ``outlier_detection``: whether the traffic policy has an
    ``outlierDetection`` block (it enables locality failover and sets the
    panic threshold to ``minHealthPercent``). ``panic_threshold`` (percent)
    overrides the default: Envoy's 50, or 0 (panic disabled, Istio's
    ``minHealthPercent`` default) with outlier detection.
    """
    if panic_threshold is None:
        panic_threshold = 0.0 if outlier_detection else DEFAULT_PANIC_THRESHOLD
    plan = plan_localities(
        hosts,
        settings.locality_lb_setting if settings is not None else None,
        local_locality=local_locality,
        local_labels=local_labels,
        outlier_detection=outlier_detection,
    )
    if settings is not None and settings.consistent_hash is not None:
        return _hash_balancer(settings.consistent_hash, hosts, plan, panic_threshold, clock, rng)
    simple = settings.simple if settings is not None else None
    if simple in (SimpleLB.RANDOM, SimpleLB.PASSTHROUGH):
        return RandomBalancer(hosts, plan, panic_threshold=panic_threshold, clock=clock, rng=rng)
    slow_start = SlowStart.from_settings(settings)
    if simple is SimpleLB.ROUND_ROBIN:
        return RoundRobinBalancer(
            hosts,
            plan,
            panic_threshold=panic_threshold,
            clock=clock,
            rng=rng,
            slow_start=slow_start,
        )
    return LeastRequestBalancer(
        hosts,
        plan,
        panic_threshold=panic_threshold,
        clock=clock,
        rng=rng,
        slow_start=slow_start,
    )
