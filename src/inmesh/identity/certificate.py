"""A workload's certificate: leaf, key, chain and trust bundle, parsed and checked.

:class:`WorkloadCertificate` is the value every certificate source hands out
and every TLS builder consumes. It is immutable; a rotation produces a new one
with a higher ``version``.

Two levels of checking:

* construction (:meth:`WorkloadCertificate.from_pem`, :meth:`~WorkloadCertificate.create`)
  checks the *structure*: the PEM parses, the leaf carries exactly one SPIFFE
  ID (X509-SVID §2), the private key matches the leaf;
* :meth:`WorkloadCertificate.check` checks *usability at a time*: not expired,
  already valid, in the expected trust domain, chaining to the trust bundle.

Chain checking here walks signatures with ``cryptography`` to fail early with a
clear message; the authoritative verification is OpenSSL's, at each handshake.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from inmesh.errors import CertificateError
from inmesh.identity import _files
from inmesh.identity.spiffe import SpiffeId, SpiffeIdError

__all__ = [
    "PrivateKey",
    "WorkloadCertificate",
    "describe_duration",
    "describe_key",
    "load_pem_certificates",
    "spiffe_id_of",
    "verify_chain",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
"""The private key types Python's ``ssl`` can serve with: EC, RSA, Ed25519."""

_PEM = serialization.Encoding.PEM
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def load_pem_certificates(data: bytes, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order. Raises :class:`CertificateError`."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{what}: no valid PEM certificate ({exc})") from None
    return certs


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId | None:
    """The SPIFFE ID of a certificate, or ``None``.

    X509-SVID §2: an SVID carries exactly one URI SAN, the SPIFFE ID. A
    certificate with no ``spiffe://`` URI SAN, with several, or with an invalid
    one has no SPIFFE identity.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # a malformed extension
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        return None
    try:
        return SpiffeId.parse(spiffe[0])
    except SpiffeIdError:
        return None


def describe_key(key: object) -> str:
    """``"EC P-256"``, ``"RSA 2048"``, ``"Ed25519"``: a public or private key, for humans."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}"
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return "Ed25519"
    return type(key).__name__


