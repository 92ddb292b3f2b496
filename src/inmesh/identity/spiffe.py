"""SPIFFE IDs: parse, validate, build and print them.

A SPIFFE ID is a URI ``spiffe://<trust-domain>/<path>`` (SPIFFE-ID.md, the
SPIFFE standard). The rules enforced here are the standard's, as the
reference implementations (go-spiffe, java-spiffe, rust-spiffe) enforce them:

* the scheme is exactly ``spiffe`` (lower case) followed by ``://``;
* the trust domain is not empty, at most 255 bytes, and made of lower-case
  letters, digits, ``.``, ``-`` and ``_`` only; so no userinfo (``@``), no
  port (``:``), no upper case;
* the path is empty or ``/``-separated segments of letters, digits, ``.``,
  ``-`` and ``_``; no empty segment (``//`` or a trailing ``/``), no ``.`` or
  ``..`` segment, no percent-encoding;
* no query (``?``) and no fragment (``#``);
* the whole URI is at most 2048 bytes.

Istio names workloads ``spiffe://<td>/ns/<namespace>/sa/<service-account>``
(istio-semantics.md §3.3) and writes them in policies as *principals*, the
same string without the scheme: ``cluster.local/ns/default/sa/sleep``.
:class:`SpiffeId` reads and writes both forms.

This module uses the standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inmesh.errors import IdentityError

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "MAX_SPIFFE_ID_BYTES",
    "MAX_TRUST_DOMAIN_BYTES",
    "SPIFFE_SCHEME",
    "SpiffeId",
    "SpiffeIdError",
    "validate_trust_domain",
]

SPIFFE_SCHEME = "spiffe"
"""The URI scheme of every SPIFFE ID."""

DEFAULT_TRUST_DOMAIN = "cluster.local"
"""Istio's default trust domain (mesh config ``trustDomain``)."""

MAX_SPIFFE_ID_BYTES = 2048
"""The longest SPIFFE ID the standard requires implementations to support."""

MAX_TRUST_DOMAIN_BYTES = 255
"""The longest trust domain (the URI ``host`` limit of RFC 3986)."""

_PREFIX = SPIFFE_SCHEME + "://"
_TD_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")
_TD_CHARS = "lower-case letters, digits, '.', '-' and '_'"
_SEGMENT_CHARS = "letters, digits, '.', '-' and '_'"


