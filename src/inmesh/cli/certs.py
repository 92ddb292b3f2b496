"""``inmesh ca init``, ``inmesh cert issue`` and ``inmesh cert inspect``.

A local CA for development and tests, writing the files Istio uses:

* ``inmesh ca init DIR [--intermediate] [--trust-domain TD]``: Istio's plug-in
  CA layout (``root-cert.pem``, ``root-key.pem``; with ``--intermediate`` also
  ``ca-cert.pem``, ``ca-key.pem``, ``cert-chain.pem``);
* ``inmesh cert issue --ca DIR --spiffe-id ID --out DIR [--ttl 24h]``: a
  workload's ``cert-chain.pem``, ``key.pem``, ``root-cert.pem``, as Istio's
  agent writes them, so a :class:`~inmesh.identity.sources.DirectorySource`
  (or any server) can use them; re-running it rotates them atomically;
* ``inmesh cert inspect FILE [--root FILE]``: identity, issuer, serial,
  validity and, with a root, a chain check. Exit status 1 when the
  certificate is expired or not yet valid, the chain check fails, or a
  ``key.pem`` next to it does not match.

Keys are written with mode 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``ca`` and ``cert`` sub-commands to ``sub`` (an argparse subparsers action)."""
    ca = sub.add_parser(
        "ca",
        help="a local certificate authority for development and tests",
        description="Manage a local CA that issues SPIFFE certificates shaped like Istio's.",
    )
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)
    init = ca_sub.add_parser(
        "init",
        help="create a root CA (and an intermediate) in DIR",
        description=(
            "Create an EC P-256 root CA in DIR as root-cert.pem and root-key.pem. With "
            "--intermediate, also an intermediate CA that signs workload certificates, as "
            "ca-cert.pem, ca-key.pem and cert-chain.pem (Istio's plug-in CA layout)."
        ),
    )
    init.add_argument("dir", metavar="DIR", help="directory to write (created if missing)")
    init.add_argument("--intermediate", action="store_true", help="also create an intermediate CA")
    init.add_argument(
        "--trust-domain",
        default="cluster.local",
        type=_trust_domain,
        metavar="TD",
        help="trust domain, recorded as the root's O (default: cluster.local)",
    )
    init.add_argument("--ttl", type=_duration, default=None, help="root lifetime (default: 3650d)")
    init.add_argument("--force", action="store_true", help="overwrite an existing CA in DIR")
    init.set_defaults(func=_ca_init)

    cert = sub.add_parser(
        "cert",
        help="issue and inspect workload certificates",
        description="Issue workload certificates from a local CA and inspect certificate files.",
    )
    cert_sub = cert.add_subparsers(dest="cert_command", metavar="COMMAND", required=True)
    issue = cert_sub.add_parser(
        "issue",
        help="issue a workload certificate into a directory",
        description=(
            "Issue an X.509-SVID for a SPIFFE ID and write cert-chain.pem (leaf and "
            "intermediates), key.pem (PKCS#8, mode 0600) and root-cert.pem into the output "
            "directory, atomically, as Istio's agent does."
        ),
    )
    issue.add_argument(
        "--ca", required=True, metavar="DIR", help="CA directory (from 'inmesh ca init')"
    )
    issue.add_argument(
        "--spiffe-id",
        required=True,
        type=_spiffe_id,
        metavar="ID",
        help="e.g. spiffe://cluster.local/ns/default/sa/frontend-sa (or the principal form)",
    )
    issue.add_argument("--out", required=True, metavar="DIR", help="output directory")
    issue.add_argument(
        "--ttl", type=_duration, default="24h", help="lifetime, e.g. 24h, 90m (default: 24h)"
    )
    issue.set_defaults(func=_cert_issue)

    inspect = cert_sub.add_parser(
        "inspect",
        help="show a certificate's identity and validity, and check its chain",
        description=(
            "Print the SPIFFE ID, issuer, serial, validity and key type of the first certificate "
            "in FILE; check the chain (FILE's other certificates as intermediates) against "
            "--root or a root-cert.pem next to FILE, and a key.pem next to FILE against the "
            "certificate. Exit status 1 if the certificate is expired or not yet valid, the "
            "chain check fails or the key does not match."
        ),
    )
    inspect.add_argument("file", metavar="FILE", help="a PEM certificate file, e.g. cert-chain.pem")
    inspect.add_argument("--root", metavar="FILE", help="trust bundle to check the chain against")
    inspect.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="output format"
    )
    inspect.set_defaults(func=_cert_inspect)


