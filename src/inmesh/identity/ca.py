"""A local certificate authority for development and tests.

:class:`LocalCA` issues X.509-SVIDs shaped like Istio's (python-tech.md §3.1):

* root: EC P-256, ``BasicConstraints(ca=True, path_length=1)`` critical,
  ``KeyUsage(digital_signature, key_cert_sign, crl_sign)`` critical, SKI,
  subject ``O=<trust domain>, CN=inmesh root CA``, 10 years;
* optional intermediate: the same with ``path_length=0`` and an AKI, 5 years;
* leaf: EC P-256, **empty subject**, a single URI SAN (the SPIFFE ID), critical
  because the subject is empty (RFC 5280 §4.2.1.6), ``BasicConstraints(ca=False)``
  critical, ``KeyUsage(digital_signature)`` critical, EKU serverAuth +
  clientAuth, SKI and AKI, ``not_valid_before`` backdated by one minute for
  clock skew, 24 hours by default (Istio's default workload certificate TTL),
  never past the signing CA's own expiry.

On disk it uses Istio's plug-in CA layout (the ``cacerts`` secret):
``root-cert.pem`` and ``root-key.pem``; with an intermediate also
``ca-cert.pem``, ``ca-key.pem`` and ``cert-chain.pem`` (intermediate then
root). Keys are PKCS#8 PEM, mode 0600; every file is written atomically.

It is not a production CA: keys are unencrypted on disk, there is no
revocation and no CSR flow.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inmesh.errors import CertificateError
from inmesh.identity import _files
from inmesh.identity.certificate import (
    WorkloadCertificate,
    load_pem_certificates,
    verify_chain,
)
from inmesh.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, validate_trust_domain

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_CERT_TTL",
    "DEFAULT_INTERMEDIATE_TTL",
    "DEFAULT_ROOT_TTL",
    "CertificateIssuer",
    "LocalCA",
    "parse_duration",
]

DEFAULT_CERT_TTL = dt.timedelta(hours=24)
"""Istio's default workload certificate lifetime."""

DEFAULT_ROOT_TTL = dt.timedelta(days=3650)
"""Ten years, as Istio's self-signed root."""

DEFAULT_INTERMEDIATE_TTL = dt.timedelta(days=1825)
"""Five years."""

CLOCK_SKEW = dt.timedelta(minutes=1)
"""How far back ``not_valid_before`` is set, so peers with a slow clock accept a fresh certificate."""

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> dt.timedelta:
    """Parse a Go-style duration: ``"24h"``, ``"1h30m"``, ``"90s"``, ``"7d"``; a bare number is seconds.

    Raises :class:`ValueError` for anything else or a non-positive value.
    """
    s = text.strip().lower()
    try:
        seconds = float(s)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(
                f"invalid duration {text!r}: use a number with a unit, e.g. 24h, 90m, 1h30m, 3600s, 7d"
            ) from None
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return dt.timedelta(seconds=seconds)


class CertificateIssuer(Protocol):
    """Anything that issues workload certificates (a :class:`LocalCA`, a CSR client...).

    ``issue`` returns a fresh key and certificate for ``spiffe_id`` valid for
    ``ttl`` starting at ``now`` (UTC, backdated for skew by the issuer), or
    raises. :class:`~inmesh.identity.sources.CASource` renews through it.
    """

    def issue(
        self,
        spiffe_id: SpiffeId | str,
        *,
        ttl: dt.timedelta = ...,
        now: dt.datetime | None = ...,
    ) -> WorkloadCertificate:
        """A fresh certificate and key for ``spiffe_id``, valid ``ttl`` from ``now``."""
        ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def _ca_cert(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    path_length: int,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(issuer_cert)),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True, eq=False)
