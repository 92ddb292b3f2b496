"""RE2 syntax (what Envoy and Istio's Go validation accept), run on Python's ``re``.

Envoy matches with RE2 and Istio validates with Go's ``regexp`` (the same
syntax). Python's ``re`` differs in both directions: it has look-around,
back-references, atomic groups and possessive quantifiers, which RE2 refuses;
RE2 has ``\\z``, ``\\Q...\\E`` and Unicode classes ``\\pL``, which ``re``
lacks. :func:`translate` refuses what RE2 refuses, with a reason, and turns
the rest into an equivalent Python pattern; :func:`compile_re2` compiles it.
Matching is a full match everywhere Envoy uses ``safe_regex``.

Standard library only.
"""

from __future__ import annotations

import functools
import re

__all__ = ["Re2SyntaxError", "compile_re2", "translate"]

_MAX_REPEAT = 1000
# The Unicode classes Python can express exactly or closely enough.
_CLASSES = {
    "L": r"^\W\d_",
    "N": r"\d",
    "Nd": r"\d",
    "Z": r"\s",
    "Zs": r"\s",
}


class Re2SyntaxError(ValueError):
    """The pattern is not RE2 syntax (``fix`` says how to write it)."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def _unicode_class(pattern: str, i: int) -> tuple[str, bool, int]:
    """Parse ``\\pX`` / ``\\p{Name}`` / ``\\PX`` at ``i`` (the backslash)."""
    negate = pattern[i + 1] == "P"
    j = i + 2
    if j < len(pattern) and pattern[j] == "{":
        end = pattern.find("}", j)
        if end < 0:
            raise Re2SyntaxError("unterminated \\p{...} class")
        name, j = pattern[j + 1 : end], end + 1
    elif j < len(pattern):
        name, j = pattern[j], j + 1
    else:
        raise Re2SyntaxError("\\p needs a class name")
    if name.startswith("^"):
        negate, name = not negate, name[1:]
    body = _CLASSES.get(name)
    if body is None:
        raise Re2SyntaxError(
            f"Unicode class \\p{{{name}}} is not supported by inmesh",
            "use an explicit character class such as [a-z]",
        )
    return body, negate, j


@functools.lru_cache(maxsize=1024)
def translate(pattern: str) -> str:
    """The Python ``re`` pattern equivalent to RE2 ``pattern``; raises :class:`Re2SyntaxError`."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise Re2SyntaxError("trailing backslash")
            d = pattern[i + 1]
            if d.isdigit() and d != "0":
                raise Re2SyntaxError(
                    f"back-reference \\{d} is not supported by RE2", "rewrite it without it"
                )
            if d == "Z":
                raise Re2SyntaxError("\\Z is not RE2", "use \\z or $")
            if d == "z":
                out.append(r"\Z")
                i += 2
                continue
            if d == "Q":
                end = pattern.find(r"\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if d in "pP":
                body, negate, i = _unicode_class(pattern, i)
                if in_class:
                    if negate or body.startswith("^"):
                        raise Re2SyntaxError(
                            "this Unicode class inside [...] is not supported by inmesh",
                            "write it outside the brackets, e.g. (?:\\pL|_)",
                        )
                    out.append(body)
                elif body.startswith("^"):
                    out.append(f"[{body[1:]}]" if negate else f"[{body}]")
                else:
                    out.append(f"[^{body}]" if negate else f"[{body}]")
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            elif c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                if end < 0:
                    raise Re2SyntaxError("unterminated [:class:]")
                raise Re2SyntaxError(
                    f"POSIX class {pattern[i : end + 2]} is not supported by inmesh",
                    "use an explicit range such as [a-z] or \\d",
                )
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append(r"\]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 : i + 4]
            if rest[:1] in ("=", "!") or rest in ("<=", "<!"):
                raise Re2SyntaxError(
                    "look-around is not supported by RE2", "rewrite it without (?=, (?!, (?<=, (?<!"
                )
            if rest[:1] == ">":
                raise Re2SyntaxError("atomic groups (?>...) are not supported by RE2")
            if rest[:1] == "(":
                raise Re2SyntaxError("conditionals (?(...)...) are not supported by RE2")
            if pattern.startswith("(?P=", i):
                raise Re2SyntaxError("back-references (?P=name) are not supported by RE2")
            if rest[:1] == "#":
                raise Re2SyntaxError("comments (?#...) are not supported by RE2")
            flags = re.match(r"\(\?([a-zA-Z-]*)[:)]", pattern[i:])
            if flags and "U" in flags.group(1):
                raise Re2SyntaxError("the ungreedy flag U is not supported by inmesh")
        if c in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise Re2SyntaxError(
                f"possessive quantifier {c}+ is not supported by RE2", "drop the second +"
            )
        if c == "{":
            m = re.match(r"\{(\d+)(?:,(\d*))?\}", pattern[i:])
            if m:
                for num in m.groups():
                    if num and int(num) > _MAX_REPEAT:
                        raise Re2SyntaxError(
                            f"repetition count {num} is over RE2's limit of {_MAX_REPEAT}"
                        )
        out.append(c)
        i += 1
    if in_class:
        raise Re2SyntaxError("missing ] in a character class")
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def compile_re2(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """Compile RE2 ``pattern`` for Python; raises :class:`Re2SyntaxError` (a ``ValueError``)."""
    translated = translate(pattern)
    try:
        return re.compile(translated, flags)
    except (re.error, RecursionError, OverflowError) as exc:
        raise Re2SyntaxError(f"invalid regex: {getattr(exc, 'msg', exc)}") from None