def describe_duration(delta: dt.timedelta) -> str:
    """``"23h59m"``, ``"2d3h"``, ``"45s"``: a positive duration, short."""
    total = int(abs(delta).total_seconds())
    days, rem = divmod(total, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "<empty>"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return bc.ca


def _validity_problem(cert: x509.Certificate, at: dt.datetime, what: str) -> str:
    if at < cert.not_valid_before_utc:
        left = describe_duration(cert.not_valid_before_utc - at)
        return f"{what} is not yet valid (valid from {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}, in {left})"
    if at > cert.not_valid_after_utc:
        ago = describe_duration(at - cert.not_valid_after_utc)
        return f"{what} expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} ({ago} ago)"
    return ""


def verify_chain(
    chain: Sequence[x509.Certificate],
    trust_bundle: Sequence[x509.Certificate],
    *,
    at: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """Check that ``chain[0]`` chains to a certificate of ``trust_bundle``.

    ``chain`` is the leaf followed by intermediates in any order (what a
    ``cert-chain.pem`` holds). Signatures and CA flags are checked; with ``at``,
    the validity period of every intermediate and the anchor too (the leaf's
    own validity is :meth:`WorkloadCertificate.check`'s business). Returns the
    path from the leaf to the anchor; raises :class:`CertificateError` with the
    reason otherwise.
    """
    if not chain:
        raise CertificateError("empty certificate chain")
    if not trust_bundle:
        raise CertificateError("empty trust bundle")
    current = chain[0]
    path = [current]
    pool = list(chain[1:])
    for _ in range(len(pool) + 1):
        if current in trust_bundle:  # the chain itself reaches a trusted certificate
            return path
        for anchor in trust_bundle:
            if _signed_by(current, anchor):
                _check_issuer(anchor, at, "trust anchor")
                path.append(anchor)
                return path
        for cand in pool:
            if cand not in path and _signed_by(current, cand):
                _check_issuer(cand, at, "intermediate")
                path.append(cand)
                current = cand
                break
        else:
            break
    anchors = ", ".join(sorted({_name(a.subject) for a in trust_bundle}))
    if any(a.subject == current.issuer for a in trust_bundle):
        raise CertificateError(
            f"the certificate chain does not lead to the trust bundle: {_name(current.subject)} "
            f"names {_name(current.issuer)} as issuer, but its signature does not verify with the "
            "trusted root of that name (issued by a different CA)"
        )
    raise CertificateError(
        f"the certificate chain does not lead to the trust bundle: {_name(current.subject)} "
        f"is issued by {_name(current.issuer)}, which is neither a trusted root ({anchors}) "
        "nor an intermediate in the chain"
    )


def _check_issuer(cert: x509.Certificate, at: dt.datetime | None, what: str) -> None:
    if not _is_ca(cert):
        raise CertificateError(
            f"{what} {_name(cert.subject)} is not a CA (BasicConstraints ca=False)"
        )
    if at is not None:
        problem = _validity_problem(cert, at, f"{what} {_name(cert.subject)}")
        if problem:
            raise CertificateError(problem)


@dataclass(frozen=True, eq=False)
class WorkloadCertificate:
    """One X.509-SVID with everything needed to serve and verify TLS.

    * ``spiffe_id``: the identity in the leaf's URI SAN;
    * ``certificate``: the leaf; ``chain``: the leaf followed by intermediates
      (what the peer is sent); ``trust_bundle``: the roots peers must chain to;
    * ``private_key``: the leaf's key;
    * ``cert_chain_pem``, ``key_pem`` (PKCS#8, unencrypted), ``trust_bundle_pem``:
      the same as PEM, exactly Istio's ``cert-chain.pem``, ``key.pem``,
      ``root-cert.pem``; ``cert_pem`` is the leaf alone;
    * ``version``: set by the source that hands it out, 1 for the first
      certificate and one more at every rotation (0 when no source is involved).

    Instances compare by identity; compare :attr:`fingerprint` for content.
    """

    spiffe_id: SpiffeId
    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    trust_bundle: tuple[x509.Certificate, ...]
    cert_chain_pem: bytes
    key_pem: bytes
    trust_bundle_pem: bytes
    version: int = 0

    @classmethod
    def create(
        cls,
        chain: Sequence[x509.Certificate],
        private_key: PrivateKey,
        trust_bundle: Sequence[x509.Certificate],
        *,
        version: int = 0,
    ) -> WorkloadCertificate:
        """Build from parsed objects. Checks the structure (see the module doc)."""
        if not chain:
            raise CertificateError("the certificate chain is empty")
        if not trust_bundle:
            raise CertificateError("the trust bundle is empty")
        if not isinstance(
            private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
        ):
            raise CertificateError(f"unsupported private key type {type(private_key).__name__}")
        leaf = chain[0]
        sid = spiffe_id_of(leaf)
        if sid is None:
            raise CertificateError(
                f"the certificate (serial {leaf.serial_number:x}) has no SPIFFE ID: an X.509-SVID "
                "needs exactly one valid 'spiffe://' URI subjectAltName"
            )
        if leaf.public_key().public_bytes(_PEM, _SPKI) != private_key.public_key().public_bytes(
            _PEM, _SPKI
        ):
            raise CertificateError(
                f"the private key does not match the certificate of {sid} "
                f"(serial {leaf.serial_number:x})"
            )
        return cls(
            spiffe_id=sid,
            certificate=leaf,
            private_key=private_key,
            chain=tuple(chain),
            trust_bundle=tuple(trust_bundle),
            cert_chain_pem=b"".join(c.public_bytes(_PEM) for c in chain),
            key_pem=private_key.private_bytes(
                _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            trust_bundle_pem=b"".join(c.public_bytes(_PEM) for c in trust_bundle),
            version=version,
        )

    @classmethod
    def from_pem(
        cls, cert_chain_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes, *, version: int = 0
    ) -> WorkloadCertificate:
        """Parse Istio's three files' contents. Raises :class:`CertificateError`."""
        chain = load_pem_certificates(cert_chain_pem, "certificate chain")
        bundle = load_pem_certificates(trust_bundle_pem, "trust bundle")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise CertificateError(f"private key: cannot be loaded ({exc})") from None
        if not isinstance(
            key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
        ):
            raise CertificateError(f"private key: unsupported type {type(key).__name__}")
        return cls.create(chain, key, bundle, version=version)

    @classmethod
    def from_directory(
        cls,
        directory: str | os.PathLike[str],
        *,
        cert_chain: str = _files.CERT_CHAIN,
        key: str = _files.KEY,
        trust_bundle: str = _files.ROOT_CERT,
        version: int = 0,
    ) -> WorkloadCertificate:
        """Read ``cert-chain.pem``, ``key.pem`` and ``root-cert.pem`` from ``directory``."""
        d = Path(directory)
        blobs = []
        for name in (cert_chain, key, trust_bundle):
            try:
                blobs.append((d / name).read_bytes())
            except OSError as exc:
                raise CertificateError(f"cannot read {d / name}: {exc.strerror or exc}") from None
        try:
            return cls.from_pem(blobs[0], blobs[1], blobs[2], version=version)
        except CertificateError as exc:
            raise CertificateError(f"{d}: {exc}") from None

    def write(self, directory: str | os.PathLike[str]) -> None:
        """Write Istio's workload files atomically; ``key.pem`` is mode 0600.

        The key is written first and the chain last, so a watcher that sees the
        new chain also finds the matching key.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _files.atomic_write(d / _files.ROOT_CERT, self.trust_bundle_pem, 0o644)
        _files.atomic_write(d / _files.KEY, self.key_pem, 0o600)
        _files.atomic_write(d / _files.CERT_CHAIN, self.cert_chain_pem, 0o644)

    def with_version(self, version: int) -> WorkloadCertificate:
        """The same certificate with another ``version``."""
        return dataclasses.replace(self, version=version)

    @property
    def not_before(self) -> dt.datetime:
        """Start of the leaf's validity (UTC)."""
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of the leaf's validity (UTC)."""
        return self.certificate.not_valid_after_utc

    @property
    def serial_number(self) -> int:
        """The leaf's serial number."""
        return self.certificate.serial_number

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """The chain without the leaf."""
        return self.chain[1:]

    @property
    def cert_pem(self) -> bytes:
        """The leaf alone, PEM."""
        return self.certificate.public_bytes(_PEM)

    @property
    def der(self) -> bytes:
        """The leaf, DER: what a peer's ``getpeercert(binary_form=True)`` returns."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf DER, hex: a content identity for the certificate."""
        return hashlib.sha256(self.der).hexdigest()

    def check(
        self,
        *,
        now: dt.datetime | None = None,
        trust_domain: str | None = None,
    ) -> None:
        """Raise :class:`CertificateError` if this certificate cannot be used at ``now``.

        Checks that the leaf is already valid and not expired, that its SPIFFE
        ID belongs to ``trust_domain`` (when given), and that the chain leads
        to the trust bundle.
        """
        at = now if now is not None else _utcnow()
        problem = _validity_problem(self.certificate, at, f"the certificate of {self.spiffe_id}")
        if problem:
            raise CertificateError(problem)
        if trust_domain is not None and self.spiffe_id.trust_domain != trust_domain:
            raise CertificateError(
                f"the certificate's SPIFFE ID {self.spiffe_id} is in trust domain "
                f"{self.spiffe_id.trust_domain!r}, expected {trust_domain!r}"
            )
        verify_chain(self.chain, self.trust_bundle, at=at)

    def __repr__(self) -> str:
        return (
            f"WorkloadCertificate({self.spiffe_id}, serial={self.serial_number:x}, "
            f"not_after={self.not_after:%Y-%m-%dT%H:%M:%SZ}, version={self.version})"
        )
