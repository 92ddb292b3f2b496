"""Sans-I/O load balancing: which upstream endpoint an attempt goes to, as Envoy picks it.

The transport keeps one :class:`Balancer` per upstream cluster (service,
port, subset), rebuilt with :func:`build_balancer` when the configuration or
the endpoints change; :func:`reconcile_hosts` carries :class:`Host` objects
(in-flight counts, health, age) across such rebuilds. Per attempt the driver
computes the request's hash with :class:`HashPolicy` (consistent hashing
only), calls :meth:`Balancer.pick` with the hosts already tried (unless
``uses_hash``), and brackets the attempt with :meth:`Host.begin` /
:meth:`Host.end`. ``pick`` returning ``None`` means "no healthy upstream"
(503, response flag ``UH``).

* :mod:`.balancer`: LEAST_REQUEST, ROUND_ROBIN, RANDOM, ring hash, Maglev;
  retry re-selection.
* :mod:`.locality`: Istio's locality priorities / distribute / failover and
  Envoy's priority load, panic threshold and locality weights (pure math).
* :mod:`.slow_start`: ``warmup`` weights. :mod:`.consistent`: ring and
  Maglev tables. :mod:`.hashing`: hash keys and generated cookies.

Semantics reference: istio-semantics.md §2.4 and §6.5. No I/O, no threads;
time and randomness come from the injected :class:`~inmesh._clock.Clock` and
:class:`~inmesh._clock.Random`.
"""

from __future__ import annotations

from ._host import Host, health_generation, reconcile_hosts
from .balancer import (
    HOST_SELECTION_RETRIES,
    Balancer,
    LeastRequestBalancer,
    MaglevBalancer,
    RandomBalancer,
    RingHashBalancer,
    RoundRobinBalancer,
    build_balancer,
)
from .hashing import HashKey, HashPolicy, hash64
from .locality import LocalityGroup, LocalityPlan, plan_localities
from .slow_start import SlowStart

__all__ = [
    "HOST_SELECTION_RETRIES",
    "Balancer",
    "HashKey",
    "HashPolicy",
    "Host",
    "LeastRequestBalancer",
    "LocalityGroup",
    "LocalityPlan",
    "MaglevBalancer",
    "RandomBalancer",
    "RingHashBalancer",
    "RoundRobinBalancer",
    "SlowStart",
    "build_balancer",
    "hash64",
    "health_generation",
    "plan_localities",
    "reconcile_hosts",
]
