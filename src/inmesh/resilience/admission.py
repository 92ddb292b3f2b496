"""Envoy's per-cluster connection-pool circuit breakers for HTTP/1.1, sans I/O.

One :class:`Admission` per upstream cluster, shared by every request of the
process (thread-safe, one lock, O(1) per call). A transport asks
:meth:`Admission.admit` before each attempt and releases the returned
:class:`Ticket` when the attempt ends, on every path (``with`` works).

The model (HTTP/1.1: one request per connection at a time)
---------------------------------------------------------

* An **active** request holds one connection. At most ``max_connections``
  requests are active, so at most that many connections are busy.
* A request that finds every connection busy and cannot open another one
  waits as **pending**, first come first served. At most
  ``max_pending_requests`` wait; one more overflows (breaker
  :attr:`Breaker.PENDING`). Whenever an active request ends, the first pending
  one takes its connection (it becomes active, its ``on_ready`` callback runs).
* ``max_requests`` bounds the active requests (Envoy enforces it for HTTP/1
  pools too: ``enforceMaxRequests()``); a request that would exceed it
  overflows (breaker :attr:`Breaker.REQUESTS`), it never waits.
* Optional, when the driver can see connection set-up (e.g. its network
  backend's ``connect_tcp``): :meth:`Ticket.connect_started` /
  :meth:`Ticket.connect_finished` around the set-up of a *new* connection.
  Envoy queues a request as pending while its connection is being
  established, so meanwhile the request also counts against
  ``max_pending_requests``. This is what makes two concurrent callers overflow
  with ``maxConnections: 1, http1MaxPendingRequests: 1`` in Istio's
  circuit-breaking task: the second request arrives while the first one's
  connection is still connecting. A driver that does not call them gets the
  simpler model in which connection set-up is instantaneous.
* Overflow means: no upstream attempt, a local 503 with flag ``UO``, body
  ``upstream connect error or disconnect/reset before headers. reset reason:
  overflow`` and ``x-envoy-overloaded: true``; never retried and never
  reported to outlier detection (istio-semantics.md §2.5).

Driver protocol::

    ticket = admission.admit(on_ready=callback)
    if ticket.state is TicketState.OVERFLOW:   # ticket.overflow says which breaker
        ... local 503 UO ...
    elif ticket.state is TicketState.PENDING:
        ... wait until callback(ticket) has run (it runs once, from the thread
        that released a ticket or updated the settings, outside the lock), then
        look at ticket.state again: ACTIVE (go) or OVERFLOW; on timeout or
        cancellation call ticket.release() (drops it from the queue) ...
    try:
        ... send the attempt on a connection of the real pool ...
    finally:
        ticket.release()

The waiting primitive stays with the driver: a ``threading.Event.set`` for the
sync transport; for the async one a callback that wakes its own event loop
(``loop.call_soon_threadsafe`` when other threads may release tickets). The
driver should size its real connection pool to :attr:`PoolSettings.max_connections`
(it then never needs more connections than active tickets) and apply
``max_requests_per_connection``, ``idle_timeout``, ``max_connection_duration``
and ``connect_timeout`` to its connections.

Confirmed in source
-------------------

* Istio ``pilot/pkg/networking/core/cluster_traffic_policy.go`` (istio/istio
  86c9f01f, Aug 2026): ``getDefaultCircuitBreakerThresholds`` sets
  ``max_connections``, ``max_pending_requests``, ``max_requests`` and
  ``max_retries`` to 2^32-1 on every cluster; ``applyConnectionPool`` overrides
  each only when the DestinationRule value is > 0 (an empty connectionPool
  is substituted when the block is absent); ``tcp.connectTimeout`` replaces
  the mesh ``connectTimeout`` (``pkg/config/mesh/mesh.go``: 10s);
  ``http.idleTimeout`` wins over ``tcp.idleTimeout``; ``maxRequestsPerConnection``
  and ``maxConnectionDuration`` go to the HTTP protocol options.
* Istio ``pilot/pkg/networking/core/cluster.go`` ``setKeepAliveSettings``: a
  ``tcpKeepalive`` block turns SO_KEEPALIVE on (the OS defaults apply), then
  sets ``probes`` when > 0 and ``time`` / ``interval`` as the Duration's whole
  seconds (MeshConfig's mesh-wide ``tcpKeepalive`` comes first; inmesh has no
  MeshConfig).
* Envoy ``source/common/conn_pool/conn_pool_base.cc``: ``newStreamImpl``
  attaches to a ready connection if there is one, else checks
  ``pendingRequests().canCreate()`` (overflow: ``upstream_rq_pending_overflow``)
  and queues the stream, then ``tryCreateNewConnection`` opens a connection
  unless ``canCreateConnection`` is false (``upstream_cx_overflow``);
  ``attachStreamToClient`` checks ``requests().canCreate()`` (overflow, also
  counted as ``upstream_rq_pending_overflow``); ``onUpstreamReady`` hands ready
  connections to pending streams oldest first.
* Envoy HTTP ``CommonHttpProtocolOptions``: ``idle_timeout`` defaults to 1h,
  0 disables it.

Differences from Envoy (documented simplifications)
---------------------------------------------------

* Without the connect hooks connection set-up is instantaneous: Envoy counts
  a request as pending while its new connection is being established, so a
  cold burst can hit ``http1MaxPendingRequests`` in Envoy earlier than here.
  With the hooks, a connecting request counts as pending *and* keeps counting
  against ``max_requests`` (Envoy checks ``max_requests`` only when the
  connection is ready, so it could refuse the request at that point).
* Envoy keeps one pool per host; idle connections held by one host count
  against the cluster's ``max_connections`` and cannot serve another host, and
  a host with no connection at all always gets one. inmesh counts busy
  connections per cluster. For a single-host cluster (Istio's
  circuit-breaking task) the two agree.
* The ``max_retries`` breaker and retry budgets are in
  :mod:`inmesh.resilience.budget`; :class:`PoolSettings` only carries
  ``max_retries``. Priorities (Envoy's DEFAULT/HIGH thresholds) do not exist.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inmesh.config.resources.destination_rule import ConnectionPoolSettings

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_THRESHOLD",
    "Admission",
    "AdmissionStats",
    "Breaker",
    "PoolSettings",
    "Ticket",
    "TicketState",
]

DEFAULT_THRESHOLD = 2**32 - 1
"""Istio's value for every circuit-breaker threshold (effectively unlimited)."""
DEFAULT_CONNECT_TIMEOUT = 10.0
"""The mesh ``connectTimeout`` default."""
DEFAULT_IDLE_TIMEOUT = 3600.0
"""Envoy's upstream HTTP idle timeout default."""


