"""Checks shared by several kinds, after istio/istio ``pkg/config/validation``.

Each function reports through a :class:`~inmesh.config._schema.Reporter`
with the field path it was given, and returns whether the value was valid.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from .._schema import Reporter
from .._yaml import Path
from ..resources._common import Duration

__all__ = [
    "check_dns1123_label",
    "check_dns1123_subdomain",
    "check_duration",
    "check_label_key",
    "check_label_value",
    "check_labels",
    "check_port",
    "check_regex",
    "check_wildcard_host",
    "is_cidr",
    "is_ip",
]

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL_MAX = 63
_DNS1123_SUBDOMAIN_MAX = 253
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_QUALIFIED_NAME_MAX = 63


def check_dns1123_label(value: str, path: Path, rep: Reporter, what: str = "name") -> bool:
    if len(value) > _DNS1123_LABEL_MAX or not _DNS1123_LABEL.fullmatch(value):
        rep.error(
            path,
            f"{what} {value!r} is not a valid DNS-1123 label",
            "use at most 63 lower-case letters, digits and '-', starting and ending "
            "with a letter or digit",
        )
        return False
    return True


def check_dns1123_subdomain(value: str, path: Path, rep: Reporter, what: str = "name") -> bool:
    if len(value) > _DNS1123_SUBDOMAIN_MAX or not all(
        _DNS1123_LABEL.fullmatch(part) for part in value.split(".")
    ):
        rep.error(
            path,
            f"{what} {value!r} is not a valid DNS-1123 subdomain",
            "use lower-case letters, digits, '-' and '.', each part starting and "
            "ending with a letter or digit",
        )
        return False
    return True


def check_wildcard_host(
    host: str, path: Path, rep: Reporter, *, allow_bare_wildcard: bool = True
) -> bool:
    """An FQDN or short name, optionally starting with ``*.`` or being ``*``.

    After istio/istio ``agent.ValidateWildcardDomain``: total length <= 255,
    labels of letters, digits and ``-`` (case-insensitive), at most 63 long;
    the wildcard only as the whole first label.
    """
    if not host:
        rep.error(path, "host must not be empty")
        return False
    if len(host) > 255:
        rep.error(path, f"host {host!r} is longer than 255 characters")
        return False
    if host == "*":
        if not allow_bare_wildcard:
            rep.error(
                path,
                "'*' is not allowed here",
                "name the hosts, or use a wildcard like *.example.com",
            )
            return False
        return True
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    elif labels[0].startswith("*"):
        labels[0] = labels[0][1:]  # "*foo.com" -- Istio accepts a partial wildcard label
        if not labels[0]:
            labels = labels[1:]
    if host.endswith("."):
        labels = labels[:-1]  # a trailing dot is an absolute name
    for label in labels:
        if (
            not label
            or len(label) > 63
            or not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?", label)
        ):
            rep.error(
                path,
                f"host {host!r} is not a valid domain name",
                "use letters, digits, '-' and '.', optionally starting with '*.'",
            )
            return False
    return True


def check_port(port: int, path: Path, rep: Reporter, *, allow_zero: bool = False) -> bool:
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        rep.error(path, f"port {port} is out of range", f"use a port from {low} to 65535")
        return False
    return True


def check_duration(
    d: Duration,
    path: Path,
    rep: Reporter,
    *,
    minimum: float = 0.001,
    maximum: float | None = None,
    what: str = "duration",
) -> bool:
    """Istio's ``agent.ValidateDuration``: >= 1ms and millisecond precision."""
    if d.seconds < minimum:
        low = f"{minimum * 1000:g}ms" if minimum < 1 else f"{minimum:g}s"
        rep.error(path, f"{what} {d} is too short", f"use at least {low}")
        return False
    if maximum is not None and d.seconds > maximum:
        rep.error(path, f"{what} {d} is too long", f"use at most {Duration.of(maximum)}")
        return False
    ns = round(d.seconds * 1e9)
    if ns % 1_000_000:
        rep.error(
            path, f"{what} {d} has a precision finer than 1ms", "round it to whole milliseconds"
        )
        return False
    return True


def check_label_key(key: str, path: Path, rep: Reporter) -> bool:
    """A Kubernetes qualified name with an optional DNS-1123 subdomain prefix."""
    prefix, _, name = key.rpartition("/")
    ok = True
    if "/" in key and (
        not prefix
        or len(prefix) > _DNS1123_SUBDOMAIN_MAX
        or not all(_DNS1123_LABEL.fullmatch(p) for p in prefix.split("."))
    ):
        ok = False
    if not name or len(name) > _QUALIFIED_NAME_MAX or not _LABEL_NAME.fullmatch(name):
        ok = False
    if not ok:
        rep.error(
            path,
            f"label key {key!r} is invalid",
            "use [prefix/]name: a name of at most 63 letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit",
        )
    return ok


def check_label_value(value: str, path: Path, rep: Reporter) -> bool:
    if len(value) > _QUALIFIED_NAME_MAX or not _LABEL_NAME.fullmatch(value):
        rep.error(
            path,
            f"label value {value!r} is invalid",
            "use at most 63 letters, digits, '-', '_' and '.', starting and ending "
            "with a letter or digit",
        )
        return False
    return True


def check_labels(labels: Mapping[str, str], path: Path, rep: Reporter) -> bool:
    ok = True
    for k, v in labels.items():
        ok &= check_label_key(k, (*path, k), rep)
        ok &= check_label_value(v, (*path, k), rep)
    return ok


MAX_REGEX_LENGTH = 1024


def check_regex(
    pattern: str, path: Path, rep: Reporter, *, max_length: int = MAX_REGEX_LENGTH
) -> bool:
    """A regex in RE2 syntax, which Envoy matches with and Istio validates with."""
    from inmesh._re2 import Re2SyntaxError, compile_re2

    if not pattern:
        rep.error(path, "regex must not be empty")
        return False
    if len(pattern) > max_length:
        rep.error(path, f"regex is longer than {max_length} characters", "shorten it")
        return False
    try:
        compile_re2(pattern)
    except Re2SyntaxError as exc:
        rep.error(path, f"invalid regex {pattern!r}: {exc.message}", exc.fix or "fix the RE2 syntax")
        return False
    return True


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value
