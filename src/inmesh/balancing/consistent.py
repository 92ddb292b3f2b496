"""Consistent hashing tables: Envoy's ring hash (ketama) and Maglev.

**Ring hash** (envoyproxy/envoy
``source/extensions/load_balancing_policies/ring_hash/ring_hash_lb.cc``;
https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers#ring-hash):
host weights are normalized to sum to 1; the ring gets
``scale = min(ceil(min_weight * minimum_ring_size) / min_weight, maximum_ring_size)``
entries, so the lightest host gets at least ``ceil(min_weight * minimum)``
entries (1024 by default; Envoy caps the ring at 8M entries). Hosts are walked
in order keeping running sums (``target += scale * weight``; add entries while
``current < target``), each entry hashing ``"<address>:<port>_<i>"``. A key
maps to the first entry whose hash is ``>=`` the key, wrapping to the first
entry. With a retry host predicate attempt ``n`` takes the entry ``n``
places further.

inmesh departs from Envoy in one point: the lightest host's entry count
``ceil(min_weight * minimum)`` is rounded up to a power of two (so the ring
has between ``minimum`` and twice as many entries). In Envoy the entries per
host follow the host count exactly (``ceil(1024 / N)`` for equal weights), so
adding or removing one of N hosts also trims or extends every other host's
entries and moves keys between hosts that did not change (about 8 % of them
at N = 10: only ~85 % of keys stay when an 11th host joins). With the
rounding, hosts keep the same entries while N changes within a power-of-two
band, and only the ~1/N of keys the new host takes move (~91 % stay at
N = 10 -> 11), which is what consistent hashing promises. Placement differs
from Envoy's anyway (see below), so nothing observable is lost.

**Maglev** (envoyproxy/envoy ``maglev/maglev_lb.cc``; paper §3.4,
https://static.googleusercontent.com/media/research.google.com/en//pubs/archive/44824.pdf):
the table size ``M`` must be prime (default 65537). Hosts, sorted by their
``address:port`` key, each get ``offset = h1(key) % M`` and ``skip = h2(key)
% (M - 1) + 1``; the table is filled in rounds in which every host claims the
next free slot of its permutation ``(offset + skip * j) % M``, a host of
weight ``w`` taking a turn only in the rounds where ``round * w >=
turns_taken * max_weight``, so entries are in proportion to weight ("host A
of weight 1 and B of weight 2 get 21,846 and 43,691 entries"); with equal
weights every host gets ``floor(M/N)`` or ``ceil(M/N)`` entries. A key maps
to ``table[key % M]``; retry attempt ``n`` XORs the key with ``2**64 - n``
(Envoy: ``hash ^= ~0ULL - attempt + 1``).

Hashes are :func:`inmesh.balancing.hashing.hash64` (BLAKE2b), not xxHash64, so
the exact placement differs from Envoy's; the distribution properties are the
same.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

from ._host import Host
from .hashing import hash64

__all__ = [
    "DEFAULT_MAGLEV_TABLE_SIZE",
    "DEFAULT_MAX_RING_SIZE",
    "DEFAULT_MIN_RING_SIZE",
    "MaglevTable",
    "Ring",
    "host_hash_key",
    "is_prime",
]

DEFAULT_MIN_RING_SIZE = 1024
DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024
DEFAULT_MAGLEV_TABLE_SIZE = 65537
_MASK64 = (1 << 64) - 1


def host_hash_key(host: Host) -> str:
    """What a host is hashed by: ``address:port`` (``[v6]:port``; a socket path as is)."""
    ep = host.endpoint
    if not ep.port and ep.address.startswith("/"):
        return ep.address
    if ":" in ep.address:
        return f"[{ep.address}]:{ep.port}"
    return f"{ep.address}:{ep.port}"


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (trial division; table sizes are below 5,000,011)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _normalize(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    return [w / total for w in weights]


class Ring:
    """A ketama ring over ``hosts`` with the given (positive) weights."""

    __slots__ = ("hashes", "hosts", "owners")

    hashes: list[int]
    owners: list[Host]

    def __init__(
        self,
        hosts: Sequence[Host],
        weights: Sequence[float],
        *,
        minimum_size: int = DEFAULT_MIN_RING_SIZE,
        maximum_size: int = DEFAULT_MAX_RING_SIZE,
    ) -> None:
        self.hosts = tuple(hosts)
        if not hosts:
            self.hashes, self.owners = [], []
            return
        normalized = _normalize(weights)
        lightest = min(normalized)
        # Entries of the lightest host, rounded up to a power of two (inmesh's
        # departure from Envoy, see the module docstring).
        lightest_entries = 1 << max(0, math.ceil(lightest * minimum_size) - 1).bit_length()
        scale = min(lightest_entries / lightest, float(maximum_size))
        entries: list[tuple[int, int]] = []
        current = 0.0
        target = 0.0
        for index, (host, weight) in enumerate(zip(hosts, normalized, strict=True)):
            prefix = host_hash_key(host) + "_"
            target += scale * weight
            i = 0
            while current < target:
                entries.append((hash64(prefix + str(i)), index))
                i += 1
                current += 1
        entries.sort()
        self.hashes = [h for h, _ in entries]
        self.owners = [hosts[i] for _, i in entries]

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup(self, key: int, attempt: int = 0) -> Host | None:
        """The host owning ``key``: the first entry with hash >= key (wrapping)."""
        size = len(self.hashes)
        if not size:
            return None
        i = bisect_left(self.hashes, key)
        if i == size:
            i = 0
        if attempt:
            i = (i + attempt) % size
        return self.owners[i]


class MaglevTable:
    """A Maglev lookup table of prime size over ``hosts`` with the given weights."""

    __slots__ = ("hosts", "size", "table")

    table: list[Host]

    def __init__(
        self,
        hosts: Sequence[Host],
        weights: Sequence[float],
        size: int = DEFAULT_MAGLEV_TABLE_SIZE,
    ) -> None:
        if not is_prime(size):
            raise ValueError(f"the Maglev table size must be prime, got {size}")
        self.hosts = tuple(hosts)
        self.size = size
        if not hosts:
            self.table = []
            return
        normalized = _normalize(weights)
        order = sorted(range(len(hosts)), key=lambda i: (host_hash_key(hosts[i]), i))
        keys = [host_hash_key(hosts[i]) for i in order]
        offsets = [hash64(k) % size for k in keys]
        skips = [hash64(k, seed=1) % (size - 1) + 1 for k in keys]
        wts = [normalized[i] for i in order]
        heaviest = max(wts)
        tolerance = heaviest * 1e-9
        nexts = [0] * len(order)
        targets = [0.0] * len(order)
        slots: list[int] = [-1] * size
        filled = 0
        rnd = 0
        count = len(order)
        while filled < size:
            rnd += 1
            for j in range(count):
                if rnd * wts[j] + tolerance < targets[j]:
                    continue
                targets[j] += heaviest
                offset, skip, nxt = offsets[j], skips[j], nexts[j]
                c = (offset + skip * nxt) % size
                while slots[c] >= 0:
                    nxt += 1
                    c = (offset + skip * nxt) % size
                slots[c] = j
                nexts[j] = nxt + 1
                filled += 1
                if filled == size:
                    break
        by_rank = [hosts[i] for i in order]
        self.table = [by_rank[j] for j in slots]

    def __len__(self) -> int:
        return len(self.table)

    def lookup(self, key: int, attempt: int = 0) -> Host | None:
        """``table[key % size]``; a retry attempt perturbs the key as Envoy does."""
        if not self.table:
            return None
        if attempt:
            key ^= (_MASK64 - attempt + 1) & _MASK64
        return self.table[key % self.size]
