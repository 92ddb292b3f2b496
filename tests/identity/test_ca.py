"""LocalCA and WorkloadCertificate: certificate shape, files, chain checks."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inmesh.errors import CertificateError
from inmesh.identity.ca import LocalCA, parse_duration
from inmesh.identity.certificate import (
    WorkloadCertificate,
    describe_duration,
    spiffe_id_of,
    verify_chain,
)
from inmesh.identity.spiffe import SpiffeId

from . import BACKEND, FRONTEND

UTC = dt.timezone.utc
OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create()


@pytest.fixture(scope="module")
def ica() -> LocalCA:
    return LocalCA.create(intermediate=True)


def ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


def test_root_shape(ca: LocalCA) -> None:
    root = ca.root_cert
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1  # type: ignore[attr-defined]
    ku = ext(root, x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature  # type: ignore[attr-defined]
    ext(root, x509.SubjectKeyIdentifier)
    assert root.issuer == root.subject
    assert (
        root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    )
    assert ca.signing_cert is root and not ca.has_intermediate
    assert root.not_valid_after_utc - root.not_valid_before_utc > dt.timedelta(days=3649)


def test_intermediate_shape(ica: LocalCA) -> None:
    inter = ica.signing_cert
    assert ica.has_intermediate and ica.intermediates == (inter,)
    bc = ext(inter, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0  # type: ignore[attr-defined]
    aki = ext(inter, x509.AuthorityKeyIdentifier).value
    root_ski = ext(ica.root_cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest  # type: ignore[attr-defined]
    inter.verify_directly_issued_by(ica.root_cert)


@pytest.mark.parametrize("which", ["root", "intermediate"])
def test_leaf_shape(which: str, ca: LocalCA, ica: LocalCA) -> None:
    authority = ca if which == "root" else ica
    before = dt.datetime.now(UTC).replace(microsecond=0)
    cert = authority.issue(FRONTEND)
    leaf = cert.certificate
    assert leaf.subject == x509.Name([])
    san = ext(leaf, x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty (RFC 5280 4.2.1.6)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [FRONTEND]  # type: ignore[attr-defined]
    assert list(san.value) == [x509.UniformResourceIdentifier(FRONTEND)]  # type: ignore[call-overload]
    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca  # type: ignore[attr-defined]
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign  # type: ignore[attr-defined]
    eku = ext(leaf, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}  # type: ignore[call-overload]
    ski = ext(leaf, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key())
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    issuer_ski = ext(authority.signing_cert, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest  # type: ignore[attr-defined]
    assert isinstance(cert.private_key, ec.EllipticCurvePrivateKey)
    # backdated one minute, 24 hours by default
    assert (
        before - dt.timedelta(minutes=1, seconds=2)
        <= cert.not_before
        <= before - dt.timedelta(seconds=59)
    )
    assert cert.not_after - cert.not_before == dt.timedelta(hours=24, minutes=1)
    assert cert.spiffe_id == SpiffeId.parse(FRONTEND)
    assert cert.chain == (leaf, *authority.intermediates)
    assert cert.trust_bundle == (authority.root_cert,)
    assert cert.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert cert.cert_chain_pem.count(b"BEGIN CERTIFICATE") == len(cert.chain)
    assert cert.version == 0
    cert.check(trust_domain="cluster.local")
    assert verify_chain(cert.chain, cert.trust_bundle)[-1] == authority.root_cert


def test_each_issue_is_fresh(ca: LocalCA) -> None:
    a, b = ca.issue(FRONTEND), ca.issue(FRONTEND)
    assert a.serial_number != b.serial_number
    assert a.key_pem != b.key_pem
    assert a.fingerprint != b.fingerprint


def test_ttl_and_clamp(ica: LocalCA) -> None:
    cert = ica.issue(BACKEND, ttl=dt.timedelta(hours=1))
    assert cert.not_after - cert.not_before == dt.timedelta(hours=1, minutes=1)
    long = ica.issue(BACKEND, ttl=dt.timedelta(days=100_000))
    assert long.not_after == ica.signing_cert.not_valid_after_utc
    with pytest.raises(ValueError, match="positive"):
        ica.issue(BACKEND, ttl=dt.timedelta(0))
    with pytest.raises(ValueError, match="timezone"):
        ica.issue(BACKEND, now=dt.datetime(2024, 1, 1))


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary")
@pytest.mark.parametrize("intermediate", [False, True])
def test_openssl_verify(tmp_path: Path, intermediate: bool) -> None:
    authority = LocalCA.create(intermediate=intermediate)
    cert = authority.issue(FRONTEND)
    cert.write(tmp_path)
    args: list[str] = [
        str(OPENSSL),
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        str(tmp_path / "root-cert.pem"),
    ]
    if intermediate:
        args += ["-untrusted", str(tmp_path / "cert-chain.pem")]
    out = subprocess.run(
        [*args, str(tmp_path / "cert-chain.pem")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert ": OK" in out.stdout
    args[3] = "sslserver"
    out = subprocess.run(
        [*args, str(tmp_path / "cert-chain.pem")], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr + out.stdout
    # a different CA's root does not verify it
    other = LocalCA.create()
    (tmp_path / "other.pem").write_bytes(other.trust_bundle_pem)
    args[args.index(str(tmp_path / "root-cert.pem"))] = str(tmp_path / "other.pem")
    out = subprocess.run(
        [*args, str(tmp_path / "cert-chain.pem")], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0


def test_save_load_roundtrip(tmp_path: Path, ica: LocalCA, ca: LocalCA) -> None:
    written = ica.save(tmp_path / "ica")
    assert sorted(p.name for p in written) == [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
        "root-key.pem",
    ]
    for name in ("ca-key.pem", "root-key.pem"):
        assert stat.S_IMODE(os.stat(tmp_path / "ica" / name).st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((tmp_path / "ica" / "cert-chain.pem").read_bytes())
    assert chain == [
        ica.signing_cert,
        ica.root_cert,
    ]  # intermediate then root, as Istio's plug-in CA
    loaded = LocalCA.load(tmp_path / "ica")
    assert loaded.root_cert == ica.root_cert and loaded.signing_cert == ica.signing_cert
    assert loaded.intermediates == ica.intermediates
    assert loaded.trust_domain == "cluster.local"
    cert = loaded.issue(FRONTEND)
    cert.check()
    assert cert.certificate.issuer == ica.signing_cert.subject

    ca.save(tmp_path / "root")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [
        "root-cert.pem",
        "root-key.pem",
    ]
    assert LocalCA.load(tmp_path / "root").signing_cert == ca.root_cert


def test_load_errors(tmp_path: Path, ca: LocalCA) -> None:
    with pytest.raises(CertificateError, match="does not exist"):
        LocalCA.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CertificateError, match="cannot read"):
        LocalCA.load(tmp_path / "empty")
    ca.save(tmp_path / "nokey")
    (tmp_path / "nokey" / "root-key.pem").unlink()
    with pytest.raises(CertificateError, match="no signing key"):
        LocalCA.load(tmp_path / "nokey")
    ca.save(tmp_path / "mismatch")
    LocalCA.create().save(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "root-key.pem", tmp_path / "mismatch" / "root-key.pem")
    with pytest.raises(CertificateError, match="does not match"):
        LocalCA.load(tmp_path / "mismatch")


def test_custom_trust_domain(tmp_path: Path) -> None:
    authority = LocalCA.create("example.org", intermediate=True)
    authority.save(tmp_path)
    assert LocalCA.load(tmp_path).trust_domain == "example.org"
    cert = authority.issue(SpiffeId.for_workload("prod", "api", "example.org"))
    cert.check(trust_domain="example.org")
    with pytest.raises(CertificateError, match=r"expected 'cluster\.local'"):
        cert.check(trust_domain="cluster.local")


def test_write_files(tmp_path: Path, ica: LocalCA) -> None:
    cert = ica.issue(FRONTEND)
    cert.write(tmp_path / "w")
    names = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert names == ["cert-chain.pem", "key.pem", "root-cert.pem"]  # no temp files left
    assert stat.S_IMODE(os.stat(tmp_path / "w" / "key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "w" / "cert-chain.pem").st_mode) == 0o644
    again = WorkloadCertificate.from_directory(tmp_path / "w")
    assert again.fingerprint == cert.fingerprint
    assert again.key_pem == cert.key_pem
    assert again.chain == cert.chain


# -- checks -----------------------------------------------------------------


def test_expired(ca: LocalCA) -> None:
    old = ca.issue(FRONTEND, now=dt.datetime.now(UTC) - dt.timedelta(days=2))
    with pytest.raises(CertificateError, match=r"expired at \S+Z \(1d0h ago\)"):
        old.check()


def test_not_yet_valid(ca: LocalCA) -> None:
    future = ca.issue(FRONTEND, now=dt.datetime.now(UTC) + dt.timedelta(hours=2))
    with pytest.raises(CertificateError, match="not yet valid"):
        future.check()
    future.check(now=dt.datetime.now(UTC) + dt.timedelta(hours=3))


def test_wrong_trust_domain(ca: LocalCA) -> None:
    cert = ca.issue("spiffe://other.domain/ns/default/sa/x")
    with pytest.raises(
        CertificateError, match=r"trust domain 'other\.domain', expected 'cluster\.local'"
    ):
        cert.check(trust_domain="cluster.local")


def test_foreign_ca(ca: LocalCA) -> None:
    other = LocalCA.create()  # same subject names, different keys
    cert = other.issue(FRONTEND)
    with pytest.raises(CertificateError, match="different CA"):
        verify_chain(cert.chain, ca.trust_bundle)
    stranger = LocalCA.create("other.org")
    with pytest.raises(CertificateError, match="neither a trusted root"):
        verify_chain(stranger.issue(FRONTEND).chain, ca.trust_bundle)
    mixed = WorkloadCertificate.create(cert.chain, cert.private_key, ca.trust_bundle)
    with pytest.raises(CertificateError, match="does not lead to the trust bundle"):
        mixed.check()


def test_missing_intermediate(ica: LocalCA) -> None:
    cert = ica.issue(FRONTEND)
    with pytest.raises(CertificateError, match="does not lead"):
        verify_chain(cert.chain[:1], cert.trust_bundle)
    # intermediates in any order, a root inside the chain: fine
    assert (
        verify_chain((cert.certificate, ica.root_cert, ica.signing_cert), cert.trust_bundle)[-1]
        == ica.root_cert
    )


def test_expired_intermediate() -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(days=30)
    authority = LocalCA.create(intermediate=True, intermediate_ttl=dt.timedelta(days=1), now=past)
    cert = authority.issue(FRONTEND, now=past)
    with pytest.raises(CertificateError, match=r"intermediate .* expired"):
        verify_chain(cert.chain, cert.trust_bundle, at=dt.datetime.now(UTC))


def test_leaf_cannot_sign(ca: LocalCA) -> None:
    """A certificate signed with a leaf's key does not chain through that leaf."""
    from cryptography.hazmat.primitives import hashes

    leaf = ca.issue(FRONTEND)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(leaf.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(BACKEND)]), critical=True
        )
        .sign(leaf.private_key, hashes.SHA256())
    )
    with pytest.raises(CertificateError, match="is not a CA"):
        verify_chain((forged, leaf.certificate), ca.trust_bundle)


