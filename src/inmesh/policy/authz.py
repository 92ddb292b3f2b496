"""AuthorizationPolicy enforcement, sans I/O: what an Istio sidecar's Envoy decides.

Compile once per (snapshot, workload), evaluate per request::

    evaluator = AuthorizationEngine.compile(snapshot, workload, custom_authorizer=hook)
    request = AuthzRequest.from_asgi(scope, peer=peer_id, path=normalized)
    decision = evaluator.evaluate(request)
    if not decision.allowed:
        local reply: decision.status, decision.body (text/plain), details
        decision.response_code_details, flags decision.response_flags

Which policies apply (istio/istio ``pilot/pkg/model/authorization.go``,
``policyattachment.go``): those of the root namespace and of the workload's
namespace whose ``selector.matchLabels`` are a subset of the workload's labels
(no selector: all); a root-namespace policy with a selector therefore applies
to matching workloads in every namespace. Policies with ``targetRef(s)`` are
for gateways and waypoints and are ignored, as sidecars do.

Evaluation follows Envoy's filter chain as Istio builds it (``builder.go``,
``listener_builder.go``): the CUSTOM ext_authz filter(s), then the RBAC
filters for AUDIT, DENY and ALLOW. Each RBAC filter first runs its dry-run
("shadow") rules, which only record, then its enforced rules:

1. CUSTOM: if a CUSTOM rule matches, the provider's
   :class:`ExternalAuthorizer` decides; a denial or an error is a local reply
   with flag ``UAEX``. With no authorizer for the provider Istio's answer to an
   unknown provider applies: requests matching its rules are denied by RBAC.
2. AUDIT: a match only marks the request (:attr:`AuthzDecision.audit`).
3. DENY: a match denies (403 ``RBAC: access denied``).
4. ALLOW: with no enforced ALLOW policy the request is allowed; otherwise it
   must match one, or it is denied with policy ``none``.

The matched policy is Envoy's *effective policy id*: the smallest id in byte
order among the matching rules, ``ns[<ns>]-policy[<name>]-rule[<index>]``.

Everything here is pure: no I/O, no clock, no global state. An evaluator is
immutable and safe to share between threads. The only call out is the CUSTOM
hook, which is synchronous: an async server should call :meth:`AuthzEvaluator.evaluate`
in a worker thread when :attr:`AuthzEvaluator.uses_custom` is true, or ask
its own async authorizer first (:meth:`AuthzEvaluator.custom_providers`) and
pass the answers as ``external=``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from inmesh.config.resources.authorization_policy import Action, AuthorizationPolicySpec
from inmesh.config.snapshot import ConfigSnapshot
from inmesh.identity.spiffe import SpiffeId
from inmesh.model import Workload

from ._authz_index import Engine
from ._authz_match import CompiledRule, SkipRuleError, TrustDomainBundle, compile_rule, never
from .normalize import NormalizedPath

__all__ = [
    "BAD_CUSTOM_ACTION_SUFFIX",
    "DRY_RUN_ANNOTATION",
    "EXT_AUTHZ_DENIED",
    "EXT_AUTHZ_ERROR",
    "RBAC_DENIED_BODY",
    "UAEX",
    "AuthorizationEngine",
    "AuthzDecision",
    "AuthzEvaluator",
    "AuthzRequest",
    "DryRunResult",
    "ExternalAuthorizer",
    "ExternalDecision",
    "parse_go_bool",
    "policy_id",
    "rbac_response_detail",
    "remote_address",
]

DRY_RUN_ANNOTATION = "istio.io/dry-run"
"""Evaluate the policy and record the outcome, without enforcing it."""
RBAC_DENIED_BODY = b"RBAC: access denied"
"""The body of Envoy's RBAC local reply (status 403, ``text/plain``)."""
UAEX = "UAEX"
"""Envoy's response flag for a request the external authorizer denied (or failed on)."""
EXT_AUTHZ_DENIED = "ext_authz_denied"
"""Response code details: the external authorizer said no."""
EXT_AUTHZ_ERROR = "ext_authz_error"
"""Response code details: the external authorizer failed."""
BAD_CUSTOM_ACTION_SUFFIX = "-deny-due-to-bad-CUSTOM-action"
"""Appended by Istio to the policy id of CUSTOM rules it cannot send to a provider."""
_EXT_AUTHZ_PREFIX = "istio-ext-authz"
_ALLOWED = "allowed"
_DENIED = "denied"


