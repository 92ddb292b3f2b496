"""Shared helpers for the table-driven config tests."""

from __future__ import annotations

import textwrap
from typing import Any

from inmesh.config.load import LoadResult, load_text
from inmesh.errors import Diagnostic

API_VERSIONS = {
    "VirtualService": "networking.istio.io/v1",
    "DestinationRule": "networking.istio.io/v1",
    "ServiceEntry": "networking.istio.io/v1",
    "WorkloadEntry": "networking.istio.io/v1",
    "PeerAuthentication": "security.istio.io/v1",
    "AuthorizationPolicy": "security.istio.io/v1",
}


def resource_yaml(
    kind: str, spec: str, *, name: str = "r", namespace: str = "default", metadata_extra: str = ""
) -> str:
    """A full resource around a ``spec`` body written as indented YAML text."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    meta = f"metadata:\n  name: {name}\n  namespace: {namespace}\n"
    if metadata_extra:
        meta += textwrap.indent(textwrap.dedent(metadata_extra).strip("\n"), "  ") + "\n"
    return f"apiVersion: {API_VERSIONS[kind]}\nkind: {kind}\n{meta}spec:\n{body}\n"


def load_spec(kind: str, spec: str, **kw: Any) -> LoadResult:
    return load_text(resource_yaml(kind, spec, **kw), file="case.yaml")


def errors_of(result: LoadResult) -> list[Diagnostic]:
    return result.errors


def assert_valid(kind: str, spec: str, **kw: Any) -> LoadResult:
    result = load_spec(kind, spec, **kw)
    assert not result.errors, "\n".join(str(e) for e in result.errors)
    assert len(result.resources) == 1
    return result


def assert_invalid(kind: str, spec: str, path: str, **kw: Any) -> list[Diagnostic]:
    """The spec is rejected and some error names ``path`` (a prefix match on the field path)."""
    result = load_spec(kind, spec, **kw)
    errs = result.errors
    assert errs, f"expected an error at {path}, got none"
    assert not result.resources
    paths = [e.path for e in errs]
    assert any(p == path or p.startswith(path + ".") or p.startswith(path + "[") for p in paths), (
        f"expected an error at {path}, got: " + "; ".join(str(e) for e in errs)
    )
    for e in errs:
        assert e.line > 0, f"error without a line: {e}"
    return errs
