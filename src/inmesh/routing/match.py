"""HTTPMatchRequest compiled into fast predicates over :class:`RequestAttrs` (sans I/O).

Semantics follow Istio's ``TranslateRouteMatch`` (istio-semantics.md §1.2):
all fields of one match are AND-ed; ``uri`` sees the path without the query;
regexes are RE2 full matches (:func:`inmesh._re2.compile_re2`); ``{}`` (or
``regex: "*"``) on a header or query parameter means "present";
``withoutHeaders`` inverts the header test, a missing header counting as the
empty string and ``{}`` meaning "absent". ``sourceLabels``,
``sourceNamespace`` and ``gateways`` are decided at compile time against the
local workload: :func:`compile_match` returns ``None`` for a match block that
cannot apply to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TypeVar, overload
from urllib.parse import unquote

from inmesh._re2 import compile_re2
from inmesh.config.resources._common import StringMatch
from inmesh.config.resources.virtual_service import MESH_GATEWAY, HTTPMatchRequest
from inmesh.model import Workload

__all__ = [
    "CompiledMatch",
    "LazyHeaders",
    "RequestAttrs",
    "StringPredicate",
    "compile_match",
    "compile_string_match",
    "fold_headers",
    "parse_query",
]

StringPredicate = Callable[[str], object]
"""Truthy when the value matches."""

_Check = Callable[["RequestAttrs"], object]
_T = TypeVar("_T")
_PSEUDO_KEYS = frozenset({"uri", "scheme", "method", "authority"})


def parse_query(query: str) -> dict[str, str]:
    """``a=1&b&c=`` -> ``{"a": "1", "b": "", "c": ""}``; percent-decoded; the first value wins."""
    out: dict[str, str] = {}
    if not query:
        return out
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        k = unquote(key)
        if k not in out:
            out[k] = unquote(value)
    return out


def fold_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased, repeated headers joined with ``,`` (in order)."""
    joined: dict[str, str] = {}
    for name, value in items:
        k = name.lower()
        prev = joined.get(k)
        joined[k] = value if prev is None else f"{prev},{value}"
    return joined