def policy_id(namespace: str, name: str, rule: int, provider: str | None = None) -> str:
    """Envoy's policy id for rule ``rule`` of policy ``namespace/name`` (Istio ``policyName``).

    CUSTOM rules carry the ``istio-ext-authz-<provider>-`` prefix.

    >>> policy_id("foo", "httpbin", 0)
    'ns[foo]-policy[httpbin]-rule[0]'
    """
    prefix = ""
    if provider is not None:
        prefix = f"{_EXT_AUTHZ_PREFIX}-{provider}-" if provider else f"{_EXT_AUTHZ_PREFIX}-"
    return f"{prefix}ns[{namespace}]-policy[{name}]-rule[{rule}]"


def rbac_response_detail(effective_policy_id: str | None) -> str:
    """Envoy's RBAC response code details: ``rbac_access_denied_matched_policy[<id>|none]``.

    Whitespace in the id becomes ``_`` (Envoy's ``responseDetail``).
    """
    pid = effective_policy_id or "none"
    return (
        "rbac_access_denied_matched_policy["
        + "".join("_" if c in " \t\n\v\f\r" else c for c in pid)
        + "]"
    )


def parse_go_bool(value: str | None) -> bool | None:
    """Go's ``strconv.ParseBool``: ``None`` for anything it refuses (and for ``None``)."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def remote_address(
    peer_ip: str,
    x_forwarded_for: str | None,
    *,
    xff_num_trusted_hops: int = 0,
    use_remote_address: bool = False,
) -> str:
    """The original client address (``remote.ip``), as Envoy's connection manager finds it.

    A sidecar's inbound listener has ``use_remote_address: false`` and
    ``xff_num_trusted_hops: 0``: the *last* ``X-Forwarded-For`` entry is the
    remote address (so a direct caller can claim any address). With ``n``
    trusted hops the ``n`` last entries are skipped first. With
    ``use_remote_address`` (gateways) the peer address counts unless hops are
    trusted, then entry ``n`` from the end. A missing, short or unparsable
    header falls back to ``peer_ip``.
    """
    if use_remote_address:
        if xff_num_trusted_hops <= 0:
            return peer_ip
        return _last_xff_address(x_forwarded_for, xff_num_trusted_hops - 1) or peer_ip
    return _last_xff_address(x_forwarded_for, xff_num_trusted_hops) or peer_ip


def _last_xff_address(xff: str | None, skip: int) -> str | None:
    """``Utility::getLastAddressFromXFF``."""
    if not xff:
        return None
    for _ in range(skip):
        comma = xff.rfind(",")
        if comma < 0:
            return None
        xff = xff[:comma]
    candidate = xff[xff.rfind(",") + 1 :].strip(" \t")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


class _LowerHeaders(dict[str, str]):
    """Header names already lower-case and duplicates joined with ``,``."""


def _join_headers(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
) -> _LowerHeaders:
    out = _LowerHeaders()
    items = headers.items() if isinstance(headers, Mapping) else headers
    for raw_name, raw_value in items:
        name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        old = out.get(name)
        out[name] = value if old is None else old + "," + value
    return out


def _ip_key(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address; IPv4-mapped IPv6 counts as IPv4; ``None`` if invalid."""
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return 4, int(ip.ipv4_mapped)
    return ip.version, int(ip)


