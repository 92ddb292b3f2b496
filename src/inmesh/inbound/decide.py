"""The inbound decision, without I/O: who is calling, may they, what the app sees.

One function decides for every server flavour (the ASGI and the WSGI
middleware call it; so will the authorization engine, as a further stage)::

    decider = InboundDecider(context)
    decision = decider.decide(ConnectionFacts(tls=True, peer_der=der, local_port=8080),
                              xfcc=incoming_header_or_None)
    if not decision.allowed:
        reply(decision.reason.status, decision.reason.body)      # local reply
    else:
        app sees decision.xfcc as x-forwarded-client-cert, decision.peer_id as identity

Stages, in Envoy's order (istio-semantics.md §0, "server side"):

1. **peer identity**: the SPIFFE ID of the *verified* client certificate the
   server saw (never a header). A certificate without exactly one valid
   ``spiffe://`` URI SAN, or from another trust domain than this workload's, is
   refused wherever a certificate is accepted (Istio's inbound validation
   context matches SANs on ``spiffe://<trust-domain>/``; a handshake signed by
   another CA never gets here: the TLS layer refuses it against the mesh root).
2. **peer authentication**: the PeerAuthentication mode of the local port:

   ========== ============================== ===========================================
   mode       plaintext                      TLS
   ========== ============================== ===========================================
   STRICT     refused (``plaintext_refused``) served with the client certificate's
                                              identity; refused without a certificate
                                              (``client_certificate_required``)
   PERMISSIVE served, no identity             served, identity if a certificate was sent
   DISABLE    served, no identity            served, **no identity, no XFCC** (the mesh
                                              does not authenticate; a listener owned by
                                              :mod:`inmesh.inbound.serve` is plaintext-only)
   ========== ============================== ===========================================

   When TLS was terminated by a server that does not show the client
   certificate (``ConnectionFacts.peer_visible=False``), presence of a client
   certificate cannot be checked: the request is served without identity and
   the decider logs it once on ``inmesh.inbound`` (``fail_closed=True`` refuses
   it instead, ``peer_certificate_unavailable``).
3. **request**: the method must be an upper-case token (Envoy's HTTP/1 codec;
   else ``400``, ``http1.codec_error``) and the path is normalized from the
   *raw* request target as the sidecar's Envoy does it under the context's
   ``path_normalization`` (:func:`inmesh.policy.normalize.normalize_path`): a
   refused path gets ``400`` (``path_normalization_failed``) or ``404``
   (``absolute_path_required``) with an empty body. This runs whether or not
   a policy applies, so the app always sees the same normalized path.
4. **authorization**: when ``context.authorizer()`` returns an evaluator,
   :meth:`AuthzEvaluator.evaluate <inmesh.policy.authz.AuthzEvaluator.evaluate>`
   decides (CUSTOM, AUDIT, DENY, ALLOW, istio-semantics.md §4.2) on the
   verified peer and the *normalized* path. A denial is ``403``
   ``text/plain`` ``RBAC: access denied`` (or the CUSTOM authorizer's
   status, body and headers). AUDIT matches and dry-run outcomes are logged on
   ``inmesh.authz``, one line each. The result is never cached (it depends on
   the request): only stages 1, 2 and 5 are.
5. **XFCC** (Envoy APPEND_FORWARD, :mod:`inmesh.inbound.xfcc`): on an mTLS
   connection the app gets this hop's element, appended to the incoming value
   when the context trusts the proxy in front (``trusted_proxy_xfcc``), else
   alone (the incoming value is dropped). Without mTLS any incoming XFCC is
   removed (``xfcc=None``), as Envoy does.

Cost: everything derived from a certificate (parsing, SHA-256, the XFCC
element) and whole allowed decisions are cached per decider in bounded LRUs
keyed by the DER bytes, so a request on a known connection costs two dict
lookups and a mode lookup (measured in tests/inbound/test_decide.py).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography import x509

from inmesh.identity.certificate import spiffe_id_of
from inmesh.identity.spiffe import SpiffeId
from inmesh.inbound import xfcc as _xfcc
from inmesh.inbound.context import InboundContext
from inmesh.policy.authz import RBAC_DENIED_BODY, AuthzDecision, AuthzRequest
from inmesh.policy.normalize import (
    ABSOLUTE_PATH_REQUIRED,
    NormalizedPath,
    PathNormalization,
    check_method,
    normalize_path,
)
from inmesh.policy.peer_authn import MtlsMode

__all__ = [
    "DECISION_CACHE_SIZE",
    "ConnectionFacts",
    "InboundDecider",
    "InboundDecision",
    "PeerCertificate",
    "RefusalReason",
    "RequestFacts",
    "parse_peer_certificate",
]

logger = logging.getLogger("inmesh.inbound")
authz_logger = logging.getLogger("inmesh.authz")

DECISION_CACHE_SIZE = 4096
"""Per decider: how many certificates (and decisions) are remembered."""


class RefusalReason(str, enum.Enum):
    """Why a request was refused; the value is the Envoy-style "response code details" token.

    Peer-authentication refusals are a local reply ``403`` with
    ``content-type: text/plain``, ``connection: close`` and the body
    :attr:`body`. Request refusals (method, path) are ``400``/``404`` with an
    empty body; an authorization denial takes status, body and details from
    the :class:`~inmesh.policy.authz.AuthzDecision`.
    """

    PLAINTEXT = "plaintext_refused"
    """STRICT: the connection is not TLS."""
    NO_CLIENT_CERTIFICATE = "client_certificate_required"
    """STRICT: TLS, but the client sent no certificate."""
    NO_SPIFFE_ID = "peer_spiffe_id_missing"
    """The client certificate has no (single, valid) SPIFFE ID."""
    TRUST_DOMAIN = "peer_trust_domain_mismatch"
    """The client's SPIFFE ID is in another trust domain than this workload's."""
    UNVERIFIABLE = "peer_certificate_unavailable"
    """TLS terminated where the client certificate is not visible, with ``fail_closed``."""
    INVALID_METHOD = "http1.codec_error"
    """The method is not an upper-case token (Envoy's codec refuses it: 400)."""
    PATH_REFUSED = "path_normalization_failed"
    """Path normalization refused the request target (``%00``, ``#``...: 400)."""
    ABSOLUTE_PATH = ABSOLUTE_PATH_REQUIRED
    """The request target is not an origin-form path (404)."""
    OUTSIDE_MOUNT = "path_outside_script_name"
    """WSGI: the normalized path left the app's ``SCRIPT_NAME`` (404)."""
    AUTHZ_DENIED = "authz_denied"
    """An AuthorizationPolicy denied it (see :attr:`InboundDecision.authz`)."""

    @property
    def status(self) -> int:
        """The HTTP status of the local reply (403, or 400/404 for request refusals)."""
        return _STATUSES.get(self, 403)

    @property
    def peer_authentication(self) -> bool:
        """A refusal of the connection's peer (then the reply closes the connection)."""
        return self in _PEER_REASONS

    @property
    def body(self) -> bytes:
        """The local reply's body: ``peer authentication failed: <what>``."""
        return _BODIES[self]


_BODIES = {
    RefusalReason.PLAINTEXT: b"peer authentication failed: mutual TLS is required",
    RefusalReason.NO_CLIENT_CERTIFICATE: b"peer authentication failed: client certificate required",
    RefusalReason.NO_SPIFFE_ID: b"peer authentication failed: client certificate has no SPIFFE ID",
    RefusalReason.TRUST_DOMAIN: b"peer authentication failed: client trust domain not accepted",
    RefusalReason.UNVERIFIABLE: (
        b"peer authentication failed: client certificate not visible to the mesh"
    ),
    RefusalReason.INVALID_METHOD: b"",
    RefusalReason.PATH_REFUSED: b"",
    RefusalReason.ABSOLUTE_PATH: b"",
    RefusalReason.OUTSIDE_MOUNT: b"",
    RefusalReason.AUTHZ_DENIED: RBAC_DENIED_BODY,
}
_STATUSES = {
    RefusalReason.INVALID_METHOD: 400,
    RefusalReason.PATH_REFUSED: 400,
    RefusalReason.ABSOLUTE_PATH: 404,
    RefusalReason.OUTSIDE_MOUNT: 404,
}
_PEER_REASONS = frozenset(
    {
        RefusalReason.PLAINTEXT,
        RefusalReason.NO_CLIENT_CERTIFICATE,
        RefusalReason.NO_SPIFFE_ID,
        RefusalReason.TRUST_DOMAIN,
        RefusalReason.UNVERIFIABLE,
    }
)


@dataclass(frozen=True, slots=True, eq=False)
class PeerCertificate:
    """What the inbound path needs from a client's (already verified) leaf certificate.

    Compared and hashed by identity (a decider hands out one object per
    certificate); compare :attr:`der` or :attr:`sha256` for content.
    """

    der: bytes
    """The certificate, DER."""
    sha256: str
    """Lower-case hex SHA-256 of :attr:`der` (the XFCC ``Hash``)."""
    spiffe_id: SpiffeId | None
    """The SPIFFE ID (exactly one valid ``spiffe://`` URI SAN), else ``None``."""
    uris: tuple[str, ...]
    """Every URI SAN."""
    dns: tuple[str, ...]
    """Every DNS SAN."""
    subject: str
    """The subject DN, RFC 4514 (``""`` for Istio certificates)."""
    xfcc_peer: str
    """The client part of this hop's XFCC element (``Hash=...;Subject=...;URI=...``)."""


def parse_peer_certificate(der: bytes) -> PeerCertificate:
    """Parse a client's DER leaf. Raises :class:`ValueError` if it is not a certificate."""
    cert = x509.load_der_x509_certificate(der)
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        pass
    else:
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        dns = tuple(san.get_values_for_type(x509.DNSName))
    try:
        subject = cert.subject.rfc4514_string()
    except ValueError:  # pragma: no cover - undecodable subject
        subject = ""
    sha = hashlib.sha256(der).hexdigest()
    return PeerCertificate(
        der=der,
        sha256=sha,
        spiffe_id=spiffe_id_of(cert),
        uris=uris,
        dns=dns,
        subject=subject,
        xfcc_peer=_xfcc.peer_part(sha, subject, uris, dns),
    )


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What the server knows about the connection a request came on.

    * ``tls``: the connection to *this* server is TLS;
    * ``peer_der``: the client's leaf certificate (DER) **as verified by the TLS
      layer** against the mesh root, ``None`` when it sent none;
    * ``peer_visible``: ``False`` when TLS was terminated by a server that does
      not tell the app about client certificates (then ``peer_der`` is
      meaningless);
    * ``local_port``: the port the connection was accepted on (selects
      ``portLevelMtls``);
    * ``via``: where the facts came from, for logs (``"uvicorn"``,
      ``"gunicorn.socket"``, ``"SSL_CLIENT_CERT"``...).
    """

    tls: bool
    peer_der: bytes | None = None
    peer_visible: bool = True
    local_port: int | None = None
    via: str = ""


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the request stage needs from one request (the middleware builds it).

    * ``target``: the request target **as the client sent it** (raw path,
      then ``?`` and the query: :func:`~inmesh.policy.normalize.asgi_request_target`,
      :func:`~inmesh.policy.normalize.wsgi_request_target`), never a
      percent-decoded path;
    * ``method``: the request method;
    * ``authz_request``: builds the
      :class:`~inmesh.policy.authz.AuthzRequest` from the verified peer and
      the normalized path (only called when a policy applies);
    * ``mount``: WSGI's ``SCRIPT_NAME`` (decoded); a normalized path outside
      it is refused (404) instead of being handed to an app mounted elsewhere.
    """

    target: bytes
    method: str
    authz_request: Callable[[SpiffeId | None, NormalizedPath], AuthzRequest]
    mount: str = ""


@dataclass(frozen=True, slots=True)
class InboundDecision:
    """The outcome for one request. Frozen; shared between requests when equal.

    Exposed to apps as ``scope["extensions"]["inmesh"]`` (ASGI) and
    ``environ["inmesh.decision"]`` (WSGI).
    """

    allowed: bool
    """Serve the request (else reply locally with :attr:`reason`)."""
    mode: MtlsMode
    """The PeerAuthentication mode that applied."""
    tls: bool
    """The connection is TLS."""
    peer: PeerCertificate | None
    """The client certificate that counts as identity (``None``: no identity)."""
    xfcc: str | None
    """The ``x-forwarded-client-cert`` value the app sees; ``None``: no such header."""
    reason: RefusalReason | None = None
    """Why it was refused (``None`` when allowed)."""
    peer_visible: bool = True
    """``False``: TLS was terminated where the client certificate could not be seen."""
    path: NormalizedPath | None = None
    """The normalized request target (what policies matched and the app sees);
    ``None`` when the request stage did not run (refused before it)."""
    authz: AuthzDecision | None = None
    """The authorization outcome (matched policy id, response code details,
    dry-run, audit); ``None`` when no AuthorizationPolicy applies."""

    @property
    def status(self) -> int | None:
        """The status of the local reply when refused, else ``None``."""
        if self.allowed:
            return None
        authz = self.authz
        if authz is not None and not authz.allowed and authz.status is not None:
            return authz.status
        return None if self.reason is None else self.reason.status

    @property
    def body(self) -> bytes:
        """The body of the local reply when refused (``b""`` when allowed)."""
        if self.allowed:
            return b""
        authz = self.authz
        if authz is not None and not authz.allowed:
            return authz.body
        return b"" if self.reason is None else self.reason.body

    @property
    def response_headers(self) -> tuple[tuple[str, str], ...]:
        """Extra headers of the local reply (a CUSTOM authorizer's)."""
        authz = self.authz
        return () if self.allowed or authz is None else authz.response_headers

    @property
    def response_code_details(self) -> str | None:
        """Envoy's response code details: ``rbac_access_denied_matched_policy[...]``,
        ``path_normalization_failed``, ``plaintext_refused``...; ``None`` when allowed."""
        if self.allowed:
            return None
        authz = self.authz
        if authz is not None and authz.response_code_details is not None:
            return authz.response_code_details
        return None if self.reason is None else self.reason.value

    @property
    def policy_id(self) -> str | None:
        """The effective policy id of the AuthorizationPolicy rule that decided, if any."""
        authz = self.authz
        return None if authz is None else authz.policy_id

    @property
    def mtls(self) -> bool:
        """TLS with a client certificate that counts as the peer's identity."""
        return self.peer is not None

    @property
    def peer_id(self) -> SpiffeId | None:
        """The client's SPIFFE ID (only ever from a verified certificate)."""
        peer = self.peer
        return None if peer is None else peer.spiffe_id

    @property
    def principal(self) -> str:
        """Istio's ``source.principal``: the SPIFFE ID without ``spiffe://``, or ``""``."""
        sid = self.peer_id
        return "" if sid is None else sid.principal


class InboundDecider:
    """Decides requests for one :class:`~inmesh.inbound.context.InboundContext`.

    Thread-safe (the caches are :func:`functools.lru_cache`); one per middleware
    instance. ``fail_closed``: refuse TLS requests whose client certificate
    the server does not expose, instead of serving them without identity.
    """

    def __init__(
        self,
        context: InboundContext,
        *,
        fail_closed: bool = False,
        cache_size: int = DECISION_CACHE_SIZE,
    ) -> None:
        self.context = context
        """The mesh as the server side sees it."""
        self.fail_closed = fail_closed
        """Refuse when the client certificate cannot be seen."""
        self._peer = functools.lru_cache(maxsize=cache_size)(self._parse)
        self._allowed = functools.lru_cache(maxsize=cache_size)(_allowed_mtls)
        self._warned: set[str] = set()

    # -- the decision ----------------------------------------------------------

    def decide(
        self,
        conn: ConnectionFacts,
        *,
        xfcc: str | None = None,
        request: RequestFacts | None = None,
    ) -> InboundDecision:
        """Decide one request on ``conn``; ``xfcc`` is the incoming XFCC value, if any.

        With ``request`` the request stage runs too (method, path
        normalization, authorization); without it only the peer is decided.
        May block when a CUSTOM authorizer is asked (async servers: run it in
        a worker thread when ``context.authorizer().uses_custom``).
        """
        decision = self._authenticate(conn, xfcc)
        if request is None or not decision.allowed:
            return decision
        return self._request_stage(decision, request)

    def _request_stage(self, decision: InboundDecision, request: RequestFacts) -> InboundDecision:
        if check_method(request.method) is not None:
            return _derive(decision, False, RefusalReason.INVALID_METHOD, None, None)
        context = self.context
        mode = context.path_normalization
        n = normalize_path(request.target, _MODES.get(mode) or mode)
        if not n.ok:
            reason = (
                RefusalReason.ABSOLUTE_PATH
                if n.refusal == ABSOLUTE_PATH_REQUIRED
                else RefusalReason.PATH_REFUSED
            )
            return _derive(decision, False, reason, n, None)
        mount = request.mount
        if mount:
            full = n.wsgi_path_info
            if full != mount and not full.startswith(mount + "/"):
                return _derive(decision, False, RefusalReason.OUTSIDE_MOUNT, n, None)
        evaluator = context.authorizer()
        if evaluator is None:
            return _derive(decision, True, None, n, None)
        authz = evaluator.evaluate(request.authz_request(decision.peer_id, n))
        if authz.audit or authz.dry_run:
            _log_authz(request.method, n, decision, authz)
        if authz.allowed:
            return _derive(decision, True, None, n, authz)
        return _derive(decision, False, RefusalReason.AUTHZ_DENIED, n, authz)

    def _authenticate(self, conn: ConnectionFacts, xfcc: str | None) -> InboundDecision:
        mode = self.context.mtls_mode(conn.local_port)
        if not conn.tls:
            if mode is MtlsMode.STRICT:
                self._warn_once(
                    "plaintext-strict",
                    "PeerAuthentication STRICT: refusing requests that arrive over plaintext "
                    "(port %s, via %s); if mesh clients are expected, serve with TLS requiring "
                    "client certificates (inmesh.inbound.serve, or the server's --cert-reqs 2)",
                    conn.local_port,
                    conn.via or "unknown server",
                )
                return _refused(mode, False, RefusalReason.PLAINTEXT)
            return _plain(mode, False)
        if mode is MtlsMode.DISABLE:
            return _plain(mode, True)
        if not conn.peer_visible:
            self._warn_once(
                "invisible",
                "the server terminates TLS but does not expose client certificates (via %s): "
                "inmesh cannot check them (PeerAuthentication %s) nor see peer identities, "
                "so requests are %s; serve with inmesh.inbound.serve, uvicorn "
                "--http inmesh.inbound.uvicorn:HttpToolsProtocol, or gunicorn's sync/gthread "
                "worker",
                conn.via or "unknown server",
                mode.value,
                "refused (fail_closed)" if self.fail_closed else "served WITHOUT peer identity",
            )
            if self.fail_closed:
                return _refused(mode, True, RefusalReason.UNVERIFIABLE, peer_visible=False)
            return _plain(mode, True, peer_visible=False)
        der = conn.peer_der
        if der is None:
            if mode is MtlsMode.STRICT:
                return _refused(mode, True, RefusalReason.NO_CLIENT_CERTIFICATE)
            return _plain(mode, True)
        peer = self._peer(der)
        if peer is None or peer.spiffe_id is None:
            return _refused(mode, True, RefusalReason.NO_SPIFFE_ID)
        local = self.context.local_identity()
        if local is not None and peer.spiffe_id.trust_domain != local.trust_domain:
            return _refused(mode, True, RefusalReason.TRUST_DOMAIN)
        decision = self._allowed(mode, peer, None if local is None else local.uri)
        if xfcc is not None and self.context.trusted_proxy_xfcc:
            return replace(decision, xfcc=_xfcc.append(xfcc, decision.xfcc or ""))
        return decision

    # -- helpers ------------------------------------------------------------------

    def peer_certificate(self, der: bytes) -> PeerCertificate | None:
        """The parsed certificate (cached), ``None`` if ``der`` is not a certificate."""
        return self._peer(der)

    @staticmethod
    def _parse(der: bytes) -> PeerCertificate | None:
        try:
            return parse_peer_certificate(der)
        except ValueError:
            logger.warning("a TLS layer handed over a client certificate that does not parse")
            return None

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning(msg, *args)


_MODES = {m.value: m for m in PathNormalization}


def _derive(
    d: InboundDecision,
    allowed: bool,
    reason: RefusalReason | None,
    path: NormalizedPath | None,
    authz: AuthzDecision | None,
) -> InboundDecision:
    """``d`` after the request stage (faster than :func:`dataclasses.replace`)."""
    return InboundDecision(
        allowed,
        d.mode,
        d.tls,
        d.peer,
        d.xfcc if allowed else None,
        reason,
        d.peer_visible,
        path,
        authz,
    )


def _log_authz(
    method: str, n: NormalizedPath, decision: InboundDecision, authz: AuthzDecision
) -> None:
    who = decision.principal or "-"
    if authz.audit:
        authz_logger.info(
            "AUDIT %s %s peer=%s policy=%s allowed=%s",
            method,
            n.path,
            who,
            authz.audit_policy_id,
            authz.allowed,
        )
    if authz.dry_run:
        authz_logger.info(
            "dry-run %s %s peer=%s %s enforced=%s",
            method,
            n.path,
            who,
            " ".join(f"{d.action}:{d.result}[{d.policy_id or '-'}]" for d in authz.dry_run),
            "allowed" if authz.allowed else "denied",
        )


# Decisions that depend on nothing but (mode, tls[, visible]) are shared constants.
_PLAIN = {
    (mode, tls, visible): InboundDecision(
        allowed=True, mode=mode, tls=tls, peer=None, xfcc=None, peer_visible=visible
    )
    for mode in MtlsMode
    for tls in (False, True)
    for visible in (False, True)
}
_REFUSED = {
    (mode, tls, reason, visible): InboundDecision(
        allowed=False,
        mode=mode,
        tls=tls,
        peer=None,
        xfcc=None,
        reason=reason,
        peer_visible=visible,
    )
    for mode in MtlsMode
    for tls in (False, True)
    for reason in RefusalReason
    for visible in (False, True)
}


def _plain(mode: MtlsMode, tls: bool, *, peer_visible: bool = True) -> InboundDecision:
    return _PLAIN[mode, tls, peer_visible]


def _refused(
    mode: MtlsMode, tls: bool, reason: RefusalReason, *, peer_visible: bool = True
) -> InboundDecision:
    return _REFUSED[mode, tls, reason, peer_visible]


def _allowed_mtls(mode: MtlsMode, peer: PeerCertificate, by: str | None) -> InboundDecision:
    value = _xfcc.element((by,) if by else (), peer.xfcc_peer)
    return InboundDecision(allowed=True, mode=mode, tls=True, peer=peer, xfcc=value)
