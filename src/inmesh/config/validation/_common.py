"""Checks shared by several kinds, after istio/istio ``pkg/config/validation``.

Two families of name rules live here, and they differ:

- Istio's own (``pkg/config/labels/instance.go`` and
  ``pkg/config/validation/agent/validation.go``), for what Istio validates:
  hosts, subset and port names, label keys and values, ``exportTo``. Its
  DNS-1123 label accepts upper case, and its label values have no length cap.
- Kubernetes' (``k8s.io/apimachinery/pkg/util/validation``), lower case only,
  for what the Kubernetes API server validates (``metadata.name`` and
  ``metadata.namespace``) and for inmesh hints about names a workload or
  service account must carry. These are the ``*_k8s_*`` functions.

The ``*_problem`` functions return None for a valid value, else a phrase
saying why it is not (each docstring says where the phrase fits); the
``check_*`` functions report through a :class:`~inmesh.config._schema.Reporter`
at the field path they were given and return whether the value was valid.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

from .._schema import Reporter
from .._yaml import Path
from ..resources._common import Duration

__all__ = [
    "MAX_REGEX_LENGTH",
    "check_duration",
    "check_export_to",
    "check_k8s_dns1123_label",
    "check_k8s_dns1123_subdomain",
    "check_labels",
    "check_port",
    "check_regex",
    "check_selector_label",
    "check_selector_size",
    "fqdn_problem",
    "go_atoi",
    "ip_subnet_problem",
    "is_dns1123_label",
    "is_ip",
    "is_k8s_dns1123_subdomain",
    "is_k8s_label",
    "is_label_value",
    "is_port_name",
    "label_key_problem",
    "wildcard_domain_problem",
]

# -- Istio's grammar (pkg/config/labels/instance.go) ---------------------------
_DNS1123_LABEL_MAX = 63
_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"  # dns1123LabelFmt
_DNS1123_LABEL_RE = re.compile(_LABEL)
# wildcardPrefix: '*', or a label after an optional '*' or '*-'
_WILDCARD_LABEL_RE = re.compile(rf"\*|(?:\*|\*-)?{_LABEL}")
_QUALIFIED = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"  # qualifiedNameFmt
_QUALIFIED_RE = re.compile(_QUALIFIED)
# tagRegexp, with the prefix captured without its '/'
_LABEL_KEY_RE = re.compile(rf"(?:({_LABEL}(?:\.{_LABEL})*)/)?({_QUALIFIED})")
_LABEL_VALUE_RE = re.compile(rf"(?:{_QUALIFIED})?")  # labelValueRegexp
_LABEL_KEY_PREFIX_MAX = 253  # dnsNamePrefixMaxLength
_DOMAIN_MAX = 255  # CheckDNS1123Preconditions
_GO_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_DIGITS = 19

# -- Kubernetes' grammar (k8s.io/apimachinery/pkg/util/validation) -------------
_K8S_LABEL_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_K8S_SUBDOMAIN_MAX = 253
_K8S_LABEL_VALUE_MAX = 63

# -- the CRD schema of selectors (istio/api type/v1beta1/selector.proto) -------
_SELECTOR_VALUE_MAX = 63


# ---------------------------------------------------------------------------
# Numbers


def go_atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi``: an optionally signed decimal that fits in an int64, or None."""
    if not _GO_INT_RE.fullmatch(text):
        return None
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > _INT64_DIGITS:  # also keeps int() clear of its 4300-digit limit
        return None
    value = int(digits or "0")
    value = -value if text[0] == "-" else value
    return value if -(2**63) <= value < 2**63 else None


# ---------------------------------------------------------------------------
# Istio's names: DNS labels, domains, label keys and values, port names


def is_dns1123_label(value: str) -> bool:
    """``labels.IsDNS1123Label``: at most 63 letters (either case), digits and '-'."""
    return len(value) <= _DNS1123_LABEL_MAX and _DNS1123_LABEL_RE.fullmatch(value) is not None


def is_port_name(name: str) -> bool:
    """``ValidatePortName`` (validation.go): a DNS-1123 label in Istio's sense."""
    return is_dns1123_label(name)


