"""Workload identity: SPIFFE IDs, certificates and their rotation, TLS contexts.

* :mod:`~inmesh.identity.spiffe`: :class:`SpiffeId` (standard library only);
* :mod:`~inmesh.identity.certificate`: :class:`WorkloadCertificate`, chain checks;
* :mod:`~inmesh.identity.ca`: :class:`LocalCA`, a development/test CA;
* :mod:`~inmesh.identity.sources`: :class:`CertificateSource` and its
  implementations :class:`DirectorySource`, :class:`CASource`, :class:`MemorySource`;
* :mod:`~inmesh.identity.tls`: server/client ``SSLContext`` builders with hot
  reload, :func:`peer_spiffe_id`, :func:`verify_peer_identity`.

Importing this package loads nothing else: the names below are imported on
first use, so ``from inmesh.identity import SpiffeId`` does not load
``cryptography`` or ``ssl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .ca import DEFAULT_CERT_TTL, CertificateIssuer, LocalCA, parse_duration
    from .certificate import WorkloadCertificate, spiffe_id_of, verify_chain
    from .sources import (
        WALL_CLOCK,
        CASource,
        CertificateSource,
        DirectorySource,
        MemorySource,
        SourceCounters,
        WallClock,
    )
    from .spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError, validate_trust_domain
    from .tls import (
        ClientTLS,
        PeerIdentityError,
        ServerTLS,
        build_client_context,
        build_server_context,
        peer_spiffe_id,
        peer_spiffe_id_of_connection,
        verify_peer_identity,
    )

__all__ = [
    "DEFAULT_CERT_TTL",
    "DEFAULT_TRUST_DOMAIN",
    "WALL_CLOCK",
    "CASource",
    "CertificateIssuer",
    "CertificateSource",
    "ClientTLS",
    "DirectorySource",
    "LocalCA",
    "MemorySource",
    "PeerIdentityError",
    "ServerTLS",
    "SourceCounters",
    "SpiffeId",
    "SpiffeIdError",
    "WallClock",
    "WorkloadCertificate",
    "build_client_context",
    "build_server_context",
    "parse_duration",
    "peer_spiffe_id",
    "peer_spiffe_id_of_connection",
    "spiffe_id_of",
    "validate_trust_domain",
    "verify_chain",
    "verify_peer_identity",
]

_LAZY = {
    "DEFAULT_CERT_TTL": "ca",
    "CertificateIssuer": "ca",
    "LocalCA": "ca",
    "parse_duration": "ca",
    "WorkloadCertificate": "certificate",
    "spiffe_id_of": "certificate",
    "verify_chain": "certificate",
    "WALL_CLOCK": "sources",
    "CASource": "sources",
    "CertificateSource": "sources",
    "DirectorySource": "sources",
    "MemorySource": "sources",
    "SourceCounters": "sources",
    "WallClock": "sources",
    "DEFAULT_TRUST_DOMAIN": "spiffe",
    "SpiffeId": "spiffe",
    "SpiffeIdError": "spiffe",
    "validate_trust_domain": "spiffe",
    "ClientTLS": "tls",
    "PeerIdentityError": "tls",
    "ServerTLS": "tls",
    "build_client_context": "tls",
    "build_server_context": "tls",
    "peer_spiffe_id": "tls",
    "peer_spiffe_id_of_connection": "tls",
    "verify_peer_identity": "tls",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
