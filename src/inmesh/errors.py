"""The inmesh error tree.

Every exception inmesh raises on purpose derives from :class:`InmeshError`::

    InmeshError
    ├── ConfigError (also ValueError)        invalid Istio YAML; carries every Diagnostic
    ├── DnsLookupError                       a DNS lookup failed (inmesh.discovery.dns)
    └── IdentityError                        certificates, keys, SPIFFE IDs
        ├── CertificateError (also ValueError)   a certificate that cannot be used
        ├── SpiffeIdError (also ValueError)      a malformed SPIFFE ID (inmesh.identity.spiffe)
        └── PeerIdentityError                    a peer is not who the mesh expects
                                                 (inmesh.identity.tls)

Later layers extend the tree (routing, upstream and authorization failures);
each class says in its docstring when it is raised.

This module imports nothing from inmesh and only the standard library.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CertificateError",
    "ConfigError",
    "Diagnostic",
    "IdentityError",
    "InmeshError",
    "Severity",
]


class Severity(str, enum.Enum):
    """How bad a :class:`Diagnostic` is. Errors reject the resource; warnings do not."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about one place in the configuration.

    ``str(diagnostic)`` renders the documented shape::

        <file>:<line>: <Kind> <namespace>/<name>: <field.path>: <what is wrong>; <how to fix>
    """

    severity: Severity
    message: str
    fix: str = ""
    file: str = ""
    line: int = 0
    kind: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def location(self) -> str:
        if not self.file:
            return "<input>"
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        parts = [self.location]
        if self.kind:
            who = f"{self.namespace}/{self.name}" if self.name else self.namespace
            parts.append(f"{self.kind} {who}".rstrip())
        if self.path:
            parts.append(self.path)
        text = self.message if not self.fix else f"{self.message}; {self.fix}"
        parts.append(text)
        return ": ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (used by ``inmesh validate --output json``)."""
        return {
            "severity": self.severity.value,
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
            "text": str(self),
        }


class InmeshError(Exception):
    """Root of every exception inmesh raises on purpose."""


class ConfigError(InmeshError, ValueError):
    """The configuration is invalid.

    ``errors`` lists every error found (not just the first); ``warnings`` lists
    the warnings seen while loading, so a caller can show both.
    """

    def __init__(
        self,
        errors: Iterable[Diagnostic],
        warnings: Iterable[Diagnostic] = (),
    ) -> None:
        self.errors: Sequence[Diagnostic] = tuple(errors)
        self.warnings: Sequence[Diagnostic] = tuple(warnings)
        super().__init__(self._summary())

    def _summary(self) -> str:
        if not self.errors:
            return "invalid configuration"
        first = str(self.errors[0])
        more = len(self.errors) - 1
        return first if not more else f"{first} (and {more} more error{'s' * (more > 1)})"


class IdentityError(InmeshError):
    """A problem with this workload's identity: certificates, keys, SPIFFE IDs."""


class CertificateError(IdentityError, ValueError):
    """A certificate or key cannot be used (expired, wrong trust domain, unreadable...)."""