class LazyHeaders(Mapping[str, str]):
    """Request headers as :class:`RequestAttrs` has them, folded on first read.

    ``items`` returns the raw ``(name, value)`` pairs (for example
    ``httpx.Headers.multi_items``); :func:`fold_headers` runs the first time
    a name is looked up. Most requests are routed without reading a header
    (no header match, hash policy or CORS on the route), so the transports
    pass their headers this way and skip the folding.
    """

    __slots__ = ("_items", "_joined")

    def __init__(self, items: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._items = items
        self._joined: dict[str, str] | None = None

    def _folded(self) -> dict[str, str]:
        joined = self._joined
        if joined is None:
            joined = self._joined = fold_headers(self._items())
        return joined

    def __getitem__(self, key: str) -> str:
        return self._folded()[key]

    @overload
    def get(self, key: str, /) -> str | None: ...
    @overload
    def get(self, key: str, /, default: str) -> str: ...
    @overload
    def get(self, key: str, /, default: _T) -> str | _T: ...
    def get(self, key: str, /, default: object = None) -> object:
        return self._folded().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._folded()

    def __iter__(self) -> Iterator[str]:
        return iter(self._folded())

    def __len__(self) -> int:
        return len(self._folded())

    def __repr__(self) -> str:
        return f"LazyHeaders({self._folded()!r})"


@dataclass(frozen=True, slots=True)
class RequestAttrs:
    """What route matching reads from a request.

    ``headers``: lower-case names, several values joined with ``,`` (a
    :class:`LazyHeaders` folds them when first read).
    ``path``: without the query string; ``query``: the raw query string
    (without ``?``); ``params``: parsed from it (see :func:`parse_query`).
    ``port``: the service port the client addressed (``None``: unknown).
    """

    method: str = "GET"
    scheme: str = "http"
    authority: str = ""
    path: str = "/"
    query: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None

    @classmethod
    def build(
        cls,
        *,
        method: str = "GET",
        scheme: str = "http",
        authority: str = "",
        target: str = "/",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        port: int | None = None,
    ) -> RequestAttrs:
        """From a request target (``/p?q``) and raw headers (names folded, repeats joined).

        A :class:`LazyHeaders` is kept as it is (it folds when read).
        """
        path, _, query = target.partition("?")
        folded: Mapping[str, str]
        if isinstance(headers, LazyHeaders):
            folded = headers
        else:
            folded = fold_headers(headers.items() if isinstance(headers, Mapping) else headers)
        if cls is not RequestAttrs:
            return cls(method, scheme, authority, path or "/", query, parse_query(query), folded, port)
        # What the frozen dataclass's __init__ does, through the slot descriptors
        # directly (half the cost; this runs for every request).
        attrs: RequestAttrs = _new(RequestAttrs)
        _set_method(attrs, method)
        _set_scheme(attrs, scheme)
        _set_authority(attrs, authority)
        _set_path(attrs, path or "/")
        _set_query(attrs, query)
        _set_params(attrs, parse_query(query))
        _set_headers(attrs, folded)
        _set_port(attrs, port)
        return attrs


_new = object.__new__
(_set_method, _set_scheme, _set_authority, _set_path, _set_query, _set_params, _set_headers,
 _set_port) = (RequestAttrs.__dict__[f.name].__set__ for f in fields(RequestAttrs))  # fmt: skip


def compile_string_match(sm: StringMatch, *, ignore_case: bool = False) -> StringPredicate:
    """A predicate for one StringMatch; ``ignore_case`` applies to exact/prefix only.

    With ``ignore_case`` the predicate expects a lower-cased value.
    """
    if sm.exact is not None:
        exact = sm.exact.lower() if ignore_case else sm.exact
        return exact.__eq__
    if sm.prefix is not None:
        prefix = sm.prefix.lower() if ignore_case else sm.prefix
        return lambda v: v.startswith(prefix)
    if sm.regex is not None:
        return compile_re2(sm.regex).fullmatch
    return _always


def _always(_: str) -> bool:
    return True


def _is_presence(sm: StringMatch) -> bool:
    return sm.is_empty or sm.regex == "*"


@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """One HTTPMatchRequest, ready to test requests.

    ``uri_kind`` (``"exact"``/``"prefix"``/``"regex"``/``""``) and ``uri_prefix``
    (the text a prefix rewrite replaces) serve rewrites and redirects.
    """

    name: str
    checks: tuple[_Check, ...]
    uri_kind: str = ""
    uri_value: str = ""
    ignore_uri_case: bool = False

    def __call__(self, attrs: RequestAttrs) -> bool:
        for check in self.checks:  # noqa: SIM110 (faster than all(genexpr))
            if not check(attrs):
                return False
        return True

    def matched_prefix_len(self, path: str) -> int:
        """Length of the path prefix a ``rewrite.uri``/``prefixRewrite`` replaces (Envoy ``prefix_rewrite``)."""
        if self.uri_kind == "prefix":
            return len(self.uri_value)
        if self.uri_kind in ("exact", "regex"):
            return len(path)
        return 1 if path.startswith("/") else 0  # no uri match: Envoy prefix "/"


def workload_applies(m: HTTPMatchRequest, workload: Workload | None) -> bool:
    """Whether sourceLabels/sourceNamespace/gateways let this match apply to ``workload``."""
    if m.gateways and MESH_GATEWAY not in m.gateways:
        return False
    if m.source_namespace and (workload is None or workload.namespace != m.source_namespace):
        return False
    if m.source_labels:
        if workload is None:
            return False
        labels = workload.labels
        for k, v in m.source_labels.items():
            if labels.get(k) != v:
                return False
    return True


def _field_check(getter: Callable[[RequestAttrs], str], pred: StringPredicate) -> _Check:
    return lambda a: pred(getter(a))


def compile_match(m: HTTPMatchRequest, workload: Workload | None) -> CompiledMatch | None:
    """Compile ``m``; ``None`` when it cannot apply to ``workload`` (or is gateway-only)."""
    if not workload_applies(m, workload):
        return None
    checks: list[_Check] = []
    uri_kind, uri_value = "", ""
    icase = bool(m.ignore_uri_case)
    if m.uri is not None and not m.uri.is_empty:
        uri = m.uri
        if uri.exact is not None:
            uri_kind, uri_value = "exact", uri.exact
        elif uri.prefix is not None:
            uri_kind, uri_value = "prefix", uri.prefix
        else:
            uri_kind, uri_value = "regex", uri.regex or ""
        if icase and uri_kind != "regex":
            checks.append(_field_check(_lower_path, compile_string_match(uri, ignore_case=True)))
        else:
            checks.append(_field_check(_path, compile_string_match(uri)))
    if m.method is not None and not m.method.is_empty:
        checks.append(_field_check(_method, compile_string_match(m.method)))
    if m.scheme is not None and not m.scheme.is_empty:
        checks.append(_field_check(_scheme, compile_string_match(m.scheme)))
    if m.authority is not None and not m.authority.is_empty:
        checks.append(_field_check(_authority, compile_string_match(m.authority)))
    if m.port:
        port = m.port
        checks.append(lambda a: a.port == port)
    for raw_name, sm in m.headers.items():
        name = raw_name.lower()
        if name in _PSEUDO_KEYS:
            continue
        if name.startswith("@request.auth.claims"):
            return None  # JWT claim matches are for gateways only
        checks.append(_header_check(name, sm))
    for raw_name, sm in m.without_headers.items():
        name = raw_name.lower()
        if name in _PSEUDO_KEYS:
            continue
        if name.startswith("@request.auth.claims"):
            return None
        checks.append(_without_header_check(name, sm))
    for key, sm in m.query_params.items():
        checks.append(_query_check(key, sm))
    return CompiledMatch(
        name=m.name or "",
        checks=tuple(checks),
        uri_kind=uri_kind,
        uri_value=uri_value,
        ignore_uri_case=icase,
    )


def _header_check(name: str, sm: StringMatch) -> _Check:
    if _is_presence(sm):
        return lambda a: name in a.headers
    pred = compile_string_match(sm)

    def check(a: RequestAttrs) -> object:
        value = a.headers.get(name)
        return value is not None and pred(value)

    return check


def _without_header_check(name: str, sm: StringMatch) -> _Check:
    if _is_presence(sm):
        return lambda a: name not in a.headers
    pred = compile_string_match(sm)
    return lambda a: not pred(a.headers.get(name, ""))


def _query_check(key: str, sm: StringMatch) -> _Check:
    if _is_presence(sm):
        return lambda a: key in a.params
    pred = compile_string_match(sm)

    def check(a: RequestAttrs) -> object:
        value = a.params.get(key)
        return value is not None and pred(value)

    return check


def _path(a: RequestAttrs) -> str:
    return a.path


def _lower_path(a: RequestAttrs) -> str:
    return a.path.lower()


def _method(a: RequestAttrs) -> str:
    return a.method


def _scheme(a: RequestAttrs) -> str:
    return a.scheme


def _authority(a: RequestAttrs) -> str:
    return a.authority
