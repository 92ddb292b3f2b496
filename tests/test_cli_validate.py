"""`inmesh validate` and `inmesh config dump` as real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "tests" / "data" / "seeds"  # a copy of ../shared/seeds/configs
SHARED_SEEDS = ROOT.parent / "shared" / "seeds" / "configs"
INVALID = "04-invalid-loadbalancer-in-virtualservice.yaml"


def inmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inmesh", *args], check=False, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("seeds", [SEEDS, SHARED_SEEDS], ids=["copy", "shared"])
def test_seed_directory(seeds: Path) -> None:
    if not seeds.is_dir():
        pytest.skip(f"{seeds} not present")
    out = inmesh("validate", str(seeds), "-o", "json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["errors"], report
    # every error is about the invalid file, none about the others
    assert {Path(e["file"]).name for e in report["errors"]} == {INVALID}
    err = report["errors"][0]
    assert err["line"] == 18
    assert err["path"] == "spec.http[0].loadBalancer"
    assert "loadBalancer" in err["text"]
    assert "DestinationRule spec.trafficPolicy.loadBalancer" in err["text"]


def test_each_valid_seed_passes_alone() -> None:
    for f in sorted(SEEDS.glob("*.yaml")):
        out = inmesh("validate", str(f))
        if f.name == INVALID:
            assert out.returncode == 1
            assert (
                f"{f}:18: VirtualService default/backend: spec.http[0].loadBalancer:" in out.stdout
            )
        else:
            assert out.returncode == 0, out.stdout + out.stderr


def test_text_output_shape() -> None:
    out = inmesh("validate", str(SEEDS / INVALID))
    line = next(line for line in out.stdout.splitlines() if line.startswith("error:"))
    assert line == (
        f"error: {SEEDS / INVALID}:18: VirtualService default/backend: spec.http[0].loadBalancer: "
        "unknown field 'loadBalancer' in HTTPRoute; it belongs in DestinationRule "
        "spec.trafficPolicy.loadBalancer"
    )
    assert "1 error" in out.stderr


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    out = inmesh("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 1
    assert "no such file" in out.stdout


def test_other_kinds_are_skipped_with_one_info_line(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\n"
    )
    out = inmesh("validate", str(tmp_path))
    assert out.returncode == 0
    infos = [line for line in out.stdout.splitlines() if line.startswith("info:")]
    assert len(infos) == 1
    assert "Deployment" in infos[0] and "Service x2" in infos[0]


def test_kind_list_and_json_files(tmp_path: Path) -> None:
    se = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"hosts": ["x.example.com"], "ports": [{"number": 80, "name": "http"}]},
    }
    (tmp_path / "list.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": [se]})
    )
    out = inmesh("validate", str(tmp_path), "-o", "json")
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)["resources"] == 1


def test_config_dump_round_trips(tmp_path: Path) -> None:
    src = ROOT / "examples" / "mesh"
    out = inmesh("config", "dump", str(src))
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert data["kind"] == "List"
    assert data["metadata"]["resourceVersion"]
    kinds = {item["kind"] for item in data["items"]}
    assert {"ServiceEntry", "WorkloadEntry"} <= kinds
    # what dump prints loads again, unchanged
    dumped = tmp_path / "dump.yaml"
    dumped.write_text(out.stdout)
    again = inmesh("config", "dump", str(dumped), "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["items"] == data["items"]


def test_config_dump_refuses_invalid() -> None:
    out = inmesh("config", "dump", str(SEEDS / INVALID))
    assert out.returncode == 1
    assert "nothing dumped" in out.stderr