class SpiffeIdError(IdentityError, ValueError):
    """A string is not a valid SPIFFE ID (or trust domain, or principal).

    ``value`` is the offending input; the message says which rule it breaks.
    """

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid SPIFFE ID {value!r}: {reason}")


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain name.

    Raises :class:`SpiffeIdError` otherwise. ``"cluster.local"`` is valid;
    ``"Cluster.Local"``, ``"td:8443"`` and ``""`` are not.
    """
    problem = _trust_domain_problem(trust_domain)
    if problem:
        raise SpiffeIdError(trust_domain, problem)
    return trust_domain


def _trust_domain_problem(td: str) -> str:
    if not td:
        return "the trust domain is missing"
    if "@" in td:
        return "userinfo ('user@') is not allowed in the trust domain"
    if ":" in td:
        return "a port (':') is not allowed in the trust domain"
    if not _TD_RE.fullmatch(td):
        return f"trust domain {td!r} may only contain {_TD_CHARS}"
    if len(td) > MAX_TRUST_DOMAIN_BYTES:
        return f"the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
    return ""


def _path_problem(path: str) -> str:
    if not path:
        return ""
    if not path.startswith("/"):
        return "the path must start with '/'"
    segments = path[1:].split("/")
    for i, seg in enumerate(segments):
        if not seg:
            if i == len(segments) - 1:
                return "the path must not end with '/'"
            return "the path must not contain empty segments ('//')"
        if seg in (".", ".."):
            return "the path must not contain '.' or '..' segments"
        if not _SEGMENT_RE.fullmatch(seg):
            if "%" in seg:
                return "percent-encoded characters are not allowed in the path"
            return f"path segment {seg!r} may only contain {_SEGMENT_CHARS}"
    return ""


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID: a trust domain and a path (``""`` or ``/seg/...``).

    Build one with :meth:`parse` (a URI), :meth:`from_principal` (Istio's
    principal form) or :meth:`for_workload` (Istio's ``/ns/<ns>/sa/<sa>``);
    the constructor validates too. ``str()`` gives the URI.

    >>> sid = SpiffeId.for_workload("default", "frontend-sa")
    >>> str(sid)
    'spiffe://cluster.local/ns/default/sa/frontend-sa'
    >>> sid.principal, sid.namespace, sid.service_account
    ('cluster.local/ns/default/sa/frontend-sa', 'default', 'frontend-sa')

    Instances are hashable and compare by value, so they fit in sets of
    allowed peers.
    """

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.trust_domain, str) or not isinstance(self.path, str):
            raise SpiffeIdError(repr(self.trust_domain), "trust domain and path must be strings")
        uri = _PREFIX + self.trust_domain + self.path
        problem = _trust_domain_problem(self.trust_domain) or _path_problem(self.path)
        if not problem and len(uri.encode()) > MAX_SPIFFE_ID_BYTES:
            problem = f"longer than {MAX_SPIFFE_ID_BYTES} bytes"
        if problem:
            raise SpiffeIdError(uri, problem)

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse a SPIFFE ID URI such as ``spiffe://cluster.local/ns/default/sa/sleep``.

        Raises :class:`SpiffeIdError` naming the broken rule.
        """
        if not isinstance(text, str):
            raise SpiffeIdError(repr(text), "a SPIFFE ID must be a string")
        if not text:
            raise SpiffeIdError(text, "it is empty")
        if not text.startswith(_PREFIX):
            if text.lower().startswith(_PREFIX):
                return _fail(text, "the scheme must be lower-case 'spiffe'")
            if "://" not in text:
                return _fail(text, "the scheme 'spiffe://' is missing")
            return _fail(text, f"the scheme must be 'spiffe', not {text.split('://', 1)[0]!r}")
        if len(text.encode()) > MAX_SPIFFE_ID_BYTES:
            return _fail(text, f"longer than {MAX_SPIFFE_ID_BYTES} bytes")
        if "#" in text:
            return _fail(text, "a fragment ('#') is not allowed")
        if "?" in text:
            return _fail(text, "a query ('?') is not allowed")
        rest = text[len(_PREFIX) :]
        slash = rest.find("/")
        td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        problem = _trust_domain_problem(td) or _path_problem(path)
        if problem:
            return _fail(text, problem)
        return cls(td, path)

    @classmethod
    def from_principal(cls, principal: str) -> SpiffeId:
        """Parse Istio's principal form: ``cluster.local/ns/default/sa/sleep``.

        A full ``spiffe://`` URI is accepted too.
        """
        if isinstance(principal, str) and principal.startswith(_PREFIX):
            return cls.parse(principal)
        if isinstance(principal, str) and "://" in principal:
            return _fail(principal, "a principal has no scheme, or the scheme must be 'spiffe'")
        return cls.parse(_PREFIX + principal if isinstance(principal, str) else principal)

    @classmethod
    def for_workload(
        cls,
        namespace: str,
        service_account: str,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> SpiffeId:
        """Istio's ID of a workload: ``spiffe://<td>/ns/<namespace>/sa/<service_account>``."""
        for what, value in (("namespace", namespace), ("service account", service_account)):
            if (
                not isinstance(value, str)
                or not _SEGMENT_RE.fullmatch(value)
                or value in (".", "..")
            ):
                raise SpiffeIdError(
                    f"{_PREFIX}{trust_domain}/ns/{namespace}/sa/{service_account}",
                    f"{what} {value!r} must be a non-empty path segment of {_SEGMENT_CHARS}",
                )
        return cls(trust_domain, f"/ns/{namespace}/sa/{service_account}")

    @property
    def uri(self) -> str:
        """The URI form, ``spiffe://<td><path>`` (the same as ``str(self)``)."""
        return _PREFIX + self.trust_domain + self.path

    @property
    def principal(self) -> str:
        """Istio's principal form: the URI without ``spiffe://``."""
        return self.trust_domain + self.path

    @property
    def segments(self) -> tuple[str, ...]:
        """The path segments: ``("ns", "default", "sa", "sleep")``."""
        return tuple(self.path[1:].split("/")) if self.path else ()

    @property
    def is_istio_workload(self) -> bool:
        """True for Istio's shape, ``/ns/<namespace>/sa/<service-account>``."""
        seg = self.segments
        return len(seg) == 4 and seg[0] == "ns" and seg[2] == "sa"

    @property
    def namespace(self) -> str | None:
        """The namespace of an Istio-shaped ID, else ``None``."""
        return self.segments[1] if self.is_istio_workload else None

    @property
    def service_account(self) -> str | None:
        """The service account of an Istio-shaped ID, else ``None``."""
        return self.segments[3] if self.is_istio_workload else None

    def member_of(self, trust_domain: str) -> bool:
        """True if this ID belongs to ``trust_domain``."""
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"SpiffeId({self.uri!r})"


def _fail(text: str, reason: str) -> SpiffeId:
    raise SpiffeIdError(text, reason)
