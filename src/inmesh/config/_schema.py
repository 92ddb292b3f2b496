"""Declarative schema: frozen dataclasses in, typed objects and diagnostics out.

Every Istio message is a frozen, slotted dataclass whose fields are declared
with :func:`spec_field`. The field's YAML name is its camelCase form (override
with ``name=``), and its metadata says whether inmesh enforces it. One generic
parser walks the type hints, so adding a field is one line, and the per-field
support tables in the docs are generated from the same declarations.

Parsing never raises for bad input: it reports :class:`Diagnostic` s through a
:class:`Reporter` and leaves the bad field unset.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Union, cast

from inmesh.errors import Diagnostic, Severity

from ._yaml import Path, line_of

__all__ = [
    "FieldSpec",
    "KindInfo",
    "Reporter",
    "Support",
    "all_kinds",
    "camel",
    "fields_of",
    "format_path",
    "kind_info",
    "parse_message",
    "register_kind",
    "spec_field",
    "where_else",
]

T = TypeVar("T")


class Support(str, enum.Enum):
    """How far inmesh honours a field. Shown in the docs' support tables."""

    SUPPORTED = "supported"
    PARTIAL = "partial"
    NOT_YET = "not yet"
    IGNORED = "ignored"  # meaningful only for gateways / other proxies; accepted, no effect


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What the schema knows about one field."""

    attr: str
    yaml: str
    type: Any
    support: Support
    note: str
    required: bool
    deprecated: str
    istio_default: Any
    """The value Istio/Envoy use when the field is unset (``None``: no default or not modelled)."""
    enforced_if: Callable[[Any], bool] | None = None
    """For partial/not-yet fields: values for which no "not enforced" warning is due."""


_META_KEY = "inmesh"


def spec_field(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    name: str | None = None,
    support: Support = Support.SUPPORTED,
    note: str = "",
    required: bool = False,
    deprecated: str = "",
    istio_default: Any = None,
    enforced_if: Callable[[Any], bool] | None = None,
) -> Any:
    """Declare a schema field. Unset optional fields default to ``None`` / empty.

    ``istio_default`` documents the value Istio/Envoy use when the field is
    unset; ``inmesh config dump`` fills it in and the support tables show it.
    """
    meta = {
        _META_KEY: {
            "name": name,
            "support": support,
            "note": note,
            "required": required,
            "deprecated": deprecated,
            "istio_default": istio_default,
            "enforced_if": enforced_if,
        }
    }
    if default is dataclasses.MISSING and default_factory is dataclasses.MISSING:
        default = None
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def camel(snake: str) -> str:
    """``http1_max_pending_requests`` -> ``http1MaxPendingRequests``; ``from_`` -> ``from``."""
    head, *rest = snake.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


_FIELDS_CACHE: dict[type, tuple[FieldSpec, ...]] = {}


def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The schema fields of a message class, in declaration order."""
    cached = _FIELDS_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            continue
        out.append(
            FieldSpec(
                attr=f.name,
                yaml=meta["name"] or camel(f.name),
                type=hints[f.name],
                support=meta["support"],
                note=meta["note"],
                required=meta["required"],
                deprecated=meta["deprecated"],
                istio_default=meta.get("istio_default"),
                enforced_if=meta.get("enforced_if"),
            )
        )
    result = tuple(out)
    _FIELDS_CACHE[cls] = result
    return result


def _by_yaml(cls: type) -> dict[str, FieldSpec]:
    return {f.yaml: f for f in fields_of(cls)}


_BY_YAML_CACHE: dict[type, dict[str, FieldSpec]] = {}