# -- argument types ---------------------------------------------------------


def _duration(text: str) -> dt.timedelta:
    from inmesh.identity.ca import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _spiffe_id(text: str) -> Any:
    from inmesh.identity.spiffe import SpiffeId, SpiffeIdError

    try:
        return SpiffeId.from_principal(text)
    except SpiffeIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _trust_domain(text: str) -> str:
    from inmesh.identity.spiffe import SpiffeIdError, validate_trust_domain

    try:
        return validate_trust_domain(text)
    except SpiffeIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _err(message: str) -> int:
    print(f"inmesh: error: {message}", file=sys.stderr)
    return 1


def _utc(t: dt.datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%SZ}"


# -- commands ---------------------------------------------------------------


def _ca_init(args: argparse.Namespace) -> int:
    from inmesh.identity import _files
    from inmesh.identity.ca import DEFAULT_ROOT_TTL, LocalCA

    d = Path(args.dir)
    existing = [n for n in (_files.ROOT_KEY, _files.CA_KEY) if (d / n).exists()]
    if existing and not args.force:
        return _err(f"{d} already holds a CA ({', '.join(existing)}); use --force to replace it")
    ca = LocalCA.create(
        args.trust_domain,
        intermediate=args.intermediate,
        root_ttl=args.ttl or DEFAULT_ROOT_TTL,
    )
    try:
        written = ca.save(d)
    except OSError as exc:
        return _err(f"cannot write {d}: {exc}")
    kind = "root and intermediate CA" if args.intermediate else "root CA"
    print(f"created a {kind} for trust domain {ca.trust_domain} in {d}")
    for path in written:
        print(f"  {path.name}")
    print(f"root expires {_utc(ca.root_cert.not_valid_after_utc)}")
    return 0


def _cert_issue(args: argparse.Namespace) -> int:
    from inmesh.errors import CertificateError
    from inmesh.identity.ca import LocalCA

    try:
        ca = LocalCA.load(args.ca)
    except CertificateError as exc:
        return _err(str(exc))
    sid = args.spiffe_id
    if sid.trust_domain != ca.trust_domain:
        print(
            f"inmesh: warning: {sid} is not in the CA's trust domain {ca.trust_domain!r}",
            file=sys.stderr,
        )
    cert = ca.issue(sid, ttl=args.ttl)
    try:
        cert.write(args.out)
    except OSError as exc:
        return _err(f"cannot write {args.out}: {exc}")
    out = Path(args.out)
    print(f"issued a certificate for {cert.spiffe_id}")
    print(
        f"  {out / 'cert-chain.pem'}  ({len(cert.chain)} certificate{'s' * (len(cert.chain) > 1)})"
    )
    print(f"  {out / 'key.pem'}")
    print(f"  {out / 'root-cert.pem'}")
    print(f"serial {cert.serial_number:x}, valid until {_utc(cert.not_after)}")
    return 0


