"""RE2 syntax on Python's re: refuse what RE2 refuses, translate what re lacks."""

from __future__ import annotations

import pytest

from inmesh._re2 import Re2SyntaxError, compile_re2

REFUSED = [
    r"(?=a)",
    r"(?!a)",
    r"(?<=a)b",
    r"(?<!a)b",
    r"(a)\1",
    r"(?P<x>a)(?P=x)",
    r"(?>a)",
    r"a++",
    r"a*+",
    r"a?+",
    r"a{2}+",
    r"a{1001}",
    r"a{1,1001}",
    r"[",
    r"a\Z",
    r"\p{Greek}",
    r"[\pL_]",
    r"(?U)a*",
    r"(?#comment)",
    r"[[:alpha:]]",
    "\\",
]
ACCEPTED = {
    r"/api/v[0-9]+/.*": ("/api/v2/x", "/api/x"),
    r"a\z": ("a", "a\n"),
    r"\pL+": ("héllo", "h1"),
    r"\PL": ("1", "a"),
    r"[\pN_]+": ("1_2", "a"),
    r"\QA.B\E": ("A.B", "AxB"),
    r"[]a]+": ("]a", "b"),
    r"(?i)abc": ("ABC", "abd"),
    r"(?P<v>v[0-9])": ("v1", "vx"),
    r"a{1000}": ("a" * 1000, "a" * 999),
}


@pytest.mark.parametrize("pattern", REFUSED)
def test_refused(pattern: str) -> None:
    with pytest.raises(Re2SyntaxError):
        compile_re2(pattern)


@pytest.mark.parametrize(("pattern", "yes", "no"), [(p, y, n) for p, (y, n) in ACCEPTED.items()])
def test_accepted_and_matches_like_re2(pattern: str, yes: str, no: str) -> None:
    rx = compile_re2(pattern)
    assert rx.fullmatch(yes)
    assert not rx.fullmatch(no)


def test_error_is_a_value_error_with_a_fix() -> None:
    with pytest.raises(ValueError) as info:
        compile_re2("(?=x)")
    assert isinstance(info.value, Re2SyntaxError) and info.value.fix
