"""Generate the per-field Istio support tables in the docs from the model.

docs/configuration.md gets every kind; docs/traffic-management.md and
docs/resilience.md the VirtualService and DestinationRule tables again, next
to the text that explains them.

    python scripts/gen_support_tables.py          # rewrite the generated section
    python scripts/gen_support_tables.py --check  # exit 1 if it is out of date (CI)

The tables are derived from the ``spec_field`` declarations of every kind, so
they cannot drift from what the parser reads and what it warns about.
"""

from __future__ import annotations

import argparse
import enum
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inmesh.config import kinds  # noqa: E402
from inmesh.config._schema import (  # noqa: E402
    FieldSpec,
    Support,
    _message_inside,
    _strip_optional,
    all_kinds,
    fields_of,
)
from inmesh.config.dump import to_data  # noqa: E402

DOCS: dict[Path, tuple[str, ...] | None] = {
    ROOT / "docs" / "configuration.md": None,
    ROOT / "docs" / "traffic-management.md": ("VirtualService", "DestinationRule"),
    ROOT / "docs" / "resilience.md": ("DestinationRule",),
}
BEGIN = "<!-- BEGIN GENERATED: support tables (scripts/gen_support_tables.py) -->"
END = "<!-- END GENERATED: support tables -->"
_RANK = {Support.SUPPORTED: 0, Support.PARTIAL: 1, Support.IGNORED: 2, Support.NOT_YET: 3}


def type_name(tp: Any) -> str:
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin in (Mapping, dict, typing.Mapping):
        k, v = typing.get_args(tp)
        return f"map of {type_name(k)} to {type_name(v)}"
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return "enum"
        if issubclass(tp, bool):
            return "bool"
        if issubclass(tp, int):
            return "int"
        if issubclass(tp, float):
            return "number"
        if issubclass(tp, str):
            return "string"
        if issubclass(tp, bytes):
            return "bytes"
        return getattr(tp, "__istio_name__", tp.__name__)
    return "any"


def rows(
    cls: type, prefix: str, inherited: tuple[Support, str] | None, seen: frozenset[type]
) -> Iterator[tuple[str, FieldSpec, Support, str]]:
    for f in fields_of(cls):
        path = f"{prefix}.{f.yaml}"
        own = f.support
        if inherited is not None and _RANK[inherited[0]] > _RANK[own]:
            status, via = inherited
        else:
            status, via = own, ""
        yield path, f, status, via
        inner, suffix = _message_inside(f.type)
        if inner is not None and inner not in seen:
            nxt = inherited
            if f.support in (Support.NOT_YET, Support.IGNORED) and (
                inherited is None or _RANK[f.support] > _RANK[inherited[0]]
            ):
                nxt = (f.support, path)
            yield from rows(inner, path + suffix, nxt, seen | {inner})


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(only: tuple[str, ...] | None = None) -> str:
    _ = kinds
    out = [BEGIN, ""]
    for info in all_kinds():
        if only is not None and info.kind not in only:
            continue
        out.append(f"### {info.kind}")
        out.append("")
        out.append(f"{info.doc} API versions: {', '.join(f'`{v}`' for v in info.api_versions)}.")
        out.append("")
        out.append("| field | type | inmesh | Istio default | notes |")
        out.append("| --- | --- | --- | --- | --- |")
        for path, f, status, via in rows(info.spec, "spec", None, frozenset({info.spec})):
            default = "" if f.istio_default is None else f"`{to_data(f.istio_default)}`"
            notes = f.note
            if via:
                notes = f"{status.value} while `{via}` is" + (f"; then: {notes}" if notes else "")
            if f.deprecated:
                notes = f"deprecated: {f.deprecated}" + (f"; {notes}" if notes else "")
            out.append(
                f"| `{path}` | {cell(type_name(f.type))} | {status.value} | {cell(default)} | {cell(notes)} |"
            )
        out.append("")
    out.append(END)
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    status = 0
    for doc, only in DOCS.items():
        text = doc.read_text()
        if BEGIN not in text or END not in text:
            print(f"{doc}: generated-section markers are missing", file=sys.stderr)
            status = 1
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + render(only) + tail
        if new == text:
            continue
        if args.check:
            print(
                f"{doc} is out of date: run python scripts/gen_support_tables.py", file=sys.stderr
            )
            status = 1
        else:
            doc.write_text(new)
    return status


if __name__ == "__main__":
    sys.exit(main())
