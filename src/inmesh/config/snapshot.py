"""The validated, immutable, versioned view of the configuration.

A :class:`ConfigSnapshot` is built once from a :class:`~inmesh.config.load.LoadResult`
(or raises :class:`~inmesh.errors.ConfigError`), never changes afterwards, and
is what every request reads: a reload builds a new snapshot and swaps one
reference, so a request in flight keeps the snapshot it started with.

``version`` is a content hash of the files (or text) the snapshot was built
from plus the options that change their meaning, so two processes reading the
same files agree on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from inmesh.errors import Diagnostic

from .load import DEFAULT_NAMESPACE, LoadResult, load_paths, load_text
from .resources._common import Resource

__all__ = ["ConfigOptions", "ConfigSnapshot", "build_snapshot"]

_EMPTY: tuple[Resource[Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigOptions:
    """Settings that change how the same YAML is read.

    * ``default_namespace``: namespace of resources that do not name one.
    * ``root_namespace``: Istio's config root namespace (mesh-wide policies).
    * ``domain_suffix``: Kubernetes cluster domain (``svc.<domain_suffix>``).
    * ``trust_domain``: the SPIFFE trust domain of this mesh.
    """

    default_namespace: str = DEFAULT_NAMESPACE
    root_namespace: str = "istio-system"
    domain_suffix: str = "cluster.local"
    trust_domain: str = "cluster.local"

    def fingerprint(self) -> bytes:
        return (
            f"{self.default_namespace}|{self.root_namespace}|"
            f"{self.domain_suffix}|{self.trust_domain}"
        ).encode()


@dataclass(frozen=True, slots=True, eq=False)
class ConfigSnapshot:
    """Every valid resource, indexed; the warnings seen while loading them."""

    resources: tuple[Resource[Any], ...]
    version: str
    options: ConfigOptions = field(default_factory=ConfigOptions)
    warnings: tuple[Diagnostic, ...] = ()
    infos: tuple[Diagnostic, ...] = ()
    files: tuple[str, ...] = ()
    _by_kind: Mapping[str, tuple[Resource[Any], ...]] = field(default_factory=dict, repr=False)
    _by_key: Mapping[tuple[str, str, str], Resource[Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        resources: Iterable[Resource[Any]],
        *,
        version: str,
        options: ConfigOptions | None = None,
        warnings: Iterable[Diagnostic] = (),
        infos: Iterable[Diagnostic] = (),
        files: Iterable[str] = (),
    ) -> ConfigSnapshot:
        res = tuple(resources)
        by_kind: dict[str, list[Resource[Any]]] = {}
        by_key: dict[tuple[str, str, str], Resource[Any]] = {}
        for r in res:
            by_kind.setdefault(r.kind, []).append(r)
            by_key[r.key] = r
        return cls(
            resources=res,
            version=version,
            options=options or ConfigOptions(),
            warnings=tuple(warnings),
            infos=tuple(infos),
            files=tuple(files),
            _by_kind=MappingProxyType({k: tuple(v) for k, v in by_kind.items()}),
            _by_key=MappingProxyType(by_key),
        )

    @classmethod
    def empty(cls, options: ConfigOptions | None = None) -> ConfigSnapshot:
        """A snapshot with no resources (a mesh with no configuration yet)."""
        return cls.create((), version=_hash([], options or ConfigOptions()), options=options)

    def of_kind(self, kind: str) -> tuple[Resource[Any], ...]:
        """Every resource of ``kind``, in load order."""
        return self._by_kind.get(kind, _EMPTY)

    def get(self, kind: str, namespace: str, name: str) -> Resource[Any] | None:
        return self._by_key.get((kind, namespace, name))

    def __len__(self) -> int:
        return len(self.resources)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in sorted(self._by_kind.items()))
        return f"<ConfigSnapshot {self.version} {counts or 'empty'}>"


def _hash(files: Sequence[tuple[str, bytes]], options: ConfigOptions) -> str:
    h = hashlib.sha256(options.fingerprint())
    for name, data in sorted(files):
        h.update(b"\0")
        h.update(name.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def build_snapshot(
    source: LoadResult | Sequence[str] | str,
    *,
    options: ConfigOptions | None = None,
) -> ConfigSnapshot:
    """Load (if given paths or text), check, and compile a snapshot.

    ``source`` is a :class:`LoadResult`, a sequence of paths, or YAML text.
    Raises :class:`~inmesh.errors.ConfigError` carrying every error and warning.
    """
    opts = options or ConfigOptions()
    if isinstance(source, LoadResult):
        result = source
    elif isinstance(source, str):
        result = load_text(source, default_namespace=opts.default_namespace)
    else:
        result = load_paths(source, default_namespace=opts.default_namespace)
    result.raise_for_errors()
    snapshot = ConfigSnapshot.create(
        result.resources,
        version=_hash(result.files, opts),
        options=opts,
        warnings=result.warnings,
        infos=result.infos,
        files=[name for name, _ in result.files],
    )
    return snapshot
