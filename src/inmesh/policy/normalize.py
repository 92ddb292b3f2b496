"""Request-path normalization, as an Istio sidecar's Envoy does it before authorization.

Istio's mesh setting ``pathNormalization`` picks one of four modes
(istio/istio ``pilot/pkg/networking/core/listener_builder.go``), which turn
into options of Envoy's HTTP connection manager. Envoy applies them in this
order (envoyproxy/envoy ``source/common/http/conn_manager_utility.cc``,
``maybeNormalizePath``; ``source/common/http/path_utility.cc``):

1. a ``#`` anywhere in ``:path`` is refused (400) whatever the mode;
2. ``DECODE_AND_MERGE_SLASHES`` only: ``%2F``/``%2f`` become ``/`` and
   ``%5C``/``%5c`` become ``\\`` (before anything else, so they take part in
   the steps below);
3. ``BASE`` and stronger (Envoy ``normalize_path``): dot segments carrying
   parameters (``/..;x``, ``/.;x``) lose the parameters, then the path is
   canonicalized as Chromium's URL library does it (the ``googleurl`` version
   Envoy links):

   * a percent-escape of an unreserved character is decoded, once:
     ``%2D %2E %30-%39 %41-%5A %5F %61-%7A %7E`` (either hex case); every
     other escape is kept exactly as written (``%2f`` stays ``%2f``,
     ``%c0%ae`` stays ``%c0%ae``); ``%00`` is refused (400); a ``%`` not
     followed by two hex digits is kept as it is;
   * ``\\`` is a path separator and becomes ``/``;
   * ``.`` and ``..`` segments (also spelled ``%2e``) are resolved as in
     RFC 3986; ``..`` never climbs above the root;
   * space, control characters, ``" # < > ^ ` { | }``, DEL and every byte
     >= 0x80 (so UTF-8) are percent-encoded with upper-case hex;
   * ``;`` parameters of ordinary segments are kept;
4. ``MERGE_SLASHES`` and ``DECODE_AND_MERGE_SLASHES``: runs of ``/`` become
   one (a path that is only slashes keeps two, as Envoy's own code does).

The query (from the first ``?``) is never changed and is not part of what
``paths`` match. ``NONE`` changes nothing (and so does not refuse ``%00``).

What the app must see
---------------------
Envoy forwards the *normalized* path (plus the original query) to the app,
so the policy and the app agree on what was asked for. The middleware
therefore rewrites the request before calling the app:

* ASGI: ``scope["raw_path"]`` = :attr:`NormalizedPath.raw_path`,
  ``scope["path"]`` = :attr:`NormalizedPath.asgi_path` (percent-decoded,
  as servers build it);
* WSGI: ``PATH_INFO`` = :attr:`NormalizedPath.wsgi_path_info` (decoded
  bytes as latin-1, PEP 3333), ``SCRIPT_NAME`` left alone.

ASGI servers percent-decode ``scope["path"]`` (``%2F`` becomes ``/``), so the
middleware must normalize from ``scope["raw_path"]`` (see
:func:`asgi_request_target`), never from ``scope["path"]``. With ``BASE`` a
request for ``/admin%2Fsecret`` is matched by policies as ``/admin%2Fsecret``
while most apps route it as ``/admin/secret`` -- exactly what happens behind
Envoy (CVE-2021-31920); choose ``DECODE_AND_MERGE_SLASHES`` when DENY
policies name paths.

Pure functions, standard library only, no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "ABSOLUTE_PATH_REQUIRED",
    "INVALID_METHOD",
    "PATH_NORMALIZATION_FAILED",
    "NormalizedPath",
    "PathNormalization",
    "asgi_request_target",
    "check_method",
    "normalize_path",
    "wsgi_request_target",
]

PATH_NORMALIZATION_FAILED = "path_normalization_failed"
"""Envoy's response code details when normalization refuses a path (status 400)."""
ABSOLUTE_PATH_REQUIRED = "absolute_path_required"
"""Envoy's response code details for a ``:path`` that does not start with ``/`` (status 404)."""
INVALID_METHOD = "http1.codec_error"
"""Response code details for a method Envoy's codec refuses (status 400)."""


