"""Istio's standard metrics with prometheus-client, and the mesh's own.

Istio's HTTP metrics (istio-semantics.md §7; https://istio.io/latest/docs/reference/config/metrics/):

* ``istio_requests_total`` (counter),
* ``istio_request_duration_milliseconds``, ``istio_request_bytes`` and
  ``istio_response_bytes`` (histograms with Envoy's default buckets, the ones
  Istio installs),

labelled exactly as the Istio stats filter labels them (:data:`REQUEST_LABELS`),
``reporter="source"`` by the transports and ``reporter="destination"`` by the
middleware. The metric families are created once per
:class:`~prometheus_client.CollectorRegistry` (:meth:`IstioMetrics.for_registry`)
and shared by every :class:`~inmesh.Mesh` writing into it: their series are
told apart by their labels. Under prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, e.g. gunicorn workers) the same objects write
to the shared files and a ``MultiProcessCollector`` aggregates them.

On the request path a :class:`Recorder` caches the labelled children per
label key, so recording one request is a dictionary lookup, one counter
increment and three histogram observations.
"""

from __future__ import annotations

import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from inmesh.model import Workload

__all__ = [
    "BUCKETS",
    "REQUEST_LABELS",
    "IstioMetrics",
    "MeshStateCollector",
    "Recorder",
    "StateSource",
]

BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
    float("inf"),
)
"""Envoy's default histogram buckets, which Istio's ``istio_*`` histograms use (ms and bytes alike)."""

REQUEST_LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
"""The labels of Istio's HTTP metrics, in the order Istio's stats filter emits them."""

_families: weakref.WeakKeyDictionary[CollectorRegistry, IstioMetrics] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()

_BOUNDS: tuple[float, ...] = BUCKETS
_LE: tuple[str, ...] = tuple(floatToGoString(b) for b in BUCKETS)  # type: ignore[no-untyped-call]


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_FOLD_AT = 128
"""Observations a series keeps unfolded before the recording request folds them."""


class _Series:
    """One label set's counts: requests, and three histograms (bucket counts, sums).

    Requests append ``(duration, request bytes, response bytes)`` to
    ``pending`` (one atomic ``list.append``); the counts are folded from it in
    batches, by the request that fills it to :data:`_FOLD_AT` and before every
    read, under the series lock. Folding takes the first ``n`` items with
    ``pending[:n]`` and removes them with ``del pending[:n]``, both atomic, so
    items appended meanwhile stay for the next fold.
    """

    __slots__ = ("count", "dur", "dur_sum", "pending", "req", "req_sum", "resp", "resp_sum")

    def __init__(self) -> None:
        n = len(_BOUNDS)
        self.pending: list[tuple[float, int, int]] = []
        self.count = 0
        self.dur = [0] * n
        self.req = [0] * n
        self.resp = [0] * n
        self.dur_sum = 0.0
        self.req_sum = 0.0
        self.resp_sum = 0.0


