"""Reading Istio resources from files, directories and text.

``load_paths`` accepts files and directories (recursively: ``.yaml``,
``.yml``, ``.json``), multi-document streams and ``kind: List`` as ``kubectl
get -o yaml`` prints it. Kinds inmesh does not read (Deployment, Service,
Gateway, Telemetry, ...) are skipped with one info line per file naming them.

Nothing here raises for bad input: everything wrong ends up in
:attr:`LoadResult.diagnostics`, with file, line, resource and field path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from inmesh.errors import ConfigError, Diagnostic, Severity

from . import kinds as _kinds
from ._schema import Reporter, kind_info, parse_message
from ._yaml import Document, Path, YamlError, load_documents
from .resources._common import Metadata, Resource, Source

__all__ = [
    "DEFAULT_NAMESPACE",
    "LoadResult",
    "iter_config_files",
    "load_paths",
    "load_text",
]

DEFAULT_NAMESPACE = "default"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})


@dataclass(slots=True)
class LoadResult:
    """Resources read and everything noticed while reading them."""

    resources: list[Resource[Any]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    """Every file read with its bytes (for the snapshot's content hash)."""

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    @property
    def infos(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.INFO]

    def raise_for_errors(self) -> None:
        """Raise :class:`ConfigError` with every error (and the warnings) if there is one."""
        if self.errors:
            raise ConfigError(self.errors, self.warnings)

    def extend(self, other: LoadResult) -> None:
        self.resources.extend(other.resources)
        self.diagnostics.extend(other.diagnostics)
        self.files.extend(other.files)


def iter_config_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[FsPath]:
    """The files ``paths`` name, directories walked recursively in sorted order.

    Hidden files and directories (``.git``, editor swap files, Kubernetes
    ``..data`` symlink farms) are skipped inside directories.
    """
    for p in paths:
        path = FsPath(p)
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith(".") or not name.endswith(CONFIG_SUFFIXES):
                        continue
                    yield FsPath(root) / name
        else:
            yield path


def load_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    default_namespace: str = DEFAULT_NAMESPACE,
    duplicates: Severity = Severity.ERROR,
) -> LoadResult:
    """Load every resource under ``paths`` and check it, resource by resource.

    The same (kind, namespace, name) twice is reported naming both places:
    as an error by default, because one mesh cannot hold both; ``inmesh
    validate`` passes ``Severity.WARNING`` since, like ``istioctl validate``,
    it judges each resource on its own. A path that does not exist is an error.
    """
    result = LoadResult()
    for path in iter_config_files(paths):
        name = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            result.diagnostics.append(
                Diagnostic(Severity.ERROR, "no such file or directory", file=name)
            )
            continue
        except OSError as exc:
            result.diagnostics.append(
                Diagnostic(Severity.ERROR, f"cannot read: {exc.strerror or exc}", file=name)
            )
            continue
        result.files.append((name, data))
        result.extend(_load_text(data, name, default_namespace))
    _check_duplicates(result, duplicates)
    from inmesh.upstream.policy import ignored_traffic_policies  # cross-resource check

    result.diagnostics.extend(ignored_traffic_policies(result.resources))
    return result


def load_text(
    text: str | bytes,
    *,
    file: str = "<memory>",
    default_namespace: str = DEFAULT_NAMESPACE,
) -> LoadResult:
    """Load resources from YAML/JSON text (several documents allowed)."""
    result = _load_text(text, file, default_namespace)
    result.files.append((file, text.encode() if isinstance(text, str) else text))
    _check_duplicates(result)
    return result


def _load_text(text: str | bytes, file: str, default_namespace: str) -> LoadResult:
    result = LoadResult()
    try:
        docs = load_documents(text)
    except YamlError as exc:
        result.diagnostics.append(
            Diagnostic(Severity.ERROR, exc.message, "fix the YAML syntax", file=file, line=exc.line)
        )
        return result
    skipped: dict[str, int] = {}
    for doc in docs:
        for item, prefix in _expand_lists(doc, (), result, file):
            _load_one(item, prefix, doc, file, default_namespace, result, skipped)
    if skipped:
        names = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(skipped.items()))
        result.diagnostics.append(
            Diagnostic(
                Severity.INFO,
                f"skipped kinds inmesh does not read: {names}",
                file=file,
            )
        )
    return result


def _expand_lists(
    doc: Document, prefix: Path, result: LoadResult, file: str
) -> Iterator[tuple[Any, Path]]:
    value: Any = doc.value
    for p in prefix:
        value = value[p]
    if isinstance(value, dict) and value.get("kind") == "List" and "items" in value:
        items = value["items"]
        if not isinstance(items, list):
            result.diagnostics.append(
                Diagnostic(
                    Severity.ERROR,
                    "'items' of a List must be a list",
                    file=file,
                    line=doc.lines.get((*prefix, "items"), doc.line),
                    path="items",
                )
            )
            return
        for i in range(len(items)):
            yield from _expand_lists(doc, (*prefix, "items", i), result, file)
        return
    yield value, prefix


