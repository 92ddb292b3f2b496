"""Upstream hosts as the load balancer sees them, and how they survive reloads.

A :class:`Host` wraps one :class:`~inmesh.discovery.registry.Endpoint` with
the mutable state Envoy keeps per upstream host: the number of requests in
flight (``rq_active``, which LEAST_REQUEST reads), the health flag the outlier
detector flips, and the time the host joined the cluster (slow start measures
its age from it; Envoy's ``lastHcPassTime`` when no active health checking
is configured, envoyproxy/envoy ``load_balancer_impl.cc``
``recalculateHostsInSlowStart``).

Hosts compare and hash by identity, so that a host set can be a dictionary
key and a container of hosts to avoid is cheap to test. :func:`reconcile_hosts`
keeps the same object across a configuration reload when its endpoint is
unchanged, as Envoy keeps a ``Host`` across an EDS update for an unchanged
address (``BaseDynamicClusterImpl::updateDynamicHostList``), so in-flight
counts, health and age carry over.

Every change of :attr:`Host.healthy` bumps a process-wide generation number
(:func:`health_generation`); balancers compare it on each pick and recompute
their health-dependent state (priority loads, panic mode, healthy host lists,
hash rings) only when it moved. That is the in-process stand-in for Envoy's
priority-set update callbacks.
"""

from __future__ import annotations

from collections.abc import Sequence

from inmesh.discovery.registry import Endpoint

__all__ = ["Host", "health_generation", "reconcile_hosts"]

_GENERATION = [0]


def health_generation() -> int:
    """A number that changes whenever any :class:`Host` changes health."""
    return _GENERATION[0]


class Host:
    """One upstream endpoint as the balancer sees it.

    ``weight`` is the endpoint's ``load_balancing_weight`` (at least 1),
    ``locality`` its ``region/zone/subzone``, ``created`` the clock time it
    was first seen, ``active`` the requests in flight (the driver calls
    :meth:`begin` and :meth:`end`) and ``healthy`` whether it may receive
    traffic (the outlier detector clears it). Equality and hashing are by
    identity.
    """

    __slots__ = ("_healthy", "active", "created", "endpoint", "locality", "weight")

    endpoint: Endpoint
    weight: int
    locality: str
    created: float
    active: int

    def __init__(self, endpoint: Endpoint, created: float = 0.0) -> None:
        self.endpoint = endpoint
        self.weight = max(1, endpoint.weight)
        self.locality = endpoint.locality
        self.created = created
        self.active = 0
        self._healthy = True

    @property
    def healthy(self) -> bool:
        """Whether the host may be picked (outside panic mode)."""
        return self._healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        if value != self._healthy:
            self._healthy = value
            _GENERATION[0] += 1

    def begin(self) -> None:
        """A request to this host started."""
        self.active += 1

    def end(self) -> None:
        """A request to this host finished (the count never goes below 0)."""
        if self.active > 0:
            self.active -= 1

    def __repr__(self) -> str:
        ep = self.endpoint
        state = "" if self._healthy else " unhealthy"
        return f"<Host {ep.address}:{ep.port} w={self.weight} active={self.active}{state}>"


def reconcile_hosts(
    previous: Sequence[Host], endpoints: Sequence[Endpoint], now: float
) -> tuple[Host, ...]:
    """The host list for a reload, in the order of ``endpoints``.

    An endpoint equal to one a previous host wraps keeps that :class:`Host`
    object (with its in-flight count, health and ``created`` time); other
    endpoints get a new host created at ``now``. An endpoint listed twice
    gets two hosts.
    """
    spare: dict[Endpoint, list[Host]] = {}
    for host in previous:
        spare.setdefault(host.endpoint, []).append(host)
    out: list[Host] = []
    for endpoint in endpoints:
        pool = spare.get(endpoint)
        out.append(pool.pop(0) if pool else Host(endpoint, now))
    return tuple(out)
