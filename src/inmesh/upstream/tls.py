"""The TLS a connection to one upstream endpoint must use, decided without I/O.

:func:`resolve_upstream_tls` turns a DestinationRule's ``tls`` block (or its
absence), what the registry knows about the destination and the endpoint, and
the server side's PeerAuthentication mode into one frozen
:class:`UpstreamTLS`. The connector (:mod:`inmesh.outbound`) then does what the
value says; it makes no decision of its own.

The rules are Istio's (istio/istio ``pilot/pkg/networking/core/cluster_tls.go``:
``buildUpstreamTLSSettings``, ``buildUpstreamClusterTLSContext``,
``constructUpstreamTLS``, ``setAutoSniAndAutoSanValidation``):

``tls`` set
    * ``DISABLE``: plain text.
    * ``ISTIO_MUTUAL``: mesh mTLS with the workload certificate; SNI is
      ``sni`` or ``outbound_.<port>_.<subset>_.<host>``; the accepted server
      identities are ``subjectAltNames`` or, when empty, the destination's
      (ServiceEntry ``subjectAltNames`` plus the SPIFFE IDs of its
      WorkloadEntries' service accounts). ALPN: ``istio-http/1.1``, ``istio``
      (what a sidecar's ALPN filter sends for HTTP/1.1).
    * ``SIMPLE`` / ``MUTUAL``: TLS origination, verified against
      ``caCertificates`` (the system roots when unset); ``MUTUAL`` also
      presents ``clientCertificate`` and ``privateKey``. SNI is ``sni`` or
      the request's host (Envoy ``auto_sni``). Names checked on the server
      certificate (any SAN type, DNS wildcards as Envoy matches them):
      ``subjectAltNames``; when empty, the destination's subject alt names
      (every inmesh service comes from a ServiceEntry, Istio's "external"
      registry); but when neither ``sni`` nor ``subjectAltNames`` is set,
      the request's host (Envoy ``auto_san_validation``, which overrides the
      list). ``insecureSkipVerify`` turns every check off.

``tls`` unset (auto mTLS, ``enableAutoMtls``, on by default)
    Mesh mTLS, as ``ISTIO_MUTUAL`` with the default SNI and identities, when
    the service is not ``MESH_EXTERNAL``, the server side's mode is known and
    not ``DISABLE``, and the endpoint carries ``security.istio.io/tlsMode:
    istio`` (a WorkloadEntry with a ``serviceAccount`` has it implicitly).
    Anything else: plain text.

inmesh departs from Istio where Istio fails open: a ``MUTUAL`` block without
``clientCertificate``/``privateKey`` (or with only ``credentialName``, which
sidecars ignore) makes Istio send plain text; here it raises
:class:`ValueError` (validation already rejects such a rule).

Tier 3: imports the config resources, the discovery values and
:class:`~inmesh.policy.peer_authn.MtlsMode`; pure functions over frozen values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from inmesh.config.resources.destination_rule import ClientTLSSettings, TLSMode
from inmesh.config.resources.service_entry import Location
from inmesh.discovery.registry import TLS_MODE_DISABLED, TLS_MODE_ISTIO, Endpoint, Service
from inmesh.policy.peer_authn import MtlsMode

__all__ = [
    "MESH_ALPN",
    "PLAINTEXT",
    "TLS_MODE_LABEL",
    "TLSOrigin",
    "UpstreamTLS",
    "UpstreamTLSMode",
    "destination_identities",
    "endpoint_tls_mode",
    "istio_sni",
    "resolve_upstream_tls",
    "upstream_tls_for",
]

TLS_MODE_LABEL = "security.istio.io/tlsMode"
"""The endpoint label auto mTLS reads (``istio``: the endpoint accepts mesh mTLS)."""

MESH_ALPN: tuple[str, ...] = ("istio-http/1.1", "istio")
"""ALPN offered on mesh mTLS for HTTP/1.1, as a sidecar's ALPN filter sets it.

An Envoy server in PERMISSIVE mode uses these to recognise mesh traffic; a
server that knows neither selects no protocol, and HTTP/1.1 is spoken.
"""

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


class UpstreamTLSMode(str, enum.Enum):
    """What the connection to the endpoint is wrapped in."""

    PLAINTEXT = "plaintext"
    """No TLS (``DISABLE``, or auto mTLS found no reason to use it)."""
    TLS = "tls"
    """TLS origination (``SIMPLE``; ``MUTUAL`` when a client certificate file is set)."""
    ISTIO_MUTUAL = "istio_mutual"
    """Mesh mTLS with the workload's SPIFFE certificate and the mesh trust bundle."""