def _label_problem(label: str) -> str:
    """Why one label of a domain is not a DNS-1123 label."""
    if not label:
        return "it has an empty label (a leading dot or two dots in a row)"
    if "*" in label:
        return "a wildcard may only start the host, as in *.example.com"
    if len(label) > _DNS1123_LABEL_MAX:
        return f"label {label[:16]}... is longer than {_DNS1123_LABEL_MAX} characters"
    return (
        f"label {label!r} may only hold letters, digits and '-', and must start and end "
        "with a letter or digit"
    )


def _preconditions_problem(name: str) -> str | None:
    """``agent.CheckDNS1123Preconditions``: not empty, at most 255 characters."""
    if not name:
        return "it is empty"
    if len(name) > _DOMAIN_MAX:
        return f"it is {len(name)} characters long (at most {_DOMAIN_MAX})"
    return None


def _labels_problem(domain: str) -> str | None:
    """``agent.ValidateDNS1123Labels``: DNS-1123 labels, the last one not a number
    (``strconv.Atoi``); an empty last label (a trailing dot) is allowed."""
    parts = domain.split(".")
    tld = parts[-1]
    if go_atoi(tld) is not None:
        return f"its last label {tld!r} is all digits"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and not label:
            return None
        if not is_dns1123_label(label):
            return _label_problem(label)
    return None


def wildcard_domain_problem(host: str) -> str | None:
    """``agent.ValidateWildcardDomain``: why ``host`` is not a (wildcard) domain, or None
    (the phrase fits after "host 'x' is not a valid domain name: ").

    Only the first label may hold a wildcard: ``*`` alone, or ``*`` / ``*-``
    before a label (``labels.IsWildcardDNS1123Label``); so ``*``,
    ``*.example.com`` and ``*foo.example.com`` pass.
    """
    problem = _preconditions_problem(host)
    if problem is not None:
        return problem
    first, dot, rest = host.partition(".")
    if len(first) > _DNS1123_LABEL_MAX or not _WILDCARD_LABEL_RE.fullmatch(first):
        if "*" in first:
            return "a wildcard must be the whole first label or start it, as in *.example.com"
        return _label_problem(first)
    return _labels_problem(rest) if dot else None


def fqdn_problem(name: str) -> str | None:
    """``agent.ValidateFQDN``: why ``name`` is not a plain DNS name, or None."""
    problem = _preconditions_problem(name)
    if problem is not None:
        return problem
    if "*" in name:
        return "a wildcard cannot be resolved"
    return _labels_problem(name)


def label_key_problem(key: str) -> str | None:
    """``labels.validateTagKey``: why ``key`` is not ``[prefix/]name``, or None.

    The name is a qualified name of at most 63 characters; the optional prefix
    is a dot-separated run of Istio DNS labels (upper case allowed) of at most
    253 characters.
    """
    match = _LABEL_KEY_RE.fullmatch(key)
    if match is None:
        if not key:
            return "is empty"
        if key.count("/") > 1:
            return "is not [prefix/]name (it has more than one '/')"
        return "is not [prefix/]name of letters, digits, '-', '_' and '.'"
    prefix, name = match.group(1), match.group(2)
    if len(name) > _DNS1123_LABEL_MAX:
        return f"has a name part of {len(name)} characters (at most {_DNS1123_LABEL_MAX})"
    if prefix is not None and len(prefix) > _LABEL_KEY_PREFIX_MAX:
        return f"has a prefix of {len(prefix)} characters (at most {_LABEL_KEY_PREFIX_MAX})"
    return None


def is_label_value(value: str) -> bool:
    """``labels.Instance.Validate`` on a value: empty, or a qualified name of any length."""
    return _LABEL_VALUE_RE.fullmatch(value) is not None


def check_labels(labels: Mapping[str, str], path: Path, rep: Reporter) -> None:
    """``labels.Instance.Validate``: every key (``validateTagKey``) and value."""
    for key, value in labels.items():
        lpath: Path = (*path, key)
        why = label_key_problem(key)
        if why is not None:
            rep.error(
                lpath,
                f"label key {key!r} {why}" if key else "label key is empty",
                "use [prefix/]name: a name of at most 63 letters, digits, '-', '_' and '.' "
                "starting and ending with a letter or digit, and an optional DNS-name prefix",
            )
        if not is_label_value(value):
            rep.error(
                lpath,
                f"label value {value!r} is not valid",
                "use letters, digits, '-', '_' and '.', starting and ending with a letter "
                "or digit (or leave it empty)",
            )


