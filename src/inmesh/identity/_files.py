"""Atomic file writes and Istio's certificate file names."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = [
    "CA_CERT",
    "CA_CHAIN",
    "CA_KEY",
    "CERT_CHAIN",
    "KEY",
    "ROOT_CERT",
    "ROOT_KEY",
    "atomic_write",
]

# Workload files, as Istio's agent writes them (OUTPUT_CERTS / istio-certs).
CERT_CHAIN = "cert-chain.pem"
KEY = "key.pem"
ROOT_CERT = "root-cert.pem"
# Plug-in CA files (istio/istio samples/certs, cacerts secret).
ROOT_KEY = "root-key.pem"
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CA_CHAIN = "cert-chain.pem"


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, never half.

    The bytes go to a temporary file in the same directory (created with
    ``mode`` from the start, so a key is never readable by others), are
    flushed to disk, and the file is renamed over ``path``.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