@dataclass(frozen=True, slots=True, eq=False)
class AuthzRequest:
    """What authorization looks at, for one request. Immutable.

    * ``peer``: the client's SPIFFE ID from a verified mTLS certificate;
      ``None`` for plaintext (or TLS without a client certificate);
    * ``source_ip``: the direct peer address (``source.ip``, ``ipBlocks``);
    * ``remote_ip``: the original client (``remote.ip``, ``remoteIpBlocks``);
      ``None`` means ``source_ip`` -- see :func:`remote_address`;
    * ``destination_ip`` / ``destination_port``: the server's local address;
    * ``sni``: the TLS server name the client asked for (``""`` if none);
    * ``method``; ``host``: the ``Host`` / ``:authority`` value as sent
      (``""`` when absent);
    * ``path``: the *normalized* ``:path``; anything from ``?`` or ``#`` on
      is ignored by ``paths`` (build it with
      :func:`inmesh.policy.normalize.normalize_path`);
    * ``headers``: a mapping or ``(name, value)`` pairs (str or bytes);
      names match case-insensitively and repeated headers are joined with
      ``,``, as Envoy does.
    """

    peer: SpiffeId | None = None
    source_ip: str = ""
    remote_ip: str | None = None
    destination_ip: str = ""
    destination_port: int = 0
    sni: str = ""
    method: str = "GET"
    host: str = ""
    path: str = "/"
    headers: Mapping[str, str] | Sequence[tuple[str | bytes, str | bytes]] = ()
    _principal: str | None = field(init=False, repr=False)
    _uri: str | None = field(init=False, repr=False)
    _path: str = field(init=False, repr=False)
    _hdr: _LowerHeaders = field(init=False, repr=False)
    _ns: tuple[str, ...] = field(init=False, repr=False)
    _ip0: tuple[int, int] | None = field(init=False, repr=False)
    _ip1: tuple[int, int] | None = field(init=False, repr=False)
    _ip2: tuple[int, int] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        peer = self.peer
        if peer is None:
            object.__setattr__(self, "_principal", None)
            object.__setattr__(self, "_uri", None)
        else:
            principal = peer.trust_domain + peer.path
            object.__setattr__(self, "_principal", principal)
            object.__setattr__(self, "_uri", "spiffe://" + principal)
        path = self.path
        for sep in ("?", "#"):
            cut = path.find(sep)
            if cut >= 0:
                path = path[:cut]
        object.__setattr__(self, "_path", path)
        if isinstance(self.headers, _LowerHeaders):
            object.__setattr__(self, "_hdr", self.headers)

    # -- builders ----------------------------------------------------------------------

    @classmethod
    def from_asgi(
        cls,
        scope: Mapping[str, Any],
        *,
        peer: SpiffeId | None = None,
        path: NormalizedPath | str | None = None,
        sni: str = "",
        xff_num_trusted_hops: int = 0,
        use_remote_address: bool = False,
    ) -> AuthzRequest:
        """Build from an ASGI HTTP scope.

        ``path`` is the normalized path (a :class:`NormalizedPath` or its
        ``target``); without it ``scope["path"]`` is used as is. ``peer`` comes
        from the verified client certificate (never from a header). The client
        and server addresses come from ``scope["client"]`` and
        ``scope["server"]``; ``remote_ip`` from ``X-Forwarded-For`` as
        :func:`remote_address` says.
        """
        hdr = _join_headers(scope.get("headers") or ())
        client = scope.get("client")
        server = scope.get("server")
        source = str(client[0]) if client else ""
        dest_ip = str(server[0]) if server else ""
        dest_port = int(server[1] or 0) if server and len(server) > 1 else 0
        if isinstance(path, NormalizedPath):
            target = path.target
        elif path is None:
            target = str(scope.get("path", "/"))
        else:
            target = path
        return cls(
            peer=peer,
            source_ip=source,
            remote_ip=remote_address(
                source,
                hdr.get("x-forwarded-for"),
                xff_num_trusted_hops=xff_num_trusted_hops,
                use_remote_address=use_remote_address,
            ),
            destination_ip=dest_ip,
            destination_port=dest_port,
            sni=sni,
            method=str(scope.get("method", "GET")),
            host=hdr.get("host") or hdr.get(":authority") or "",
            path=target,
            headers=hdr,
        )

    @classmethod
    def from_wsgi(
        cls,
        environ: Mapping[str, Any],
        *,
        peer: SpiffeId | None = None,
        path: NormalizedPath | str | None = None,
        sni: str = "",
        destination_ip: str | None = None,
        xff_num_trusted_hops: int = 0,
        use_remote_address: bool = False,
    ) -> AuthzRequest:
        """Build from a WSGI environ (``HTTP_*`` keys become headers).

        WSGI does not carry the server's IP: pass ``destination_ip`` (else
        ``SERVER_ADDR`` if the server sets it). Without ``path``,
        ``SCRIPT_NAME + PATH_INFO`` is used as is.
        """
        hdr = _LowerHeaders()
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                hdr[key[5:].replace("_", "-").lower()] = str(value)
        for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
            if environ.get(key):
                hdr[name] = str(environ[key])
        source = str(environ.get("REMOTE_ADDR", ""))
        if isinstance(path, NormalizedPath):
            target = path.target
        elif path is None:
            target = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")) or "/"
        else:
            target = path
        port = str(environ.get("SERVER_PORT", "") or "0")
        return cls(
            peer=peer,
            source_ip=source,
            remote_ip=remote_address(
                source,
                hdr.get("x-forwarded-for"),
                xff_num_trusted_hops=xff_num_trusted_hops,
                use_remote_address=use_remote_address,
            ),
            destination_ip=destination_ip
            if destination_ip is not None
            else str(environ.get("SERVER_ADDR", "")),
            destination_port=int(port) if port.isdigit() else 0,
            sni=sni,
            method=str(environ.get("REQUEST_METHOD", "GET")),
            host=hdr.get("host", ""),
            path=target,
            headers=hdr,
        )

    # -- attribute access ----------------------------------------------------------------

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case; repeats joined with ``,``), or ``None``.

        The pseudo-headers ``:authority``, ``:method`` and ``:path`` give
        ``host``, ``method`` and ``path``.
        """
        try:
            hdr = self._hdr
        except AttributeError:
            hdr = _join_headers(self.headers)
            object.__setattr__(self, "_hdr", hdr)
        value = hdr.get(name)
        if value is None and name.startswith(":"):
            lname = name.lower()
            if lname == ":authority":
                return self.host or None
            if lname == ":method":
                return self.method
            if lname == ":path":
                return self.path
            return None
        if value is None and not name.islower():
            return hdr.get(name.lower())
        return value

    @property
    def effective_remote_ip(self) -> str:
        """``remote_ip``, or ``source_ip`` when it is not set."""
        return self.source_ip if self.remote_ip is None else self.remote_ip

    def _ip(self, which: int) -> tuple[int, int] | None:
        """(version, int) of the source (0), remote (1) or destination (2) address."""
        attr = ("_ip0", "_ip1", "_ip2")[which]
        try:
            key: tuple[int, int] | None = getattr(self, attr)
        except AttributeError:
            text = (self.source_ip, self.effective_remote_ip, self.destination_ip)[which]
            key = _ip_key(text)
            object.__setattr__(self, attr, key)
        return key

    def _namespaces(self) -> tuple[str, ...]:
        """Every ``x`` such that the URI SAN contains ``/ns/x/`` (what ``namespaces`` tests)."""
        try:
            return self._ns
        except AttributeError:
            pass
        out: list[str] = []
        uri = self._uri
        if uri is not None:
            parts = uri.split("/")
            for i in range(1, len(parts) - 2):
                if parts[i] == "ns":
                    out.append(parts[i + 1])
        found = tuple(out)
        object.__setattr__(self, "_ns", found)
        return found


# -- the CUSTOM hook ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalDecision:
    """A CUSTOM authorizer's detailed answer (a plain ``bool`` is enough too).

    * ``allowed``: let the request go on to the DENY/ALLOW policies;
    * ``status``, ``body``, ``headers``: the reply when denied (Envoy's
      ext_authz default is 403 with an empty body);
    * ``upstream_headers``: headers to add to the request when allowed.
    """

    allowed: bool
    status: int = 403
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    upstream_headers: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class ExternalAuthorizer(Protocol):
    """The Python side of a CUSTOM policy's ``provider`` (Envoy's ext_authz server).

    ``check`` is called, synchronously, only for requests that match a CUSTOM
    rule of that provider, with the request and ``provider.name``. It returns
    ``True``/``False`` or an :class:`ExternalDecision`. An exception is
    Envoy's "authorization server error": the request is denied with 403 and
    flag ``UAEX`` (fail closed; catch errors yourself to fail open).

    It may block (a network call): an async server should run
    :meth:`AuthzEvaluator.evaluate` in a worker thread when
    :attr:`AuthzEvaluator.uses_custom` is true.
    """

    def check(self, request: AuthzRequest, provider: str) -> bool | ExternalDecision:
        """Decide one request for ``provider``."""
        ...


ExternalResult = bool | ExternalDecision


# -- the decision --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DryRunResult:
    """What the dry-run (shadow) rules of one action said, as Envoy records it.

    ``result`` is Envoy's ``shadow_engine_result``: ``"allowed"`` or
    ``"denied"`` -- the dry-run DENY rules deny when one matches, the
    dry-run ALLOW rules deny when none matches (considering only dry-run
    policies). ``policy_id`` is ``shadow_effective_policy_id``.
    """

    action: str
    result: str
    policy_id: str | None = None

    @property
    def denied(self) -> bool:
        """The dry-run rules would have denied the request."""
        return self.result == _DENIED


@dataclass(frozen=True, slots=True)
class AuthzDecision:
    """The outcome for one request.

    When ``allowed`` is false the middleware replies locally with ``status``,
    ``body`` (``text/plain``; empty for ext_authz unless the authorizer gave
    one) and ``response_headers``, and logs ``response_code_details`` and
    ``response_flags``. When allowed it adds ``upstream_headers`` to the
    request.
    """

    allowed: bool
    status: int | None = None
    """403 when denied; ``None`` when allowed."""
    body: bytes = b""
    action: str | None = None
    """The action whose rules decided (``"CUSTOM"``, ``"DENY"``, ``"ALLOW"``);
    ``None`` when no enforced policy had a say."""
    policy_id: str | None = None
    """Envoy's effective policy id of the deciding rule (``None``: none matched)."""
    response_code_details: str | None = None
    """``rbac_access_denied_matched_policy[...]``, ``ext_authz_denied``, ``ext_authz_error``."""
    response_flags: str | None = None
    """``UAEX`` for CUSTOM denials; ``None`` otherwise (RBAC sets no flag)."""
    reason: str = ""
    """A sentence for logs."""
    provider: str | None = None
    """The CUSTOM provider that was asked (or could not be)."""
    audit: bool = False
    """An AUDIT policy matched (Envoy's ``access_log_hint``)."""
    audit_policy_id: str | None = None
    dry_run: tuple[DryRunResult, ...] = ()
    """Dry-run outcomes of the filters the request reached, in filter order."""
    response_headers: tuple[tuple[str, str], ...] = ()
    upstream_headers: tuple[tuple[str, str], ...] = ()