# ---------------------------------------------------------------------------
# Addresses and ports


def is_ip(text: str) -> bool:
    """An IP address as Go's ``netip.ParseAddr`` reads it, which Istio's
    ``agent.ValidateIPAddress`` and ``netutil.IsValidIPAddress`` use: IPv4
    without leading zeros, IPv6 with an optional zone (``fe80::1%eth0``)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def ip_subnet_problem(text: str) -> str | None:
    """``agent.ValidateIPSubnet`` (and ``security.ValidateIPs``): what ``text``
    fails to be, as a phrase after "is not", or None.

    One '/' makes it a CIDR block (Go's ``netip.ParsePrefix``: no zone, a
    decimal prefix length without sign or leading zeros); otherwise it is an
    IP address.
    """
    if text.count("/") != 1:
        return None if is_ip(text) else "an IP address or a CIDR block"
    addr, _, bits = text.partition("/")
    if "%" in addr:
        return "a valid CIDR block (a zone is not allowed in a CIDR block)"
    try:
        parsed = ipaddress.ip_address(addr)
    except ValueError:
        return "a valid CIDR block (bad address part)"
    if not (bits.isascii() and bits.isdigit()) or (len(bits) > 1 and bits[0] == "0"):
        return "a valid CIDR block (bad prefix length)"
    if len(bits) > 3 or int(bits) > parsed.max_prefixlen:
        return f"a valid CIDR block (the prefix length is at most {parsed.max_prefixlen})"
    return None


def check_port(port: int, path: Path, rep: Reporter) -> bool:
    """``agent.ValidatePort``: 1 to 65535."""
    if not 1 <= port <= 65535:
        rep.error(path, f"port {port} is out of range", "use a port from 1 to 65535")
        return False
    return True


# ---------------------------------------------------------------------------
# exportTo and workload selectors


def check_export_to(
    values: Sequence[str],
    namespace: str,
    rep: Reporter,
    *,
    kind: str,
    service_entry: bool = False,
    with_selector: bool = False,
) -> None:
    """``validateExportTo`` (validation.go) on ``spec.exportTo``.

    Entries are '.', '*', a namespace name (``labels.IsDNS1123Label``) or, for
    a ServiceEntry only, '~'; no duplicates ('.' and the own namespace count
    as one); '*' and '~' stand alone. With ``with_selector`` (a DestinationRule
    with a workloadSelector) only the own namespace is allowed.
    """
    seen: set[str] = set()
    for i, value in enumerate(values):
        path: Path = ("spec", "exportTo", i)
        key = namespace if value == "." else value
        if key in seen:
            if key != value or (value == namespace and "." in values):
                rep.error(
                    path,
                    f"'.' and {namespace!r} both mean this {kind}'s namespace",
                    "keep one of them",
                )
            else:
                rep.error(path, f"{value!r} is listed twice", "remove the duplicate")
        elif value == "~" and not service_entry:
            rep.error(
                path,
                "exportTo '~' (no namespace) is only allowed for a ServiceEntry",
                f"use '.' to keep the {kind} in its own namespace",
            )
        elif value in (".", "*", "~") or is_dns1123_label(value):
            seen.add(key)
        elif service_entry:
            rep.error(
                path,
                f"exportTo entry {value!r} is not '.', '*', '~' or a namespace name",
                "use '.' (this namespace), '*' (all namespaces), '~' (no namespace) or "
                "namespace names",
            )
        else:
            rep.error(
                path,
                f"exportTo entry {value!r} is not '.', '*' or a namespace name",
                "use '.' (this namespace), '*' (all namespaces) or namespace names",
            )
    if with_selector and seen:
        if namespace not in seen:
            rep.error(
                ("spec", "exportTo"),
                f"a {kind} with a workloadSelector cannot be exported beyond its own namespace",
                "set exportTo: ['.'] or remove exportTo",
            )
        elif len(seen) > 1:
            rep.error(
                ("spec", "exportTo"),
                f"a {kind} with a workloadSelector can only be exported to its own "
                "namespace, so exportTo can have just one entry",
                "set exportTo: ['.']",
            )
    if "*" in seen and len(values) > 1:
        rep.error(
            ("spec", "exportTo"),
            "'*' exports to all namespaces and cannot be combined with other entries",
            "keep just '*', or list the namespaces",
        )
    if "~" in seen and len(values) > 1:
        rep.error(
            ("spec", "exportTo"),
            "'~' exports to no namespace and cannot be combined with other entries",
            "keep just '~', or list the namespaces",
        )


def check_selector_size(labels: Mapping[str, str], path: Path, rep: Reporter, limit: int) -> None:
    """(CRD) ``maxProperties`` of a selector's labels; ``path`` is the labels map."""
    if len(labels) > limit:
        rep.error(
            path,
            f"{len(labels)} labels is more than the {limit} Istio allows",
            "select on the few labels that identify the workloads",
        )