class TLSOrigin(str, enum.Enum):
    """Why the settings are what they are (for logs and debugging; not part of equality)."""

    DESTINATION_RULE = "destination_rule"
    """A DestinationRule's ``tls`` block."""
    AUTO_MTLS = "auto_mtls"
    """No ``tls`` block; auto mTLS decided (mTLS or plain text)."""


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """How to secure and verify one upstream connection. Hashable: pools are keyed by it.

    * ``mode``: :class:`UpstreamTLSMode`.
    * ``sni``: the server name sent (``None``: none; Python never sends an IP).
    * ``subject_alt_names``: what the server certificate must carry.
      ``ISTIO_MUTUAL``: accepted SPIFFE IDs (URIs); the server must present
      exactly one SPIFFE ID, in this set when it is not empty (empty: any
      identity of the trust domain's CA, as Envoy with no SAN matcher).
      ``TLS``: names of which at least one must equal one of the
      certificate's SANs (DNS with wildcard matching, URI, IP, e-mail); empty:
      the chain alone is checked.
    * ``ca_certificates``: PEM file of roots for ``TLS`` (``None``: system roots).
    * ``client_certificate``, ``private_key``: PEM files presented in ``TLS``
      mode (``MUTUAL``); both or neither.
    * ``ca_crl``: PEM file of revoked certificates (``TLS`` mode).
    * ``insecure_skip_verify``: ``TLS`` mode without any check of the server.
    * ``alpn``: protocols offered.
    * ``origin``: :class:`TLSOrigin`, not compared.
    """

    mode: UpstreamTLSMode = UpstreamTLSMode.PLAINTEXT
    sni: str | None = None
    subject_alt_names: frozenset[str] = frozenset()
    ca_certificates: str | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_crl: str | None = None
    insecure_skip_verify: bool = False
    alpn: tuple[str, ...] = ()
    origin: TLSOrigin = field(default=TLSOrigin.AUTO_MTLS, compare=False)

    def __post_init__(self) -> None:
        sans: object = self.subject_alt_names
        if not isinstance(sans, frozenset):  # a set or list given at run time: keep it hashable
            object.__setattr__(self, "subject_alt_names", frozenset(self.subject_alt_names))
        if (self.client_certificate is None) != (self.private_key is None):
            raise ValueError("client_certificate and private_key go together: set both or neither")
        if self.mode is not UpstreamTLSMode.TLS and (
            self.client_certificate or self.ca_certificates or self.ca_crl
        ):
            raise ValueError("certificate files are only used in TLS mode")

    @property
    def secure(self) -> bool:
        """Whether the connection is TLS (any mode but plain text)."""
        return self.mode is not UpstreamTLSMode.PLAINTEXT

    @property
    def mutual(self) -> bool:
        """Whether a client certificate is presented."""
        return self.mode is UpstreamTLSMode.ISTIO_MUTUAL or self.client_certificate is not None

    @property
    def scheme(self) -> str:
        """The URL scheme requests through such a connection use: ``https`` or ``http``."""
        return "https" if self.secure else "http"

    def describe(self) -> str:
        """A one-line summary for logs and error messages."""
        if not self.secure:
            return "plaintext"
        what = (
            "ISTIO_MUTUAL"
            if self.mode is UpstreamTLSMode.ISTIO_MUTUAL
            else ("MUTUAL" if self.client_certificate else "SIMPLE")
        )
        parts = [what]
        if self.sni:
            parts.append(f"sni={self.sni}")
        if self.insecure_skip_verify:
            parts.append("insecure_skip_verify")
        elif self.subject_alt_names:
            parts.append("sans=[" + ", ".join(sorted(self.subject_alt_names)) + "]")
        return " ".join(parts)


PLAINTEXT = UpstreamTLS()
"""Plain text, decided by auto mTLS (the common non-mesh case)."""

_DR_PLAINTEXT = UpstreamTLS(origin=TLSOrigin.DESTINATION_RULE)


def istio_sni(host: str, port: int, subset: str = "") -> str:
    """Istio's default SNI for mesh mTLS: ``outbound_.<port>_.<subset>_.<host>``.

    >>> istio_sni("backend.default.svc.cluster.local", 8080)
    'outbound_.8080_._.backend.default.svc.cluster.local'
    """
    return f"outbound_.{port}_.{subset}_.{host}"


def endpoint_tls_mode(labels: Mapping[str, str], service_account: str = "") -> str:
    """The endpoint's ``security.istio.io/tlsMode``: the label when set, else
    ``istio`` for an endpoint with a service account, else ``disabled``
    (as :mod:`inmesh.discovery` computes :attr:`Endpoint.tls_mode`)."""
    return labels.get(TLS_MODE_LABEL) or (TLS_MODE_ISTIO if service_account else TLS_MODE_DISABLED)


def destination_identities(service: Service, endpoints: Iterable[Endpoint]) -> frozenset[str]:
    """What the destination may present: the ServiceEntry's ``subjectAltNames``
    plus the SPIFFE IDs of its endpoints' service accounts (Istio's
    ``ServiceAccounts`` of a service)."""
    ids = set(service.subject_alt_names)
    ids.update(ep.spiffe_id for ep in endpoints if ep.spiffe_id)
    return frozenset(ids)