_ALLOW_BY_DEFAULT = AuthzDecision(True, reason="no ALLOW policy applies")
_DENY_NO_MATCH = AuthzDecision(
    False,
    403,
    RBAC_DENIED_BODY,
    action="ALLOW",
    response_code_details=rbac_response_detail(None),
    reason="no ALLOW policy matched",
)


# -- the evaluator -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Custom:
    provider: str
    enforced: Engine
    dry: Engine | None
    authorizer: ExternalAuthorizer | None
    bad: str | None
    """Why requests matching these rules are denied instead of being sent (``None``: ask)."""


class AuthzEvaluator:
    """The compiled AuthorizationPolicies of one workload. Immutable and thread-safe.

    Build with :meth:`AuthorizationEngine.compile`.
    """

    __slots__ = (
        "_allow",
        "_allow_dry",
        "_allowed",
        "_audit",
        "_audit_dry",
        "_bad_denied",
        "_custom",
        "_denied",
        "_deny",
        "_deny_dry",
        "notes",
        "policies",
        "workload",
    )

    def __init__(
        self,
        *,
        workload: Workload,
        policies: tuple[str, ...],
        custom: tuple[_Custom, ...],
        audit: Engine | None,
        audit_dry: Engine | None,
        deny: Engine | None,
        deny_dry: Engine | None,
        allow: Engine | None,
        allow_dry: Engine | None,
        notes: tuple[str, ...],
    ) -> None:
        put = object.__setattr__
        put(self, "workload", workload)
        put(self, "policies", policies)
        put(self, "notes", notes)
        put(self, "_custom", custom)
        put(self, "_audit", audit)
        put(self, "_audit_dry", audit_dry)
        put(self, "_deny", deny)
        put(self, "_deny_dry", deny_dry)
        put(self, "_allow", allow)
        put(self, "_allow_dry", allow_dry)
        put(
            self,
            "_denied",
            {
                r.policy_id: AuthzDecision(
                    False,
                    403,
                    RBAC_DENIED_BODY,
                    action="DENY",
                    policy_id=r.policy_id,
                    response_code_details=rbac_response_detail(r.policy_id),
                    reason=f"denied by DENY policy {r.policy_id}",
                )
                for r in (deny.rules if deny else ())
            },
        )
        put(
            self,
            "_allowed",
            {
                r.policy_id: AuthzDecision(
                    True, action="ALLOW", policy_id=r.policy_id, reason=f"allowed by {r.policy_id}"
                )
                for r in (allow.rules if allow else ())
            },
        )
        bad: dict[str, AuthzDecision] = {}
        for c in custom:
            if c.bad is None:
                continue
            for r in c.enforced.rules:
                pid = r.policy_id + BAD_CUSTOM_ACTION_SUFFIX
                bad[r.policy_id] = AuthzDecision(
                    False,
                    403,
                    RBAC_DENIED_BODY,
                    action="CUSTOM",
                    policy_id=pid,
                    response_code_details=rbac_response_detail(pid),
                    reason=c.bad,
                    provider=c.provider,
                )
        put(self, "_bad_denied", bad)

    workload: Workload
    """The workload this evaluator decides for."""
    policies: tuple[str, ...]
    """``namespace/name`` of every policy that applies, in load order."""
    notes: tuple[str, ...]
    """Rules or values dropped while compiling, and why (as Istio logs them)."""
    _custom: tuple[_Custom, ...]
    _audit: Engine | None
    _audit_dry: Engine | None
    _deny: Engine | None
    _deny_dry: Engine | None
    _allow: Engine | None
    _allow_dry: Engine | None
    _denied: dict[str, AuthzDecision]
    _allowed: dict[str, AuthzDecision]
    _bad_denied: dict[str, AuthzDecision]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AuthzEvaluator is immutable")

    def __repr__(self) -> str:
        return (
            f"<AuthzEvaluator {self.workload.namespace}/{self.workload.name} "
            f"policies={len(self.policies)}>"
        )

    # -- properties -------------------------------------------------------------------

    @property
    def is_noop(self) -> bool:
        """No policy applies: every request is allowed and nothing is recorded."""
        return not self.policies

    @property
    def uses_custom(self) -> bool:
        """Some CUSTOM policy may call an :class:`ExternalAuthorizer` (possibly blocking)."""
        return any(c.bad is None for c in self._custom)

    @property
    def providers(self) -> tuple[str, ...]:
        """The CUSTOM providers of the applicable policies, sorted."""
        return tuple(c.provider for c in self._custom)

    def custom_providers(self, request: AuthzRequest) -> tuple[str, ...]:
        """The providers :meth:`evaluate` would ask for ``request``, in order.

        For async servers: ask them yourself, then pass the answers as
        ``evaluate(request, external={provider: answer})``. (If one denies,
        later ones are not asked by :meth:`evaluate`.)
        """
        return tuple(
            c.provider
            for c in self._custom
            if c.bad is None and c.enforced.first_match(request) is not None
        )

    # -- evaluation -------------------------------------------------------------------

    def evaluate(
        self,
        request: AuthzRequest,
        *,
        external: ExternalResult | Mapping[str, ExternalResult] | None = None,
    ) -> AuthzDecision:
        """Decide ``request``: CUSTOM, then AUDIT, DENY and ALLOW, as Envoy's filters do.

        ``external`` answers CUSTOM providers instead of calling their
        authorizer: one answer for any provider, or a mapping by provider.
        """
        dry: list[DryRunResult] | None = None
        upstream: tuple[tuple[str, str], ...] = ()
        for c in self._custom:
            if c.dry is not None:
                hit = c.dry.first_match(request)
                dry = dry or []
                dry.append(
                    DryRunResult(
                        "CUSTOM", _DENIED if hit else _ALLOWED, hit.policy_id if hit else None
                    )
                )
            rule = c.enforced.first_match(request)
            if rule is None:
                continue
            if c.bad is not None:
                return _finish(self._bad_denied[rule.policy_id], dry, None, upstream)
            answer = self._ask(c, request, rule, external)
            if isinstance(answer, AuthzDecision):
                return _finish(answer, dry, None, upstream)
            upstream += answer

        audit_rule: CompiledRule | None = None
        if self._audit_dry is not None:
            hit = self._audit_dry.first_match(request)
            dry = dry or []
            dry.append(DryRunResult("AUDIT", _ALLOWED, hit.policy_id if hit else None))
        if self._audit is not None:
            audit_rule = self._audit.first_match(request)

        if self._deny_dry is not None:
            hit = self._deny_dry.first_match(request)
            dry = dry or []
            dry.append(
                DryRunResult("DENY", _DENIED if hit else _ALLOWED, hit.policy_id if hit else None)
            )
        if self._deny is not None:
            rule = self._deny.first_match(request)
            if rule is not None:
                return _finish(self._denied[rule.policy_id], dry, audit_rule, upstream)

        if self._allow_dry is not None:
            hit = self._allow_dry.first_match(request)
            dry = dry or []
            dry.append(
                DryRunResult("ALLOW", _ALLOWED if hit else _DENIED, hit.policy_id if hit else None)
            )
        if self._allow is None:
            base = _ALLOW_BY_DEFAULT
        else:
            rule = self._allow.first_match(request)
            base = _DENY_NO_MATCH if rule is None else self._allowed[rule.policy_id]
        if dry is None and audit_rule is None and not upstream:
            return base
        return _finish(base, dry, audit_rule, upstream)

    def _ask(
        self,
        c: _Custom,
        request: AuthzRequest,
        rule: CompiledRule,
        external: ExternalResult | Mapping[str, ExternalResult] | None,
    ) -> AuthzDecision | tuple[tuple[str, str], ...]:
        """Ask the provider; a denial as a decision, else the headers to add upstream."""
        answer: ExternalResult
        if isinstance(external, (bool, ExternalDecision)):
            answer = external
        elif external is not None and c.provider in external:
            answer = external[c.provider]
        else:
            assert c.authorizer is not None  # c.bad is set otherwise
            try:
                answer = c.authorizer.check(request, c.provider)
            except Exception as exc:  # the authorization server failed: deny (fail closed)
                return _custom_denial(
                    c.provider,
                    rule.policy_id,
                    EXT_AUTHZ_ERROR,
                    f"CUSTOM provider {c.provider!r} failed: {exc!r}",
                )
        if isinstance(answer, ExternalDecision):
            if answer.allowed:
                return answer.upstream_headers
            return _custom_denial(
                c.provider,
                rule.policy_id,
                EXT_AUTHZ_DENIED,
                f"denied by CUSTOM provider {c.provider!r}",
                status=answer.status,
                body=answer.body,
                headers=answer.headers,
            )
        if answer:
            return ()
        return _custom_denial(
            c.provider,
            rule.policy_id,
            EXT_AUTHZ_DENIED,
            f"denied by CUSTOM provider {c.provider!r}",
        )


