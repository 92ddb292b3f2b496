"""YAML and JSON documents with source positions.

The only module that imports PyYAML. It turns a stream into plain Python
values (dict, list, str, int, float, bool, None) and, beside each document, a
map from field path to the 1-based line where that field starts, so that every
later error can name the line it is about.

Duplicate keys, recursive aliases and absurd nesting are reported as
:class:`YamlError` instead of being silently accepted or crashing.
"""

from __future__ import annotations

import datetime as _dt
import gc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # libyaml makes loading several times faster; fall back when absent.
    _Base: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Base = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
# A plain scalar starting with any other character can only resolve to a string.
_MAYBE_TYPED = frozenset("yYnNtTfFoO~0123456789-+.<=")


class _Loader(_Base):  # type: ignore[misc]
    """SafeLoader with a fast path for the common case of a plain word."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0] and value and value[0] not in _MAYBE_TYPED:
            return _STR
        return super().resolve(kind, value, implicit)


__all__ = ["Document", "Path", "YamlError", "line_of", "load_documents"]

Path = tuple[str | int, ...]

_MAX_DEPTH = 200

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class YamlError(Exception):
    """The text is not YAML we can read; ``line`` is 1-based (0 if unknown)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a stream: its value, its first line and every field's line."""

    value: Any
    line: int
    index: int
    lines: dict[Path, int] = field(repr=False, compare=False)


def line_of(lines: Mapping[Path, int], path: Path, default: int = 0) -> int:
    """The line of ``path``, or of its nearest ancestor that has one."""
    p = path
    while p:
        found = lines.get(p)
        if found is not None:
            return found
        p = p[:-1]
    return lines.get((), default)


class _Builder:
    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.lines: dict[Path, int] = {}
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise YamlError(f"nesting deeper than {_MAX_DEPTH} levels", node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, (_dt.date, _dt.datetime)):
                # Kubernetes reads timestamps as strings; so do we.
                return str(node.value)
            if isinstance(value, bytes):
                return value
            return value
        ident = id(node)
        if ident in self.active:
            raise YamlError("an alias refers to a node that contains it", node.start_mark.line + 1)
        self.active.add(ident)
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    raise YamlError(f"unsupported tag {node.tag}", node.start_mark.line + 1)
                out_list = []
                for i, item in enumerate(node.value):
                    sub = (*path, i)
                    self.lines[sub] = item.start_mark.line + 1
                    out_list.append(self.build(item, sub, depth + 1))
                return out_list
            if isinstance(node, yaml.MappingNode):
                if node.tag != _MAP:
                    raise YamlError(f"unsupported tag {node.tag}", node.start_mark.line + 1)
                out: dict[Any, Any] = {}
                for key_node, value_node in self._pairs(node):
                    key = self.build(key_node, path, depth + 1)
                    if isinstance(key, (list, dict)):
                        raise YamlError(
                            "a mapping key must be a scalar", key_node.start_mark.line + 1
                        )
                    if not isinstance(key, str):
                        key = str(key).lower() if isinstance(key, bool) else str(key)
                    line = key_node.start_mark.line + 1
                    if key in out:
                        raise YamlError(
                            f"duplicate key {key!r} (first at line {self.lines.get((*path, key), '?')})",
                            line,
                        )
                    sub = (*path, key)
                    self.lines[sub] = line
                    out[key] = self.build(value_node, sub, depth + 1)
                return out
            raise YamlError(f"unsupported node {type(node).__name__}", node.start_mark.line + 1)
        finally:
            self.active.discard(ident)

    def _pairs(self, node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
        # Expand YAML merge keys (<<) the way SafeLoader would.
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        raise YamlError(
                            "a merge key (<<) needs a mapping", key_node.start_mark.line + 1
                        )
                    yield from self._pairs(src)
            else:
                yield key_node, value_node


def load_documents(text: str | bytes) -> list[Document]:
    """Every non-empty document in ``text`` (YAML, or JSON, which is YAML).

    Raises :class:`YamlError` with the line of the first syntax problem.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise YamlError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    loader = _Loader(text)
    docs: list[Document] = []
    # Building many small containers triggers the cyclic GC over and over;
    # nothing here makes cycles, so pause it (halves the load time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            builder = _Builder(loader)
            line = node.start_mark.line + 1
            builder.lines[()] = line
            value = builder.build(node, (), 0)
            if value is not None:
                docs.append(Document(value, line, index, builder.lines))
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"invalid YAML: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"nesting deeper than {_MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
        if gc_was_enabled:
            gc.enable()
    return docs