def resolve_upstream_tls(
    settings: ClientTLSSettings | None,
    *,
    host: str,
    port: int,
    subset: str = "",
    authority: str | None = None,
    location: Location = Location.MESH_EXTERNAL,
    subject_alt_names: Iterable[str] = (),
    endpoint_labels: Mapping[str, str] = _NO_LABELS,
    endpoint_service_account: str = "",
    peer_mode: MtlsMode | None = None,
    auto_mtls: bool = True,
) -> UpstreamTLS:
    """Decide the TLS for a connection to one endpoint of a destination.

    * ``settings``: the effective DestinationRule ``tls`` block (after port
      and subset merging), ``None`` when no rule sets one.
    * ``host``, ``port``, ``subset``: the destination (the service's hostname
      and port number), for the default mesh SNI.
    * ``authority``: the request's host (a port is dropped), for ``SIMPLE``/
      ``MUTUAL`` automatic SNI and name checks; ``None``: ``host``.
    * ``location``: the ServiceEntry's location.
    * ``subject_alt_names``: the destination's identities
      (:func:`destination_identities`).
    * ``endpoint_labels``, ``endpoint_service_account``: the endpoint's, for
      its ``tlsMode`` (:func:`endpoint_tls_mode`).
    * ``peer_mode``: the server side's PeerAuthentication mode as far as it is
      known (Istio's ``BestEffortInferServiceMTLSMode``), ``None`` if unknown.
    * ``auto_mtls``: the mesh's ``enableAutoMtls``.

    See the module docstring for the rules. Raises :class:`ValueError` for a
    ``MUTUAL`` block without its certificate files.
    """
    identities = frozenset(subject_alt_names)
    if settings is None:
        if (
            location is Location.MESH_EXTERNAL
            or not auto_mtls
            or peer_mode is None
            or peer_mode is MtlsMode.DISABLE
            or endpoint_tls_mode(endpoint_labels, endpoint_service_account) != TLS_MODE_ISTIO
        ):
            return PLAINTEXT
        return UpstreamTLS(
            mode=UpstreamTLSMode.ISTIO_MUTUAL,
            sni=istio_sni(host, port, subset),
            subject_alt_names=identities,
            alpn=MESH_ALPN,
            origin=TLSOrigin.AUTO_MTLS,
        )
    mode = settings.mode
    if mode is TLSMode.DISABLE:
        return _DR_PLAINTEXT
    if mode is TLSMode.ISTIO_MUTUAL:
        return UpstreamTLS(
            mode=UpstreamTLSMode.ISTIO_MUTUAL,
            sni=settings.sni or istio_sni(host, port, subset),
            subject_alt_names=frozenset(settings.subject_alt_names) or identities,
            alpn=MESH_ALPN,
            origin=TLSOrigin.DESTINATION_RULE,
        )
    return _originate(settings, _host_only(authority) or host, identities)


def _host_only(authority: str | None) -> str:
    """``api.example.com:443`` -> ``api.example.com``; ``[::1]:443`` -> ``::1``."""
    if not authority:
        return ""
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    host, sep, port = authority.rpartition(":")
    return host if sep and host and ":" not in host and port.isdigit() else authority


def _originate(
    settings: ClientTLSSettings, authority: str, identities: frozenset[str]
) -> UpstreamTLS:
    """``SIMPLE`` / ``MUTUAL`` (``constructUpstreamTLS`` + ``setAutoSniAndAutoSanValidation``)."""
    cert, key = settings.client_certificate or None, settings.private_key or None
    if settings.mode is TLSMode.MUTUAL:
        if not cert or not key:
            raise ValueError(
                "DestinationRule tls mode MUTUAL needs clientCertificate and privateKey "
                "(credentialName is not supported on sidecars)"
            )
    else:
        cert = key = None
    insecure = bool(settings.insecure_skip_verify)
    if insecure:
        sans: frozenset[str] = frozenset()
    elif not settings.sni and not settings.subject_alt_names:
        sans = frozenset((authority,))  # auto_san_validation overrides the list
    else:
        sans = frozenset(settings.subject_alt_names) or identities
    return UpstreamTLS(
        mode=UpstreamTLSMode.TLS,
        sni=settings.sni or authority,
        subject_alt_names=sans,
        ca_certificates=settings.ca_certificates or None,
        client_certificate=cert,
        private_key=key,
        ca_crl=(settings.ca_crl or None) if not insecure else None,
        insecure_skip_verify=insecure,
        origin=TLSOrigin.DESTINATION_RULE,
    )


def upstream_tls_for(
    settings: ClientTLSSettings | None,
    service: Service,
    port: int,
    endpoint: Endpoint,
    *,
    identities: Iterable[str],
    subset: str = "",
    authority: str | None = None,
    peer_mode: MtlsMode | None = None,
    auto_mtls: bool = True,
) -> UpstreamTLS:
    """:func:`resolve_upstream_tls` fed from registry values.

    ``identities`` is :func:`destination_identities` of the service,
    computed once per destination rather than per request.
    """
    return resolve_upstream_tls(
        settings,
        host=service.hostname,
        port=port,
        subset=subset,
        authority=authority,
        location=service.location,
        subject_alt_names=identities,
        endpoint_labels={TLS_MODE_LABEL: endpoint.tls_mode},
        peer_mode=peer_mode,
        auto_mtls=auto_mtls,
    )
