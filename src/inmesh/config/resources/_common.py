"""Values shared by several Istio kinds, and the resource envelope.

``Duration``, ``Percent``, ``StringMatch``, ``PortSelector`` and
``WorkloadSelector`` mirror the messages of the same names in istio/api, and
``MatchLabelsSelector`` mirrors ``istio.type.v1beta1.WorkloadSelector``;
``Resource`` is the Kubernetes-style envelope (apiVersion, kind, metadata,
spec) with the place it was read from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from .._schema import Reporter, Support, spec_field
from .._yaml import Path

__all__ = [
    "Duration",
    "MatchLabelsSelector",
    "Metadata",
    "Percent",
    "PortSelector",
    "Resource",
    "Source",
    "StringMatch",
    "WorkloadSelector",
]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


@dataclass(frozen=True, slots=True, order=True)
class Duration:
    """A protobuf ``Duration`` as Istio reads it from YAML.

    Istio unmarshals durations with Go's ``time.ParseDuration``, so ``100ms``,
    ``1.5s``, ``1h30m`` and ``300us`` are all accepted; ``text`` keeps what was
    written. Validation (>= 1ms, millisecond precision) is per field.
    """

    seconds: float
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse Go duration syntax; raises ``ValueError`` with a readable reason."""
        s = text.strip()
        if not s:
            raise ValueError("empty duration")
        sign = 1.0
        if s[0] in "+-":
            sign = -1.0 if s[0] == "-" else 1.0
            s = s[1:]
        if s == "0":
            return cls(0.0, text)
        pos = 0
        total = 0.0
        while pos < len(s):
            m = _DURATION_RE.match(s, pos)
            if m is None or m.group(1) in ("", "."):
                raise ValueError(f"invalid duration {text!r}")
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        return cls(sign * total, text)

    @classmethod
    def of(cls, seconds: float) -> Duration:
        return cls(seconds, _format_seconds(seconds))

    @classmethod
    def __inmesh_parse__(cls, raw: Any, path: Path, rep: Reporter) -> Duration | None:
        if isinstance(raw, str):
            try:
                return cls.parse(raw)
            except ValueError as exc:
                rep.error(path, str(exc), "write a duration such as 100ms, 1.5s, 30s or 1h")
                return None
        rep.error(
            path,
            f"expected a duration string, got {type(raw).__name__} {raw!r}",
            "write a duration such as 100ms, 1.5s, 30s or 1h",
        )
        return None

    @property
    def millis(self) -> float:
        return self.seconds * 1000.0

    def __str__(self) -> str:
        return self.text or _format_seconds(self.seconds)


def _format_seconds(seconds: float) -> str:
    ms = round(seconds * 1000, 6)
    if ms >= 1000 and ms % 1000 == 0:
        sec = int(ms // 1000)
        if sec % 3600 == 0:
            return f"{sec // 3600}h"
        if sec % 60 == 0 and sec >= 60:
            return f"{sec // 60}m"
        return f"{sec}s"
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Percent:
    """``istio.networking.v1alpha3.Percent``: ``{value: <double 0-100>}``."""

    __istio_name__: ClassVar[str] = "Percent"
    value: float = spec_field(default=0.0)

    @property
    def fraction(self) -> float:
        return self.value / 100.0


@dataclass(frozen=True, slots=True)
class StringMatch:
    """One of ``exact``, ``prefix`` or ``regex`` (RE2, matched against the whole value)."""

    __istio_name__: ClassVar[str] = "StringMatch"
    __oneofs__: ClassVar[tuple[tuple[str, ...], ...]] = (("exact", "prefix", "regex"),)
    exact: str | None = spec_field()
    prefix: str | None = spec_field()
    regex: str | None = spec_field()

    @property
    def is_empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


@dataclass(frozen=True, slots=True)
class PortSelector:
    """``PortSelector{number}``: a port of the destination service."""

    __istio_name__: ClassVar[str] = "PortSelector"
    number: int | None = spec_field()


@dataclass(frozen=True, slots=True)
class WorkloadSelector:
    """``istio.networking.v1alpha3.WorkloadSelector{labels}`` (ServiceEntry)."""

    __istio_name__: ClassVar[str] = "WorkloadSelector"
    labels: Mapping[str, str] = spec_field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MatchLabelsSelector:
    """``istio.type.v1beta1.WorkloadSelector{matchLabels}`` (istio/api
    ``type/v1beta1/selector.proto``), the selector of DestinationRule,
    PeerAuthentication and AuthorizationPolicy.

    Selects the workloads in the resource's namespace whose labels include
    every ``matchLabels`` entry (for the security kinds, all workloads of the
    mesh when the policy is in the root namespace). Without labels it selects
    every workload in the namespace.
    """

    __istio_name__: ClassVar[str] = "WorkloadSelector"
    match_labels: Mapping[str, str] = spec_field(
        default_factory=dict,
        note="exact label values; no wildcards; all entries must match",
    )


@dataclass(frozen=True, slots=True)
class Metadata:
    """Kubernetes ``ObjectMeta``: the parts inmesh reads, plus the rest accepted."""

    __istio_name__: ClassVar[str] = "ObjectMeta"
    name: str = spec_field(default="", required=True)
    namespace: str = spec_field(default="", note="defaults to the loader's default namespace")
    labels: Mapping[str, str] = spec_field(default_factory=dict)
    annotations: Mapping[str, str] = spec_field(default_factory=dict)
    creation_timestamp: str | None = spec_field(
        note="orders policies at the same level (oldest wins), as Istio does"
    )
    # Accepted so that `kubectl get -o yaml` output loads; no effect.
    uid: Any = spec_field(support=Support.IGNORED)
    resource_version: Any = spec_field(support=Support.IGNORED)
    generation: Any = spec_field(support=Support.IGNORED)
    generate_name: Any = spec_field(support=Support.IGNORED)
    managed_fields: Any = spec_field(support=Support.IGNORED)
    owner_references: Any = spec_field(support=Support.IGNORED)
    finalizers: Any = spec_field(support=Support.IGNORED)
    self_link: Any = spec_field(support=Support.IGNORED)
    deletion_timestamp: Any = spec_field(support=Support.IGNORED)
    deletion_grace_period_seconds: Any = spec_field(support=Support.IGNORED)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was read: file (or ``<memory>``), first line, document index."""

    file: str
    line: int = 0
    document: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


SpecT = TypeVar("SpecT")


@dataclass(frozen=True, slots=True)
class Resource(Generic[SpecT]):
    """One Istio resource: envelope plus typed spec.

    ``key`` (kind, namespace, name) is unique within a snapshot.
    """

    kind: str
    api_version: str
    metadata: Metadata
    spec: SpecT
    source: Source = field(default=Source("<memory>"), compare=False)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.metadata.namespace, self.metadata.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.metadata.namespace}/{self.metadata.name}"