class LocalCA:
    """A CA that signs workload certificates in-process.

    * ``root_cert`` / ``root_key``: the self-signed root (``root_key`` may be
      ``None`` when loaded from a plug-in layout without ``root-key.pem``);
    * ``signing_cert`` / ``signing_key``: what signs leaves (the intermediate,
      or the root itself);
    * ``intermediates``: certificates sent after the leaf (signing cert first),
      empty when the root signs;
    * ``trust_domain``: recorded as the root's ``O`` (as Istio's self-signed CA does).

    Create one with :meth:`create` or :meth:`load`; :meth:`issue` signs.
    Thread-safe: nothing mutates after construction.
    """

    root_cert: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey | None
    signing_cert: x509.Certificate
    signing_key: ec.EllipticCurvePrivateKey
    intermediates: tuple[x509.Certificate, ...] = ()
    trust_domain: str = DEFAULT_TRUST_DOMAIN

    @classmethod
    def create(
        cls,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        *,
        intermediate: bool = False,
        root_ttl: dt.timedelta = DEFAULT_ROOT_TTL,
        intermediate_ttl: dt.timedelta = DEFAULT_INTERMEDIATE_TTL,
        now: dt.datetime | None = None,
    ) -> LocalCA:
        """A new root (and intermediate) with fresh EC P-256 keys."""
        validate_trust_domain(trust_domain)
        at = now if now is not None else _utcnow()
        org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)
        root_key = _new_key()
        root_name = x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, "inmesh root CA")])
        root = _ca_cert(
            subject=root_name,
            key=root_key,
            issuer_cert=None,
            issuer_key=root_key,
            path_length=1,
            now=at,
            ttl=root_ttl,
        )
        if not intermediate:
            return cls(root, root_key, root, root_key, (), trust_domain)
        ca_key = _new_key()
        ca = _ca_cert(
            subject=x509.Name(
                [org, x509.NameAttribute(NameOID.COMMON_NAME, "inmesh intermediate CA")]
            ),
            key=ca_key,
            issuer_cert=root,
            issuer_key=root_key,
            path_length=0,
            now=at,
            ttl=min(intermediate_ttl, root.not_valid_after_utc - at),
        )
        return cls(root, root_key, ca, ca_key, (ca,), trust_domain)

    @property
    def trust_bundle(self) -> tuple[x509.Certificate, ...]:
        """The roots workloads must trust: ``(root_cert,)``."""
        return (self.root_cert,)

    @property
    def trust_bundle_pem(self) -> bytes:
        """``root-cert.pem``'s content."""
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def has_intermediate(self) -> bool:
        """True when an intermediate, not the root, signs leaves."""
        return bool(self.intermediates)

    def issue(
        self,
        spiffe_id: SpiffeId | str,
        *,
        ttl: dt.timedelta = DEFAULT_CERT_TTL,
        now: dt.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> WorkloadCertificate:
        """Sign a leaf for ``spiffe_id`` with a fresh EC P-256 key (or ``key``).

        Valid from ``now - 1 min`` to ``now + ttl``, cut at the signing CA's
        expiry. ``now`` defaults to the current UTC time; tests pass other
        times to get expired or not-yet-valid certificates.
        """
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        if ttl <= dt.timedelta(0):
            raise ValueError(f"ttl must be positive, got {ttl}")
        at = now if now is not None else _utcnow()
        if at.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        leaf_key = key if key is not None else _new_key()
        not_after = min(at + ttl, self.signing_cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.signing_cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(sid.uri)]),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    _ski(self.signing_cert)
                ),
                critical=False,
            )
            .sign(self.signing_key, hashes.SHA256())
        )
        return WorkloadCertificate.create((cert, *self.intermediates), leaf_key, self.trust_bundle)

    # -- files -------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write the plug-in CA layout to ``directory``; return the paths written.

        ``root-cert.pem``, ``root-key.pem`` (0600, if the root key is known);
        with an intermediate also ``ca-cert.pem``, ``ca-key.pem`` (0600) and
        ``cert-chain.pem`` (intermediates then root).
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        pem = serialization.Encoding.PEM
        files: list[tuple[str, bytes, int]] = [(_files.ROOT_CERT, self.trust_bundle_pem, 0o644)]
        if self.root_key is not None:
            files.append((_files.ROOT_KEY, _key_pem(self.root_key), 0o600))
        if self.intermediates:
            files.append((_files.CA_KEY, _key_pem(self.signing_key), 0o600))
            files.append((_files.CA_CERT, self.signing_cert.public_bytes(pem), 0o644))
            chain = b"".join(c.public_bytes(pem) for c in (*self.intermediates, self.root_cert))
            files.append((_files.CA_CHAIN, chain, 0o644))
        written = []
        for name, data, mode in files:
            _files.atomic_write(d / name, data, mode)
            written.append(d / name)
        return written

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LocalCA:
        """Read a CA written by :meth:`save` (or an Istio ``cacerts`` directory).

        With ``ca-cert.pem`` + ``ca-key.pem`` present, the intermediate signs
        and ``cert-chain.pem`` gives the chain; otherwise ``root-cert.pem`` +
        ``root-key.pem`` sign. Raises :class:`CertificateError`.
        """
        d = Path(directory)
        if not d.is_dir():
            raise CertificateError(f"CA directory {d} does not exist")
        root = _read_certs(d / _files.ROOT_CERT)[0]
        root_key = _read_key(d / _files.ROOT_KEY) if (d / _files.ROOT_KEY).exists() else None
        trust_domain = _trust_domain_of(root)
        if (d / _files.CA_CERT).exists() or (d / _files.CA_KEY).exists():
            signing = _read_certs(d / _files.CA_CERT)[0]
            signing_key = _read_key(d / _files.CA_KEY)
            if (d / _files.CA_CHAIN).exists():
                chain = [c for c in _read_certs(d / _files.CA_CHAIN) if c != root]
                if not chain or chain[0] != signing:
                    chain = [signing, *(c for c in chain if c != signing)]
            else:
                chain = [signing]
            ca = cls(root, root_key, signing, signing_key, tuple(chain), trust_domain)
        else:
            if root_key is None:
                raise CertificateError(
                    f"{d}: no signing key: neither {_files.CA_KEY} nor {_files.ROOT_KEY} is present"
                )
            ca = cls(root, root_key, root, root_key, (), trust_domain)
        ca._check_keys(d)
        return ca

    def _check_keys(self, where: Path) -> None:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        pem = serialization.Encoding.PEM
        pairs: Sequence[tuple[x509.Certificate, ec.EllipticCurvePrivateKey | None, str]] = (
            (self.root_cert, self.root_key, _files.ROOT_KEY),
            (
                self.signing_cert,
                self.signing_key,
                _files.CA_KEY if self.intermediates else _files.ROOT_KEY,
            ),
        )
        for cert, key, name in pairs:
            if key is not None and cert.public_key().public_bytes(
                pem, spki
            ) != key.public_key().public_bytes(pem, spki):
                raise CertificateError(f"{where / name} does not match its certificate")
        if self.intermediates:
            verify_chain(self.intermediates, self.trust_bundle)


def _read_certs(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_pem_certificates(data, str(path))


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"{path}: cannot load the private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(
            f"{path}: the local CA signs with EC keys only, got {type(key).__name__}"
        )
    return key


def _trust_domain_of(root: x509.Certificate) -> str:
    orgs = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    for attr in orgs:
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        try:
            return validate_trust_domain(value)
        except ValueError:
            continue
    return DEFAULT_TRUST_DOMAIN