def format_path(path: Path) -> str:
    """``("spec", "http", 0, "route")`` -> ``spec.http[0].route``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not out:
            out = p
        elif _PLAIN_KEY.fullmatch(p):
            out += f".{p}"
        else:
            out += f"[{p!r}]"
    return out


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---------------------------------------------------------------------------
# Reporting


class Reporter:
    """Collects diagnostics for one resource, turning paths into line numbers."""

    __slots__ = ("diagnostics", "file", "kind", "lines", "name", "namespace", "quiet")

    def __init__(
        self,
        *,
        file: str = "",
        lines: Mapping[Path, int] | None = None,
        kind: str = "",
        namespace: str = "",
        name: str = "",
    ) -> None:
        self.file = file
        self.lines: Mapping[Path, int] = lines or {}
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.diagnostics: list[Diagnostic] = []
        self.quiet = 0
        """While > 0, "not enforced yet" warnings are not repeated for nested fields."""

    def _add(self, severity: Severity, path: Path, message: str, fix: str) -> None:
        self.diagnostics.append(
            Diagnostic(
                severity=severity,
                message=message,
                fix=fix,
                file=self.file,
                line=line_of(self.lines, path) if self.lines else 0,
                kind=self.kind,
                namespace=self.namespace,
                name=self.name,
                path=format_path(path),
            )
        )

    def error(self, path: Path, message: str, fix: str = "") -> None:
        self._add(Severity.ERROR, path, message, fix)

    def warn(self, path: Path, message: str, fix: str = "") -> None:
        self._add(Severity.WARNING, path, message, fix)

    def info(self, path: Path, message: str, fix: str = "") -> None:
        self._add(Severity.INFO, path, message, fix)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)


# ---------------------------------------------------------------------------
# Kinds


@dataclass(frozen=True, slots=True)
class KindInfo:
    """A resource kind inmesh reads: where it lives and how to check it."""

    kind: str
    group: str
    versions: tuple[str, ...]
    spec: type
    validate: Callable[[Any, Reporter], None] | None = None
    """``validate(resource, reporter)``: Istio's checks beyond the schema."""
    doc: str = ""

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" for v in self.versions)


_KINDS: dict[str, KindInfo] = {}


def register_kind(info: KindInfo) -> KindInfo:
    """Make a kind known to the loader (called by each resource module)."""
    _KINDS[info.kind] = info
    _WHERE_ELSE.clear()
    return info


def kind_info(kind: str) -> KindInfo | None:
    return _KINDS.get(kind)


def all_kinds() -> tuple[KindInfo, ...]:
    return tuple(_KINDS.values())


# ---------------------------------------------------------------------------
# "Did you mean" and "it belongs elsewhere"

_WHERE_ELSE: dict[str, list[tuple[str, str]]] = {}


def _walk_schema(cls: type, prefix: str, seen: frozenset[type]) -> Iterator[tuple[str, str]]:
    for f in fields_of(cls):
        path = f"{prefix}.{f.yaml}"
        yield f.yaml, path
        inner, suffix = _message_inside(f.type)
        if inner is not None and inner not in seen:
            yield from _walk_schema(inner, path + suffix, seen | {inner})


def _message_inside(tp: Any) -> tuple[type | None, str]:
    """The message class a field type holds (through Optional/tuple/Mapping)."""
    suffix = ""
    while True:
        tp = _strip_optional(tp)
        origin = typing.get_origin(tp)
        if origin is tuple:
            tp = typing.get_args(tp)[0]
            suffix += "[]"
        elif origin in (Mapping, dict, typing.Mapping):
            tp = typing.get_args(tp)[1]
            suffix += "[*]"
        else:
            break
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp, suffix
    return None, suffix


def where_else(yaml_name: str) -> list[tuple[str, str]]:
    """Every ``(Kind, path)`` where a field called ``yaml_name`` exists, shortest first."""
    if not _WHERE_ELSE:
        index: dict[str, list[tuple[str, str]]] = {}
        for info in _KINDS.values():
            for name, path in _walk_schema(info.spec, "spec", frozenset({info.spec})):
                index.setdefault(name, []).append((info.kind, path))
        for places in index.values():
            places.sort(key=lambda kp: (kp[1].count(".") + kp[1].count("[]"), len(kp[1])))
        _WHERE_ELSE.update(index)
    return _WHERE_ELSE.get(yaml_name, [])