def test_key_mismatch(ca: LocalCA) -> None:
    a, b = ca.issue(FRONTEND), ca.issue(FRONTEND)
    with pytest.raises(CertificateError, match="private key does not match"):
        WorkloadCertificate.create(a.chain, b.private_key, a.trust_bundle)
    with pytest.raises(CertificateError, match="private key does not match"):
        WorkloadCertificate.from_pem(a.cert_chain_pem, b.key_pem, a.trust_bundle_pem)


def test_from_pem_errors(ca: LocalCA) -> None:
    a = ca.issue(FRONTEND)
    with pytest.raises(CertificateError, match="certificate chain: no valid PEM"):
        WorkloadCertificate.from_pem(b"garbage", a.key_pem, a.trust_bundle_pem)
    with pytest.raises(CertificateError, match="trust bundle: no valid PEM"):
        WorkloadCertificate.from_pem(a.cert_chain_pem, a.key_pem, a.cert_chain_pem[:100])
    with pytest.raises(CertificateError, match="private key"):
        WorkloadCertificate.from_pem(a.cert_chain_pem, a.key_pem[:60], a.trust_bundle_pem)
    # a CA certificate is not an SVID
    with pytest.raises(CertificateError, match="no SPIFFE ID"):
        WorkloadCertificate.create((ca.root_cert,), ca.root_key, ca.trust_bundle)  # type: ignore[arg-type]


def test_spiffe_id_of(ca: LocalCA) -> None:
    assert spiffe_id_of(ca.issue(FRONTEND).certificate) == SpiffeId.parse(FRONTEND)
    assert spiffe_id_of(ca.root_cert) is None


def test_describe_duration() -> None:
    assert describe_duration(dt.timedelta(hours=23, minutes=59, seconds=3)) == "23h59m"
    assert describe_duration(dt.timedelta(days=2, hours=3)) == "2d3h"
    assert describe_duration(dt.timedelta(seconds=45)) == "45s"
    assert describe_duration(dt.timedelta(minutes=5, seconds=1)) == "5m1s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("24h", 86400),
        ("90m", 5400),
        ("1h30m", 5400),
        ("3600", 3600),
        ("3600s", 3600),
        ("7d", 604800),
        ("1.5h", 5400),
        ("500ms", 0.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "-1h", "0", "1h 30m", "h1"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_repr(ca: LocalCA) -> None:
    cert = ca.issue(FRONTEND)
    assert repr(cert).startswith(f"WorkloadCertificate({FRONTEND}, serial=")