def _load_one(
    raw: Any,
    prefix: Path,
    doc: Document,
    file: str,
    default_namespace: str,
    result: LoadResult,
    skipped: dict[str, int],
) -> None:
    # Paths inside the resource are relative to it; map them back for lines.
    lines = doc.lines if not prefix else _Relative(doc.lines, prefix)
    first_line = doc.lines.get(prefix, doc.line) if prefix else doc.line
    if not isinstance(raw, dict):
        result.diagnostics.append(
            Diagnostic(
                Severity.ERROR,
                f"expected a Kubernetes resource (a mapping), got {type(raw).__name__}",
                file=file,
                line=first_line,
            )
        )
        return
    kind = raw.get("kind")
    api_version = raw.get("apiVersion")
    meta_raw: dict[str, Any] = raw["metadata"] if isinstance(raw.get("metadata"), dict) else {}
    name = str(meta_raw.get("name", ""))
    namespace = str(meta_raw.get("namespace") or default_namespace)
    rep = Reporter(file=file, lines=lines, kind=str(kind or ""), namespace=namespace, name=name)
    if not isinstance(kind, str) or not kind:
        rep.error(("kind",), "missing 'kind'", "every resource needs apiVersion, kind and metadata")
        result.diagnostics.extend(rep.diagnostics)
        return
    info = kind_info(kind)
    if info is None:
        skipped[kind] = skipped.get(kind, 0) + 1
        return
    if api_version not in info.api_versions:
        if not isinstance(api_version, str) or not api_version:
            rep.error(("apiVersion",), "missing 'apiVersion'", f"use {info.api_versions[0]}")
        else:
            rep.error(
                ("apiVersion",),
                f"{kind} is not served as {api_version!r}",
                f"use one of: {', '.join(info.api_versions)}",
            )
    for key in raw:
        if key not in _TOP_LEVEL:
            rep.error((str(key),), f"unknown top-level field {key!r}", "put it under spec")
    meta: Metadata | None = parse_message(Metadata, raw.get("metadata", {}), ("metadata",), rep)
    if "metadata" not in raw:
        rep.error(("metadata",), "missing 'metadata'", "give the resource a metadata.name")
    if meta is not None:
        if not meta.namespace:
            meta = _replace_namespace(meta, default_namespace)
        _check_name(meta, rep)
    spec_raw = raw.get("spec")
    if spec_raw is None:
        spec_raw = {}
    spec: Any = parse_message(info.spec, spec_raw, ("spec",), rep)
    if meta is not None and spec is not None and not rep.has_errors:
        resource: Resource[Any] = Resource(
            kind=kind,
            api_version=str(api_version),
            metadata=meta,
            spec=spec,
            source=Source(file, first_line, doc.index),
        )
        if info.validate is not None:
            info.validate(resource, rep)
        if not rep.has_errors:
            result.resources.append(resource)
    result.diagnostics.extend(rep.diagnostics)


def _replace_namespace(meta: Metadata, namespace: str) -> Metadata:
    import dataclasses

    return dataclasses.replace(meta, namespace=namespace)


# Annotations Istio's webhook refuses on every kind (validation.go, validateMetadata):
# they are written by Istio itself or exist to test the webhook.
_RESERVED_ANNOTATIONS = (
    "internal.istio.io/webhook-always-reject",
    "internal.istio.io/parents",
    "internal.istio.io/parent-namespace",
)


def _check_name(meta: Metadata, rep: Reporter) -> None:
    from .validation._common import check_k8s_dns1123_label, check_k8s_dns1123_subdomain

    if meta.name:
        check_k8s_dns1123_subdomain(meta.name, ("metadata", "name"), rep)
    check_k8s_dns1123_label(meta.namespace, ("metadata", "namespace"), rep)
    for key in _RESERVED_ANNOTATIONS:
        if key in meta.annotations:
            rep.error(
                ("metadata", "annotations", key),
                f"annotation {key!r} is reserved for Istio",
                "remove it",
            )


class _Relative(dict[Path, int]):
    """A view of a document's line map, relative to a List item."""

    def __init__(self, lines: dict[Path, int], prefix: Path) -> None:
        super().__init__()
        self._lines = lines
        self._prefix = prefix

    def get(self, key: Path, default: Any = None) -> Any:
        return self._lines.get(self._prefix + key, default)

    def __bool__(self) -> bool:
        return True


def _check_duplicates(result: LoadResult, severity: Severity = Severity.ERROR) -> None:
    seen: dict[tuple[str, str, str], Resource[Any]] = {}
    keep: list[Resource[Any]] = []
    for res in result.resources:
        first = seen.get(res.key)
        if first is not None:
            fix = "give one of them another name or delete it"
            if severity is not Severity.ERROR:
                fix += "; a mesh loading both files rejects them"
            result.diagnostics.append(
                Diagnostic(
                    severity,
                    f"defined twice: also at {first.source}",
                    fix,
                    file=res.source.file,
                    line=res.source.line,
                    kind=res.kind,
                    namespace=res.namespace,
                    name=res.name,
                )
            )
            if severity is Severity.ERROR:
                continue
        else:
            seen[res.key] = res
        keep.append(res)
    result.resources[:] = keep


def sorted_diagnostics(diags: Sequence[Diagnostic]) -> list[Diagnostic]:
    """Errors first, then by file and line."""
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return sorted(diags, key=lambda d: (order[d.severity], d.file, d.line))


_ = _kinds  # registration side effect: the kinds must be known before loading