class PathNormalization(str, enum.Enum):
    """Istio's ``meshConfig.pathNormalization.normalization``."""

    NONE = "NONE"
    """Forward and match the path exactly as received."""
    BASE = "BASE"
    """RFC 3986 normalization, ``\\`` as ``/``, unreserved escapes decoded (Istio's default)."""
    MERGE_SLASHES = "MERGE_SLASHES"
    """``BASE``, then ``//`` merged."""
    DECODE_AND_MERGE_SLASHES = "DECODE_AND_MERGE_SLASHES"
    """``%2F``/``%5C`` decoded first, then ``MERGE_SLASHES``."""


@dataclass(frozen=True, slots=True)
class NormalizedPath:
    """The outcome of :func:`normalize_path`.

    * ``path``: the normalized path without the query -- what ``paths`` /
      ``notPaths`` match (``""`` when refused);
    * ``query``: ``""`` or the original query including its ``?``;
    * ``refusal``: ``None``, or Envoy's response code details
      (:data:`PATH_NORMALIZATION_FAILED`, :data:`ABSOLUTE_PATH_REQUIRED`);
    * ``status``: ``None``, or the status of the local reply (400, 404).
    """

    path: str
    query: str = ""
    refusal: str | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        """True when the request may go on."""
        return self.refusal is None

    @property
    def target(self) -> str:
        """The ``:path`` Envoy forwards: normalized path plus the original query."""
        return self.path + self.query

    @property
    def raw_path(self) -> bytes:
        """``scope["raw_path"]`` for the app (the path's bytes, no query)."""
        return self.path.encode("utf-8", "surrogateescape")

    @property
    def query_string(self) -> bytes:
        """``scope["query_string"]`` / ``QUERY_STRING``: the query without ``?``."""
        return self.query[1:].encode("utf-8", "surrogateescape")

    @property
    def asgi_path(self) -> str:
        """``scope["path"]`` for the app: percent-decoded, UTF-8 (invalid bytes replaced).

        Escaped slashes (``%2F``, ``%5C``) that normalization kept stay escaped:
        decoding them would hand the app a path with more segments than the
        one the policies were evaluated on (``/admin%2Fx`` would route as
        ``/admin/x``). Policies and app see the same segments.
        """
        return _decode_keeping_slashes(self.raw_path).decode("utf-8", "replace")

    @property
    def wsgi_path_info(self) -> str:
        """``PATH_INFO`` for the app: percent-decoded bytes as latin-1 (PEP 3333).

        Escaped slashes stay escaped, as in :attr:`asgi_path`.
        """
        return _decode_keeping_slashes(self.raw_path).decode("latin-1")


_ESCAPED_SLASH_BYTES = re.compile(rb"(%2[fF]|%5[cC])")


def _decode_keeping_slashes(raw: bytes) -> bytes:
    parts = _ESCAPED_SLASH_BYTES.split(raw)
    return b"".join(
        part if i % 2 else unquote_to_bytes(part) for i, part in enumerate(parts)
    )


# -- Chromium's path character table (url_canon_path.cc, kPathCharLookup) ----------------
_SPECIAL = 1
_ESCAPE_BIT = 2
_ESCAPE = _ESCAPE_BIT | _SPECIAL
_UNESCAPE = 4
_INVALID_BIT = 8
_INVALID = _INVALID_BIT | _SPECIAL


def _build_table() -> tuple[int, ...]:
    table = [_ESCAPE] * 256  # control characters and every byte >= 0x80
    table[0] = _INVALID
    for ch in "!$&'()*+,/:;=@[]":
        table[ord(ch)] = 0  # PASS
    for ch in "-_~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        table[ord(ch)] = _UNESCAPE
    table[ord(".")] = _SPECIAL
    # ' ', '"', '#', '%', '<', '>', '?', '\\', '^', '`', '{', '|', '}', DEL stay ESCAPE
    return tuple(table)


_TABLE = _build_table()
_HEX = "0123456789abcdefABCDEF"
# A path made only of these (and without "/.") is already canonical.
_NEEDS_CANON = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,/:;=@\[\]]|/\.")
_ESCAPED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")
_ESCAPED_SLASH_VALUE = {"2f": "/", "2F": "/", "5c": "\\", "5C": "\\"}
_METHOD_RE = re.compile(r"[A-Z][A-Z0-9_\-]*")


