"""Earliest-deadline-first scheduling, Envoy's weighted round robin.

envoyproxy/envoy ``source/common/upstream/edf_scheduler.h``: every entry has
a deadline ``current_time + 1 / weight``; a pick takes the entry with the
earliest deadline (ties: the one added first), advances the current time to
that deadline and re-adds the entry with its weight *at that moment* (Envoy's
``pickAndAdd``: the least-request balancer recomputes ``w / (active + 1)`` and
the slow-start factor there, so other entries' weights are refreshed only when
they are next picked). Over time each entry is picked in proportion to its
weight, and the picks of different entries interleave smoothly.

A pick holds a lock (no thread is started): the synchronous transport may
pick from several threads, and two interleaved picks must not drop an entry.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Sequence

__all__ = ["Edf"]

_MIN_WEIGHT = 1e-9


class Edf:
    """An EDF schedule over the indices ``0..n-1``."""

    __slots__ = ("_heap", "_lock", "_seq")

    def __init__(self, weights: Sequence[float]) -> None:
        self._heap: list[tuple[float, int, int]] = [
            (1.0 / max(w, _MIN_WEIGHT), i, i) for i, w in enumerate(weights)
        ]
        heapq.heapify(self._heap)
        self._seq = len(weights)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._heap)

    def pick(self, weight: Callable[[int], float]) -> int:
        """The index with the earliest deadline, re-added with weight ``weight(index)``."""
        with self._lock:
            deadline, _, index = self._heap[0]
            seq = self._seq
            self._seq = seq + 1
            w = weight(index)
            heapq.heapreplace(self._heap, (deadline + 1.0 / max(w, _MIN_WEIGHT), seq, index))
            return index