class IstioMetrics(Collector):
    """Istio's standard metric families in one registry (see the module docstring).

    In a single process the families are one collector keeping plain counts
    per label set under one lock, about 1 µs per request for all four
    metrics; prometheus-client's own metric objects cost about 3 µs
    (python-tech.md §5.1). Under multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR`` set when the families are created) they are
    prometheus-client ``Counter``/``Histogram`` objects instead, whose values
    live in the shared files that ``MultiProcessCollector`` aggregates.
    """

    def __init__(self, *, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        self._objects: tuple[Any, ...] = ()
        from inmesh._version import __version__

        self.build_tag = f"inmesh-{__version__}"

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> IstioMetrics:
        """The families in ``registry``, created and registered on first use.

        Raises :class:`ValueError` naming the metric when something else in
        the process already registered a metric of that name in ``registry``.
        """
        with _families_lock:
            found = _families.get(registry)
            if found is not None:
                return found
            made = cls(multiprocess=_multiprocess())
            try:
                made._register(registry)
            except ValueError as exc:
                raise ValueError(
                    f"cannot register Istio's metrics in {registry!r}: {exc}; another "
                    "library registered the same names. Give the mesh its own registry "
                    "(Mesh(metrics_registry=CollectorRegistry()))."
                ) from None
            _families[registry] = made
            return made

    def _register(self, registry: CollectorRegistry) -> None:
        if not self.multiprocess:
            registry.register(self)
            return
        labels = REQUEST_LABELS
        made: list[Any] = []
        try:
            made.append(
                Counter(
                    "istio_requests_total",
                    "Requests handled by the mesh (Istio standard metric).",
                    labels,
                    registry=registry,
                )
            )
            for name, doc in (
                ("istio_request_duration_milliseconds", "Request duration in milliseconds."),
                ("istio_request_bytes", "Request body size in bytes."),
                ("istio_response_bytes", "Response body size in bytes."),
            ):
                made.append(
                    Histogram(
                        name,
                        doc + " (Istio standard metric)",
                        labels,
                        buckets=BUCKETS,
                        registry=registry,
                    )
                )
            build = Gauge(
                "istio_build",
                "Istio component build info (inmesh reports itself as the proxy).",
                ("component", "tag"),
                registry=registry,
                multiprocess_mode="max",
            )
            build.labels("proxy", self.build_tag).set(1)
            made.append(build)
        except ValueError:
            for metric in made:
                registry.unregister(metric)
            raise
        self._objects = tuple(made)

    def describe(self) -> list[Metric]:
        # Names only, so the registry refuses duplicates (prometheus-client checks names).
        return [
            CounterMetricFamily("istio_requests", "", labels=REQUEST_LABELS),
            HistogramMetricFamily("istio_request_duration_milliseconds", "", labels=REQUEST_LABELS),
            HistogramMetricFamily("istio_request_bytes", "", labels=REQUEST_LABELS),
            HistogramMetricFamily("istio_response_bytes", "", labels=REQUEST_LABELS),
            GaugeMetricFamily("istio_build", "", labels=("component", "tag")),
        ]

    # -- recording ---------------------------------------------------------------------

    def handle(self, values: tuple[str, ...]) -> Any:
        """What :meth:`observe` takes for one label set (cache it per label key)."""
        if self.multiprocess:
            return tuple(m.labels(*values) for m in self._objects[:4])
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._series[values] = _Series()
            return series

    def observe(
        self, handle: Any, duration_ms: float, request_bytes: int, response_bytes: int
    ) -> None:
        """Count one request of the label set ``handle`` stands for."""
        if type(handle) is not _Series:
            counter, duration, req, resp = handle
            counter.inc()
            duration.observe(duration_ms)
            req.observe(request_bytes)
            resp.observe(response_bytes)
            return
        pending = handle.pending
        pending.append((duration_ms, request_bytes, response_bytes))
        if len(pending) >= _FOLD_AT:
            with self._lock:
                _fold(handle)

    def sample(self, values: tuple[str, ...]) -> int:
        """Requests counted so far for one full label set (for tests and the admin page)."""
        if self.multiprocess:
            return int(self._objects[0].labels(*values)._value.get())
        with self._lock:
            series = self._series.get(values)
            if series is None:
                return 0
            _fold(series)
            return series.count

    # -- exposition ----------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        if self.multiprocess:
            return
        with self._lock:
            for series in self._series.values():
                _fold(series)
            rows = [
                (
                    labels,
                    s.count,
                    (list(s.dur), s.dur_sum),
                    (list(s.req), s.req_sum),
                    (list(s.resp), s.resp_sum),
                )
                for labels, s in self._series.items()
            ]
        requests = CounterMetricFamily(
            "istio_requests",
            "Requests handled by the mesh (Istio standard metric).",
            labels=REQUEST_LABELS,
        )
        histograms = [
            HistogramMetricFamily(name, doc, labels=REQUEST_LABELS)
            for name, doc in (
                (
                    "istio_request_duration_milliseconds",
                    "Request duration in milliseconds (Istio standard metric).",
                ),
                ("istio_request_bytes", "Request body size in bytes (Istio standard metric)."),
                ("istio_response_bytes", "Response body size in bytes (Istio standard metric)."),
            )
        ]
        for labels, count, *hists in rows:
            values = list(labels)
            requests.add_metric(values, count)
            for family, (counts, total) in zip(histograms, hists, strict=True):
                cumulative = 0
                buckets = []
                for le, n in zip(_LE, counts, strict=True):
                    cumulative += n
                    buckets.append((le, cumulative))
                family.add_metric(values, buckets, total)
        build = GaugeMetricFamily(
            "istio_build",
            "Istio component build info (inmesh reports itself as the proxy).",
            labels=("component", "tag"),
        )
        build.add_metric(["proxy", self.build_tag], 1)
        yield requests
        yield from histograms
        yield build


def _fold(series: _Series) -> None:
    """Fold ``series.pending`` into its counts (the caller holds the metrics lock)."""
    pending = series.pending
    n = len(pending)
    if not n:
        return
    batch = pending[:n]
    del pending[:n]
    dur, req, resp = series.dur, series.req, series.resp
    dur_sum = req_sum = resp_sum = 0.0
    for d, q, r in batch:
        dur[bisect_left(_BOUNDS, d)] += 1
        req[bisect_left(_BOUNDS, q)] += 1
        resp[bisect_left(_BOUNDS, r)] += 1
        dur_sum += d
        req_sum += q
        resp_sum += r
    series.count += n
    series.dur_sum += dur_sum
    series.req_sum += req_sum
    series.resp_sum += resp_sum


class Recorder:
    """Records requests into :class:`IstioMetrics`, caching a handle per label key.

    ``key`` is any hashable the caller derives cheaply from a request (the
    peer's interned metadata, the status, the flags, ...); ``labels`` builds
    the full label tuple (in :data:`REQUEST_LABELS` order) only the first
    time a key is seen. At most ``max_series`` keys are cached; past that,
    handles are looked up per request (slower, never wrong). Thread-safe.
    """

    def __init__(self, metrics: IstioMetrics, *, max_series: int = 10_000) -> None:
        self.metrics = metrics
        self._handles: dict[object, Any] = {}
        self._max = max_series
        self._lock = threading.Lock()

    def record(
        self,
        key: object,
        labels: Callable[[], tuple[str, ...]],
        duration_ms: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        handle = self._handles.get(key)
        if handle is None:
            handle = self.metrics.handle(labels())
            with self._lock:
                if len(self._handles) < self._max:
                    self._handles[key] = handle
        self.metrics.observe(handle, duration_ms, request_bytes, response_bytes)


# -- the mesh's own state, read at scrape time ------------------------------------------


class StateSource(Protocol):
    """What a mesh reports about itself at scrape time (the :class:`~inmesh.Mesh`).

    Its workload's name and namespace label every sample, so several meshes
    in one process stay apart.
    """

    @property
    def workload(self) -> Workload: ...

    def cluster_stats(self) -> Iterable[ClusterStats]: ...

    def mesh_stats(self) -> MeshStats: ...


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """One upstream cluster's counters and gauges (Envoy's ``cluster.<name>.*`` stats)."""

    name: str
    endpoints: int
    healthy: int
    ejections_active: int
    ejections_total: int
    retries: int
    overflows: int
    requests_active: int


@dataclass(frozen=True, slots=True)
class MeshStats:
    """Mesh-wide counters: configuration reloads and the certificate's expiry."""

    config_reloads: int = 0
    config_errors: int = 0
    certificate_expiry: float | None = None
    """Unix time the workload certificate expires, if there is one."""
    spiffe_id: str = ""


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, MeshStateCollector] = (
    weakref.WeakKeyDictionary()
)


class MeshStateCollector(Collector):
    """One collector per registry reporting every live mesh's state (weakly held).

    The names follow Envoy's cluster statistics with an ``inmesh_`` prefix
    (``inmesh_cluster_upstream_rq_retry_total``,
    ``inmesh_cluster_outlier_detection_ejections_active``, ...). Read at
    scrape time from the meshes themselves, so they cost nothing per request;
    under multiprocess mode each worker reports its own through its admin
    endpoint (prometheus-client does not aggregate custom collectors).
    """

    def __init__(self) -> None:
        self._sources: weakref.WeakSet[StateSource] = weakref.WeakSet()
        self._lock = threading.Lock()

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> MeshStateCollector:
        with _families_lock:
            found = _collectors.get(registry)
            if found is None:
                found = cls()
                registry.register(found)
                _collectors[registry] = found
            return found

    def add(self, source: StateSource) -> None:
        with self._lock:
            self._sources.add(source)

    def discard(self, source: StateSource) -> None:
        with self._lock:
            self._sources.discard(source)

    def describe(self) -> list[Metric]:
        return []  # collected lazily; names are unique to inmesh

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            sources = list(self._sources)
        wl = ("workload", "namespace")
        cl = (*wl, "cluster_name")
        gauges = {
            "endpoints": GaugeMetricFamily(
                "inmesh_cluster_membership_total", "Endpoints in the cluster.", labels=cl
            ),
            "healthy": GaugeMetricFamily(
                "inmesh_cluster_membership_healthy",
                "Endpoints in the cluster not ejected and healthy.",
                labels=cl,
            ),
            "ejections_active": GaugeMetricFamily(
                "inmesh_cluster_outlier_detection_ejections_active",
                "Endpoints ejected by outlier detection now.",
                labels=cl,
            ),
            "requests_active": GaugeMetricFamily(
                "inmesh_cluster_upstream_rq_active", "Requests in flight to the cluster.", labels=cl
            ),
        }
        counters = {
            "ejections_total": CounterMetricFamily(
                "inmesh_cluster_outlier_detection_ejections",
                "Ejections by outlier detection.",
                labels=cl,
            ),
            "retries": CounterMetricFamily(
                "inmesh_cluster_upstream_rq_retry", "Retries sent to the cluster.", labels=cl
            ),
            "overflows": CounterMetricFamily(
                "inmesh_cluster_upstream_rq_pending_overflow",
                "Requests refused by the circuit breaker (flag UO).",
                labels=cl,
            ),
        }
        reloads = CounterMetricFamily(
            "inmesh_config_reloads", "Configuration snapshots applied.", labels=wl
        )
        errors = CounterMetricFamily(
            "inmesh_config_reload_errors",
            "Configuration changes refused (the last good configuration stays).",
            labels=wl,
        )
        expiry = GaugeMetricFamily(
            "inmesh_certificate_expiration_timestamp_seconds",
            "When the workload certificate expires (Unix time).",
            labels=(*wl, "spiffe_id"),
        )
        for source in sources:
            wl_ = source.workload
            base = [wl_.name, wl_.namespace]
            for stats in source.cluster_stats():
                values = [*base, stats.name]
                for attr, family in gauges.items():
                    family.add_metric(values, getattr(stats, attr))
                for attr, cfamily in counters.items():
                    cfamily.add_metric(values, getattr(stats, attr))
            mesh = source.mesh_stats()
            reloads.add_metric(base, mesh.config_reloads)
            errors.add_metric(base, mesh.config_errors)
            if mesh.certificate_expiry is not None:
                expiry.add_metric([*base, mesh.spiffe_id], mesh.certificate_expiry)
        yield from gauges.values()
        yield from counters.values()
        yield reloads
        yield errors
        yield expiry