def _custom_denial(
    provider: str,
    policy_id: str,
    details: str,
    reason: str,
    *,
    status: int = 403,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
) -> AuthzDecision:
    """A request refused by (or because of) a CUSTOM provider: flag ``UAEX``."""
    return AuthzDecision(
        False,
        status,
        body,
        action="CUSTOM",
        policy_id=policy_id,
        response_code_details=details,
        response_flags=UAEX,
        reason=reason,
        provider=provider,
        response_headers=headers,
    )


def _finish(
    base: AuthzDecision,
    dry: list[DryRunResult] | None,
    audit_rule: CompiledRule | None,
    upstream: tuple[tuple[str, str], ...],
) -> AuthzDecision:
    if dry is None and audit_rule is None and not upstream:
        return base
    return replace(
        base,
        dry_run=tuple(dry) if dry else (),
        audit=audit_rule is not None,
        audit_policy_id=audit_rule.policy_id if audit_rule is not None else None,
        upstream_headers=upstream if base.allowed else (),
    )


# -- compilation ----------------------------------------------------------------------------------


def _attaches(spec: AuthorizationPolicySpec, labels: Mapping[str, str]) -> bool:
    """``ShouldAttachPolicy`` for a sidecar: no targetRef(s), and the selector matches."""
    if spec.target_refs or spec.target_ref is not None:
        return False
    selector = spec.selector
    if selector is None:
        return True
    return all(labels.get(k) == v for k, v in selector.match_labels.items())


