"""Core values shared by every layer (standard library only)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Workload"]

_LABEL_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Workload:
    """Who this process is in the mesh: what a pod's metadata tells a sidecar.

    * ``name``: the workload name (a Deployment's name; ``source_workload`` in metrics).
    * ``namespace``: its namespace; short host names are relative to it.
    * ``service_account``: its identity, ``spiffe://<td>/ns/<namespace>/sa/<service_account>``.
    * ``labels``: pod labels, matched by policy selectors and ``sourceLabels``;
      ``app`` and ``version`` also label metrics.
    * ``locality``: ``region/zone/subzone``, for locality-aware load balancing.

    >>> Workload("frontend", service_account="frontend-sa", labels={"app": "frontend"})
    Workload(name='frontend', namespace='default', service_account='frontend-sa', ...)
    """

    name: str
    namespace: str = "default"
    service_account: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    locality: str = ""

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("namespace", self.namespace)):
            if len(value) > 63 or not _DNS_LABEL_RE.fullmatch(value):
                raise ValueError(
                    f"Workload {what} {value!r} is not a DNS-1123 label "
                    "(lower-case letters, digits and '-', at most 63)"
                )
        if not self.service_account or "/" in self.service_account:
            raise ValueError(f"Workload service_account {self.service_account!r} is invalid")
        labels = dict(self.labels)
        for k, v in labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"Workload labels must be strings, got {k!r}: {v!r}")
            if v and not _LABEL_RE.fullmatch(v):
                raise ValueError(f"Workload label value {v!r} (for {k!r}) is invalid")
        if self.locality and self.locality.count("/") > 2:
            raise ValueError(f"Workload locality {self.locality!r} must be region[/zone[/subzone]]")
        object.__setattr__(self, "labels", MappingProxyType(labels))

    def __repr__(self) -> str:
        return (
            f"Workload(name={self.name!r}, namespace={self.namespace!r}, "
            f"service_account={self.service_account!r}, labels={dict(self.labels)!r}"
            + (f", locality={self.locality!r}" if self.locality else "")
            + ")"
        )

    @property
    def app(self) -> str:
        """The ``app`` label (``app.kubernetes.io/name`` as a fallback), as Istio reads it."""
        return self.labels.get("app") or self.labels.get("app.kubernetes.io/name", "")

    @property
    def version(self) -> str:
        return self.labels.get("version") or self.labels.get("app.kubernetes.io/version", "")

    @classmethod
    def parse_labels(cls, text: str) -> dict[str, str]:
        """``"app=backend,version=v1"`` -> ``{"app": "backend", "version": "v1"}``."""
        out: dict[str, str] = {}
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"label {part!r} is not key=value")
            out[key.strip()] = value.strip()
        return out
