"""Istio's metric families, the per-request recorder, and the mesh's own state."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import inmesh
from inmesh._version import __version__
from inmesh.identity.ca import LocalCA
from inmesh.identity.sources import CASource
from inmesh.identity.spiffe import SpiffeId
from inmesh.model import Workload
from inmesh.telemetry.metrics import BUCKETS, REQUEST_LABELS, IstioMetrics, Recorder

from .conftest import Upstream, istio_requests, samples

ISTIO_LABELS = (
    # https://istio.io/latest/docs/reference/config/metrics/ (istio-semantics.md §7.2)
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

ENVOY_BUCKETS = [
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000, math.inf,
]  # fmt: skip

HISTOGRAMS = (
    "istio_request_duration_milliseconds",
    "istio_request_bytes",
    "istio_response_bytes",
)


def label_values(**overrides: str) -> tuple[str, ...]:
    values = dict.fromkeys(REQUEST_LABELS, "unknown")
    values.update(reporter="destination", response_code="200", response_flags="-")
    values.update(grpc_response_status="")
    values.update(overrides)
    return tuple(values[k] for k in REQUEST_LABELS)


def families(registry: CollectorRegistry) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


# -- the families ----------------------------------------------------------------------


def test_one_object_per_registry() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    assert IstioMetrics.for_registry(one) is IstioMetrics.for_registry(one)
    assert IstioMetrics.for_registry(one) is not IstioMetrics.for_registry(two)


def test_request_labels_are_istios() -> None:
    assert REQUEST_LABELS == ISTIO_LABELS
    assert tuple(BUCKETS) == tuple(ENVOY_BUCKETS)


def test_families_in_the_exposition() -> None:
    registry = CollectorRegistry()
    recorder = Recorder(IstioMetrics.for_registry(registry))
    recorder.record("k", label_values, 7.0, 0, 10)
    found = families(registry)
    assert found["istio_requests"].type == "counter"  # type: ignore[attr-defined]
    for name in HISTOGRAMS:
        assert found[name].type == "histogram"  # type: ignore[attr-defined]
    text = generate_latest(registry).decode()
    assert "# TYPE istio_requests_total counter" in text
    for name in HISTOGRAMS:
        assert f"# TYPE {name} histogram" in text
    # every series carries exactly Istio's labels (histogram buckets add ``le``)
    for name in (
        "istio_requests_total",
        *(f"{h}_{s}" for h in HISTOGRAMS for s in ("sum", "count")),
    ):
        ((labels, _),) = samples(registry, name)
        assert set(labels) == set(ISTIO_LABELS), name
    for name in HISTOGRAMS:
        for labels, _ in samples(registry, f"{name}_bucket"):
            assert set(labels) == {*ISTIO_LABELS, "le"}


def test_buckets_are_envoys_defaults() -> None:
    registry = CollectorRegistry()
    Recorder(IstioMetrics.for_registry(registry)).record("k", label_values, 7.0, 0, 10)
    text = generate_latest(registry).decode()
    for name in HISTOGRAMS:
        les = [float(labels["le"]) for labels, _ in samples(registry, f"{name}_bucket")]
        assert les == ENVOY_BUCKETS, name
    # as prometheus-client writes them
    for le in ('"0.5"', '"1.0"', '"300000.0"', '"600000.0"', '"1.8e+06"', '"3.6e+06"', '"+Inf"'):
        assert f"le={le}" in text


def test_histogram_counts_are_cumulative_and_inclusive() -> None:
    registry = CollectorRegistry()
    recorder = Recorder(IstioMetrics.for_registry(registry))
    recorder.record("k", label_values, 7.0, 0, 10)  # 10 bytes falls in le="10"
    recorder.record("k", label_values, 4_000_000.0, 1, 1_000_000_000)

    def buckets(name: str) -> dict[float, float]:
        return {float(lab["le"]): v for lab, v in samples(registry, f"{name}_bucket")}

    dur = buckets("istio_request_duration_milliseconds")
    assert (dur[5], dur[10], dur[3600000], dur[math.inf]) == (0, 1, 1, 2)
    req = buckets("istio_request_bytes")
    assert (req[0.5], req[1], req[math.inf]) == (1, 2, 2)
    resp = buckets("istio_response_bytes")
    assert (resp[5], resp[10], resp[3600000], resp[math.inf]) == (0, 1, 1, 2)
    assert samples(registry, "istio_request_duration_milliseconds_sum")[0][1] == 4_000_007.0
    assert samples(registry, "istio_request_duration_milliseconds_count")[0][1] == 2
    assert samples(registry, "istio_response_bytes_sum")[0][1] == 1_000_000_010
    assert samples(registry, "istio_requests_total")[0][1] == 2


def test_build_info() -> None:
    registry = CollectorRegistry()
    IstioMetrics.for_registry(registry)
    assert samples(registry, "istio_build") == [
        ({"component": "proxy", "tag": f"inmesh-{__version__}"}, 1.0)
    ]
    assert (
        registry.get_sample_value(
            "istio_build", {"component": "proxy", "tag": f"inmesh-{__version__}"}
        )
        == 1
    )


def test_nothing_before_the_first_request() -> None:
    registry = CollectorRegistry()
    IstioMetrics.for_registry(registry)
    assert istio_requests(registry) == []


def test_foreign_metric_of_the_same_name_is_a_clear_error() -> None:
    registry = CollectorRegistry()
    Counter("istio_requests_total", "someone else's", ["code"], registry=registry)
    with pytest.raises(ValueError, match="istio_requests_total") as info:
        IstioMetrics.for_registry(registry)
    assert "metrics_registry=CollectorRegistry()" in str(info.value)
    with pytest.raises(ValueError, match="istio_requests_total"):
        inmesh.Mesh([], workload=Workload("backend"), metrics_registry=registry)


def test_foreign_build_gauge_leaves_the_registry_clean() -> None:
    registry = CollectorRegistry()
    Gauge("istio_build", "someone else's", ["component"], registry=registry)
    with pytest.raises(ValueError, match="istio_build"):
        IstioMetrics.for_registry(registry)
    # nothing half-registered: the other names are still free
    Counter("istio_requests_total", "free", registry=registry)


def test_a_mesh_uses_its_registrys_families() -> None:
    registry = CollectorRegistry()
    with inmesh.Mesh([], workload=Workload("backend"), metrics_registry=registry) as mesh:
        assert mesh.metrics_registry is registry
        assert mesh.telemetry.metrics is IstioMetrics.for_registry(registry)
    with inmesh.Mesh([], workload=Workload("backend"), metrics_registry=None) as mesh:
        assert mesh.metrics_registry is None
        assert mesh.telemetry.metrics is None


# -- the recorder --------------------------------------------------------------------------


class CountingLabels:
    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        self.calls = 0

    def __call__(self) -> tuple[str, ...]:
        self.calls += 1
        return self.values


def test_recorder_builds_labels_once_per_key() -> None:
    registry = CollectorRegistry()
    recorder = Recorder(IstioMetrics.for_registry(registry))
    ok = CountingLabels(label_values())
    failed = CountingLabels(label_values(response_code="503", response_flags="UH"))
    for _ in range(5):
        recorder.record(("ok",), ok, 1.0, 0, 0)
        recorder.record(("failed",), failed, 1.0, 0, 0)
    assert (ok.calls, failed.calls) == (1, 1)
    counts = {lab["response_code"]: v for lab, v in istio_requests(registry)}
    assert counts == {"200": 5, "503": 5}


def test_recorder_past_max_series_is_slower_never_wrong() -> None:
    registry = CollectorRegistry()
    recorder = Recorder(IstioMetrics.for_registry(registry), max_series=1)
    first = CountingLabels(label_values(response_code="200"))
    second = CountingLabels(label_values(response_code="404"))
    for _ in range(3):
        recorder.record("first", first, 1.0, 0, 0)
        recorder.record("second", second, 1.0, 0, 0)
    assert first.calls == 1  # cached
    assert second.calls == 3  # not cached: built per request
    counts = {lab["response_code"]: v for lab, v in istio_requests(registry)}
    assert counts == {"200": 3, "404": 3}


def test_two_recorders_sharing_a_registry_share_series() -> None:
    registry = CollectorRegistry()
    metrics = IstioMetrics.for_registry(registry)
    Recorder(metrics).record("a", label_values, 1.0, 0, 0)
    Recorder(metrics).record("b", label_values, 1.0, 0, 0)
    assert [v for _, v in istio_requests(registry)] == [2]


def test_multiprocess_mode_aggregates_through_the_shared_files(tmp_path: Path) -> None:
    """Under PROMETHEUS_MULTIPROC_DIR the values land in the files MultiProcessCollector reads."""
    script = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess
        from inmesh.telemetry.metrics import IstioMetrics, Recorder, REQUEST_LABELS

        registry = CollectorRegistry()
        recorder = Recorder(IstioMetrics.for_registry(registry))
        values = tuple("destination" if k == "reporter" else "x" for k in REQUEST_LABELS)
        for _ in range(3):
            recorder.record("k", lambda: values, 7.0, 0, 10)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        print(generate_latest(merged).decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    parsed = {
        s.name: s
        for f in text_string_to_metric_families(out.stdout)
        for s in f.samples
        if not s.name.endswith("_bucket")
    }
    assert parsed["istio_requests_total"].value == 3
    assert set(parsed["istio_requests_total"].labels) == set(ISTIO_LABELS)
    assert parsed["istio_request_duration_milliseconds_sum"].value == 21
    assert parsed["istio_response_bytes_count"].value == 3
    assert parsed["istio_build"].labels["component"] == "proxy"
    assert any(p.name.startswith("counter_") for p in tmp_path.iterdir())


# -- the mesh's own state ----------------------------------------------------------------


def call_through(mesh: inmesh.Mesh, url: str = "http://api.example.com/x") -> None:
    with httpx.Client(transport=mesh.transport()) as client:
        assert client.get(url).status_code == 200


def cluster_gauges(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (lab["workload"], lab["namespace"], lab["cluster_name"]): v
        for lab, v in samples(registry, "inmesh_cluster_membership_total")
    }


CLUSTER = "outbound|80||api.example.com"


def test_cluster_stats_of_meshes_with_their_own_registries(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = upstream.config_dir(tmp_path)
    one, two = CollectorRegistry(), CollectorRegistry()
    with (
        inmesh.Mesh(config, workload=Workload("frontend"), metrics_registry=one) as a,
        inmesh.Mesh(config, workload=Workload("admin", namespace="ops"), metrics_registry=two) as b,
    ):
        assert cluster_gauges(one) == {}  # no cluster before the first request
        call_through(a)
        call_through(b)
        assert cluster_gauges(one) == {("frontend", "default", CLUSTER): 1}
        assert cluster_gauges(two) == {("admin", "ops", CLUSTER): 1}
        healthy = samples(one, "inmesh_cluster_membership_healthy")
        assert healthy == [
            ({"workload": "frontend", "namespace": "default", "cluster_name": CLUSTER}, 1)
        ]
        for name in (
            "inmesh_cluster_upstream_rq_active",
            "inmesh_cluster_outlier_detection_ejections_active",
            "inmesh_cluster_upstream_rq_retry_total",
            "inmesh_cluster_outlier_detection_ejections_total",
            "inmesh_cluster_upstream_rq_pending_overflow_total",
        ):
            assert [v for _, v in samples(one, name)] == [0], name
        assert samples(one, "inmesh_config_reloads_total") == [
            ({"workload": "frontend", "namespace": "default"}, 0)
        ]
        assert [
            lab["workload"] for lab, _ in samples(two, "inmesh_config_reload_errors_total")
        ] == ["admin"]


def test_cluster_stats_of_meshes_sharing_a_registry(tmp_path: Path, upstream: Upstream) -> None:
    config = upstream.config_dir(tmp_path)
    shared = CollectorRegistry()
    a = inmesh.Mesh(config, workload=Workload("frontend"), metrics_registry=shared)
    b = inmesh.Mesh(config, workload=Workload("admin", namespace="ops"), metrics_registry=shared)
    try:
        call_through(a)
        call_through(b)
        assert cluster_gauges(shared) == {
            ("frontend", "default", CLUSTER): 1,
            ("admin", "ops", CLUSTER): 1,
        }
        a.close()
        assert cluster_gauges(shared) == {("admin", "ops", CLUSTER): 1}
        assert [lab["workload"] for lab, _ in samples(shared, "inmesh_config_reloads_total")] == [
            "admin"
        ]
    finally:
        a.close()
        b.close()
    assert cluster_gauges(shared) == {}
    assert samples(shared, "inmesh_config_reloads_total") == []


def test_config_reloads_are_counted(tmp_path: Path) -> None:
    import time

    config = tmp_path / "mesh"
    config.mkdir()
    labels = {"workload": "backend", "namespace": "default"}

    def write(name: str, text: str) -> None:  # atomically: the watcher never sees half a file
        staged = tmp_path / name
        staged.write_text(text)
        os.replace(staged, config / name)

    def wait_for(name: str, value: float) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and registry.get_sample_value(name, labels) != value:
            time.sleep(0.02)
        assert registry.get_sample_value(name, labels) == value

    registry = CollectorRegistry()
    with inmesh.Mesh(
        config, workload=Workload("backend"), metrics_registry=registry, poll_interval=0.02
    ):
        wait_for("inmesh_config_reloads_total", 0)
        write(
            "pa.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            "metadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n",
        )
        wait_for("inmesh_config_reloads_total", 1)
        write("bad.yaml", "kind: [not, valid\n")
        wait_for("inmesh_config_reload_errors_total", 1)
        assert registry.get_sample_value("inmesh_config_reloads_total", labels) == 1


def test_certificate_expiry() -> None:
    source = CASource(LocalCA.create(), SpiffeId.for_workload("default", "backend-sa"))
    registry = CollectorRegistry()
    workload = Workload("backend", service_account="backend-sa")
    with inmesh.Mesh(workload=workload, identity=source, metrics_registry=registry):
        cert = source.current()
        assert samples(registry, "inmesh_certificate_expiration_timestamp_seconds") == [
            (
                {
                    "workload": "backend",
                    "namespace": "default",
                    "spiffe_id": "spiffe://cluster.local/ns/default/sa/backend-sa",
                },
                cert.not_after.timestamp(),
            )
        ]
    registry = CollectorRegistry()
    with inmesh.Mesh(workload=workload, metrics_registry=registry):
        assert samples(registry, "inmesh_certificate_expiration_timestamp_seconds") == []