class AuthorizationEngine:
    """Turns AuthorizationPolicies into an :class:`AuthzEvaluator` for one workload."""

    __slots__ = ()

    @staticmethod
    def select(
        policies: Iterable[Any], workload: Workload, *, root_namespace: str = "istio-system"
    ) -> list[Any]:
        """The AuthorizationPolicy resources that apply to ``workload``, in input order."""
        namespaces = {root_namespace, workload.namespace}
        return [
            p
            for p in policies
            if p.kind == "AuthorizationPolicy"
            and p.namespace in namespaces
            and _attaches(p.spec, workload.labels)
        ]

    @staticmethod
    def compile(
        snapshot_or_policies: ConfigSnapshot | Iterable[Any],
        workload: Workload,
        *,
        root_namespace: str | None = None,
        trust_domain: str | None = None,
        trust_domain_aliases: Iterable[str] = (),
        custom_authorizer: ExternalAuthorizer | Mapping[str, ExternalAuthorizer] | None = None,
        multiple_custom_providers: bool = False,
    ) -> AuthzEvaluator:
        """Select the policies that apply to ``workload`` and compile them.

        ``snapshot_or_policies`` is a :class:`~inmesh.config.snapshot.ConfigSnapshot`
        (its ``root_namespace`` and ``trust_domain`` are the defaults) or
        AuthorizationPolicy resources. ``trust_domain_aliases`` are the mesh's
        ``trustDomainAliases``. ``custom_authorizer`` serves every CUSTOM
        provider, or maps provider names to authorizers; a provider without one
        denies the requests its rules match (Istio's answer to an unknown
        provider). ``multiple_custom_providers`` is Istio's
        ``PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS``: off (the default), a
        workload with CUSTOM policies of more than one provider denies every
        request they match.
        """
        if isinstance(snapshot_or_policies, ConfigSnapshot):
            opts = snapshot_or_policies.options
            resources: Iterable[Any] = snapshot_or_policies.of_kind("AuthorizationPolicy")
            root = root_namespace or opts.root_namespace
            td = trust_domain or opts.trust_domain
        else:
            resources = snapshot_or_policies
            root = root_namespace or "istio-system"
            td = trust_domain or "cluster.local"
        bundle = TrustDomainBundle((td, *(a for a in trust_domain_aliases if a != td)))
        selected = AuthorizationEngine.select(resources, workload, root_namespace=root)
        return _compile(selected, workload, bundle, custom_authorizer, multiple_custom_providers)


