"""`inmesh ca init`, `inmesh cert issue`, `inmesh cert inspect` as real subprocesses."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend-sa"
UTC = dt.timezone.utc


def inmesh(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inmesh", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    out = inmesh("ca", "init", tmp_path / "ca", "--intermediate")
    assert out.returncode == 0, out.stderr
    return tmp_path / "ca"


def test_help_lists_commands() -> None:
    out = inmesh("--help")
    assert out.returncode == 0
    assert "ca" in out.stdout and "cert" in out.stdout
    for args in (
        ("ca", "init", "--help"),
        ("cert", "issue", "--help"),
        ("cert", "inspect", "--help"),
    ):
        sub = inmesh(*args)
        assert sub.returncode == 0, sub.stderr
        assert "usage: inmesh" in sub.stdout


def test_ca_init_root_only(tmp_path: Path) -> None:
    out = inmesh("ca", "init", tmp_path / "ca", "--trust-domain", "example.org")
    assert out.returncode == 0, out.stderr
    assert "root CA for trust domain example.org" in out.stdout
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["root-cert.pem", "root-key.pem"]
    assert mode(tmp_path / "ca" / "root-key.pem") == 0o600
    root = x509.load_pem_x509_certificate((tmp_path / "ca" / "root-cert.pem").read_bytes())
    assert "O=example.org" in root.subject.rfc4514_string()


def test_ca_init_intermediate_layout(ca_dir: Path) -> None:
    names = sorted(p.name for p in ca_dir.iterdir())
    assert names == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem", "root-key.pem"]
    assert mode(ca_dir / "root-key.pem") == 0o600
    assert mode(ca_dir / "ca-key.pem") == 0o600
    chain = x509.load_pem_x509_certificates((ca_dir / "cert-chain.pem").read_bytes())
    root = x509.load_pem_x509_certificate((ca_dir / "root-cert.pem").read_bytes())
    inter = x509.load_pem_x509_certificate((ca_dir / "ca-cert.pem").read_bytes())
    assert chain == [inter, root]


def test_ca_init_refuses_to_overwrite(ca_dir: Path) -> None:
    before = (ca_dir / "root-key.pem").read_bytes()
    out = inmesh("ca", "init", ca_dir)
    assert out.returncode == 1
    assert "already holds a CA" in out.stderr and "--force" in out.stderr
    assert (ca_dir / "root-key.pem").read_bytes() == before
    out = inmesh("ca", "init", ca_dir, "--intermediate", "--force")
    assert out.returncode == 0, out.stderr
    assert (ca_dir / "root-key.pem").read_bytes() != before


def test_ca_init_bad_trust_domain(tmp_path: Path) -> None:
    out = inmesh("ca", "init", tmp_path / "ca", "--trust-domain", "Not_Valid:1")
    assert out.returncode == 2
    assert "trust domain" in out.stderr
    assert not (tmp_path / "ca").exists()


def test_issue_and_inspect(ca_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "workload"
    out = inmesh("cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", out_dir)
    assert out.returncode == 0, out.stderr
    assert f"issued a certificate for {FRONTEND}" in out.stdout
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "cert-chain.pem",
        "key.pem",
        "root-cert.pem",
    ]
    assert mode(out_dir / "key.pem") == 0o600
    assert (out_dir / "key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    chain = x509.load_pem_x509_certificates((out_dir / "cert-chain.pem").read_bytes())
    assert len(chain) == 2  # leaf + intermediate
    assert chain[0].not_valid_after_utc - chain[0].not_valid_before_utc == dt.timedelta(
        hours=24, minutes=1
    )
    assert (out_dir / "root-cert.pem").read_bytes() == (ca_dir / "root-cert.pem").read_bytes()

    out = inmesh("cert", "inspect", out_dir / "cert-chain.pem")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert lines["identity"].strip() == FRONTEND
    assert lines["issuer"].strip() == "CN=inmesh intermediate CA,O=cluster.local"
    assert lines["serial"].strip() == f"{chain[0].serial_number:x}"
    assert (
        lines["validity"].strip().startswith("valid, 23h59m left")
        or "1d0h left" in lines["validity"]
    )
    assert lines["key type"].strip() == "EC P-256"
    assert lines["private key"].strip() == "key.pem matches"
    assert lines["chain"].strip().startswith("OK (")
    assert "CN=inmesh root CA,O=cluster.local" in lines["chain"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_issued_files_pass_openssl_verify(ca_dir: Path, tmp_path: Path) -> None:
    out = inmesh("cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path / "w")
    assert out.returncode == 0, out.stderr
    res = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "w" / "root-cert.pem"),
            "-untrusted",
            str(tmp_path / "w" / "cert-chain.pem"),
            str(tmp_path / "w" / "cert-chain.pem"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_issue_principal_form_ttl_and_json(ca_dir: Path, tmp_path: Path) -> None:
    out = inmesh(
        "cert",
        "issue",
        "--ca",
        ca_dir,
        "--spiffe-id",
        "cluster.local/ns/prod/sa/api",
        "--out",
        tmp_path / "w",
        "--ttl",
        "90m",
    )
    assert out.returncode == 0, out.stderr
    out = inmesh("cert", "inspect", tmp_path / "w" / "cert-chain.pem", "-o", "json")
    assert out.returncode == 0, out.stdout
    report = json.loads(out.stdout)
    assert report["spiffe_id"] == "spiffe://cluster.local/ns/prod/sa/api"
    assert report["validity"] == "valid"
    assert report["subject"] == ""
    assert report["key_type"] == "EC P-256"
    assert report["chain"]["ok"] is True
    assert report["ok"] is True
    nb = dt.datetime.strptime(report["not_before"], "%Y-%m-%dT%H:%M:%SZ")
    na = dt.datetime.strptime(report["not_after"], "%Y-%m-%dT%H:%M:%SZ")
    assert na - nb == dt.timedelta(minutes=91)


def test_issue_rotates_in_place(ca_dir: Path, tmp_path: Path) -> None:
    args = ("cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path / "w")
    assert inmesh(*args).returncode == 0
    first = (tmp_path / "w" / "cert-chain.pem").read_bytes()
    assert inmesh(*args).returncode == 0
    assert (tmp_path / "w" / "cert-chain.pem").read_bytes() != first
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "cert-chain.pem",
        "key.pem",
        "root-cert.pem",
    ]
    assert mode(tmp_path / "w" / "key.pem") == 0o600


def test_issue_from_root_only_ca(tmp_path: Path) -> None:
    assert inmesh("ca", "init", tmp_path / "ca").returncode == 0
    out = inmesh(
        "cert", "issue", "--ca", tmp_path / "ca", "--spiffe-id", FRONTEND, "--out", tmp_path / "w"
    )
    assert out.returncode == 0, out.stderr
    assert "(1 certificate)" in out.stdout
    assert inmesh("cert", "inspect", tmp_path / "w" / "cert-chain.pem").returncode == 0


def test_issue_errors(ca_dir: Path, tmp_path: Path) -> None:
    out = inmesh(
        "cert",
        "issue",
        "--ca",
        ca_dir,
        "--spiffe-id",
        "spiffe://cluster.local/ns/",
        "--out",
        tmp_path,
    )
    assert out.returncode == 2
    assert "invalid SPIFFE ID" in out.stderr and "must not end with '/'" in out.stderr
    out = inmesh(
        "cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path, "--ttl", "soon"
    )
    assert out.returncode == 2 and "invalid duration" in out.stderr
    out = inmesh(
        "cert", "issue", "--ca", tmp_path / "nope", "--spiffe-id", FRONTEND, "--out", tmp_path / "w"
    )
    assert out.returncode == 1 and "does not exist" in out.stderr
    out = inmesh(
        "cert",
        "issue",
        "--ca",
        ca_dir,
        "--spiffe-id",
        "spiffe://other.org/x",
        "--out",
        tmp_path / "w",
    )
    assert out.returncode == 0
    assert "warning" in out.stderr and "not in the CA's trust domain 'cluster.local'" in out.stderr


def _issue_with_api(ca_dir: Path, out_dir: Path, now: dt.datetime) -> None:
    """Write a certificate issued at another time (the CLI always issues now)."""
    code = (
        "import datetime as dt, sys; from inmesh.identity.ca import LocalCA; "
        "now = dt.datetime.fromisoformat(sys.argv[3]); "
        "LocalCA.load(sys.argv[1]).issue(sys.argv[4], now=now).write(sys.argv[2])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(ca_dir), str(out_dir), now.isoformat(), FRONTEND],
        check=True,
        env=ENV,
    )


def test_inspect_expired(ca_dir: Path, tmp_path: Path) -> None:
    _issue_with_api(ca_dir, tmp_path / "w", dt.datetime.now(UTC) - dt.timedelta(days=3))
    out = inmesh("cert", "inspect", tmp_path / "w" / "cert-chain.pem")
    assert out.returncode == 1
    assert "EXPIRED (2d0h ago)" in out.stdout
    assert "chain:" in out.stdout and "OK (" in out.stdout  # the chain itself is fine


def test_inspect_not_yet_valid(ca_dir: Path, tmp_path: Path) -> None:
    _issue_with_api(ca_dir, tmp_path / "w", dt.datetime.now(UTC) + dt.timedelta(hours=5))
    out = inmesh("cert", "inspect", tmp_path / "w" / "cert-chain.pem", "-o", "json")
    assert out.returncode == 1
    assert json.loads(out.stdout)["validity"] == "not_yet_valid"
    out = inmesh("cert", "inspect", tmp_path / "w" / "cert-chain.pem")
    assert "NOT YET VALID (starts in 4h5" in out.stdout


def test_inspect_chain_failure_with_root_option(ca_dir: Path, tmp_path: Path) -> None:
    assert (
        inmesh(
            "cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path / "w"
        ).returncode
        == 0
    )
    assert inmesh("ca", "init", tmp_path / "other").returncode == 0
    out = inmesh(
        "cert",
        "inspect",
        tmp_path / "w" / "cert-chain.pem",
        "--root",
        tmp_path / "other" / "root-cert.pem",
    )
    assert out.returncode == 1
    assert "chain:" in out.stdout and "FAILED" in out.stdout
    assert "different CA" in out.stdout
    out = inmesh(
        "cert", "inspect", tmp_path / "w" / "cert-chain.pem", "--root", tmp_path / "nope.pem"
    )
    assert out.returncode == 1 and "cannot read" in out.stdout


def test_inspect_without_root(ca_dir: Path, tmp_path: Path) -> None:
    assert (
        inmesh(
            "cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path / "w"
        ).returncode
        == 0
    )
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tmp_path / "w" / "cert-chain.pem", lone / "leaf.pem")
    out = inmesh("cert", "inspect", lone / "leaf.pem")
    assert out.returncode == 0, out.stdout
    assert "not checked (no root-cert.pem next to the file; use --root FILE)" in out.stdout
    assert "private key" not in out.stdout


def test_inspect_key_mismatch(ca_dir: Path, tmp_path: Path) -> None:
    assert (
        inmesh(
            "cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path / "a"
        ).returncode
        == 0
    )
    assert (
        inmesh(
            "cert", "issue", "--ca", ca_dir, "--spiffe-id", FRONTEND, "--out", tmp_path / "b"
        ).returncode
        == 0
    )
    shutil.copy(tmp_path / "b" / "key.pem", tmp_path / "a" / "key.pem")
    out = inmesh("cert", "inspect", tmp_path / "a" / "cert-chain.pem")
    assert out.returncode == 1
    assert "private key: FAILED" in out.stdout and "does not match" in out.stdout


def test_inspect_ca_files(ca_dir: Path) -> None:
    out = inmesh("cert", "inspect", ca_dir / "cert-chain.pem")
    assert out.returncode == 0, out.stdout
    assert "identity:" in out.stdout and "none" in out.stdout
    assert "subject:    CN=inmesh intermediate CA,O=cluster.local" in out.stdout
    out = inmesh("cert", "inspect", ca_dir / "root-cert.pem")
    assert out.returncode == 0, out.stdout
    assert "OK (" in out.stdout


def test_inspect_bad_input(tmp_path: Path) -> None:
    out = inmesh("cert", "inspect", tmp_path / "missing.pem")
    assert out.returncode == 1 and "cannot read" in out.stderr
    (tmp_path / "junk.pem").write_text("hello")
    out = inmesh("cert", "inspect", tmp_path / "junk.pem")
    assert out.returncode == 1 and "no valid PEM certificate" in out.stderr
