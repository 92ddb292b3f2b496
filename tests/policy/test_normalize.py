"""Path normalization: Envoy's behaviour under each of Istio's four modes.

Expected values follow envoyproxy/envoy ``source/common/http/path_utility.cc``
(and its tests), Chromium's path canonicalizer that it links, and
``conn_manager_utility.cc`` ``maybeNormalizePath`` for the order of steps.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmesh.policy.normalize import (
    ABSOLUTE_PATH_REQUIRED,
    INVALID_METHOD,
    PATH_NORMALIZATION_FAILED,
    NormalizedPath,
    PathNormalization,
    asgi_request_target,
    check_method,
    normalize_path,
    wsgi_request_target,
)

BAD = "400"  # refused: path_normalization_failed
MODES = (
    PathNormalization.NONE,
    PathNormalization.BASE,
    PathNormalization.MERGE_SLASHES,
    PathNormalization.DECODE_AND_MERGE_SLASHES,
)

# (input, NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES); the query is kept verbatim.
TABLE: list[tuple[str | bytes, str, str, str, str]] = [
    ("/a/b", "/a/b", "/a/b", "/a/b", "/a/b"),
    ("/a/../b", "/a/../b", "/b", "/b", "/b"),
    ("/a/./b", "/a/./b", "/a/b", "/a/b", "/a/b"),
    ("/a/%2e%2e/b", "/a/%2e%2e/b", "/b", "/b", "/b"),
    ("/a/%2E%2e/b", "/a/%2E%2e/b", "/b", "/b", "/b"),
    ("/a/.%2E/b", "/a/.%2E/b", "/b", "/b", "/b"),
    ("/a/%2e/b", "/a/%2e/b", "/a/b", "/a/b", "/a/b"),
    ("/a/%2e%2E/%2E/b", "/a/%2e%2E/%2E/b", "/b", "/b", "/b"),
    ("/a//b", "/a//b", "/a//b", "/a/b", "/a/b"),
    ("//a", "//a", "//a", "/a", "/a"),
    ("/a/b//", "/a/b//", "/a/b//", "/a/b/", "/a/b/"),
    ("///", "///", "///", "//", "//"),  # Envoy's mergeSlashes keeps "//" for a slash-only path
    ("/a%2fb", "/a%2fb", "/a%2fb", "/a%2fb", "/a/b"),
    ("/a%2Fb", "/a%2Fb", "/a%2Fb", "/a%2Fb", "/a/b"),
    ("/a%2f%2fb", "/a%2f%2fb", "/a%2f%2fb", "/a%2f%2fb", "/a/b"),
    ("/a%5cb", "/a%5cb", "/a%5cb", "/a%5cb", "/a/b"),
    ("/a%5Cb", "/a%5Cb", "/a%5Cb", "/a%5Cb", "/a/b"),
    ("/a\\b", "/a\\b", "/a/b", "/a/b", "/a/b"),
    ("/a/..\\b", "/a/..\\b", "/b", "/b", "/b"),
    ("/a\\\\b", "/a\\\\b", "/a//b", "/a/b", "/a/b"),
    ("/a/b/..%2f..%2fc", "/a/b/..%2f..%2fc", "/a/b/..%2f..%2fc", "/a/b/..%2f..%2fc", "/c"),
    ("/a/%2e%2e%2fb", "/a/%2e%2e%2fb", "/a/..%2fb", "/a/..%2fb", "/b"),
    ("/a%2fb/../c", "/a%2fb/../c", "/c", "/c", "/a/c"),
    ("/a;b/c;d=1", "/a;b/c;d=1", "/a;b/c;d=1", "/a;b/c;d=1", "/a;b/c;d=1"),
    ("/a/..;x=1/b", "/a/..;x=1/b", "/b", "/b", "/b"),
    ("/a/.;x/b", "/a/.;x/b", "/a/b", "/a/b", "/a/b"),
    ("/a/..;", "/a/..;", "/", "/", "/"),
    # Envoy strips parameters only from literal dot segments: encoded dots keep them.
    ("/a/%2e%2e;x/b", "/a/%2e%2e;x/b", "/a/..;x/b", "/a/..;x/b", "/a/..;x/b"),
    ("/a%00", "/a%00", BAD, BAD, BAD),
    ("/a/.%00./b", "/a/.%00./b", BAD, BAD, BAD),
    ("/a%%0000", "/a%%0000", BAD, BAD, BAD),
    ("/a%41%7a", "/a%41%7a", "/aAz", "/aAz", "/aAz"),
    ("/%7e%2d%5f%30%39", "/%7e%2d%5f%30%39", "/~-_09", "/~-_09", "/~-_09"),
    ("/%7E%2D%5F", "/%7E%2D%5F", "/~-_", "/~-_", "/~-_"),
    ("/a%20b", "/a%20b", "/a%20b", "/a%20b", "/a%20b"),
    ("/a%25b", "/a%25b", "/a%25b", "/a%25b", "/a%25b"),
    ("/a%3fb", "/a%3fb", "/a%3fb", "/a%3fb", "/a%3fb"),
    ("/a b", "/a b", "/a%20b", "/a%20b", "/a%20b"),
    ('/a"b<c>', '/a"b<c>', "/a%22b%3Cc%3E", "/a%22b%3Cc%3E", "/a%22b%3Cc%3E"),
    (
        "/a{b}|c^d`e",
        "/a{b}|c^d`e",
        "/a%7Bb%7D%7Cc%5Ed%60e",
        "/a%7Bb%7D%7Cc%5Ed%60e",
        "/a%7Bb%7D%7Cc%5Ed%60e",
    ),
    ("/a/b/.", "/a/b/.", "/a/b/", "/a/b/", "/a/b/"),
    ("/a/b/..", "/a/b/..", "/a/", "/a/", "/a/"),
    ("/a/b/%2e", "/a/b/%2e", "/a/b/", "/a/b/", "/a/b/"),
    ("/a/%2e%2e", "/a/%2e%2e", "/", "/", "/"),
    ("/a/...", "/a/...", "/a/...", "/a/...", "/a/..."),
    ("/a/b.", "/a/b.", "/a/b.", "/a/b.", "/a/b."),
    ("/a/.b/..c", "/a/.b/..c", "/a/.b/..c", "/a/.b/..c", "/a/.b/..c"),
    ("/..", "/..", "/", "/", "/"),
    ("/../../a", "/../../a", "/a", "/a", "/a"),
    ("/%c0%ae%c0%ae/x", "/%c0%ae%c0%ae/x", "/%c0%ae%c0%ae/x", "/%c0%ae%c0%ae/x", "/%c0%ae%c0%ae/x"),
    ("/%C0%AF", "/%C0%AF", "/%C0%AF", "/%C0%AF", "/%C0%AF"),
    ("/café", "/café", "/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),
    (b"/caf\xc3\xa9", "/café", "/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),
    ("/%e2%82%ac", "/%e2%82%ac", "/%e2%82%ac", "/%e2%82%ac", "/%e2%82%ac"),
    ("/a%2", "/a%2", "/a%2", "/a%2", "/a%2"),
    ("/a%zz", "/a%zz", "/a%zz", "/a%zz", "/a%zz"),
    ("/%%30%30", "/%%30%30", "/%2500", "/%2500", "/%2500"),
    ("/A/B", "/A/B", "/A/B", "/A/B", "/A/B"),
    ("/a?b=../c", "/a?b=../c", "/a?b=../c", "/a?b=../c", "/a?b=../c"),
    ("/a/../b?x=%2e%2e//", "/a/../b?x=%2e%2e//", "/b?x=%2e%2e//", "/b?x=%2e%2e//", "/b?x=%2e%2e//"),
    ("/a%2fb?q=%2f", "/a%2fb?q=%2f", "/a%2fb?q=%2f", "/a%2fb?q=%2f", "/a/b?q=%2f"),
    ("/a#frag", BAD, BAD, BAD, BAD),
    ("/a?x#frag", BAD, BAD, BAD, BAD),
    ("/", "/", "/", "/", "/"),
    (
        "/x/%2E%2e/z%2f%2Fabc%5C../def",
        "/x/%2E%2e/z%2f%2Fabc%5C../def",
        "/z%2f%2Fabc%5C../def",
        "/z%2f%2Fabc%5C../def",
        "/z/def",
    ),
]


def _expect(result: NormalizedPath, expected: str) -> None:
    if expected == BAD:
        assert not result.ok
        assert result.refusal == PATH_NORMALIZATION_FAILED
        assert result.status == 400
    else:
        assert result.ok, result
        assert result.target == expected


def test_table_is_large_enough() -> None:
    assert len(TABLE) >= 40


@pytest.mark.parametrize("mode_index", range(4), ids=[m.value for m in MODES])
@pytest.mark.parametrize("row", TABLE, ids=[repr(r[0]) for r in TABLE])
def test_normalization_table(row: tuple[str | bytes, str, str, str, str], mode_index: int) -> None:
    _expect(normalize_path(row[0], MODES[mode_index]), row[1 + mode_index])


def test_default_mode_is_base() -> None:
    assert normalize_path("/a//b/../c").target == "/a//c"
    assert normalize_path("/a//b/../c", "BASE").target == "/a//c"
    assert normalize_path("/a//b/../c", "MERGE_SLASHES").target == "/a/c"


@pytest.mark.parametrize("target", ["a/b", "*", "http://host/a", ""])
def test_origin_form_required(target: str) -> None:
    result = normalize_path(target)
    assert result.refusal == ABSOLUTE_PATH_REQUIRED
    assert result.status == 404


def test_query_split_and_views() -> None:
    r = normalize_path(b"/a%2Fb/%7euser?q=1&x=%2f")
    assert r.path == "/a%2Fb/~user"
    assert r.query == "?q=1&x=%2f"
    assert r.query_string == b"q=1&x=%2f"
    assert r.raw_path == b"/a%2Fb/~user"
    # What the app gets in scope["path"] / PATH_INFO: percent-decoded, except the
    # escaped slash, which the policy saw as part of one segment and so must the app.
    assert r.asgi_path == "/a%2Fb/~user"
    assert r.wsgi_path_info == "/a%2Fb/~user"
    assert normalize_path(b"/a%20b%5cc").asgi_path == "/a b%5cc"


def test_app_views_of_non_ascii() -> None:
    r = normalize_path("/café")
    assert r.raw_path == b"/caf%C3%A9"
    assert r.asgi_path == "/café"
    assert r.wsgi_path_info == "/caf\xc3\xa9"  # PEP 3333: bytes as latin-1


def test_none_keeps_invalid_utf8_bytes() -> None:
    r = normalize_path(b"/a\xff", "NONE")
    assert r.raw_path == b"/a\xff"
    assert normalize_path(b"/a\xff").path == "/a%FF"


def test_refused_path_has_no_target() -> None:
    r = normalize_path("/x%00?y")
    assert r.path == "" and r.query == ""
    assert not r.ok


@pytest.mark.parametrize(
    ("method", "ok"),
    [("GET", True), ("POST", True), ("M-SEARCH", True), ("PROPFIND", True), ("get", False),
     ("Get", False), ("", False), ("GE T", False)],
)  # fmt: skip
def test_check_method(method: str, ok: bool) -> None:
    assert (check_method(method) is None) is ok
    if not ok:
        assert check_method(method) == INVALID_METHOD


def test_asgi_request_target_uses_raw_path() -> None:
    scope = {"path": "/a/b", "raw_path": b"/a%2Fb", "query_string": b"x=1"}
    assert asgi_request_target(scope) == b"/a%2Fb?x=1"
    assert asgi_request_target({"path": "/a b", "query_string": b""}) == b"/a%20b"


def test_wsgi_request_target() -> None:
    assert wsgi_request_target({"RAW_URI": "/a%2Fb?x=1", "PATH_INFO": "/a/b"}) == b"/a%2Fb?x=1"
    assert wsgi_request_target({"REQUEST_URI": "/r?q"}) == b"/r?q"
    environ = {"SCRIPT_NAME": "/app", "PATH_INFO": "/caf\xc3\xa9", "QUERY_STRING": "a=b"}
    assert wsgi_request_target(environ) == b"/app/caf%C3%A9?a=b"


_PATH_CHARS = st.sampled_from(
    ["/", "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "\\", "a", "B", "%41", "%7e", ";", "%",
     "%2", "%00", " ", "é", "%c0%ae", "?", "x=1", "~", "-"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_PATH_CHARS, max_size=14), st.sampled_from(MODES[1:]))
def test_normalized_paths_are_stable(parts: list[str], mode: PathNormalization) -> None:
    """Normalizing a normalized path changes nothing, and no dot segment survives.

    (Except where Envoy itself is not idempotent: an encoded dot segment with
    parameters, ``/%2e;x``, becomes ``/.;x``, which a second pass would strip.)
    """
    first = normalize_path("/" + "".join(parts), mode)
    if not first.ok or any(s.startswith((".;", "..;")) for s in first.path.split("/")):
        return
    again = normalize_path(first.target, mode)
    assert again.ok
    assert again.target == first.target
    segments = first.path.split("/")
    assert "." not in segments and ".." not in segments
    assert "\\" not in first.path