def check_selector_label(key: str, value: str, path: Path, rep: Reporter) -> bool:
    """One selector entry: ``validateWorkloadSelector`` / ``ValidateAlphaWorkloadSelector``
    (no empty key, no '*') plus the CRD's 63-character cap on the value."""
    ok = True
    if not key:
        ok = False
        rep.error(path, "a selector label key must not be empty", "name the label")
    if "*" in key or "*" in value:
        ok = False
        rep.error(
            path,
            f"wildcard in selector label {key}={value}: selectors match exact values only",
            "write the exact label value the workloads carry",
        )
    if len(value) > _SELECTOR_VALUE_MAX:  # (CRD) map-value maxLength
        ok = False
        rep.error(
            path,
            f"selector label value is {len(value)} characters long; Istio allows at most "
            f"{_SELECTOR_VALUE_MAX}",
            "use the label value the workloads carry (label values are at most 63 characters)",
        )
    return ok


# ---------------------------------------------------------------------------
# Kubernetes' names (lower case; metadata and inmesh hints)


def _is_k8s_dns1123_label(value: str) -> bool:
    return len(value) <= _DNS1123_LABEL_MAX and _K8S_LABEL_RE.fullmatch(value) is not None


def is_k8s_dns1123_subdomain(value: str) -> bool:
    """Kubernetes' ``IsDNS1123Subdomain``: lower-case labels joined by '.', at most 253."""
    return len(value) <= _K8S_SUBDOMAIN_MAX and all(
        _K8S_LABEL_RE.fullmatch(part) for part in value.split(".")
    )


def is_k8s_label(key: str, value: str) -> bool:
    """Kubernetes' label rules (``IsQualifiedName`` on the key, ``IsValidLabelValue``):
    like Istio's, but the key prefix is a lower-case DNS subdomain and the value
    at most 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and is_k8s_dns1123_subdomain(prefix)):
        return False
    return (
        len(name) <= _DNS1123_LABEL_MAX
        and _QUALIFIED_RE.fullmatch(name) is not None
        and len(value) <= _K8S_LABEL_VALUE_MAX
        and is_label_value(value)
    )


def check_k8s_dns1123_label(value: str, path: Path, rep: Reporter, what: str = "name") -> bool:
    """Kubernetes' ``IsDNS1123Label`` (lower case), as for ``metadata.namespace``."""
    if not _is_k8s_dns1123_label(value):
        rep.error(
            path,
            f"{what} {value!r} is not a valid DNS-1123 label",
            "use at most 63 lower-case letters, digits and '-', starting and ending "
            "with a letter or digit",
        )
        return False
    return True


def check_k8s_dns1123_subdomain(value: str, path: Path, rep: Reporter, what: str = "name") -> bool:
    """Kubernetes' ``IsDNS1123Subdomain`` (lower case), as for ``metadata.name``."""
    if not is_k8s_dns1123_subdomain(value):
        rep.error(
            path,
            f"{what} {value!r} is not a valid DNS-1123 subdomain",
            "use lower-case letters, digits, '-' and '.', each part starting and "
            "ending with a letter or digit",
        )
        return False
    return True


# The names inmesh.config.load imports.


# ---------------------------------------------------------------------------
# Durations and regexes


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
        rep.error(
            path, f"invalid regex {pattern!r}: {exc.message}", exc.fix or "fix the RE2 syntax"
        )
        return False
    return True