def _limit(value: int | None) -> int:
    return value if value is not None and value > 0 else DEFAULT_THRESHOLD


def _whole_seconds(duration: object) -> int | None:
    """A Duration's whole seconds, as Istio passes keep-alive times to Envoy."""
    seconds = _seconds(duration)
    return int(seconds) if seconds is not None else None


def _seconds(duration: object) -> float | None:
    seconds = getattr(duration, "seconds", None)
    return float(seconds) if seconds is not None else None


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """A cluster's connection-pool settings after Istio's translation.

    Thresholds are 2^32-1 unless configured > 0. Times are in seconds;
    ``None`` means no limit (``idle_timeout``: explicitly disabled with 0s).
    """

    max_connections: int = DEFAULT_THRESHOLD
    max_pending_requests: int = DEFAULT_THRESHOLD
    max_requests: int = DEFAULT_THRESHOLD
    max_retries: int = DEFAULT_THRESHOLD
    max_requests_per_connection: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    max_connection_duration: float | None = None
    tcp_keepalive: tuple[int | None, int | None, int | None] | None = None
    """``tcp.tcpKeepalive`` as Envoy gets it: ``(probes, time, interval)``, whole
    seconds, ``None`` for unset (the OS default); ``None`` as a whole: no
    SO_KEEPALIVE."""

    @classmethod
    def from_settings(
        cls,
        cp: ConnectionPoolSettings | None,
        *,
        mesh_connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> PoolSettings:
        """Istio's ``applyConnectionPool`` (``None``: no connectionPool block)."""
        tcp = cp.tcp if cp is not None else None
        http = cp.http if cp is not None else None
        max_connections = _limit(tcp.max_connections) if tcp is not None else DEFAULT_THRESHOLD
        connect_timeout = mesh_connect_timeout
        max_connection_duration: float | None = None
        idle: float | None = None
        if http is not None:
            idle = _seconds(http.idle_timeout)
        if tcp is not None:
            ct = _seconds(tcp.connect_timeout)
            if ct is not None:
                connect_timeout = ct
            max_connection_duration = _seconds(tcp.max_connection_duration)
            if idle is None:
                idle = _seconds(tcp.idle_timeout)
        if idle is None:
            idle = DEFAULT_IDLE_TIMEOUT
        mrpc = http.max_requests_per_connection if http is not None else None
        keepalive = tcp.tcp_keepalive if tcp is not None else None
        return cls(
            max_connections=max_connections,
            max_pending_requests=_limit(http.http1_max_pending_requests)
            if http is not None
            else DEFAULT_THRESHOLD,
            max_requests=_limit(http.http2_max_requests) if http is not None else DEFAULT_THRESHOLD,
            max_retries=_limit(http.max_retries) if http is not None else DEFAULT_THRESHOLD,
            max_requests_per_connection=mrpc if mrpc is not None and mrpc > 0 else None,
            connect_timeout=connect_timeout,
            idle_timeout=idle if idle > 0 else None,
            max_connection_duration=max_connection_duration,
            tcp_keepalive=None
            if keepalive is None
            else (
                keepalive.probes or None,  # Istio sets probes only when > 0
                _whole_seconds(keepalive.time),
                _whole_seconds(keepalive.interval),
            ),
        )


class Breaker(str, enum.Enum):
    """The circuit breaker that refused a request."""

    PENDING = "pending"
    """``http1MaxPendingRequests`` (Envoy ``upstream_rq_pending_overflow``)."""
    REQUESTS = "requests"
    """``http2MaxRequests`` (Envoy also counts it in ``upstream_rq_pending_overflow``)."""


class TicketState(str, enum.Enum):
    ACTIVE = "active"
    """Admitted: send the attempt now."""
    PENDING = "pending"
    """Waiting for a connection; ``on_ready`` runs when that changes."""
    OVERFLOW = "overflow"
    """Refused by a breaker (:attr:`Ticket.overflow`): local 503 ``UO``."""
    RELEASED = "released"
    """Done (or a pending ticket given up); releasing again does nothing."""


class Ticket:
    """One request's place in the cluster's circuit breakers.

    :meth:`release` is idempotent and safe on every state: it ends an active
    request, drops a pending one from the queue, and does nothing otherwise.
    """

    __slots__ = ("_admission", "_connecting", "_on_ready", "overflow", "state")

    def __init__(
        self,
        admission: Admission,
        state: TicketState,
        on_ready: Callable[[Ticket], None] | None,
        overflow: Breaker | None = None,
    ) -> None:
        self._admission = admission
        self._on_ready = on_ready
        self._connecting = False
        self.state = state
        self.overflow = overflow

    @property
    def admitted(self) -> bool:
        return self.state is TicketState.ACTIVE

    @property
    def connecting(self) -> bool:
        """Between :meth:`connect_started` and :meth:`connect_finished`."""
        return self._connecting

    def release(self) -> None:
        self._admission._release(self)

    def connect_started(self) -> None:
        """The driver is setting up a new connection for this active request:
        until :meth:`connect_finished` (or :meth:`release`) it also counts as
        pending. Does nothing unless the ticket is ACTIVE."""
        self._admission._connect(self, True)

    def connect_finished(self) -> None:
        """The connection announced by :meth:`connect_started` is ready (or
        failed: then :meth:`release` is enough)."""
        self._admission._connect(self, False)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        extra = f" {self.overflow.value}" if self.overflow is not None else ""
        return f"<Ticket {self.state.value}{extra}>"


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    """Gauges and counters since creation (Envoy names in the field notes).

    * ``active``: requests holding a connection (``upstream_rq_active``).
    * ``pending``: requests waiting, queued or connecting
      (``upstream_rq_pending_active``).
    * ``admitted_total``: requests that became active (``upstream_rq_total``).
    * ``pending_total``: requests that had to wait (``upstream_rq_pending_total``).
    * ``cx_overflow``: a connection was needed but ``max_connections`` was
      reached (``upstream_cx_overflow``; not itself a refusal in HTTP/1).
    * ``pending_overflow``: refused by ``max_pending_requests``.
    * ``rq_overflow``: refused by ``max_requests``.
    * ``pending_cancelled``: pending tickets released before they got a
      connection (``upstream_rq_cancelled``).
    """

    active: int
    pending: int
    admitted_total: int
    pending_total: int
    cx_overflow: int
    pending_overflow: int
    rq_overflow: int
    pending_cancelled: int

    @property
    def overflow_total(self) -> int:
        """Requests refused with ``UO``."""
        return self.pending_overflow + self.rq_overflow


class Admission:
    """Per cluster, process wide: Envoy's HTTP/1.1 connection-pool breakers.

    See the module documentation for the model. ``settings`` can be replaced
    on reload with :meth:`update`; active and pending requests carry over.
    """

    __slots__ = (
        "_active",
        "_admitted_total",
        "_connecting",
        "_cx_overflow",
        "_lock",
        "_pending",
        "_pending_cancelled",
        "_pending_overflow",
        "_pending_total",
        "_rq_overflow",
        "_settings",
    )

    def __init__(self, settings: PoolSettings | None = None) -> None:
        self._settings = settings if settings is not None else PoolSettings()
        self._lock = threading.Lock()
        self._active = 0
        self._connecting = 0
        self._pending: deque[Ticket] = deque()
        self._admitted_total = 0
        self._pending_total = 0
        self._cx_overflow = 0
        self._pending_overflow = 0
        self._rq_overflow = 0
        self._pending_cancelled = 0

    @property
    def settings(self) -> PoolSettings:
        return self._settings

    @property
    def unlimited(self) -> bool:
        """Every breaker at Istio's default (2^32-1): admission can never refuse."""
        s = self._settings
        return (
            s.max_connections >= DEFAULT_THRESHOLD
            and s.max_pending_requests >= DEFAULT_THRESHOLD
            and s.max_requests >= DEFAULT_THRESHOLD
            and s.max_requests_per_connection != 1
        )

    @property
    def active(self) -> int:
        """Requests in flight (each holds a connection)."""
        return self._active

    @property
    def pending(self) -> int:
        """Requests waiting for a connection (queued or connecting)."""
        return len(self._pending) + self._connecting

    def admit(self, on_ready: Callable[[Ticket], None] | None = None) -> Ticket:
        """Ask to send one attempt; the ticket is ACTIVE, PENDING or OVERFLOW.

        ``on_ready(ticket)`` is called once if (and only if) the ticket is
        PENDING and later leaves that state other than by its own
        :meth:`Ticket.release`.
        """
        s = self._settings
        with self._lock:
            if self._active < s.max_connections:
                if self._active >= s.max_requests:
                    self._rq_overflow += 1
                    return Ticket(self, TicketState.OVERFLOW, None, Breaker.REQUESTS)
                self._active += 1
                self._admitted_total += 1
                ticket = Ticket(self, TicketState.ACTIVE, None)
                self._fresh_connection_locked(ticket)
                return ticket
            self._cx_overflow += 1
            if len(self._pending) + self._connecting >= s.max_pending_requests:
                self._pending_overflow += 1
                return Ticket(self, TicketState.OVERFLOW, None, Breaker.PENDING)
            ticket = Ticket(self, TicketState.PENDING, on_ready)
            self._pending.append(ticket)
            self._pending_total += 1
            return ticket

    def try_admit(self, on_ready: Callable[[Ticket], None] | None = None) -> Ticket | None:
        """:meth:`admit`, with ``None`` instead of an OVERFLOW ticket."""
        ticket = self.admit(on_ready)
        return None if ticket.state is TicketState.OVERFLOW else ticket

    def update(self, settings: PoolSettings) -> None:
        """Apply new limits (reload). Pending requests that now fit start."""
        with self._lock:
            self._settings = settings
            ready = self._drain_locked()
        _notify(ready)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            state = ticket.state
            if state is TicketState.ACTIVE:
                ticket.state = TicketState.RELEASED
                self._active -= 1
                if ticket._connecting:
                    ticket._connecting = False
                    self._connecting -= 1
                ready = self._drain_locked()
            elif state is TicketState.PENDING:
                ticket.state = TicketState.RELEASED
                self._pending.remove(ticket)
                self._pending_cancelled += 1
                return
            else:
                ticket.state = TicketState.RELEASED
                return
        _notify(ready)

    def _connect(self, ticket: Ticket, started: bool) -> None:
        with self._lock:
            if ticket.state is not TicketState.ACTIVE or ticket._connecting is started:
                return
            ticket._connecting = started
            self._connecting += 1 if started else -1

    def _drain_locked(self) -> list[Ticket]:
        s = self._settings
        ready: list[Ticket] = []
        while self._pending and self._active < s.max_connections:
            ticket = self._pending.popleft()
            if self._active >= s.max_requests:
                self._rq_overflow += 1
                ticket.state = TicketState.OVERFLOW
                ticket.overflow = Breaker.REQUESTS
            else:
                self._active += 1
                self._admitted_total += 1
                ticket.state = TicketState.ACTIVE
                self._fresh_connection_locked(ticket)
            ready.append(ticket)
        return ready

    def _fresh_connection_locked(self, ticket: Ticket) -> None:
        """With ``max_requests_per_connection`` 1 every request opens a connection:
        it counts as pending from admission until :meth:`Ticket.connect_finished`
        (Envoy keeps such a request pending while its connection is set up)."""
        if self._settings.max_requests_per_connection == 1 and not ticket._connecting:
            ticket._connecting = True
            self._connecting += 1

    def stats(self) -> AdmissionStats:
        with self._lock:
            return AdmissionStats(
                active=self._active,
                pending=len(self._pending) + self._connecting,
                admitted_total=self._admitted_total,
                pending_total=self._pending_total,
                cx_overflow=self._cx_overflow,
                pending_overflow=self._pending_overflow,
                rq_overflow=self._rq_overflow,
                pending_cancelled=self._pending_cancelled,
            )


def _notify(tickets: list[Ticket]) -> None:
    """Run the ``on_ready`` callbacks (outside the lock); one failing callback
    does not keep the others from running."""
    error: BaseException | None = None
    for ticket in tickets:
        callback = ticket._on_ready
        ticket._on_ready = None
        if callback is None:
            continue
        try:
            callback(ticket)
        except BaseException as exc:
            if error is None:
                error = exc
    if error is not None:
        raise error


class _NoLimits:
    """The admission behind :data:`FREE_TICKET`: nothing to count."""

    def _release(self, ticket: Ticket) -> None:
        pass

    def _connect(self, ticket: Ticket, started: bool) -> None:
        pass


FREE_TICKET = Ticket(_NoLimits(), TicketState.ACTIVE, None)  # type: ignore[arg-type]
"""An always-active ticket whose release does nothing: what a driver may use for a
cluster whose breakers are all at Istio's unlimited defaults and that has no retry
budget (nothing would ever read the counts)."""
