"""``inmesh demo`` as a real subprocess: it passes, in time, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from inmesh.demo import config as demo_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
SPLIT = re.compile(r"v1 (\d+) \((\d+\.\d) %\), v2 (\d+) \((\d+\.\d) %\)")


def workspace_of(output: str) -> Path:
    m = re.search(r"^workspace: (\S+)$", output, re.M)
    assert m, output
    return Path(m.group(1))


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (Linux: /proc)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def assert_cleaned_up(output: str) -> None:
    workspace = workspace_of(output)
    assert not workspace.exists(), f"{workspace} left behind"
    if Path("/proc/self").exists():
        deadline = time.monotonic() + 5
        while processes_using(workspace) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_using(workspace) == []


def test_demo_runs_through() -> None:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "inmesh", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    elapsed = time.monotonic() - started
    output = out.stdout + out.stderr
    assert out.returncode == 0, output
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
    # the identities
    assert "spiffe://cluster.local/ns/default/sa/frontend-sa" in output
    assert "spiffe://cluster.local/ns/default/sa/backend-sa" in output
    # a caller with another service account is refused by the AuthorizationPolicy
    assert "you (demo-sa) -> backend: 403 'RBAC: access denied'" in output
    # the measured split
    m = SPLIT.search(output)
    assert m, output
    v1, v1_pct, v2, v2_pct = int(m[1]), float(m[2]), int(m[3]), float(m[4])
    assert v1 + v2 >= 190 and v2 > 0
    assert abs(v1_pct + v2_pct - 100) < 0.2
    # retries, ejection, coming back, the end
    assert re.search(r"\d+ picked backend-v1-b first: connection refused", output), output
    assert "it was ejected" in output
    assert "back in the pool" in output
    assert "Metrics" in output
    assert "process(es) stopped" in output and "removed" in output
    assert "Where to go next" in output
    assert "Traceback" not in output
    assert_cleaned_up(output)


def test_ctrl_c_with_keep_running_stops_everything() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "inmesh", "demo", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,  # its own process group, as a shell gives it
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops them" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(90), "".join(lines)
        time.sleep(0.5)
        output = "".join(lines)
        urls = set(re.findall(r"https://127\.0\.0\.1:\d+/", output))
        assert len(urls) == 4, output
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:  # the test failed: kill the group, remove what it left
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            m = re.search(r"^workspace: (\S+)$", "".join(lines), re.M)
            if m:
                shutil.rmtree(m.group(1), ignore_errors=True)
    reader.join(5)
    output = "".join(lines)
    assert "process(es) stopped" in output, output
    assert_cleaned_up(output)


def test_interrupted_demo_exits_130_and_cleans_up() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "inmesh", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # interrupt while the services start
        lines.append(line)
        if line.startswith("[2/"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # the demo alone: it must stop its services itself
    rest, _ = proc.communicate(timeout=30)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "INTERRUPTED" in output
    assert_cleaned_up(output)


def test_demo_config_is_the_examples_mesh() -> None:
    """The demo's embedded resources are examples/mesh/ but for the shortened outlier timing."""
    examples = ROOT / "examples" / "mesh"
    for name, text in demo_config.RESOURCES.items():
        ours = yaml.safe_load(text)
        theirs = yaml.safe_load((examples / name).read_text())
        if name.startswith("05-"):
            outlier = theirs["spec"]["trafficPolicy"]["outlierDetection"]
            assert (outlier["interval"], outlier["baseEjectionTime"]) == ("10s", "30s")
            outlier["interval"] = demo_config.OUTLIER_INTERVAL
            outlier["baseEjectionTime"] = demo_config.BASE_EJECTION_TIME
        assert ours == theirs, name
    assert {f.name for f in examples.glob("0*.yaml")} == set(demo_config.RESOURCES)


def test_metrics_step_skips_without_an_admin_endpoint() -> None:
    import io

    from inmesh.demo.progress import Progress
    from inmesh.demo.run import Demo

    out = io.StringIO()
    progress = Progress(out, total=1, live=False)
    demo = Demo(progress)
    try:
        with progress.step("Metrics") as step:
            demo.metrics(step)  # demo.admin is False until the services start
    finally:
        demo.close()
    assert "skipped: this build has no admin endpoint yet" in out.getvalue()
    assert "ok (" in out.getvalue()
    assert not demo.workdir.exists()


def test_requests_total_columns() -> None:
    from inmesh.demo.run import _requests_total

    page = (
        "# HELP istio_requests_total Total requests.\n"
        "# TYPE istio_requests_total counter\n"
        'istio_requests_total{reporter="source",source_workload="frontend",source_version="v1",'
        'destination_workload="backend-v2",destination_version="v2",response_code="200",'
        'response_flags="-"} 19.0\n'
        'istio_requests_total{reporter="destination",source_workload="unknown",'
        'source_principal="spiffe://cluster.local/ns/default/sa/demo-sa",'
        'destination_workload="frontend",destination_version="v1",response_code="200",'
        'response_flags="-"} 281.0\n'
    )
    assert _requests_total(page) == [
        ("destination", "demo-sa -> frontend v1", "200", "-", 281),
        ("source", "frontend v1 -> backend-v2 v2", "200", "-", 19),
    ]
    assert _requests_total("not prometheus {") == []