def normalize_path(
    target: str | bytes, mode: PathNormalization | str = PathNormalization.BASE
) -> NormalizedPath:
    """Normalize a request target (``/path?query``) as Envoy does under ``mode``.

    ``target`` is what the client sent: bytes (``raw_path`` plus ``?`` and
    the query, see :func:`asgi_request_target`) or text (encoded to UTF-8
    first). Returns a :class:`NormalizedPath`; check ``.ok`` and, if it is
    false, reply with ``.status`` and an empty body (response code details
    ``.refusal``).

    >>> normalize_path("/a/b/../%2e%2E/c%41?x=1").target
    '/c/A?x=1'
    >>> normalize_path("/a%2fb//c", "DECODE_AND_MERGE_SLASHES").path
    '/a/b/c'
    >>> normalize_path("/x%00").refusal
    'path_normalization_failed'
    """
    mode = PathNormalization(mode)
    text = (
        target.decode("latin-1")
        if isinstance(target, bytes)
        else target.encode("utf-8", "surrogateescape").decode("latin-1")
    )
    if not text.startswith("/"):
        # conn_manager_impl.cc: only relative (origin-form) paths are served.
        return NormalizedPath("", "", ABSOLUTE_PATH_REQUIRED, 404)
    if "#" in text:
        # maybeNormalizePath: a fragment in :path is refused (http_reject_path_with_fragment).
        return NormalizedPath("", "", PATH_NORMALIZATION_FAILED, 400)
    q = text.find("?")
    path, query = (text, "") if q < 0 else (text[:q], text[q:])
    if mode is PathNormalization.NONE:
        return NormalizedPath(_to_text(path), _to_text(query))
    if mode is PathNormalization.DECODE_AND_MERGE_SLASHES and "%" in path:
        path = _ESCAPED_SLASH.sub(lambda m: _ESCAPED_SLASH_VALUE[m.group()[1:]], path)
    if ".;" in path:
        path = _strip_dot_segment_parameters(path)
    if _NEEDS_CANON.search(path) is not None:
        canonical, ok = _canonicalize(path)
        if not ok:
            return NormalizedPath("", "", PATH_NORMALIZATION_FAILED, 400)
        path = canonical
    if mode is not PathNormalization.BASE and "//" in path:
        path = _merge_slashes(path)
    return NormalizedPath(_to_text(path), _to_text(query))


def check_method(method: str) -> str | None:
    """``None`` if Envoy accepts ``method``, else the refusal details (reply 400).

    Istio documents that a method that is not upper case is refused with 400
    (its HTTP/1 codec only knows upper-case method tokens).
    """
    return None if _METHOD_RE.fullmatch(method) else INVALID_METHOD


def asgi_request_target(scope: Mapping[str, Any]) -> bytes:
    """The request target to normalize, from an ASGI HTTP scope.

    Uses ``raw_path`` (what the client sent); only when the server gives none
    it re-encodes the decoded ``path``. The query string is appended after ``?``.
    """
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes) or not raw:
        raw = quote(str(scope.get("path", "/")), safe="/:@!$&'()*+,;=-._~").encode("ascii")
    query = scope.get("query_string") or b""
    return raw + b"?" + query if query else raw