def _unknown_field(cls: type, key: str, path: Path, rep: Reporter) -> None:
    known = _BY_YAML_CACHE.setdefault(cls, _by_yaml(cls))
    label = getattr(cls, "__istio_name__", cls.__name__)
    message = f"unknown field {key!r} in {label}"
    camel_key = camel(key) if "_" in key else key
    close = [k for k in known if k.lower() == camel_key.lower()]
    if not close:
        close = difflib.get_close_matches(camel_key, list(known), n=1, cutoff=0.75)
    if not close and len(camel_key) >= 4:
        # `labels` where the message wants `matchLabels`, `number` for `portNumber`...
        close = [k for k in known if k.lower().endswith(camel_key.lower())]
    if close:
        rep.error((*path, key), message, f"did you mean {close[0]!r}?")
        return
    places = where_else(camel_key)
    if places:
        same_kind = [p for p in places if p[0] == rep.kind]
        kind, where = (same_kind or places)[0]
        target = f"{where}" if kind == rep.kind else f"{kind} {where}"
        rep.error((*path, key), message, f"it belongs in {target}")
        return
    fields = ", ".join(sorted(known)) or "none"
    rep.error((*path, key), message, f"the fields of {label} are: {fields}")


# ---------------------------------------------------------------------------
# Parsing


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_name(tp: Any) -> str:
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "list"
    if origin in (Mapping, dict, typing.Mapping):
        return "map"
    if isinstance(tp, type):
        if issubclass(tp, bool):
            return "boolean"
        if issubclass(tp, int):
            return "integer"
        if issubclass(tp, float):
            return "number"
        if issubclass(tp, str) and not issubclass(tp, enum.Enum):
            return "string"
        if issubclass(tp, enum.Enum):
            return "one of " + ", ".join(m.name for m in tp)
        return "object"
    return "value"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"


_INT_RE = re.compile(r"[+-]?\d+")


ParseFn = Callable[[Any, Path, "Reporter"], Any]
_PARSERS: dict[Any, ParseFn] = {}


def parse_value(tp: Any, raw: Any, path: Path, rep: Reporter) -> Any:
    """Parse ``raw`` as type ``tp``; report and return ``None`` when it does not fit."""
    fn = _PARSERS.get(tp)
    if fn is None:
        fn = _compile(tp)
    return fn(raw, path, rep)


def _compile(tp: Any) -> ParseFn:
    """Build (once per type) the function that parses values of ``tp``."""
    fn = _build_parser(_strip_optional(tp))
    _PARSERS[tp] = fn
    return fn


def _build_parser(tp: Any) -> ParseFn:
    hook = getattr(tp, "__inmesh_parse__", None)
    if hook is not None:
        return cast(ParseFn, hook)
    origin = typing.get_origin(tp)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]

        def parse_list(raw: Any, path: Path, rep: Reporter) -> Any:
            if not isinstance(raw, list):
                rep.error(path, f"expected a list, got {_describe(raw)}", "write it as a YAML list")
                return None
            item = _PARSERS.get(item_tp) or _compile(item_tp)
            items = []
            for i, value in enumerate(raw):
                parsed = item(value, (*path, i), rep)
                if parsed is not None:
                    items.append(parsed)
            return tuple(items)

        return parse_list
    if origin in (Mapping, dict, typing.Mapping):
        val_tp = typing.get_args(tp)[1]

        def parse_map(raw: Any, path: Path, rep: Reporter) -> Any:
            if not isinstance(raw, dict):
                rep.error(path, f"expected a map, got {_describe(raw)}", "write it as a YAML mapping")
                return None
            value_fn = _PARSERS.get(val_tp) or _compile(val_tp)
            out = {}
            for k, v in raw.items():
                parsed = value_fn(v, (*path, k), rep)
                if parsed is not None:
                    out[str(k)] = parsed
            return types.MappingProxyType(out)

        return parse_map
    if tp is Any or tp is object:
        return lambda raw, path, rep: raw
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            cls = tp
            return lambda raw, path, rep: parse_message(cls, raw, path, rep)
        if issubclass(tp, enum.Enum):
            enum_tp = tp
            return lambda raw, path, rep: _parse_enum(enum_tp, raw, path, rep)
        if issubclass(tp, bool):
            return _parse_bool
        if issubclass(tp, int):
            return _parse_int
        if issubclass(tp, float):
            return _parse_float
        if issubclass(tp, str):
            return _parse_str
        if issubclass(tp, bytes):
            return _parse_bytes
    raise TypeError(f"schema type {tp!r} is not supported")  # a bug in a model, not in input


def _parse_bool(raw: Any, path: Path, rep: Reporter) -> Any:
    if isinstance(raw, bool):
        return raw
    rep.error(path, f"expected true or false, got {_describe(raw)}")
    return None