def _cert_inspect(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from inmesh.errors import CertificateError
    from inmesh.identity import _files
    from inmesh.identity.certificate import (
        describe_duration,
        describe_key,
        load_pem_certificates,
        spiffe_id_of,
        verify_chain,
    )

    path = Path(args.file)
    try:
        certs = load_pem_certificates(path.read_bytes(), str(path))
    except OSError as exc:
        return _err(f"cannot read {path}: {exc.strerror or exc}")
    except CertificateError as exc:
        return _err(str(exc))
    leaf = certs[0]
    now = dt.datetime.now(dt.timezone.utc)
    ok = True
    report: dict[str, Any] = {"file": str(path)}

    sid = spiffe_id_of(leaf)
    report["spiffe_id"] = str(sid) if sid else None
    report["subject"] = leaf.subject.rfc4514_string()
    report["issuer"] = leaf.issuer.rfc4514_string()
    report["serial"] = f"{leaf.serial_number:x}"
    report["not_before"] = _utc(leaf.not_valid_before_utc)
    report["not_after"] = _utc(leaf.not_valid_after_utc)
    if now < leaf.not_valid_before_utc:
        status = "not_yet_valid"
        validity = f"NOT YET VALID (starts in {describe_duration(leaf.not_valid_before_utc - now)})"
        ok = False
    elif now > leaf.not_valid_after_utc:
        status = "expired"
        validity = f"EXPIRED ({describe_duration(now - leaf.not_valid_after_utc)} ago)"
        ok = False
    else:
        status = "valid"
        validity = f"valid, {describe_duration(leaf.not_valid_after_utc - now)} left"
    report["validity"] = status
    report["key_type"] = describe_key(leaf.public_key())
    report["certificates_in_file"] = len(certs)

    # private key next to it
    key_path = path.parent / _files.KEY
    key_line = None
    if key_path.exists() and path.name != _files.ROOT_CERT:
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            pem = serialization.Encoding.PEM
            matches = key.public_key().public_bytes(pem, spki) == leaf.public_key().public_bytes(
                pem, spki
            )
        except (OSError, ValueError, TypeError) as exc:
            matches = False
            key_line = f"FAILED: cannot load {key_path}: {exc}"
        else:
            key_line = (
                f"{key_path.name} matches" if matches else f"FAILED: {key_path} does not match"
            )
        report["key_matches"] = matches
        ok = ok and matches

    # chain
    root_path = Path(args.root) if args.root else path.parent / _files.ROOT_CERT
    chain_line: str
    if args.root or root_path.exists():
        try:
            roots = load_pem_certificates(root_path.read_bytes(), str(root_path))
            chain = verify_chain(certs, roots, at=now)
        except OSError as exc:
            error = f"cannot read {root_path}: {exc.strerror or exc}"
            chain_line = f"FAILED: {error}"
            report["chain"] = {"ok": False, "root": str(root_path), "error": error}
            ok = False
        except CertificateError as exc:
            chain_line = f"FAILED: {exc}"
            report["chain"] = {"ok": False, "root": str(root_path), "error": str(exc)}
            ok = False
        else:
            names = [c.subject.rfc4514_string() or "<leaf>" for c in chain]
            chain_line = f"OK ({' -> '.join(names)}; root from {root_path})"
            report["chain"] = {"ok": True, "root": str(root_path), "path": names}
    else:
        chain_line = f"not checked (no {_files.ROOT_CERT} next to the file; use --root FILE)"
        report["chain"] = None
    report["ok"] = ok

    if args.output == "json":
        print(json.dumps(report, indent=2))
        return 0 if ok else 1
    rows = [
        ("file", str(path)),
        ("identity", str(sid) if sid else "none (no single spiffe:// URI SAN; not an X.509-SVID)"),
        ("subject", report["subject"] or "<empty>"),
        ("issuer", report["issuer"] or "<empty>"),
        ("serial", report["serial"]),
        ("not before", report["not_before"]),
        ("not after", report["not_after"]),
        ("validity", validity),
        ("key type", report["key_type"]),
    ]
    if key_line is not None:
        rows.append(("private key", key_line))
    rows.append(("chain", chain_line))
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k + ':':<{width}} {v}")
    return 0 if ok else 1