def wsgi_request_target(environ: Mapping[str, Any]) -> bytes:
    """The request target to normalize, from a WSGI environ.

    Prefers the raw request line (``RAW_URI`` from gunicorn, ``REQUEST_URI``
    from uWSGI/mod_wsgi); otherwise re-encodes ``SCRIPT_NAME + PATH_INFO``
    (already decoded by the server, so ``%2F`` can no longer be told from ``/``)
    and appends ``QUERY_STRING``.
    """
    for key in ("RAW_URI", "REQUEST_URI"):
        raw = environ.get(key)
        if isinstance(raw, str) and raw.startswith("/"):
            return raw.encode("latin-1", "replace")
    decoded = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")) or "/"
    path = quote(decoded.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~").encode("ascii")
    query = str(environ.get("QUERY_STRING", ""))
    return path + b"?" + query.encode("latin-1", "replace") if query else path


# -- the steps -------------------------------------------------------------------------------


def _to_text(latin1: str) -> str:
    """Our working form (one char per byte) back to text (UTF-8, invalid bytes escaped)."""
    if latin1.isascii():
        return latin1
    return latin1.encode("latin-1").decode("utf-8", "surrogateescape")


def _strip_dot_segment_parameters(path: str) -> str:
    """``PathUtil::stripParametersFromDotSegments``: ``..;x`` -> ``..``, ``.;x`` -> ``.``."""
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg.startswith("..;"):
            segments[i] = ".."
        elif seg.startswith(".;"):
            segments[i] = "."
    return "/".join(segments)


def _merge_slashes(path: str) -> str:
    """``PathUtil::mergeSlashes`` (a path of only slashes keeps two, like Envoy)."""
    prefix = "/" if path.startswith("/") else ""
    suffix = "/" if path.endswith("/") else ""
    return prefix + "/".join(s for s in path.split("/") if s) + suffix


def _is_dot(s: str, i: int, end: int) -> int:
    """Length of a dot at ``s[i]``: 1 for ``.``, 3 for ``%2e``/``%2E``, else 0."""
    ch = s[i]
    if ch == ".":
        return 1
    if ch == "%" and i + 3 <= end and s[i + 1] == "2" and s[i + 2] in "eE":
        return 3
    return 0


def _classify_after_dot(s: str, after: int, end: int) -> tuple[int, int]:
    """(kind, consumed): kind 0 = a name, 1 = ``.``, 2 = ``..``."""
    if after == end:
        return 1, 0
    if s[after] in "/\\":
        return 1, 1
    second = _is_dot(s, after, end)
    if second:
        after2 = after + second
        if after2 == end:
            return 2, second
        if s[after2] in "/\\":
            return 2, second + 1
    return 0, 0


def _back_up_to_previous_slash(out: list[str]) -> None:
    i = len(out) - 1
    if i == 0:
        return
    i -= 1
    while out[i] != "/" and i > 0:
        i -= 1
    del out[i + 1 :]


def _decode_escaped(s: str, i: int, end: int) -> int:
    """The byte escaped at ``s[i]`` (a ``%``), or -1 if it is no valid escape."""
    if i + 3 > end:
        return -1
    a, b = s[i + 1], s[i + 2]
    if a not in _HEX or b not in _HEX:
        return -1
    return int(a + b, 16)


def _check_nested_escapes(s: str, next_i: int, end: int, invalid_at: int, out: list[str]) -> None:
    """Chromium's ``CheckForNestedEscapes``: ``%%30%30`` must not become ``%00``."""
    length = len(out)
    last = out[-1]
    append_next = invalid_at == length - 2
    if append_next:
        if next_i == end or ord(s[next_i]) >= 0x80:
            return
        out.append(s[next_i])
    window = "".join(out[invalid_at : invalid_at + 3])
    if _decode_escaped(window, 0, len(window)) >= 0:
        if not append_next:
            out.append(out[invalid_at + 1])
        out[invalid_at + 1] = "2"
        out[invalid_at + 2] = "5"
        out.append(last)
    elif append_next:
        del out[length:]


def _canonicalize(s: str) -> tuple[str, bool]:
    """``url::CanonicalizePath`` on one path (no query); returns (path, success)."""
    out: list[str] = []
    if not s:
        return "/", True
    if s[0] not in "/\\":
        out.append("/")
    ok = True
    invalid_at = -(1 << 30)
    end = len(s)
    i = 0
    while i < end:
        ch = s[i]
        flags = _TABLE[ord(ch)]
        if not flags & _SPECIAL:
            out.append(ch)
        elif dotlen := _is_dot(s, i, end):
            if out and out[-1] == "/":
                kind, consumed = _classify_after_dot(s, i + dotlen, end)
                if kind == 0:
                    out.append(".")
                    i += dotlen - 1
                else:
                    if kind == 2:
                        _back_up_to_previous_slash(out)
                    i += dotlen + consumed - 1
            else:
                out.append(".")
                i += dotlen - 1
        elif ch == "\\":
            out.append("/")
        elif ch == "%":
            value = _decode_escaped(s, i, end)
            if value >= 0:
                i += 2
                vflags = _TABLE[value]
                if vflags & _UNESCAPE:
                    out.append(chr(value))
                    if invalid_at >= len(out) - 3:
                        _check_nested_escapes(s, i + 1, end, invalid_at, out)
                else:
                    out.extend(("%", s[i - 1], s[i]))
                    if vflags & _INVALID_BIT:
                        ok = False
            else:
                invalid_at = len(out)
                out.append("%")
        else:
            out.extend(f"%{ord(ch):02X}")
            if flags & _INVALID_BIT:
                ok = False
        i += 1
    return "".join(out), ok