def _parse_int(raw: Any, path: Path, rep: Reporter) -> Any:
    if type(raw) is int:
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _INT_RE.fullmatch(raw.strip()):
        return int(raw.strip())
    rep.error(path, f"expected an integer, got {_describe(raw)}")
    return None


def _parse_float(raw: Any, path: Path, rep: Reporter) -> Any:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    rep.error(path, f"expected a number, got {_describe(raw)}")
    return None


def _parse_str(raw: Any, path: Path, rep: Reporter) -> Any:
    if type(raw) is str:
        return raw
    fix = ""
    if isinstance(raw, (int, float, bool)):
        fix = "quote it to make it a string"
    rep.error(path, f"expected a string, got {_describe(raw)}", fix)
    return None


def _parse_bytes(raw: Any, path: Path, rep: Reporter) -> Any:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            rep.error(path, "expected base64-encoded bytes")
            return None
    rep.error(path, f"expected base64-encoded bytes, got {_describe(raw)}")
    return None


def _parse_enum(tp: type[enum.Enum], raw: Any, path: Path, rep: Reporter) -> Any:
    if isinstance(raw, str):
        member = tp.__members__.get(raw)
        if member is not None:
            return member
        names = list(tp.__members__)
        close = [n for n in names if n.lower() == raw.lower()]
        close = close or difflib.get_close_matches(raw.upper(), names, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(names)}"
        rep.error(path, f"{raw!r} is not a valid value", fix)
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        numbers = getattr(tp, "__numbers__", None)
        if numbers and raw in numbers:
            return tp.__members__[numbers[raw]]
    rep.error(path, f"expected one of {', '.join(tp.__members__)}, got {_describe(raw)}")
    return None


def parse_message(cls: type[T], raw: Any, path: Path, rep: Reporter) -> T | None:
    """Parse a mapping into message ``cls``. Unknown keys and bad values are reported."""
    if not isinstance(raw, dict):
        label = getattr(cls, "__istio_name__", cls.__name__)
        rep.error(path, f"expected an object ({label}), got {_describe(raw)}")
        return None
    known = _BY_YAML_CACHE.get(cls)
    if known is None:
        known = _BY_YAML_CACHE.setdefault(cls, _by_yaml(cls))
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        spec = known.get(key)
        if spec is None:
            _unknown_field(cls, str(key), path, rep)
            continue
        if value is None:
            continue  # YAML null = unset, as protojson reads it
        unenforced = spec.support in (Support.NOT_YET, Support.PARTIAL) and bool(spec.note)
        warn_here = unenforced and not rep.quiet
        if unenforced:
            rep.quiet += 1
        try:
            parsed = parse_value(spec.type, value, (*path, key), rep)
        finally:
            if unenforced:
                rep.quiet -= 1
        if warn_here and not (spec.enforced_if is not None and spec.enforced_if(parsed)):
            rep.warn(
                (*path, key),
                f"{key!r} is parsed but "
                + (
                    "not enforced yet"
                    if spec.support is Support.NOT_YET
                    else "only partly enforced"
                ),
                spec.note,
            )
        if parsed is not None:
            kwargs[spec.attr] = parsed
            if spec.deprecated:
                rep.warn((*path, key), f"{key!r} is deprecated", spec.deprecated)
    for group in getattr(cls, "__oneofs__", ()):
        present = [known_attr for known_attr in group if known_attr in kwargs]
        if len(present) > 1:
            yaml_of = {f.attr: f.yaml for f in known.values()}
            names = [yaml_of.get(a, camel(a)) for a in present]
            rep.error(
                path,
                f"only one of {', '.join(yaml_of.get(a, camel(a)) for a in group)} may be set, "
                f"got {' and '.join(names)}",
                "keep one of them",
            )
    for spec in known.values():
        if spec.required and spec.attr not in kwargs and spec.yaml not in raw:
            rep.error(
                (*path, spec.yaml),
                f"{spec.yaml!r} is required",
                f"add {spec.yaml} to this {getattr(cls, '__istio_name__', cls.__name__)}",
            )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a model __post_init__ refused the value
        rep.error(path, str(exc))
        return None