def _compile(
    selected: list[Any],
    workload: Workload,
    bundle: TrustDomainBundle,
    custom_authorizer: ExternalAuthorizer | Mapping[str, ExternalAuthorizer] | None,
    multiple_custom_providers: bool,
) -> AuthzEvaluator:
    notes: list[str] = []
    # (action, dry_run) -> rules; has_enforced[action] says the engine exists even if empty.
    buckets: dict[tuple[str, bool], list[CompiledRule]] = {}
    custom: dict[str, dict[bool, list[CompiledRule]]] = {}
    present: set[tuple[str, bool]] = set()
    for res in selected:
        spec: AuthorizationPolicySpec = res.spec
        action = spec.action.value if isinstance(spec.action, Action) else str(spec.action)
        dry = parse_go_bool(res.metadata.annotations.get(DRY_RUN_ANNOTATION)) is True
        provider: str | None = None
        if action == "CUSTOM":
            provider = (spec.provider.name if spec.provider is not None else None) or ""
        rules: list[CompiledRule] = []
        for i, rule in enumerate(spec.rules):
            pid = policy_id(res.namespace, res.name, i, provider)
            try:
                rules.append(
                    compile_rule(
                        rule,
                        pid,
                        allow=action == "ALLOW",
                        policy_ns=res.namespace,
                        bundle=bundle,
                        notes=notes,
                    )
                )
            except SkipRuleError as exc:
                notes.append(f"skipped rule {pid}: {exc.reason}")
        if not spec.rules:
            rules.append(never(policy_id(res.namespace, res.name, 0, provider)))
        if provider is not None:
            custom.setdefault(provider, {True: [], False: []})[dry].extend(rules)
        else:
            buckets.setdefault((action, dry), []).extend(rules)
            present.add((action, dry))

    def engine(action: str, dry: bool) -> Engine | None:
        return Engine(buckets[action, dry]) if (action, dry) in present else None

    customs: list[_Custom] = []
    several = len(custom) > 1 and not multiple_custom_providers
    for provider in sorted(custom):
        authorizer: ExternalAuthorizer | None
        if isinstance(custom_authorizer, Mapping):
            authorizer = custom_authorizer.get(provider)
        else:
            authorizer = custom_authorizer
        bad: str | None = None
        if several:
            bad = (
                f"CUSTOM policies of several providers ({', '.join(sorted(custom))}) apply; "
                "Istio needs PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS "
                "(multiple_custom_providers=True) for that and denies their requests"
            )
        elif authorizer is None:
            bad = (
                f"no authorizer for CUSTOM provider {provider!r}: requests its rules match are "
                "denied (fail closed)"
            )
        enforced = custom[provider][False]
        dry_rules = custom[provider][True]
        customs.append(
            _Custom(
                provider=provider,
                enforced=Engine(enforced),
                # Istio drops the dry-run rules of a provider it cannot use.
                dry=Engine(dry_rules) if dry_rules and bad is None else None,
                authorizer=authorizer,
                bad=bad,
            )
        )
    return AuthzEvaluator(
        workload=workload,
        policies=tuple(f"{r.namespace}/{r.name}" for r in selected),
        custom=tuple(customs),
        audit=engine("AUDIT", False),
        audit_dry=engine("AUDIT", True),
        deny=engine("DENY", False),
        deny_dry=engine("DENY", True),
        allow=engine("ALLOW", False),
        allow_dry=engine("ALLOW", True),
        notes=tuple(notes),
    )
